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

function M.sleep(dt)
  M.sleep_op(dt):perform()
end

function M.sleep_until(t)
  M.sleep_until_op(t):perform()
end

return M
