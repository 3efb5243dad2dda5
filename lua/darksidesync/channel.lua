-- darksidesync.channel -- share-nothing channels between Lua states, and
-- from C threads: values put are copied (docs/sessions.md, "Copying values
-- between states"), never shared.
--
-- new([capacity]) -> channel     0 or nil: a rendezvous (a put waits for a
--                                get); n: n values buffered; math.huge:
--                                unbounded
-- ch:put(v) -> true | nil, "closed"
-- ch:get()  -> v | nil, "closed"  (closed, and nothing buffered)
-- ch:put_op(v), ch:get_op()      the same as darksidesync.fibers ops
-- ch:close(), ch:closed(), ch:len() (#ch on 5.2+)
-- register_metatable(name, mt)   in this state, tables with metatable mt
--                                are copied with `name`, and tables copied
--                                in under `name` get mt
--
-- Outside a fiber, put and get block the calling thread. Inside one
-- (darksidesync.fibers), they perform put_op / get_op: the fiber waits,
-- the thread and its scheduler go on. A channel handle is itself a value
-- that can be put in a channel.
--
-- How a blocked op completes (src/lua/channel.cpp, "Fibers"): the op's
-- suspension (fibers/op.lua) gets a `core` -- the C side's record of its
-- channel arms -- and `corewraps`, the wrap of each arm by index. Another
-- party completing an arm delivers an item to this state's hub; the
-- darksidesync task source (fibers/fiber.lua) polls it and calls
-- `completed(s)` below, which completes the suspension with that arm's
-- results. Completing the suspension any other way claims `core` first
-- (op.lua, Suspension:claim).

local dss = require "darksidesync"
local C = dss._channel

local M = {}

M.new = C.new
M.register_metatable = C.register_metatable

local methods = C.methods
local put_now, get_now, new_message, new_waits = C.put_now, C.get_now, C.message, C.waits

local op, fiber -- darksidesync.fibers, loaded by the first op

-- The completer: s's channel arm `i` completed (or its channel closed).
local function complete_with(s, wraps, i, ok, ...)
  if s.state ~= "waiting" then return end
  if ok then
    s:complete(wraps[i], ...)
  else
    s:complete(error, ..., 0)
  end
end

local function completed(s)
  local w = s.core
  if w == nil then return end
  local wraps = s.corewraps
  s.core, s.corewraps = nil, nil
  complete_with(s, wraps, w:result())
end
M._completed = completed

local function load_fibers()
  op = require "darksidesync.fibers.op"
  fiber = require "darksidesync.fibers.fiber"
  C.set_completer(completed)
  -- A cancellation (fiber.lua) that finds the op completed takes its
  -- result at once (op.lua, Suspension:abort).
  op.complete_core = completed
  -- The task source runs the completer at once, instead of in a fiber of
  -- its own: it only completes a suspension.
  local src = fiber.dss_source
  if src and src.direct then src.direct[completed] = true end
end

-- An arm that completed while it was being registered (true, results...),
-- or failed (false, error): the C side let the Waits go.
local function armed(s, wrap, ok, ...)
  if ok == nil then return end -- waiting
  s.core, s.corewraps = nil, nil
  if ok then
    s:complete(wrap, ...)
  else
    s:complete(error, ..., 0)
  end
end

-- The block step of both ops: one Waits per suspension, one arm per op.
local function block(s, wrap, ch, m, v)
  if s.state ~= "waiting" then return end -- an earlier arm completed it
  local w, wraps = s.core, s.corewraps
  if w == nil then
    w = new_waits(s)
    wraps = {}
    s.core, s.corewraps = w, wraps
  end
  local i = #wraps + 1
  wraps[i] = wrap
  if m then
    return armed(s, wrap, w:put(ch, m, i, v))
  end
  return armed(s, wrap, w:get(ch, i))
end

-- ch:put_op(v): an op that puts a copy of v; its results are put's (true,
-- or nil, "closed"). v is copied now (an uncopyable v raises here); a
-- second performance of the same op copies v again.
function methods.put_op(ch, v)
  local m = new_message(v)
  if op == nil then load_fibers() end
  return op.new_base_op(nil, function()
    return put_now(ch, m, v)
  end, function(s, wrap)
    return block(s, wrap, ch, m, v)
  end)
end

-- ch:get_op(): an op that gets a value; its results are get's (v, or nil,
-- "closed").
function methods.get_op(ch)
  if op == nil then load_fibers() end
  return op.new_base_op(nil, function()
    return get_now(ch)
  end, function(s, wrap)
    return block(s, wrap, ch, nil)
  end)
end

-- In a fiber, put and get are their ops performed; else they block the
-- thread.
local function in_fiber()
  local f = fiber or package.loaded["darksidesync.fibers.fiber"]
  return f ~= nil and type(f) == "table" and f.current_fiber() ~= nil
end

-- What completes at once (the common case on a buffered channel) is done
-- first, in a fiber or not, without building an op: it is the op's own
-- try, which perform() would run first anyway. What would wait performs
-- the op in a fiber, else blocks the thread (C.put / C.get try again).
-- (Named as the methods: a bad argument error names 'put' or 'get'.)
local put, get = C.try_put, C.get_now

local function put_waiting(ch, v)
  if in_fiber() then return methods.put_op(ch, v):perform() end
  return C.put(ch, v) -- (a field: an argument error names 'put')
end

function methods.put(ch, v)
  local r, err = put(ch, v)
  if r ~= false then return r, err end
  return put_waiting(ch, v)
end

local function got(ch, ok, ...)
  if ok then return ... end
  if in_fiber() then return methods.get_op(ch):perform() end
  return C.get(ch)
end

function methods.get(ch)
  return got(ch, get(ch))
end

return M
