-- test_timeout.lua -- deliver2's timeout for blocking items, and
-- DSS_ERR_CANCELLED: a timed-out item still queued is ended on the producer's
-- thread by decode(NULL) (and leaves the queue); one pending on the Lua side
-- by ret(NULL), its waiting-thread callback spent; a decoder or return
-- callback running at the deadline is waited for; unreg and lua_close give
-- CANCELLED where 1v0 gives SUCCESS; stats().timedout.
-- include/darksidesync_api.h "API 2v0", docs/lua-api.md "Beyond 1.0".

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, TIMEOUT, CANCELLED = -100, -109, -111

local function expected(args) return args[3] * 1000 + args[4] end

local function timedout() return dss.stats().timedout end

test("a blocking item still queued at the deadline: TIMEOUT, decode(NULL) on the producer's thread, the queue shrinks", function()
  fresh()
  local before = timedout()
  tc.start { api = 2, blocking = true, timeout = scaled(50) }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 0, "queuesize")
  eq(dss.poll(), -1, "nothing to poll")
  eq(timedout() - before, 1, "stats timedout")
  eq(dss.stats().blocked, 0, "stats blocked")
  tc.check { threads = 1, stopped = 1, attempts = 1, timeout = 1, timedout_queued = 1, ended = 1 }
end)

test("several producers time out while queued, each item ended once on its own thread", function()
  fresh()
  local before = timedout()
  local fd = dss.getfd()
  tc.start { api = 2, blocking = true, timeout = scaled(30), threads = 3, items = 2, keepgoing = true }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 0, "queuesize")
  eq(tc.readable(fd), false, "the wake-up fd was reset with the queue empty")
  eq(timedout() - before, 6, "stats timedout")
  tc.check { threads = 3, completed = 3, attempts = 6, timeout = 6, timedout_queued = 6, ended = 6 }
end)

test("a timed-out item leaves the others in place", function()
  fresh()
  tc.setcallback(function() end)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
  tc.start { api = 2, blocking = true, timeout = scaled(30) }
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
  ok(tc.join(), "join")
  eq(dss.queuesize(), 2, "queuesize")
  eq(tc.queued(1), 2, "queued(utilid)")
  eq(dss.dispatch(), 2, "dispatch")
  tc.check { threads = 1, stopped = 1, attempts = 3, delivered = 2, decoded = 2, timeout = 1,
             timedout_queued = 1, ended = 3, allocated = 2, freed = 2 }
end)

test("a blocking item pending on the Lua side at the deadline: TIMEOUT, ret(NULL) on the producer's thread; the callback is spent", function()
  fresh()
  local before = timedout()
  -- The poll below must come before the deadline: a generous one.
  tc.start { api = 2, blocking = true, timeout = scaled(1000) }
  queued(1)
  local _, _, args = dss.poll()
  local wt = args[1]
  ok(tostring(wt):match("pending"), "pending")
  ok(tc.join(), "join: the producer timed out")
  eq(timedout() - before, 1, "stats timedout")
  ok(tostring(wt):match("done"), "done")
  eq(select("#", wt(expected(args))), 0, "a later call returns nothing")
  eq(select("#", wt()), 0, "and again")
  wt = nil
  args = nil
  collectgarbage()
  collectgarbage()
  tc.check { threads = 1, stopped = 1, attempts = 1, decoded = 1, timeout = 1, timedout_pending = 1,
             ended = 1 }
end)

test("answered before the deadline: SUCCESS with the answer", function()
  fresh()
  tc.start { api = 2, blocking = true, timeout = scaled(10000), items = 2 }
  for _ = 1, 2 do
    queued(1)
    local _, _, args = dss.poll()
    args[1](expected(args))
  end
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 2, delivered = 2, released = 2, decoded = 2,
             returned = 2, answers_ok = 2, ended = 2 }
end)

test("a negative timeout is no limit (DSS_TIMEOUT_INFINITE and others)", function()
  fresh()
  tc.start { api = 2, blocking = true, timeout = -1 }
  tc.start { api = 2, blocking = true, timeout = -1000 }
  queued(2)
  for _ = 1, 2 do
    local _, _, args = dss.poll()
    args[1](expected(args))
  end
  ok(tc.join(), "join")
  tc.check { threads = 2, completed = 2, attempts = 2, delivered = 2, released = 2, decoded = 2,
             returned = 2, answers_ok = 2, ended = 2 }
end)

test("a decoder running at the deadline is waited for; it ended the item (returned 0): SUCCESS", function()
  fresh()
  tc.start { api = 2, blocking = true, timeout = scaled(500), decoder = "zero",
             decode_ms = scaled(1500) }
  queued(1)
  eq(dss.poll(), 0, "poll")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             decoded_zero = 1, unanswered = 1, ended = 1 }
end)

test("a decoder running at the deadline that pushed values: the item, now pending, times out by ret(NULL)", function()
  fresh()
  tc.start { api = 2, blocking = true, timeout = scaled(500), decode_ms = scaled(1500) }
  queued(1)
  local n, _, args = dss.poll()
  eq(n, 0, "poll")
  ok(tc.join(), "join")
  eq(select("#", args[1](expected(args))), 0, "the callback is spent")
  tc.check { threads = 1, stopped = 1, attempts = 1, decoded = 1, timeout = 1, timedout_pending = 1,
             ended = 1 }
end)

test("a return callback running at the deadline is waited for: SUCCESS with the answer", function()
  fresh()
  tc.start { api = 2, blocking = true, timeout = scaled(500), ret_ms = scaled(1500) }
  queued(1)
  local _, _, args = dss.poll()
  local r = pack(args[1](expected(args)))
  eq(r[1], "ack", "the return callback's values")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }
end)

test("a blocking item that waited for room, then stays queued: TIMEOUT when the one deadline passes", function()
  fresh()
  dss.setmaxqueue(1)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "fill the queue")
  local t0 = tc.clock()
  -- The wait for room must be seen before the deadline: a generous one.
  tc.start { api = 2, blocking = true, timeout = scaled(1000) }
  waitfor(function() return dss.stats().blocked == 1 end, "the producer waits for room")
  tc.setcallback(function() end)
  eq(dss.dispatch(), 1, "make room")
  ok(tc.join(), "join")
  local took = tc.clock() - t0
  ok(took >= scaled(1000) / 1000 - 0.01, "at least the timeout: " .. took .. " s")
  tc.check { threads = 1, stopped = 1, attempts = 2, delivered = 1, decoded = 1, timeout = 1,
             timedout_queued = 1, ended = 2, allocated = 1, freed = 1 }
end)

test("unreg while queued: 2v0 returns CANCELLED (decode(NULL)), 1v0 SUCCESS", function()
  fresh()
  local before = dss.stats().cancelled
  tc.start { api = 2, blocking = true }
  tc.start { blocking = true }
  queued(2)
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  ok(tc.join(), "join")
  eq(dss.stats().cancelled - before, 2, "stats cancelled")
  tc.check { threads = 2, completed = 1, stopped = 1, attempts = 2, delivered = 1, released = 1,
             unanswered = 1, cancelled = 1, cancelled_queued = 2, ended = 2 }
end)

test("unreg while pending on the Lua side: 2v0 returns CANCELLED (ret(NULL)); the callback is spent", function()
  fresh()
  tc.start { api = 2, blocking = true, timeout = scaled(10000) }
  queued(1)
  local _, _, args = dss.poll()
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  ok(tc.join(), "join")
  eq(select("#", args[1](expected(args))), 0, "spent")
  tc.check { threads = 1, stopped = 1, attempts = 1, decoded = 1, cancelled = 1,
             cancelled_pending = 1, ended = 1 }
end)

test("lua_close with 2v0 producers blocked: CANCELLED for each", function()
  local state, cid = child [[
    tc.start { api = 2, blocking = true, threads = 2 }
    tc.start { api = 2, blocking = true, timeout = 100000 }
    return tc.ctx()
  ]]
  waitfor(function() return tc.run(state, "return dss.queuesize()") == 3 end, "3 queued in the child")
  tc.run(state, "local _, _, args = dss.poll(); held = args")
  tc.close(state)
  ok(tc.join(cid), "join")
  tc.check({ threads = 3, stopped = 3, attempts = 3, decoded = 1, cancelled = 3, cancelled_queued = 2,
             cancelled_pending = 1, ended = 3, cancel_calls = 1 }, cid)
end)

test("a 2v0 blocking deliver with a timeout from the Lua thread outside poll and dispatch times out on that thread", function()
  fresh()
  local before = timedout()
  eq(tc.deliver(tc.utilid(1), { api = 2, blocking = true, timeout = scaled(50) }), TIMEOUT, "deliver")
  eq(dss.queuesize(), 0, "queuesize")
  eq(timedout() - before, 1, "stats timedout")
  tc.check { attempts = 1, timeout = 1, timedout_queued = 1, ended = 1 }
end)
