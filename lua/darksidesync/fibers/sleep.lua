-- darksidesync.fibers.sleep -- sleeping ops. A sleeper never wakes before
-- its deadline: sleep(dt) counts dt from the later of the scheduler's clock
-- and the real monotonic clock. See docs/fibers.md.

local op = require "darksidesync.fibers.op"
local fiber = require "darksidesync.fibers.fiber"

local M = {}

-- sleep_until_op(t): ready once the scheduler's clock has reached t.
function M.sleep_until_op(t)
  local function try()
    return t <= fiber.current_scheduler:time()
  end
  local function block(s, wrap)
    s.sched:schedule_at_time(t, s:complete_task(wrap))
  end
  return op.new_base_op(nil, try, block)
end

-- sleep_op(dt): ready dt seconds after it is performed.
function M.sleep_op(dt)
  local function try()
    return dt <= 0
  end
  local function block(s, wrap)
    s.sched:schedule_after_sleep(dt, s:complete_task(wrap))
  end
  return op.new_base_op(nil, try, block)
end

-- sleep(dt) and sleep_until(t): the ops' perform, without building them:
-- the same try, then one timer entry that resumes the fiber.
local co_yield, co_running = coroutine.yield, coroutine.running
local SUSPENDED = fiber.SUSPENDED

local function blockable()
  local f = fiber.current_fiber()
  if f ~= nil and co_running() == f.coroutine then return f end
  return nil
end

-- The timer entry is what the fiber waits on (`blocked`, for a
-- cancellation: fiber.lua), which resumes it with a function that raises.
local function sleep_on(sched, t, f)
  local c = fiber.cancelled
  if c ~= nil then error(c, 0) end
  f.blocked = sched:resume_at(t, f)
  local w = co_yield(SUSPENDED)
  if w ~= nil then w() end
end

function M.sleep(dt)
  if dt <= 0 then return end
  local f = blockable()
  if f == nil then return M.sleep_op(dt):perform() end
  local sched = fiber.current_scheduler
  sleep_on(sched, sched:time() + dt, f)
end

function M.sleep_until(t)
  local sched = fiber.current_scheduler
  if t <= sched:time() then return end
  local f = blockable()
  if f == nil then return M.sleep_until_op(t):perform() end
  sleep_on(sched, t, f)
end

return M
