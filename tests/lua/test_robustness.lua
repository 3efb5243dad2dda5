-- test_robustness.lua -- bad input the other files do not already try,
-- one test per row of docs/robustness.md that is not covered elsewhere.

local dss = require "darksidesync"
local tc = require "testclient"

test("poll, queuesize and getport ignore extra arguments of any type", function()
  fresh()
  local weird = { nil, 0 / 0, math.huge, -1, "x", {}, print, coroutine.create(function() end) }
  eq(select("#", dss.poll(unpack(weird, 1, 8))), 1, "poll: one result")
  eq(dss.poll(unpack(weird, 1, 8)), -1, "poll: empty")
  eq(dss.queuesize(unpack(weird, 1, 8)), 0, "queuesize")
  eq(dss.getport(unpack(weird, 1, 8)), 0, "getport")
end)

test("setport: huge and special numbers are refused, the port stays as it was", function()
  fresh()
  eq(dss.setport(4242), 1)
  local reason = "port must be an integer from 0 to 65535"
  for _, bad in ipairs { 0 / 0, math.huge, -math.huge, 2 ^ 53, -2 ^ 53, 2 ^ 63, 65535.5, -0.5 } do
    raises(function() dss.setport(bad) end, { pattern = "%(" .. reason .. "%)$" })
  end
  eq(dss.getport(), 4242, "unchanged")
  eq(dss.setport(-0.0), 1, "-0.0 is 0")
  eq(dss.getport(), 0)
end)

test("the waiting-thread callback's metatable is protected; __call cannot be taken elsewhere", function()
  fresh()
  tc.setcallback(function() end)
  local pid = tc.start { blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  local wt = args[1]
  eq(getmetatable(wt), false, "getmetatable")
  raises(function() setmetatable(wt, {}) end, { pattern = "" })
  wt(pid * 1000 + 1)
  ok(tc.join(), "join")
  eq(tc.counters().released, 1, "released")
end)

test("reg and getutilid with a NULL lua_State: NULL, NOT_STARTED (-102)", function()
  fresh()
  local u, rc = tc.reg(2, true, false, true)
  eq(u, nil, "reg: no utilid")
  eq(rc, -102, "reg: NOT_STARTED")
  u, rc = tc.getutilid(1, false, true)
  eq(u, nil, "getutilid: no utilid")
  eq(rc, -102, "getutilid: NOT_STARTED")
  -- Nothing was registered by the NULL-state call.
  u, rc = tc.getutilid(2)
  eq(rc, -107, "lib 2 still unknown")
end)

test("unreg of NULL and of a utilid unregistered twice: INVALID_UTILID (-101)", function()
  fresh()
  eq(tc.unreg(0), -101, "NULL")
  local u = tc.utilid(1)
  eq(tc.unreg(u), -100, "first")
  eq(tc.unreg(u), -101, "second")
end)

test("a blocking deliver with a NULL decoder returns at once: NO_DECODE_PROVIDED (-105)", function()
  fresh()
  local pid = tc.start { blocking = true, decoder = "normal" }  -- a normal one, to compare
  queued(1)
  eq(tc.deliver(tc.utilid(1), { decoder = false }), -105, "fire and forget")
  eq(dss.queuesize(), 1, "nothing more queued")
  local _, _, args = dss.poll()
  args[1](pid * 1000 + 1)
  ok(tc.join(), "join")
end)

test("a waiting-thread callback keeps working after its hub's other items were unregistered", function()
  fresh()
  tc.setcallback(function() end)
  local pid = tc.start { blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  -- Register lib 2 and unregister it: lib 1's pending callback is unharmed.
  local u2 = tc.reg(2)
  eq(tc.unreg(u2), -100)
  eq(select(1, args[1](pid * 1000 + 1)), "ack", "the call still reaches the return callback")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, ended = 1, answers_ok = 1 }
end)
