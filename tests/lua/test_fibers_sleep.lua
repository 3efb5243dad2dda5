-- test_fibers_sleep.lua -- darksidesync.fibers.sleep: deadlines on the
-- scheduler's clock (driven by hand with run(t)), and on the real clock
-- under main(): a sleeper never wakes before its deadline.

local dss = require "darksidesync"
local fiber = require "darksidesync.fibers.fiber"
local sleep = require "darksidesync.fibers.sleep"
local op = require "darksidesync.fibers.op"
local channel = require "darksidesync.fibers.channel"
local S = fiber.current_scheduler

test("sleep(0) and sleep(-1), sleep_until(past): return at once, even outside a fiber", function()
  sleep.sleep(0)
  sleep.sleep(-1)
  sleep.sleep_until(S:now() - 10)
  eq(sleep.sleep_op(0):poll(), true)
  eq(sleep.sleep_op(0.5):poll(), false)
end)

test("sleep_until: wakes in the first turn whose time reaches the deadline, not before", function()
  local base = S:time() + 100
  local woke
  fiber.spawn(function() sleep.sleep_until(base + 1); woke = fiber.now() end)
  S:run()
  eq(woke, nil, "asleep")
  S:run(base + 0.999)
  eq(woke, nil, "not before")
  S:run(base + 1)
  eq(woke, base + 1, "woke in the turn at its deadline")
end)

test("sleep(dt): counted from the later of now() and the real clock", function()
  local start, woke
  fiber.spawn(function() start = S:time(); sleep.sleep(2); woke = fiber.now() end)
  S:run()
  ok(start, "started")
  S:run(start + 1.9)
  eq(woke, nil, "not before dt")
  S:run(S:time() + 2.1)
  ok(woke and woke >= start + 2, "woke after dt")
end)

test("10 000 sleepers wake in deadline order, each in the first turn at or after its deadline", function()
  local base = S:time() + 1000
  local N = 10000
  local order, late, early = {}, 0, 0
  local prev_t = base
  math.randomseed(42)
  for i = 1, N do
    local d = base + math.random() -- deadlines in (base, base + 1)
    fiber.spawn(function()
      sleep.sleep_until(d)
      local now = fiber.now()
      if now < d then early = early + 1 end
      if now - 0.01 >= d + 1e-9 then late = late + 1 end
      order[#order + 1] = d
    end)
  end
  S:run()
  eq(#order, 0, "all asleep")
  for k = 1, 101 do
    prev_t = base + k * 0.01
    S:run(prev_t)
  end
  eq(#order, N, "all woke")
  eq(early, 0, "woke early")
  eq(late, 0, "woke a step late")
  for i = 2, N do
    if order[i] < order[i - 1] then error("out of order at " .. i) end
  end
end)

test("sleepers with the same deadline wake in the order they slept", function()
  local t = S:time() + 5000
  local log = {}
  for i = 1, 5 do fiber.spawn(function() sleep.sleep_until(t); log[#log + 1] = i end) end
  S:run()
  S:run(t)
  eq(table.concat(log, ","), "1,2,3,4,5")
end)

test("choice of a channel get and a sleep: the timeout wins when nothing comes, the get when it does", function()
  local ch = channel.new()
  local r1, r2
  fiber.spawn(function()
    r1 = op.choice(ch:get_op(), sleep.sleep_op(1):wrap(function() return "timeout" end)):perform()
    r2 = op.choice(ch:get_op(), sleep.sleep_op(1):wrap(function() return "timeout" end)):perform()
  end)
  S:run()
  S:run(S:time() + 1.5)
  eq(r1, "timeout")
  S:run()
  ch:put("v")
  S:run()
  eq(r2, "v")
  -- the losing timer fires later and does nothing
  S:run(S:time() + 2)
  eq(r2, "v")
end)

