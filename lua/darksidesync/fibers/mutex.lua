-- darksidesync.fibers.mutex -- a mutex for fibers; waiters get it in FIFO
-- order. No owner is tracked. See docs/fibers.md.

local op = require "darksidesync.fibers.op"

local M = {}

local Mutex = {}
Mutex.__index = Mutex

function M.new()
  return setmetatable({ locked = false, waiters = { h = 1, t = 0 } }, Mutex)
end

function Mutex:lock_op()
  local m = self
  local function try()
    if m.locked then return false end
    m.locked = true
    return true
  end
  local function block(s, wrap)
    local q = m.waiters
    q.t = q.t + 1
    q[q.t] = { s, wrap }
  end
  return op.new_base_op(nil, try, block)
end
Mutex.lock_operation = Mutex.lock_op

function Mutex:lock()
  self:lock_op():perform()
end

-- unlock(): hands the mutex to the oldest waiter, if any. Raises
-- "unlock of an unlocked mutex" when it is not locked.
function Mutex:unlock()
  if not self.locked then error("unlock of an unlocked mutex", 2) end
  local q = self.waiters
  while q.h <= q.t do
    local e = q[q.h]
    q[q.h] = nil
    q.h = q.h + 1
    if e[1]:claim() then
      e[1]:complete(e[2]) -- stays locked: it is the waiter's now
      return
    end
  end
  self.locked = false
end

function Mutex:unlock_op()
  local m = self
  return op.new_base_op(nil, function() m:unlock(); return true end, nil)
end
Mutex.unlock_operation = Mutex.unlock_op

-- trylock(): true if it took the mutex, false if it is held (never blocks).
function Mutex:trylock()
  return self:lock_op():wrap(function() return true end):perform_alt(function() return false end)
end

return M
