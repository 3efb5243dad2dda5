-- darksidesync.fibers.fiber -- fibers (coroutines run by the scheduler),
-- the one global scheduler, and the task source that turns darksidesync's
-- queued items into fibers. See docs/fibers.md.

local sched = require "darksidesync.fibers.sched"

local M = {}

local unpack = unpack or table.unpack
local pack = table.pack or function(...) return { n = select("#", ...), ... } end
local co_create, co_resume, co_yield, co_status, co_running =
  coroutine.create, coroutine.resume, coroutine.yield, coroutine.status, coroutine.running

M.current_scheduler = sched.new()

local current_fiber = nil

-- Errors: the handler gets (err, traceback, fiber). The default writes the
-- traceback to stderr. With stop_on_error, the scheduler stops too and
-- fibers.main / fiber.main raise the first such error.
local function default_handler(_, tb)
  io.stderr:write("darksidesync.fibers: error in fiber: ", tb, "\n")
end
local error_handler = default_handler
local stop_on_error = false
local first_error = nil

-- set_error_handler([f]): f(err, traceback, fiber) is called for an error
-- that ends a fiber; nil restores the default. Returns the previous handler.
function M.set_error_handler(f)
  if f ~= nil and type(f) ~= "function" then
    error("bad argument #1 to 'set_error_handler' (function or nil expected, got " .. type(f) .. ")", 2)
  end
  local prev = error_handler
  error_handler = f or default_handler
  if prev == default_handler then return nil end
  return prev
end

-- set_stop_on_error(flag): when true, an error that ends a fiber also stops
-- the scheduler (after the handler ran), and main() raises it.
function M.set_stop_on_error(flag)
  stop_on_error = not not flag
end

local Fiber = {}
Fiber.__index = Fiber

-- What suspend yields: a fiber that yielded it is not dead, without asking
-- coroutine.status.
local SUSPENDED = {}
-- What a fiber's coroutine yields when the fiber's function has returned:
-- the coroutine goes back to a pool, for a later spawn (creating one costs
-- more than the rest of a spawn).
local DONE = {}
local pool, npool, POOL_MAX = {}, 0, 1024

-- A pooled coroutine's body: runs the function of the fiber it is resumed
-- with, then yields DONE and waits for the next fiber. Nothing of a fiber
-- stays referenced from the stack while pooled.
local function body(f)
  while true do
    local fn, args = f.fn, f.args
    f.fn, f.args, f = nil, nil, nil
    if args == nil then fn() else fn(unpack(args, 1, args.n)) end
    fn, args = nil, nil
    f = co_yield(DONE)
  end
end

-- The fibers alive, as a set, once track_fibers() ran (a session's boot):
-- what cancel_all walks. nil (no tracking) elsewhere.
local live = nil

-- After a resume that did not end in SUSPENDED: the fiber finished (its
-- coroutine back to the pool), ended, or died of an error.
local function resumed(self, co, ok, err)
  if ok then
    if err == DONE then
      self.alive = false
      if live then live[self] = nil end
      if npool < POOL_MAX then
        npool = npool + 1
        pool[npool] = co
      end
    elseif err ~= SUSPENDED and co_status(co) == "dead" then
      self.alive = false
      if live then live[self] = nil end
    end
    return
  end
  self.alive = false
  if live then live[self] = nil end
  local tb = debug.traceback(co, tostring(err))
  self.traceback = tb
  if stop_on_error then
    if first_error == nil then first_error = tb end
    M.current_scheduler:stop()
  end
  error_handler(err, tb, self)
end

function Fiber:resume(...)
  if not self.alive then error("dead fiber", 2) end
  local saved = current_fiber
  current_fiber = self
  local co = self.coroutine
  local ok, err
  if self.fn == nil then
    ok, err = co_resume(co, ...)
  else -- first run: the body takes the function from self
    ok, err = co_resume(co, self)
  end
  current_fiber = saved
  if ok and err == SUSPENDED then return end
  resumed(self, co, ok, err)
end

-- resume2(a, b): resume(a, b) of a started fiber, without varargs (the
-- completion of a suspension with one value, op.lua).
function Fiber:resume2(a, b)
  if not self.alive then error("dead fiber", 2) end
  local saved = current_fiber
  current_fiber = self
  local co = self.coroutine
  local ok, err = co_resume(co, a, b)
  current_fiber = saved
  if ok and err == SUSPENDED then return end
  resumed(self, co, ok, err)
end
Fiber.run = Fiber.resume

function Fiber:get_traceback()
  return self.traceback or debug.traceback(self.coroutine)
end

-- spawn(fn, ...): a new fiber running fn(...), first resumed next turn.
function M.spawn(fn, ...)
  if type(fn) ~= "function" and not (getmetatable(fn) or {}).__call then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  local co
  if npool > 0 then
    co = pool[npool]
    pool[npool] = nil
    npool = npool - 1
  else
    co = co_create(body)
  end
  -- (blocked: set when it blocks, fiber.lua's cancellation; present from
  -- the start, so that setting it never grows the table.)
  local f = setmetatable({ coroutine = co, alive = true, fn = fn, blocked = false }, Fiber)
  if select("#", ...) > 0 then f.args = pack(...) end
  if live then live[f] = true end
  M.current_scheduler:schedule(f)
end

function M.current_fiber()
  return current_fiber
end

-- suspend(block_fn, ...): block_fn(scheduler, fiber, ...) must arrange for
-- the fiber to be resumed; returns what it is resumed with.
function M.suspend(block_fn, ...)
  local f = current_fiber
  if f == nil then error("darksidesync.fibers: cannot block outside a fiber", 2) end
  if co_running() ~= f.coroutine then
    error("darksidesync.fibers: cannot block in a coroutine inside a fiber", 2)
  end
  local c = M.cancelled
  if c ~= nil then error(c, 0) end
  block_fn(M.current_scheduler, f, ...)
  return co_yield(SUSPENDED)
end

-- Cancellation (darksidesync.session's cancel; see docs/sessions.md).
--
-- A blocked fiber records what it waits on in its field `blocked`: the
-- suspension of its op (op.lua; the reusable one of channel.lua's fast
-- path), or the timer entry of a plain sleep (sched.lua's Wake). Each has
-- abort(wrap, sched): when it still waits, it stops waiting and the fiber
-- is resumed next turn with wrap, which its perform calls (and which
-- raises); a stale one (completed, fired) does nothing. A suspension with
-- channel arms whose channel op completed first (op.lua's claim() lost)
-- takes that op's result instead: the fiber gets the value, not the error.

-- M.cancelled: nil, or the error that every blocking op of this state
-- raises from now on (at once: a fiber that catches it cannot block
-- again). Read by the fast paths that block without suspend().
M.cancelled = nil

-- track_fibers(): from now on, spawned fibers are counted as alive, for
-- cancel_all. Call it before the first spawn.
function M.track_fibers()
  if live == nil then live = setmetatable({}, { __mode = "k" }) end
end

-- cancel_all(err): every later blocking op raises err at once (err: a
-- string, raised without position), and every tracked fiber blocked in an
-- op is resumed in the next turn with err raised from its perform.
function M.cancel_all(err)
  if M.cancelled ~= nil then return end
  M.cancelled = err
  local function raise() error(err, 0) end
  local sched = M.current_scheduler
  if live == nil then return end
  -- (abort only schedules: no fiber runs, and live does not change, here.)
  for f in pairs(live) do
    local b = f.blocked
    if b and f.alive then b:abort(raise, sched) end
  end
end

-- SUSPENDED: what a fiber yields when it blocks (for fast paths that block
-- without suspend(), see channel.lua).
M.SUSPENDED = SUSPENDED

local function reschedule(s, f) s:schedule(f) end

-- yield(): continue on the next turn.
function M.yield()
  return M.suspend(reschedule)
end

function M.now()
  return M.current_scheduler:now()
end

function M.stop()
  M.current_scheduler:stop()
end

-- main(): runs the scheduler until stop(). With stop_on_error, raises the
-- error (with its traceback) that stopped it.
function M.main()
  first_error = nil
  M.current_scheduler:main()
  local e = first_error
  first_error = nil
  if e ~= nil then error(e, 0) end
end

-- The darksidesync task source: every turn, each queued item's callback
-- runs in its own fiber, callback(unpack(args)); main() sleeps in
-- darksidesync.wait, so an item delivered by a C thread wakes it.
-- It also completes the waiters of darksidesync.fibers.items' ready_op when
-- the queue is non-empty; with auto off (items.set_auto(false)) it only
-- does that, and never polls.
local ok_dss, dss = pcall(require, "darksidesync")
if ok_dss and type(dss) == "table" and dss.poll then
  -- direct[cb]: callbacks run at once, not in a fiber of their own: they
  -- never block (darksidesync.channel's completer only completes a
  -- suspension).
  local direct = setmetatable({}, { __mode = "k" })
  local source = { max = 1000, auto = true, direct = direct }
  local queuesize = dss.queuesize
  -- Waiters of ready_op: {suspension, wrap}; stale ones (another arm of a
  -- choice won) are skipped, and pruned when the list doubles.
  local waiters, nwaiters, prune_at = {}, 0, 16
  local function wake_waiters(n)
    local w, count = waiters, nwaiters
    waiters, nwaiters, prune_at = {}, 0, 16
    for i = 1, count do
      local e = w[i]
      if e[1]:waiting() then e[1]:complete(e[2], n) end
    end
  end
  function source.schedule_tasks(self, _, _)
    local n = queuesize()
    if n == 0 then return end -- cheaper than a poll of nothing
    if nwaiters > 0 then wake_waiters(n) end
    if not self.auto then return end
    local poll = dss.poll
    for _ = 1, self.max do
      local ok, left, cb, args = pcall(poll)
      if not ok then
        -- A client's decoder raised: the item has ended; report it like a
        -- fiber's error.
        local tb = debug.traceback(tostring(left), 1)
        error_handler(left, tb, nil)
      elseif left == -1 then
        return
      elseif cb ~= nil then
        if direct[cb] then
          local okd, err = pcall(cb, unpack(args))
          if not okd then error_handler(err, debug.traceback(tostring(err), 1), nil) end
        else
          M.spawn(cb, unpack(args))
        end
        if left == 0 then return end
      elseif left == 0 then
        return
      end
    end
  end
  -- wants_items(): whether queued items should wake the scheduler: when
  -- draining automatically, or when a fiber waits in items.ready_op.
  function source.wants_items()
    return source.auto or nwaiters > 0
  end
  function source.wait_for_events(_, _, _, timeout)
    if queuesize() == 0 then
      dss.wait(timeout)
    elseif not source.wants_items() and timeout > 0 then
      -- Items queued that nobody drains yet: they must not end the sleep
      -- at once, turn after turn. Sleep in a poller without the hub's fd.
      local p = source.idle_poller
      if not p then
        p = assert(dss.poller())
        source.idle_poller = p
      end
      p:wait(timeout)
    end
  end
  function source.cancel_all_tasks() end
  -- add_waiter(s, wrap): s:complete(wrap, queuesize()) in the first turn
  -- that starts with the queue non-empty (darksidesync.fibers.items).
  function source.add_waiter(s, wrap)
    if nwaiters >= prune_at then
      local live = {}
      for i = 1, nwaiters do
        local e = waiters[i]
        if e[1]:waiting() then live[#live + 1] = e end
      end
      waiters, nwaiters = live, #live
      prune_at = 2 * nwaiters + 16
    end
    nwaiters = nwaiters + 1
    waiters[nwaiters] = { s, wrap }
  end
  M.dss_source = source
  M.current_scheduler:add_task_source(source)
end

return M
