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

function Fiber:resume(...)
  if not self.alive then error("dead fiber", 2) end
  local saved = current_fiber
  current_fiber = self
  local ok, err = co_resume(self.coroutine, ...)
  current_fiber = saved
  if not ok then
    self.alive = false
    local tb = debug.traceback(self.coroutine, tostring(err))
    self.traceback = tb
    if stop_on_error then
      if first_error == nil then first_error = tb end
      M.current_scheduler:stop()
    end
    error_handler(err, tb, self)
  elseif co_status(self.coroutine) == "dead" then
    self.alive = false
  end
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
  if select("#", ...) == 0 and type(fn) == "function" then
    co = co_create(fn)
  else
    local args = pack(...)
    co = co_create(function() return fn(unpack(args, 1, args.n)) end)
  end
  M.current_scheduler:schedule(setmetatable({ coroutine = co, alive = true }, Fiber))
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
  block_fn(M.current_scheduler, f, ...)
  return co_yield()
end

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
local ok_dss, dss = pcall(require, "darksidesync")
if ok_dss and type(dss) == "table" and dss.poll then
  local source = { max = 1000 }
  function source.schedule_tasks(self, _, _)
    local poll = dss.poll
    for _ = 1, self.max do
      local ok, n, cb, args = pcall(poll)
      if not ok then
        -- A client's decoder raised: the item has ended; report it like a
        -- fiber's error.
        local tb = debug.traceback(tostring(n), 1)
        error_handler(n, tb, nil)
      elseif n == -1 then
        return
      elseif cb ~= nil then
        M.spawn(cb, unpack(args))
        if n == 0 then return end
      elseif n == 0 then
        return
      end
    end
  end
  function source.wait_for_events(_, _, _, timeout)
    if dss.queuesize() == 0 then dss.wait(timeout) end
  end
  function source.cancel_all_tasks() end
  M.dss_source = source
  M.current_scheduler:add_task_source(source)
end

return M
