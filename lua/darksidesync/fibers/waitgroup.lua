-- darksidesync.fibers.waitgroup -- Go-style wait groups, reusable: each
-- time the counter rises from 0 a new generation starts. See docs/fibers.md.

local op = require "darksidesync.fibers.op"

local M = {}

local WaitGroup = {}
WaitGroup.__index = WaitGroup

function M.new()
  return setmetatable({ _counter = 0, _cond = nil }, WaitGroup)
end

-- add(n): raises "waitgroup counter goes negative" (counter unchanged)
-- if it would go below 0; reaching 0 wakes every waiter.
function WaitGroup:add(n)
  if type(n) ~= "number" then
    error("bad argument #1 to 'add' (number expected, got " .. type(n) .. ")", 2)
  end
  local c = self._counter + n
  if c < 0 then error("waitgroup counter goes negative", 2) end
  local was = self._counter
  self._counter = c
  if was == 0 and c > 0 then
    self._cond = op.new_cond()
  elseif c == 0 and self._cond then
    local cond = self._cond
    self._cond = nil
    cond.signal()
  end
end

function WaitGroup:done()
  self:add(-1)
end

function WaitGroup:wait_op()
  return op.guard(function()
    if self._counter == 0 then return op.always() end
    return self._cond.wait_op()
  end)
end
WaitGroup.wait_operation = WaitGroup.wait_op

function WaitGroup:wait()
  self:wait_op():perform()
end

return M
