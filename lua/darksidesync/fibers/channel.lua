-- darksidesync.fibers.channel -- CML channels: unbuffered (rendezvous) or
-- buffered, FIFO on both sides, closable. See docs/fibers.md.
--
-- close(): a closed channel's get returns the values still buffered, then
-- nil at once (blocked getters get nil); a put on it raises "channel
-- closed" (blocked putters raise it too). Closing again does nothing.

local op = require "darksidesync.fibers.op"
local fiber = require "darksidesync.fibers.fiber"

local M = {}

local co_yield, co_running = coroutine.yield, coroutine.running
local reusable_suspension, identity = op.reusable_suspension, op.identity
local SUSPENDED = fiber.SUSPENDED
local current_fiber = fiber.current_fiber

-- A FIFO: head and tail indexes over a table; back to 1, 0 when it empties,
-- so that its keys stay small (in the table's array part).
local function fifo() return { h = 1, t = 0 } end
local function push(q, v) local t = q.t + 1; q.t = t; q[t] = v end
local function pop(q)
  local h = q.h
  local t = q.t
  if h > t then return nil end
  local v = q[h]
  q[h] = nil
  if h == t then
    q.h, q.t = 1, 0
  else
    q.h = h + 1
  end
  return v
end
local function size(q) return q.t - q.h + 1 end
-- Drops the entries at the head whose suspension has completed.
local function drop_stale(q)
  while q.h <= q.t and not q[q.h][1]:waiting() do pop(q) end
end
-- The first entry whose suspension still waits, taken off; nil if none.
local function pop_live(q)
  while q.h <= q.t do
    local e = pop(q)
    local s = e[1]
    -- claim(): a suspension blocked on darksidesync.channel ops too may
    -- have lost to one of them (op.lua).
    if s.state == "waiting" and (s.core == nil or s:claim()) then return e end
  end
  return nil
end

-- The buffer holds the values themselves, nil as NILV.
local NILV = {}
local function buf_push(ch, v)
  if v == nil then v = NILV end
  push(ch.buf, v)
end

local Channel = {}
Channel.__index = Channel

-- new([size]): size 0 (the default) is a rendezvous channel; otherwise a
-- buffer of that many values (math.huge: unbounded).
function M.new(bufsize)
  bufsize = bufsize or 0
  if type(bufsize) ~= "number" or bufsize < 0 or (bufsize ~= math.huge and bufsize % 1 ~= 0) then
    error("bad argument #1 to 'new' (non-negative integer expected)", 2)
  end
  return setmetatable({ size = bufsize, buf = fifo(), getq = fifo(), putq = fifo(),
                        closed = false }, Channel)
end

local function closed_error() error("channel closed", 0) end

function Channel:put_op(val)
  local ch = self
  local function try()
    if ch.closed then closed_error() end
    local g = pop_live(ch.getq)
    if g then
      g[1]:complete(g[2], val)
      return true
    end
    if size(ch.buf) < ch.size then
      buf_push(ch, val)
      return true
    end
    return false
  end
  local function block(s, wrap)
    drop_stale(ch.putq)
    push(ch.putq, { s, wrap, val })
  end
  return op.new_base_op(nil, try, block)
end

function Channel:get_op()
  local ch = self
  local function try()
    local buf = ch.buf
    if buf.h <= buf.t then
      local b = pop(buf)
      -- Room now: a waiting putter's value moves into the buffer.
      local p = pop_live(ch.putq)
      if p then
        buf_push(ch, p[3])
        p[1]:complete(p[2])
      end
      if b == NILV then b = nil end
      return true, b
    end
    local p = pop_live(ch.putq)
    if p then
      p[1]:complete(p[2])
      return true, p[3]
    end
    if ch.closed then return true, nil end
    return false
  end
  local function block(s, wrap)
    drop_stale(ch.getq)
    push(ch.getq, { s, wrap })
  end
  return op.new_base_op(nil, try, block)
end

Channel.put_operation = Channel.put_op
Channel.get_operation = Channel.get_op

-- put(val) and get(): put_op(val):perform() and get_op():perform(), without
-- building the op: the same try, then the same block, with the fiber's
-- reusable suspension as the queue entry. (The hot path of channels: the
-- queue operations and a completion of a plain entry are inlined.)

-- Takes the first live entry off q and completes it with (v) (nv = 1) or
-- nothing (nv = 0); returns the entry, or nil when none waits.
local function complete_first(q, nv, v)
  local h, t = q.h, q.t
  if h > t then return nil end
  local e = q[h]
  q[h] = nil
  if h == t then
    q.h, q.t = 1, 0
  else
    q.h = h + 1
  end
  local s = e[1]
  -- A stale entry (its suspension completed by another arm): the next one.
  -- (A tail call, not a loop: LuaJIT traces this better.)
  if s.state ~= "waiting" or (s.core ~= nil and not s:claim()) then
    return complete_first(q, nv, v)
  end
  if s.nacks == nil then
    s.state = "synchronized"
    s.wrap = e[2]
    s.nv = nv
    s.v1 = v
    s.sched:schedule(s)
  elseif nv == 1 then
    s:complete(e[2], v)
  else
    s:complete(e[2])
  end
  return e
end

-- Queues the fiber's reusable suspension as an entry of q, with wrap
-- identity and value v. It is what the fiber waits on (`blocked`: a
-- cancellation completes it with a wrap that raises, fiber.lua); once
-- cancelled, it raises instead, queueing nothing.
local function enqueue(q, f, v)
  local c = fiber.cancelled
  if c ~= nil then error(c, 0) end
  local s = f.rsusp
  if s ~= nil and s.state == "synchronized" and s.nv == nil then
    s.state, s.sched, s.wrap = "waiting", fiber.current_scheduler, nil
    f.blocked = s
  else
    s = reusable_suspension(fiber.current_scheduler, f)
  end
  s[2], s[3] = identity, v
  local h = q.h
  while h <= q.t and q[h][1].state ~= "waiting" do pop(q); h = q.h end -- drop_stale
  local t = q.t + 1
  q.t = t
  q[t] = s
end

function Channel:put(val)
  if self.closed then closed_error() end
  if complete_first(self.getq, 1, val) then return end
  local buf = self.buf
  if buf.t - buf.h + 1 < self.size then
    buf_push(self, val)
    return
  end
  local f = current_fiber()
  if f == nil or co_running() ~= f.coroutine then
    self:put_op(val):perform() -- raises the usual error
    return
  end
  enqueue(self.putq, f, val)
  local w = co_yield(SUSPENDED)
  if w ~= identity then w() end -- closed_error, or a cancellation's
end

function Channel:get()
  local buf = self.buf
  if buf.h <= buf.t then
    local b = pop(buf)
    local p = complete_first(self.putq, 0)
    if p then buf_push(self, p[3]) end
    if b == NILV then b = nil end
    return b
  end
  local p = complete_first(self.putq, 0)
  if p then return p[3] end
  if self.closed then return nil end
  local f = current_fiber()
  if f == nil or co_running() ~= f.coroutine then
    return self:get_op():perform() -- raises the usual error
  end
  enqueue(self.getq, f, nil)
  -- Resumed with (wrap, value): identity, but for close()'s completion
  -- (and a cancellation's, which raises).
  local w, v = co_yield(SUSPENDED)
  if w == identity then return v end
  return w(v)
end

-- close(): wakes every blocked fiber: getters get nil, putters raise
-- "channel closed".
function Channel:close()
  if self.closed then return end
  self.closed = true
  local g = pop_live(self.getq)
  while g do
    g[1]:complete(g[2], nil)
    g = pop_live(self.getq)
  end
  local p = pop_live(self.putq)
  while p do
    p[1]:complete(closed_error)
    p = pop_live(self.putq)
  end
end

function Channel:is_closed()
  return self.closed
end

return M
