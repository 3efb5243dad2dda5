-- darksidesync.fibers.cond -- one-shot conditions: once signalled, every
-- waiter (now and later) goes on. See docs/fibers.md.

local op = require "darksidesync.fibers.op"

local M = {}

local Cond = {}
Cond.__index = Cond

function M.new()
  return setmetatable({ c = op.new_cond() }, Cond)
end

function Cond:wait_op()
  return self.c.wait_op()
end
Cond.wait_operation = Cond.wait_op

function Cond:wait()
  self.c.wait_op():perform()
end

-- signal(): wakes every waiter (next turn); later calls do nothing.
function Cond:signal()
  self.c.signal()
end

return M
