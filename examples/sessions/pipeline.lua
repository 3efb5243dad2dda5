-- pipeline.lua -- three sessions connected by channels: a producer
-- counts, a filter keeps the odd numbers and squares them, a consumer
-- sums. Closing a channel ends the stage after it.
--
--   lua pipeline.lua [n]         prints the sum of the odd squares up to n
--                                (default 100)

local session = require "darksidesync.session"
local channel = require "darksidesync.channel"

local n = tonumber(arg and arg[1]) or 100
local numbers, squares = channel.new(8), channel.new(8)

local producer = session.spawn(function(out, count)
  for i = 1, count do out:put(i) end
  out:close()
end, numbers, n)

local filter = session.spawn(function(inp, out)
  while true do
    local v = inp:get()
    if v == nil then break end  -- closed: nothing more
    if v % 2 == 1 then out:put(v * v) end
  end
  out:close()
end, numbers, squares)

local consumer = session.spawn(function(inp)
  local sum, count = 0, 0
  while true do
    local v = inp:get()
    if v == nil then break end
    sum, count = sum + v, count + 1
  end
  return sum, count
end, squares)

producer:join()
filter:join()
local sum, count = consumer:join()
print(("%d odd squares up to %d, their sum: %d"):format(count, n, sum))
