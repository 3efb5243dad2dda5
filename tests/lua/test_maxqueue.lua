-- test_maxqueue.lua -- setmaxqueue(n) / getmaxqueue(): a bounded queue. 1v0
-- producers wait for room and are never dropped; 2v0 producers fail at once
-- with DSS_ERR_QUEUE_FULL (DSS_DELIVER_NOWAIT, or timeout 0) or with
-- DSS_ERR_TIMEOUT when no room came in time; deliver2's flag check; the
-- stats counters rejected and blocked. docs/lua-api.md "Beyond 1.0",
-- include/darksidesync_api.h "API 2v0".

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, INVALID_UTILID, NOT_STARTED = -100, -101, -102
local QUEUE_FULL, INVALID_ARGUMENT = -110, -113

local function fresh_()
  fresh()
  tc.setcallback(function() end)
end

local function deliver(n, opts)
  for _ = 1, n do eq(tc.deliver(tc.utilid(1), opts), SUCCESS, "deliver") end
end

local function blocked(n)
  waitfor(function() return dss.stats().blocked == n end, n .. " producer(s) blocked")
end

test("getmaxqueue is 0 (unbounded) by default; setmaxqueue sets it and returns nothing", function()
  eq(dss.getmaxqueue(), 0, "default")
  eq(select("#", dss.setmaxqueue(3)), 0, "setmaxqueue returns nothing")
  eq(dss.getmaxqueue(), 3, "getmaxqueue")
  dss.setmaxqueue(7.0)
  eq(dss.getmaxqueue(), 7, "setmaxqueue(7.0)")
  dss.setmaxqueue(0)
  eq(dss.getmaxqueue(), 0, "back to unbounded")
end)

test("setmaxqueue rejects anything but a non-negative integer: exact reasons, limit unchanged", function()
  dss.setmaxqueue(4)
  local function reason(...) return argreason(1, dss.setmaxqueue, ...) end
  eq(reason(), "non-negative integer expected, got no value")
  eq(reason(nil), "non-negative integer expected, got nil")
  eq(reason("three"), "non-negative integer expected, got string")
  eq(reason({}), "non-negative integer expected, got table")
  for _, v in ipairs { -1, 1.5, -0.5, math.huge, "-1", "1.5" } do
    eq(reason(v), "non-negative integer expected, got " .. tostring(v + 0.0),
       "setmaxqueue(" .. tostring(v) .. ")")
  end
  eq(dss.getmaxqueue(), 4, "unchanged")
  dss.setmaxqueue("3")
  eq(dss.getmaxqueue(), 3, "a numeric string counts as its number")
  dss.setmaxqueue(0)
end)

test("unbounded: 100 items queue without waiting", function()
  fresh_()
  tc.start { items = 100 }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 100, "queuesize")
  eq(dss.dispatch(), 100, "dispatch")
end)

test("1v0: a producer waits for room and no item is dropped; the queue never exceeds the limit", function()
  fresh_()
  local seen, over = {}, 0
  tc.setcallback(function(_, _, seq) seen[#seen + 1] = seq end)
  dss.setmaxqueue(2)
  local rejected = dss.stats().rejected
  tc.start { items = 6 }
  queued(2)
  blocked(1)
  tc.check { threads = 1, attempts = 3, delivered = 2, allocated = 3, live = 3 }
  waitfor(function()
    if dss.queuesize() > 2 then over = over + 1 end
    dss.dispatch(1)
    return #seen == 6
  end, "6 items")
  ok(tc.join(), "join")
  eq(over, 0, "times the queue held more than 2")
  eq(table.concat(seen, " "), "1 2 3 4 5 6", "every item, in order")
  eq(dss.stats().rejected, rejected, "none rejected")
  eq(dss.stats().blocked, 0, "none blocked")
  tc.check { threads = 1, completed = 1, attempts = 6, delivered = 6, decoded = 6, ended = 6,
             allocated = 6, freed = 6 }
end)

test("1v0: 3 producers x 20 through a queue of 1; every item arrives", function()
  fresh_()
  local got = 0
  tc.setcallback(function() got = got + 1 end)
  dss.setmaxqueue(1)
  tc.start { threads = 3, items = 20 }
  waitfor(function()
    ok(dss.queuesize() <= 1, "queuesize <= 1")
    dss.dispatch()
    return got == 60
  end, "60 items")
  ok(tc.join(), "join")
  tc.check { threads = 3, completed = 3, attempts = 60, delivered = 60, decoded = 60, ended = 60,
             allocated = 60, freed = 60 }
end)

test("1v0: blocking producers wait for room too", function()
  fresh_()
  tc.setcallback(function(wt, _, pid, seq) wt(pid * 1000 + seq) end)
  dss.setmaxqueue(1)
  tc.start { threads = 3, blocking = true }
  queued(1)
  blocked(3) -- one waiting for its answer, two for room
  tc.check { threads = 3, attempts = 3 } -- delivered counts when deliver returns
  waitfor(function() dss.dispatch(); return tc.counters().answers_ok == 3 end, "3 answers")
  ok(tc.join(), "join")
  tc.check { threads = 3, completed = 3, attempts = 3, delivered = 3, released = 3, decoded = 3,
             returned = 3, answers_ok = 3, ended = 3 }
end)

test("2v0 with DSS_DELIVER_NOWAIT: QUEUE_FULL at once when full, nothing queued; rejected counts them", function()
  fresh_()
  dss.setmaxqueue(2)
  local rejected = dss.stats().rejected
  tc.start { api = 2, flags = "nowait", items = 5, keepgoing = true }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 2, "queuesize")
  eq(dss.stats().rejected - rejected, 3, "rejected")
  eq(dss.stats().blocked, 0, "blocked")
  tc.check { threads = 1, completed = 1, attempts = 5, delivered = 2, queue_full = 3,
             allocated = 5, freed = 3, live = 2 }
  eq(dss.dispatch(), 2, "dispatch")
  eq(tc.deliver(tc.utilid(1), { api = 2, flags = "nowait" }), SUCCESS, "room again")
end)

test("2v0 with timeout 0 and no flag: QUEUE_FULL too", function()
  fresh_()
  dss.setmaxqueue(1)
  deliver(1)
  local rejected = dss.stats().rejected
  eq(tc.deliver(tc.utilid(1), { api = 2, timeout = 0 }), QUEUE_FULL, "timeout 0")
  eq(tc.deliver(tc.utilid(1), { api = 2, timeout = 0, blocking = true }), QUEUE_FULL, "blocking, timeout 0")
  eq(tc.deliver(tc.utilid(1), { api = 2, flags = "nowait", timeout = 1000 }), QUEUE_FULL,
     "nowait with a timeout")
  eq(dss.stats().rejected - rejected, 3, "rejected")
  eq(dss.queuesize(), 1, "queuesize")
  tc.check { attempts = 4, delivered = 1, queue_full = 3, allocated = 3, freed = 2, live = 1 }
end)

test("2v0 without NOWAIT when not full: queued as usual, the flag changes nothing", function()
  fresh_()
  dss.setmaxqueue(3)
  deliver(2, { api = 2, flags = "nowait" })
  deliver(1, { api = 2, timeout = 0 })
  eq(dss.queuesize(), 3, "queuesize")
  tc.check { attempts = 3, delivered = 3, allocated = 3, live = 3 }
end)

test("2v0 waiting for room that does not come: TIMEOUT after about the timeout, nothing queued", function()
  fresh_()
  dss.setmaxqueue(1)
  deliver(1)
  local st = dss.stats()
  local t0 = tc.clock()
  tc.start { api = 2, timeout = scaled(50), items = 2, keepgoing = true }
  ok(tc.join(), "join")
  local took = tc.clock() - t0
  ok(took >= 0.095, "waited twice the timeout at least: " .. took .. " s")
  eq(dss.queuesize(), 1, "queuesize")
  eq(dss.stats().rejected - st.rejected, 2, "rejected")
  eq(dss.stats().timedout - st.timedout, 0, "timedout: not for room")
  eq(dss.stats().blocked, 0, "blocked")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 1, timeout = 2,
             allocated = 3, freed = 2, live = 1 }
end)

test("2v0 blocking item waiting for room that does not come: TIMEOUT, no callback ran", function()
  fresh_()
  dss.setmaxqueue(1)
  deliver(1)
  tc.start { api = 2, timeout = scaled(50), blocking = true }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 1, "queuesize")
  tc.check { threads = 1, stopped = 1, attempts = 2, delivered = 1, timeout = 1,
             allocated = 1, live = 1 }
end)

test("2v0 waiting for room that comes in time: queued", function()
  fresh_()
  dss.setmaxqueue(1)
  deliver(1)
  tc.start { api = 2, timeout = scaled(10000) }
  blocked(1)
  eq(dss.dispatch(), 1, "make room")
  ok(tc.join(), "join")
  eq(dss.queuesize(), 1, "the producer's item")
  tc.check { threads = 1, completed = 1, attempts = 2, delivered = 2, decoded = 1, ended = 1,
             allocated = 2, freed = 1, live = 1 }
end)

test("2v0 producers stop at the first QUEUE_FULL unless told to keep going", function()
  fresh_()
  dss.setmaxqueue(1)
  tc.start { api = 2, flags = "nowait", items = 4 }
  ok(tc.join(), "join")
  tc.check { threads = 1, stopped = 1, attempts = 2, delivered = 1, queue_full = 1,
             allocated = 2, freed = 1, live = 1 }
end)

test("lowering the limit below the queue size drops nothing; room comes back only below the limit", function()
  fresh_()
  deliver(5)
  dss.setmaxqueue(2)
  eq(dss.queuesize(), 5, "nothing dropped")
  local nowait = { api = 2, flags = "nowait" }
  eq(tc.deliver(tc.utilid(1), nowait), QUEUE_FULL, "5 queued")
  eq(dss.dispatch(3), 3, "dispatch(3)")
  eq(tc.deliver(tc.utilid(1), nowait), QUEUE_FULL, "2 queued")
  eq(dss.dispatch(1), 1, "dispatch(1)")
  eq(tc.deliver(tc.utilid(1), nowait), SUCCESS, "1 queued")
  eq(dss.queuesize(), 2, "queuesize")
  tc.check { attempts = 8, delivered = 6, queue_full = 2, decoded = 4, ended = 4,
             allocated = 8, freed = 6, live = 2 }
end)

test("raising the limit, or removing it, lets waiting producers in", function()
  fresh_()
  dss.setmaxqueue(1)
  deliver(1)
  tc.start { threads = 2, items = 2 }
  blocked(2)
  dss.setmaxqueue(2)
  queued(2)
  blocked(2)
  dss.setmaxqueue(0)
  ok(tc.join(), "join")
  eq(dss.queuesize(), 5, "queuesize")
  tc.check { threads = 2, completed = 2, attempts = 5, delivered = 5, allocated = 5, live = 5 }
end)

test("blocked counts every producer waiting for room", function()
  fresh_()
  dss.setmaxqueue(1)
  deliver(1)
  tc.start { threads = 3 }
  blocked(3)
  eq(dss.stats().queued, 1, "queued")
  dss.setmaxqueue(0)
  ok(tc.join(), "join")
  eq(dss.stats().blocked, 0, "blocked")
end)

test("unreg releases producers waiting for room: INVALID_UTILID, nothing queued", function()
  fresh_()
  dss.setmaxqueue(1)
  deliver(1)
  tc.start { threads = 2, items = 3 }
  blocked(2)
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  ok(tc.join(), "join")
  eq(dss.queuesize(), 0, "queuesize")
  eq(dss.stats().blocked, 0, "blocked")
  tc.check { threads = 2, stopped = 2, attempts = 3, delivered = 1, cancelled_queued = 1, ended = 1,
             allocated = 3, freed = 3, errors = { [INVALID_UTILID] = 2 } }
end)

test("closing a Lua state releases its producers waiting for room", function()
  local state, cid = child [[
    dss.setmaxqueue(1)
    tc.deliver(tc.utilid())
    tc.start { threads = 2 }
    return tc.ctx()
  ]]
  waitfor(function() return tc.run(state, "return dss.stats().blocked") == 2 end, "2 blocked in the child")
  tc.close(state)
  ok(tc.join(cid), "join: released")
  tc.check({ threads = 2, stopped = 2, attempts = 3, delivered = 1, cancelled_queued = 1, ended = 1,
             cancel_calls = 1, allocated = 3, freed = 3, errors = { [NOT_STARTED] = 2 } }, cid)
end)

test("deliver2 rejects unknown flag bits with INVALID_ARGUMENT, nothing queued", function()
  fresh_()
  local u = tc.utilid(1)
  eq(tc.deliver(u, { api = 2, flags = 2 }), INVALID_ARGUMENT, "flags 2")
  eq(tc.deliver(u, { api = 2, flags = 3 }), INVALID_ARGUMENT, "flags 3")
  eq(tc.deliver(u, { api = 2, flags = 0x80000000 }), INVALID_ARGUMENT, "flags 0x80000000")
  eq(tc.deliver(u, { api = 2, flags = 2, blocking = true }), INVALID_ARGUMENT, "blocking, flags 2")
  eq(tc.deliver(u, { api = 2, flags = 1 }), SUCCESS, "flags 1 (NOWAIT)")
  eq(tc.deliver(u, { api = 2, flags = 0 }), SUCCESS, "flags 0")
  eq(dss.queuesize(), 2, "queuesize")
  tc.check { attempts = 6, delivered = 2, invalid_argument = 4, allocated = 5, freed = 3, live = 2 }
end)
