-- test_fibers_dss.lua -- darksidesync.fibers under main(), on the real
-- clock: items delivered by C threads (the test client) run as fibers,
-- a blocking item is answered from a fiber after a sleep, and no sleeper
-- wakes before its deadline. (No time is driven by hand in this file: a
-- hand-driven clock ahead of the real one would hold main()'s timers back.)

local dss = require "darksidesync"
local tc = require "testclient"
local fiber = require "darksidesync.fibers.fiber"
local fibers = require "darksidesync.fibers"
local sleep = require "darksidesync.fibers.sleep"
local channel = require "darksidesync.fibers.channel"

-- main_with_guard(f): fibers.main(f), stopped with a failure after 20 s.
local function main_with_guard(f)
  local timed_out = false
  fiber.spawn(function() sleep.sleep(20 * (tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1)); timed_out = true; fiber.stop() end)
  fibers.main(f)
  ok(not timed_out, "finished before the guard's 20 s")
end

test("items from a C thread run as fibers: each callback in its own fiber, with its arguments", function()
  fresh()
  local results = channel.new(10)
  tc.setcallback(function(lib, pid, seq)
    ok(fiber.current_fiber() ~= nil, "in a fiber")
    sleep.sleep(0.01 * (4 - seq)) -- later items finish first: each runs on its own
    results:put(lib .. "/" .. pid .. "/" .. seq)
  end)
  local pid = tc.start { items = 3 }
  local got = {}
  main_with_guard(function()
    for i = 1, 3 do got[i] = results:get() end
    fiber.stop()
  end)
  ok(tc.join(), "join")
  eq(table.concat(got, " "), "1/" .. pid .. "/3 1/" .. pid .. "/2 1/" .. pid .. "/1")
  eq(dss.queuesize(), 0, "drained")
end)

test("main() sleeps in darksidesync.wait: an item delivered later wakes it", function()
  fresh()
  local got
  tc.setcallback(function(_, _, seq) got = seq; fiber.stop() end)
  local t0 = dss.monotime()
  tc.start { items = 1, delay = 50 }
  main_with_guard(nil)
  ok(tc.join(), "join")
  eq(got, 1)
  ok(dss.monotime() - t0 < 5, "woken by the item, not by a 10 s maxsleep")
end)

test("a blocking item answered from a fiber after a sleep: the producer gets the answer", function()
  fresh()
  local answered
  tc.setcallback(function(wt, _, pid, seq)
    sleep.sleep(0.02)
    answered = pack(wt(pid * 1000 + seq))
    fiber.stop()
  end)
  tc.start { blocking = true }
  main_with_guard(nil)
  ok(tc.join(), "join")
  eq(answered[1], "ack", "the return callback's result")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }
end)

test("many blocking items from several threads, each answered by its fiber after a channel round trip", function()
  fresh()
  local ch = channel.new()
  local done = 0
  tc.setcallback(function(wt, _, pid, seq)
    local reply = channel.new()
    ch:put({ pid * 1000 + seq, reply })
    wt(reply:get())
    done = done + 1
    if done == 40 then fiber.stop() end
  end)
  fiber.spawn(function() while true do local m = ch:get(); m[2]:put(m[1]) end end) -- an echo fiber
  tc.start { blocking = true, threads = 4, items = 10 }
  main_with_guard(nil)
  ok(tc.join(), "join")
  tc.check { threads = 4, completed = 4, attempts = 40, delivered = 40, released = 40, decoded = 40,
             returned = 40, answers_ok = 40, ended = 40 }
end)

test("a callback's error is reported with its traceback and ends only its fiber", function()
  fresh()
  local errs = {}
  fiber.set_error_handler(function(_, tb) errs[#errs + 1] = tb end)
  local n = 0
  tc.setcallback(function(_, _, seq)
    if seq == 1 then error("item one failed") end
    n = n + 1
    fiber.stop()
  end)
  tc.start { items = 2 }
  main_with_guard(nil)
  fiber.set_error_handler(nil)
  ok(tc.join(), "join")
  eq(n, 1, "the second item ran")
  eq(#errs, 1)
  ok(errs[1]:match("item one failed") and errs[1]:match("stack traceback"), errs[1])
end)

test("a decoder's error goes to the error handler; the loop goes on", function()
  fresh()
  local errs = {}
  fiber.set_error_handler(function(e) errs[#errs + 1] = tostring(e) end)
  tc.start { items = 1, decoder = "error" }
  ok(tc.join(), "join")
  local ran = false
  tc.setcallback(function() ran = true; fiber.stop() end)
  tc.start { items = 1 }
  main_with_guard(nil)
  fiber.set_error_handler(nil)
  ok(tc.join(), "join")
  eq(#errs, 1, "one decoder error")
  ok(ran, "the next item ran")
end)

test("under main(), by the real clock: no sleeper wakes before its deadline", function()
  local early, woke = {}, 0
  local N = 40
  math.randomseed(7)
  for i = 1, N do
    local dt = math.random() * 0.05
    fiber.spawn(function()
      local t0 = dss.monotime()
      if i % 2 == 0 then sleep.sleep(dt) else sleep.sleep_until(t0 + dt) end
      local t1 = dss.monotime()
      if t1 < t0 + dt then early[#early + 1] = string.format("%d: %.6f < %.6f", i, t1, t0 + dt) end
      woke = woke + 1
      if woke == N then fiber.stop() end
    end)
  end
  fiber.main()
  eq(woke, N, "all woke")
  eq(table.concat(early, "; "), "", "woke early")
end)
