-- test_wait_fd.lua -- wait([timeout]) and getfd(): wait's results with and
-- without items, items from producer threads, bad arguments; the wake-up fd
-- readable exactly while the queue is non-empty (checked with poll(2)
-- through the test client, and with LuaSocket's select). docs/lua-api.md,
-- "Beyond 1.0".

local dss = require "darksidesync"
local tc = require "testclient"
local socket = require "socket"

local SUCCESS = -100

local function deliver(n)
  for _ = 1, n do eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver") end
end

-- fresh(), with a callback that does nothing (dispatch calls it).
local function fresh_()
  fresh()
  tc.setcallback(function() end)
end

-- Seconds: a bound generous enough for any run (a failure, not a wait).
local LONG = scaled(10)

test("wait(0) on an empty queue returns 0 at once; with items queued, their number", function()
  fresh_()
  eq(dss.wait(0), 0, "wait(0), empty")
  deliver(2)
  eq(dss.wait(0), 2, "wait(0), 2 queued")
  eq(dss.wait(), 2, "wait(), 2 queued: at once")
  eq(dss.wait(nil), 2, "wait(nil)")
  eq(dss.wait(math.huge), 2, "wait(math.huge)")
  eq(dss.wait(1.5), 2, "wait(1.5)")
  eq(dss.queuesize(), 2, "wait takes nothing")
  eq(dss.dispatch(), 2, "dispatch")
  eq(dss.wait(0), 0, "wait(0) after dispatch")
end)

test("wait(timeout) on an empty queue returns 0 once the timeout passed", function()
  fresh_()
  local t0 = tc.clock()
  eq(dss.wait(0.1), 0, "wait(0.1)")
  local waited = tc.clock() - t0
  ok(waited >= 0.095, "waited at least the timeout: " .. waited .. " s")
  ok(waited < LONG, "and returned: " .. waited .. " s")
end)

test("wait returns the queue size as soon as a producer thread delivers", function()
  fresh_()
  tc.start { items = 1, delay = 50 }
  local t0 = tc.clock()
  eq(dss.wait(LONG), 1, "wait")
  ok(tc.clock() - t0 < LONG, "before the timeout")
  ok(tc.join(), "join")
  eq(dss.dispatch(), 1, "dispatch")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, decoded = 1, ended = 1,
             allocated = 1, freed = 1 }
end)

test("wait wakes for a blocking item too; the loop wait/dispatch answers it", function()
  fresh_()
  tc.setcallback(function(wt, _, pid, seq) wt(pid * 1000 + seq) end)
  tc.start { items = 3, blocking = true, delay = 10 }
  local ran = 0
  for _ = 1, 3 do
    eq(dss.wait(LONG), 1, "wait")
    ran = ran + dss.dispatch()
  end
  eq(ran, 3, "ran")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, released = 3, decoded = 3,
             returned = 3, answers_ok = 3, ended = 3 }
end)

test("wait rejects a timeout that is not a non-negative number: exact reasons", function()
  local function reason(v) return argreason(1, dss.wait, v) end
  eq(reason("one"), "non-negative number of seconds expected, got string")
  eq(reason(true), "non-negative number of seconds expected, got boolean")
  eq(reason({}), "non-negative number of seconds expected, got table")
  for _, v in ipairs { -1, -0.5, -math.huge, "-1" } do
    eq(reason(v), "non-negative number of seconds expected, got " .. tostring(v + 0.0),
       "wait(" .. tostring(v) .. ")")
  end
  eq(dss.wait("0"), 0, "a numeric string counts as its number")
end)

test("getfd returns the same integer fd every time", function()
  local fd = dss.getfd()
  eq(type(fd), "number", "type")
  ok(fd >= 0 and fd == math.floor(fd), "a non-negative integer: " .. tostring(fd))
  if math.type then eq(math.type(fd), "integer", "math.type") end
  eq(dss.getfd(), fd, "second call")
  eq(dss.getfd(), fd, "third call")
end)

test("the fd is readable exactly while the queue is non-empty: poll and dispatch reset it when they empty it", function()
  fresh_()
  local fd = dss.getfd()
  eq(tc.readable(fd), false, "empty")
  deliver(1)
  eq(tc.readable(fd), true, "1 queued")
  deliver(1)
  eq(tc.readable(fd), true, "2 queued")
  eq(dss.poll(), 1, "poll")
  eq(tc.readable(fd), true, "1 left")
  eq(dss.poll(), 0, "poll")
  eq(tc.readable(fd), false, "poll emptied the queue")
  eq(dss.poll(), -1, "poll on empty")
  eq(tc.readable(fd), false, "still empty")
  deliver(3)
  eq(tc.readable(fd), true, "readable again")
  eq(dss.dispatch(2), 2, "dispatch(2)")
  eq(tc.readable(fd), true, "1 left")
  eq(dss.dispatch(), 1, "dispatch")
  eq(tc.readable(fd), false, "dispatch emptied the queue")
  deliver(1)
  eq(tc.readable(fd), true, "readable on the next deliver")
  eq(dss.dispatch(), 1, "dispatch")
  eq(tc.readable(fd), false, "empty")
end)

test("the fd becomes readable when a producer thread delivers, and stays readable until drained", function()
  fresh_()
  local fd = dss.getfd()
  eq(tc.readable(fd), false, "empty")
  tc.start { items = 3, delay = 20 }
  ok(tc.readable(fd, LONG * 1000), "readable within the bound")
  ok(tc.join(), "join")
  eq(dss.queuesize(), 3, "queuesize")
  eq(tc.readable(fd), true, "3 queued")
  local ran = 0
  while dss.queuesize() > 0 do
    ok(tc.readable(fd), "readable with " .. dss.queuesize() .. " queued")
    ran = ran + dss.dispatch(1)
  end
  eq(ran, 3, "ran")
  eq(tc.readable(fd), false, "drained")
end)

test("a blocking item keeps the fd readable while queued, not while Lua holds its waiting-thread callback", function()
  fresh_()
  local fd = dss.getfd()
  tc.start { blocking = true }
  -- queuesize() may see the item an instant before the producer, still in
  -- deliver, has written the fd: wait for the fd itself.
  ok(tc.readable(fd, LONG * 1000), "queued")
  eq(dss.queuesize(), 1, "queuesize")
  local _, _, args = dss.poll()
  eq(tc.readable(fd), false, "taken")
  args[1](args[3] * 1000 + args[4])
  ok(tc.join(), "join")
  eq(tc.readable(fd), false, "answered")
end)

test("the fd is reset when unreg cancels every queued item", function()
  fresh_()
  local fd = dss.getfd()
  deliver(2)
  eq(tc.readable(fd), true, "queued")
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  eq(dss.queuesize(), 0, "queuesize")
  eq(tc.readable(fd), false, "empty after unreg")
  tc.check { attempts = 2, delivered = 2, cancelled_queued = 2, ended = 2, allocated = 2, freed = 2 }
end)

test("LuaSocket's select watches the fd through a getfd wrapper", function()
  fresh_()
  local fd = dss.getfd()
  local watched = { getfd = function() return fd end }
  local r = socket.select({ watched }, nil, 0)
  eq(#r, 0, "nothing readable on an empty queue")
  tc.start { items = 1, delay = 20 }
  r = socket.select({ watched }, nil, LONG)
  eq(#r, 1, "readable once a producer delivered")
  ok(rawequal(r[1], watched), "the wrapper")
  ok(tc.join(), "join")
  eq(dss.dispatch(), 1, "dispatch")
  r = socket.select({ watched }, nil, 0)
  eq(#r, 0, "nothing readable once drained")
end)

test("getfd in a state with items already queued: readable at once", function()
  local state, readable, n = child [[
    tc.setcallback(function() end)
    tc.deliver(tc.utilid())
    tc.deliver(tc.utilid())
    local fd = dss.getfd()
    return tc.readable(fd), dss.queuesize()
  ]]
  eq(readable, true, "readable")
  eq(n, 2, "queuesize")
  eq(tc.run(state, "dss.dispatch(); return tc.readable(dss.getfd())"), false, "drained")
  tc.close(state)
end)

test("wait wakes for a delivery while the fd exists too, and neither consumes the other", function()
  fresh_()
  local fd = dss.getfd()
  tc.start { items = 1, delay = 20 }
  eq(dss.wait(LONG), 1, "wait")
  eq(tc.readable(fd), true, "readable after wait")
  ok(tc.join(), "join")
  eq(dss.dispatch(), 1, "dispatch")
  eq(tc.readable(fd), false, "drained")
  eq(dss.wait(0), 0, "wait(0)")
end)
