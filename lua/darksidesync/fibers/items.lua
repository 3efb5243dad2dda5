-- darksidesync.fibers.items -- for fibers that drain darksidesync's queue
-- by hand: an op that completes when the queue is non-empty, and the switch
-- of the automatic draining (the task source of darksidesync.fibers.fiber
-- that runs each queued item's callback in a fiber of its own). See
-- docs/fibers.md.

local dss = require "darksidesync"
local fiber = require "darksidesync.fibers.fiber"
local op = require "darksidesync.fibers.op"

local M = {}

local source = fiber.dss_source
local queuesize = dss.queuesize

local function try()
  local n = queuesize()
  if n > 0 then return true, n end
  return false
end

local function block(s, wrap)
  source.add_waiter(s, wrap)
end

-- ready_op(): an op that completes with darksidesync.queuesize() once it
-- is > 0: at once if it is, else in the first turn that starts with items
-- queued (main() sleeps in darksidesync.wait, so a C thread's delivery
-- wakes it). It takes no item: drain with darksidesync.poll() or dispatch().
function M.ready_op()
  return op.new_base_op(nil, try, block)
end

-- ready(): ready_op():perform(); the queue size.
function M.ready()
  return M.ready_op():perform()
end

-- set_auto(flag): the automatic draining on (true, the default) or off.
-- While it is off the task source never polls: queued items wait for a
-- fiber to drain them. Returns the previous setting.
function M.set_auto(flag)
  local prev = source.auto
  source.auto = not not flag
  return prev
end

-- get_auto(): the current setting.
function M.get_auto()
  return source.auto
end

return M
