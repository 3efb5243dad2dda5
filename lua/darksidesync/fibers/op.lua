-- darksidesync.fibers.op -- Concurrent ML operations: base ops (try, then
-- block), choice, wrap, guard, with_nack; performing one, with or without a
-- default. See docs/fibers.md.
--
-- A base op has three functions:
--   try_fn()              -> success, values... ; must not block; commits
--                            when it returns true
--   block_fn(susp, wrap)  registers susp somewhere so that a counterparty
--                            later calls susp:complete(wrap, values...)
--   wrap_fn(values...)    -> the op's results (nil: identity)

local fiber = require "darksidesync.fibers.fiber"

local M = {}

local unpack = unpack or table.unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local random = math.random

local function identity(...) return ... end

-- Suspension: one per blocked performance, shared by all its arms.

local Suspension = {}
Suspension.__index = Suspension

-- (The fiber's `blocked`: what cancellation aborts, fiber.lua.)
local function new_suspension(sched, f)
  local s = setmetatable({ state = "waiting", sched = sched, fiber = f }, Suspension)
  f.blocked = s
  return s
end

function Suspension:waiting()
  return self.state == "waiting"
end

-- claim(): whether the caller may complete it now. A suspension blocked
-- on darksidesync.channel ops too has a `core` (darksidesync.channel):
-- another thread or state may complete one of those at any moment, so a
-- local completion (a timer, a fibers channel, a cond) first takes it away
-- from them, and loses -- false -- when a channel op completed first (its
-- completion is on its way through the hub). A completer that hands over
-- something with the completion (a value, a lock) calls claim() first and
-- keeps what it had when it is false; complete() claims by itself and does
-- nothing when it loses.
function Suspension:claim()
  if self.state ~= "waiting" then return false end
  local core = self.core
  if core == nil then return true end
  if not core:claim() then return false end
  self.core, self.corewraps = nil, nil
  return true
end

-- hold() / release(): a claim in two steps, for a completer that must do
-- something it cannot undo (read a socket, accept a connection) before it
-- knows whether it completes. hold() is true when the caller may go on:
-- until it calls complete() (which then cannot lose) or release(), no
-- channel arm of the suspension can complete; false when it is no longer
-- waiting (a channel arm won). Between the two: no Lua code that yields.
function Suspension:hold()
  if self.state ~= "waiting" then return false end
  local core = self.core
  if core == nil then return true end
  return core:hold()
end

function Suspension:release()
  local core = self.core
  if core ~= nil then core:unhold() end
end

-- Marks it synchronized and signals the nacks of the arms that lost.
local function synchronize(self, wrap)
  if self.state ~= "waiting" then error("darksidesync.fibers: suspension already completed", 3) end
  self.state = "synchronized"
  local nk = self.nacks
  if nk then
    self.nacks = nil
    local arm = nk.by_wrap[wrap]
    local keep = arm and arm.nackset
    for _, c in ipairs(nk.all) do
      if not (keep and keep[c]) then c.signal() end
    end
  end
end

-- complete(wrap, ...): the fiber resumes next turn with wrap(...). No
-- value or one value (the common case) is kept in fields, not a table.
function Suspension:complete(wrap, ...)
  if self.core ~= nil and not self:claim() then return end
  if self.state ~= "waiting" or self.nacks then
    synchronize(self, wrap)
  else
    self.state = "synchronized"
  end
  self.wrap = wrap
  local n = select("#", ...)
  if n == 1 then
    self.nv, self.v1 = 1, ...
  elseif n == 0 then
    self.nv = 0
  else
    self.nv, self.vals = -1, pack(...)
  end
  self.sched:schedule(self)
end

-- abort(wrap): cancellation (fiber.lua's cancel_all): the fiber resumes
-- next turn with wrap (which raises) unless it completed already. When a
-- channel op of the suspension won (claim() lost), its result is taken now
-- (M.complete_core, darksidesync.channel's completer) rather than when its
-- item comes: the fiber gets that op's value, never the error too.
function Suspension:abort(wrap)
  if self.state ~= "waiting" then return end
  if self.core ~= nil and not self:claim() then
    local take = M.complete_core
    if take then take(self) end
    return
  end
  self:complete(wrap)
end

-- complete_and_run(wrap, ...): resumes the fiber now.
function Suspension:complete_and_run(wrap, ...)
  if self.core ~= nil and not self:claim() then return end
  synchronize(self, wrap)
  -- A fiber that died meanwhile (on 5.1 a yield inside pcall fails and the
  -- fiber may go on and end) is not resumed.
  if self.fiber.alive then self.fiber:resume(wrap, ...) end
end

function Suspension:run()
  local f, nv = self.fiber, self.nv
  self.nv = nil -- run: free for reuse (see reusable_suspension)
  self[3] = nil
  if nv == 1 then
    local v = self.v1
    self.v1 = nil
    if f.alive then f:resume2(self.wrap, v) end
  elseif nv == 0 then
    if f.alive then f:resume(self.wrap) end
  else
    local v = self.vals
    self.vals = nil
    if f.alive then f:resume(self.wrap, unpack(v, 1, v.n)) end
  end
end

local CompleteTask = {}
CompleteTask.__index = CompleteTask

-- complete_task(wrap, ...): a task that completes the suspension when run,
-- if it is still waiting (for timers and other task sources).
function Suspension:complete_task(wrap, ...)
  return setmetatable({ suspension = self, wrap = wrap, vals = pack(...) }, CompleteTask)
end

function CompleteTask:run()
  local s = self.suspension
  if s:waiting() then
    local v = self.vals
    s:complete_and_run(self.wrap, unpack(v, 1, v.n))
  end
end

-- cancel([reason]): the waiting perform raises reason (default "cancelled").
function CompleteTask:cancel(reason)
  local s = self.suspension
  if s:waiting() then s:complete(error, reason or "cancelled", 0) end
end

M.new_suspension = new_suspension

-- reusable_suspension(sched, f): for the fast paths (channel get and put)
-- that register a suspension in exactly one queue, as that queue's entry
-- itself (s[1] == s; s[2] the wrap, s[3] a value), and whose completer
-- always takes the entry off the queue first: the fiber's suspension of
-- its last such block is used again once it has completed and run. One
-- still waiting (a yield that failed, inside pcall on 5.1) or not yet run
-- is left alone: a new one replaces it.
function M.reusable_suspension(sched, f)
  local s = f.rsusp
  if s == nil or s.state ~= "synchronized" or s.nv ~= nil then
    s = setmetatable({ state = "waiting", sched = sched, fiber = f }, Suspension)
    s[1] = s
    f.rsusp = s
    f.blocked = s
    return s
  end
  s.state = "waiting"
  s.sched = sched
  s.wrap = nil
  f.blocked = s
  return s
end

-- complete_core(s): set by darksidesync.channel: completes s with the
-- result of its channel op that completed (see abort).
M.complete_core = nil
M.identity = identity

-- Op kinds.

local BaseOp = {}
BaseOp.__index = BaseOp
local ChoiceOp = {}
ChoiceOp.__index = ChoiceOp
local GuardOp = {}
GuardOp.__index = GuardOp
local NackOp = {}
NackOp.__index = NackOp
local WrapOp = {}
WrapOp.__index = WrapOp
local DefaultOp = {}
DefaultOp.__index = DefaultOp

local function is_op(x)
  local mt = getmetatable(x)
  return mt == BaseOp or mt == ChoiceOp or mt == GuardOp or mt == NackOp or mt == WrapOp
end
M.is_op = is_op

local function check_op(x, i, fname)
  if not is_op(x) then
    if getmetatable(x) == DefaultOp then
      error("darksidesync.fibers: an op with a default cannot be part of another op", 3)
    end
    error("bad argument #" .. i .. " to '" .. fname .. "' (op expected, got " .. type(x) .. ")", 3)
  end
end

function M.new_base_op(wrap_fn, try_fn, block_fn)
  return setmetatable({ wrap_fn = wrap_fn or identity, try_fn = try_fn, block_fn = block_fn }, BaseOp)
end
M.new_primitive = M.new_base_op

-- choice(...): one of the ops, whichever is ready first.
function M.choice(...)
  local n = select("#", ...)
  if n == 1 then
    local op = ...
    check_op(op, 1, "choice")
    return op
  end
  local ops = {}
  for i = 1, n do
    local op = select(i, ...)
    check_op(op, i, "choice")
    if getmetatable(op) == ChoiceOp then
      for _, sub in ipairs(op.ops) do ops[#ops + 1] = sub end
    else
      ops[#ops + 1] = op
    end
  end
  return setmetatable({ ops = ops }, ChoiceOp)
end

-- guard(g): g() runs at each synchronisation and returns the op to use.
function M.guard(g)
  return setmetatable({ g = g }, GuardOp)
end

-- with_nack(g): g(nack_op) runs at each synchronisation and returns an op;
-- nack_op becomes ready if that op takes part and another one wins.
function M.with_nack(g)
  return setmetatable({ g = g }, NackOp)
end

function M.always(...)
  local vals = pack(...)
  return M.new_base_op(nil, function() return true, unpack(vals, 1, vals.n) end, nil)
end

function M.never()
  return M.new_base_op(nil, function() return false end, function() end)
end

-- default_op(): always ready, no value (older lua-fibers).
function M.default_op()
  return M.always()
end

-- new_cond(): a one-shot condition {wait_op = fn, signal = fn}.
function M.new_cond()
  local waitq = {}
  local c = {}
  local function try()
    return waitq == nil
  end
  local function block(s, wrap)
    waitq[#waitq + 1] = { s, wrap }
  end
  function c.wait_op()
    return M.new_base_op(nil, try, block)
  end
  function c.signal()
    local q = waitq
    if q == nil then return end
    waitq = nil
    for i = 1, #q do
      local e = q[i]
      if e[1]:waiting() then e[1]:complete(e[2]) end
    end
  end
  return c
end

-- wrap(f): an op whose results are f(results...).
function BaseOp:wrap(f)
  local inner = self.wrap_fn
  return setmetatable({
    wrap_fn = function(...) return f(inner(...)) end,
    try_fn = self.try_fn,
    block_fn = self.block_fn,
  }, BaseOp)
end
local function wrap_node(self, f) return setmetatable({ op = self, f = f }, WrapOp) end
ChoiceOp.wrap = wrap_node
GuardOp.wrap = wrap_node
NackOp.wrap = wrap_node
WrapOp.wrap = wrap_node

-- Instantiation: flattens an op tree into arms {op, outer, nackset}; outer
-- is a list of wrap functions, innermost first.

local function apply_outer(outer, ...)
  if outer == nil then return ... end
  return apply_outer(outer.next, outer.f(...))
end

local function collect(op, outer, nackset, arms, nacks)
  local mt = getmetatable(op)
  if mt == BaseOp then
    arms[#arms + 1] = { op = op, outer = outer, nackset = nackset }
  elseif mt == ChoiceOp then
    for _, sub in ipairs(op.ops) do collect(sub, outer, nackset, arms, nacks) end
  elseif mt == WrapOp then
    collect(op.op, { f = op.f, next = outer }, nackset, arms, nacks)
  elseif mt == GuardOp then
    local inner = op.g()
    if not is_op(inner) then error("darksidesync.fibers: guard function did not return an op", 0) end
    collect(inner, outer, nackset, arms, nacks)
  elseif mt == NackOp then
    local c = M.new_cond()
    nacks[#nacks + 1] = c
    local set = {}
    if nackset then for k in pairs(nackset) do set[k] = true end end
    set[c] = true
    local inner = op.g(c.wait_op())
    if not is_op(inner) then error("darksidesync.fibers: with_nack function did not return an op", 0) end
    collect(inner, outer, set, arms, nacks)
  else
    error("darksidesync.fibers: not an op", 0)
  end
end

local function fire_losers(nacks, arm)
  local keep = arm and arm.nackset
  for i = 1, #nacks do
    local c = nacks[i]
    if not (keep and keep[c]) then c.signal() end
  end
end

local function arm_result(arm, ...)
  return apply_outer(arm.outer, arm.op.wrap_fn(...))
end

-- The try pass over the arms, starting at a random one.
local function try_result(arms, nacks, n, start, k, arm, ok, ...)
  if ok then
    fire_losers(nacks, arm)
    return true, arm, ...
  end
  return M._try_from(arms, nacks, n, start, k + 1)
end

local function try_from(arms, nacks, n, start, k)
  if k > n then return false end
  local arm = arms[(start + k - 2) % n + 1]
  return try_result(arms, nacks, n, start, k, arm, arm.op.try_fn())
end
M._try_from = try_from

local function call_wrap(wrap, ...)
  return wrap(...)
end

local function block_arms(sched, f, arms, nacks)
  local s = new_suspension(sched, f)
  local by_wrap = (#nacks > 0) and {} or nil
  if by_wrap then s.nacks = { all = nacks, by_wrap = by_wrap } end
  for i = 1, #arms do
    local arm = arms[i]
    local bf = arm.op.block_fn
    if bf then
      local wrap
      if arm.outer == nil and by_wrap == nil then
        wrap = arm.op.wrap_fn
      else
        wrap = function(...) return arm_result(arm, ...) end
      end
      if by_wrap then by_wrap[wrap] = arm end
      bf(s, wrap)
    end
  end
end

local function instantiate(op)
  local arms, nacks = {}, {}
  collect(op, nil, nil, arms, nacks)
  return arms, nacks
end

local function after_try(arms, nacks, ok, arm, ...)
  if ok then return arm_result(arm, ...) end
  -- Cancelled (fiber.lua): suspend raises; no arm took part.
  if fiber.cancelled ~= nil then fire_losers(nacks, nil) end
  return call_wrap(fiber.suspend(block_arms, arms, nacks))
end

local function perform(op)
  local arms, nacks = instantiate(op)
  local n = #arms
  local start = n > 0 and random(n) or 1
  return after_try(arms, nacks, try_from(arms, nacks, n, start, 1))
end

-- Base op fast path.
local function base_block(sched, f, op)
  local s = new_suspension(sched, f)
  op.block_fn(s, op.wrap_fn)
end

-- An op without a block function never completes once its try failed:
-- a suspension nobody completes (but a cancellation).
local function block_forever(sched, f)
  new_suspension(sched, f)
end

local function base_after_try(op, ok, ...)
  if ok then return op.wrap_fn(...) end
  if op.block_fn == nil then
    return call_wrap(fiber.suspend(block_forever))
  end
  return call_wrap(fiber.suspend(base_block, op))
end

function BaseOp:perform()
  return base_after_try(self, self.try_fn())
end
ChoiceOp.perform = perform
GuardOp.perform = perform
NackOp.perform = perform
WrapOp.perform = perform

-- poll(): true, results... if some arm commits without blocking; else false.
local function poll_after(arms, nacks, ok, arm, ...)
  if ok then return true, arm_result(arm, ...) end
  fire_losers(nacks, nil)
  return false
end

local function poll(op)
  local arms, nacks = instantiate(op)
  local n = #arms
  local start = n > 0 and random(n) or 1
  return poll_after(arms, nacks, try_from(arms, nacks, n, start, 1))
end

-- perform_alt(f): as perform, but when no arm is ready, returns f() (or,
-- f being an op, f:perform()) instead of blocking.
local function alt_after(f, ok, ...)
  if ok then return ... end
  if is_op(f) or getmetatable(f) == DefaultOp then return f:perform() end
  return f()
end

local function perform_alt(op, f)
  if f == nil then error("bad argument #1 to 'perform_alt' (function or op expected, got nil)", 2) end
  return alt_after(f, poll(op))
end

-- default(f): an op-like value whose perform() is perform_alt(f).
local function default(op, f)
  return setmetatable({ op = op, f = f }, DefaultOp)
end

for _, K in ipairs { BaseOp, ChoiceOp, GuardOp, NackOp, WrapOp } do
  K.poll = poll
  K.perform_alt = perform_alt
  K.default = default
end

function DefaultOp:perform()
  return perform_alt(self.op, self.f)
end
function DefaultOp:wrap(g)
  local f = self.f
  return default(self.op:wrap(g), function() return g(f()) end)
end
DefaultOp.perform_alt = function(self, f) return perform_alt(self.op, f) end

-- perform(op): op:perform().
function M.perform(op)
  return op:perform()
end

return M
