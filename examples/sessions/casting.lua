-- casting.lua -- casting's seed system running on darksidesync
-- (darksidesync.casting): two sessions sharing two threads, three producer
-- tasks in one and two worker tasks in the other, talking over channels; a
-- Message carries the workers' settings; a failing task's error is
-- reported by wait.
--
--   lua casting.lua [n]          each producer sends n jobs (default 100)

local casting = require "darksidesync.casting"
local Session, Channel, Message = casting.Session, casting.Channel, casting.Message

local n = tonumber(arg and arg[1]) or 100
Session.set_threads(1, 2)

local producers, workers = Session.new(), Session.new()
local jobs = Channel.new(4)       -- buffered: a producer waits when 4 are queued
local results = Channel.new(-1)   -- unbounded
local settings = Message.new({ scale = 3 }, "3 * i^2")

for p = 1, 3 do
  producers:create(function(out, p, n)
    for i = 1, n do out:write(p, i) end
  end, jobs, p, n)
end

for _ = 1, 2 do
  workers:create(function(inp, out, msg)
    local cfg, what = msg:decode()
    local sum, count = 0, 0
    while true do
      local p, i = inp:read()       -- suspends this task, not the session
      if p == nil then break end    -- nil, "closed": no more jobs
      sum, count = sum + cfg.scale * i * i, count + 1
    end
    out:write(sum, count, what)
  end, jobs, results, settings)
end

workers:create(function() error("no such job") end)

producers:wait()                    -- every job is written
jobs:close()                        -- the workers' reads end
local ok, err = pcall(workers.wait, workers)
print("workers:wait() raised: " .. (ok and "nothing" or err:match("no such job")))

local total, count, what = 0, 0, nil
for _ = 1, 2 do
  local s, c, w = results:read()
  total, count, what = total + s, count + c, w
end
print(("%d jobs from 3 producers, the sum of %s: %d"):format(count, what, total))
producers:close()
workers:close()
