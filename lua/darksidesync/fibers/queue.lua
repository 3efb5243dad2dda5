-- darksidesync.fibers.queue -- FIFO queues of non-nil values, bounded or
-- not: a buffered channel (no service fiber). See docs/fibers.md.

local channel = require "darksidesync.fibers.channel"

local M = {}

local Queue = {}
Queue.__index = Queue

-- new([bound]): bound >= 1, or none: unbounded.
function M.new(bound)
  if bound ~= nil and (type(bound) ~= "number" or bound < 1 or (bound ~= math.huge and bound % 1 ~= 0)) then
    error("bad argument #1 to 'new' (integer >= 1 expected)", 2)
  end
  return setmetatable({ ch = channel.new(bound or math.huge) }, Queue)
end

function Queue:put_op(x)
  if x == nil then error("bad argument #1 to 'put_op' (value expected, got nil)", 2) end
  return self.ch:put_op(x)
end

function Queue:get_op()
  return self.ch:get_op()
end

Queue.put_operation = Queue.put_op
Queue.get_operation = Queue.get_op

function Queue:put(x)
  if x == nil then error("bad argument #1 to 'put' (value expected, got nil)", 2) end
  self.ch:put_op(x):perform()
end

function Queue:get()
  return self.ch:get_op():perform()
end

return M
