-- parallel_map.lua -- a parallel map over a pool of sessions: each
-- element is handed to a session of its own (a Lua state, run on one of
-- a few OS threads); the results come back, copied, in order.
--
--   lua parallel_map.lua [n]     prints the sum of the squares of 1..n
--                                (default 20), counted by sessions

local session = require "darksidesync.session"

-- map(fn, list): fn (a function without upvalues) applied to every
-- element, each in its own session; the results in the list's order.
local function map(fn, list)
  local running = {}
  for i, v in ipairs(list) do running[i] = session.spawn(fn, v) end
  local out = {}
  for i, s in ipairs(running) do
    local r, err = s:join()
    if err then error(err, 0) end
    out[i] = r
  end
  return out
end

local n = tonumber(arg and arg[1]) or 20
local list = {}
for i = 1, n do list[i] = i end

session.pool { min = 1, max = 4 }
local squares = map(function(x) return x * x end, list)
local sum = 0
for _, v in ipairs(squares) do sum = sum + v end
print(("sum of the squares of 1..%d: %d"):format(n, sum))
print(("threads used at most: %d"):format(session.pool().peak))
