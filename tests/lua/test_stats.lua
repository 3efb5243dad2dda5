-- test_stats.lua -- stats(): every field on one scripted scenario, with
-- exact numbers after each step. The tests below run in order and build on
-- each other: `want` holds what stats() must return after each one (the
-- counters count since the module started in this state, i.e. in this
-- process). docs/lua-api.md "stats()".

local dss = require "darksidesync"
local tc = require "testclient"
local socket = require "socket"

local SUCCESS, TIMEOUT, QUEUE_FULL = -100, -109, -110

local FIELDS = { "delivered", "decoded", "returned", "cancelled", "timedout", "rejected", "notified",
                 "notifyfailed", "queued", "maxqueued", "blocked" }

local want = {}
for _, f in ipairs(FIELDS) do want[f] = 0 end

-- stats() must have exactly the fields of FIELDS, equal to want, except
-- for the changes given; those become part of want.
local function expect(changes, what)
  for k, v in pairs(changes or {}) do
    assert(want[k], "unknown field " .. k)
    want[k] = v
  end
  local s, diffs = dss.stats(), {}
  for _, f in ipairs(FIELDS) do
    if s[f] ~= want[f] then diffs[#diffs + 1] = f .. " = " .. tostring(s[f]) .. ", expected " .. want[f] end
  end
  for k in pairs(s) do
    if want[k] == nil then diffs[#diffs + 1] = "unexpected field " .. tostring(k) end
  end
  if #diffs > 0 then error((what and what .. ": " or "") .. table.concat(diffs, "; "), 2) end
end

local function deliver(n)
  for _ = 1, n do eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver") end
end

local function listener()
  local s = assert(socket.udp())
  assert(s:setsockname("127.0.0.1", 0))
  s:settimeout(5)
  local _, port = s:getsockname()
  return s, tonumber(port)
end

test("at the start: the eleven fields, all 0, integers; a new table each call", function()
  local s = dss.stats()
  local n = 0
  for k, v in pairs(s) do
    n = n + 1
    eq(type(v), "number", k)
    if math.type then eq(math.type(v), "integer", k) end
  end
  eq(n, #FIELDS, "number of fields")
  expect()
  ok(dss.stats() ~= dss.stats(), "a new table each call")
  dss.stats().delivered = 99
  expect(nil, "changing a returned table changes nothing")
end)

test("fire-and-forget items: delivered, decoded by poll and dispatch, queued, maxqueued", function()
  fresh()
  tc.setcallback(function() end)
  deliver(3)
  expect({ delivered = 3, queued = 3, maxqueued = 3 }, "3 delivered")
  eq(dss.poll(), 2, "poll")
  expect({ decoded = 1, queued = 2 }, "1 polled")
  eq(dss.dispatch(), 2, "dispatch")
  expect({ decoded = 3, queued = 0 }, "dispatched")
  tc.start { decoder = "zero" }
  ok(tc.join(), "join")
  tc.start { decoder = "error" }
  ok(tc.join(), "join")
  expect({ delivered = 5, queued = 2 }, "2 more")
  eq(dss.poll(), 1, "decoder returning 0")
  raises(dss.poll, labeled("testclient: decoder failed"))
  expect({ decoded = 5, queued = 0 }, "decoders returning 0 and raising count as decoded")
end)

test("blocking items: blocked while waiting, returned when answered or collected", function()
  fresh()
  tc.start { threads = 2, blocking = true }
  queued(2)
  expect({ delivered = 7, queued = 2, blocked = 2 }, "2 blocked")
  local _, _, args = dss.poll()
  expect({ decoded = 6, queued = 1 }, "1 polled, still blocked")
  args[1](args[3] * 1000 + args[4])
  waitfor(function() return dss.stats().blocked == 1 end, "1 released")
  expect({ returned = 1, blocked = 1 }, "answered")
  local function take() dss.poll() end
  take()
  collectgarbage()
  collectgarbage()
  ok(tc.join(), "join")
  expect({ decoded = 7, returned = 2, queued = 0, blocked = 0 }, "collected uncalled")
  tc.start { blocking = true, decoder = "zero" }
  queued(1)
  eq(dss.poll(), 0, "poll")
  ok(tc.join(), "join")
  expect({ delivered = 8, decoded = 8 }, "a decoder returning 0 returns nothing")
  tc.check { threads = 3, completed = 3, attempts = 3, delivered = 3, released = 3, decoded = 3,
             decoded_zero = 1, returned = 1, garbage = 1, answers_ok = 1, unanswered = 2, ended = 3 }
end)

test("cancelled: queued and pending items at unreg", function()
  fresh()
  tc.start { blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  deliver(2)
  expect({ delivered = 11, decoded = 9, queued = 2, blocked = 1 }, "1 pending, 2 queued")
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  ok(tc.join(), "join")
  expect({ cancelled = 3, queued = 0, blocked = 0 }, "cancelled")
  eq(select("#", args[1](1)), 0, "spent")
  expect(nil, "a spent callback returns nothing and counts nothing")
end)

test("timedout: 2v0 blocking items, queued and pending", function()
  fresh()
  tc.start { api = 2, blocking = true, timeout = scaled(30) }
  ok(tc.join(), "join")
  expect({ delivered = 12, timedout = 1 }, "timed out while queued")
  tc.start { api = 2, blocking = true, timeout = scaled(1000) }
  queued(1)
  local _, _, args = dss.poll()
  ok(tc.join(), "join")
  expect({ delivered = 13, decoded = 10, timedout = 2 }, "timed out while pending")
  eq(select("#", args[1](1)), 0, "spent")
  expect()
end)

test("rejected and blocked with a bounded queue", function()
  fresh()
  tc.setcallback(function() end)
  dss.setmaxqueue(1)
  deliver(1)
  expect({ delivered = 14, queued = 1 }, "full")
  eq(tc.deliver(tc.utilid(1), { api = 2, flags = "nowait" }), QUEUE_FULL, "nowait")
  expect({ rejected = 1 }, "QUEUE_FULL")
  eq(tc.deliver(tc.utilid(1), { api = 2, timeout = 0 }), QUEUE_FULL, "timeout 0")
  expect({ rejected = 2 }, "QUEUE_FULL")
  tc.start { api = 2, timeout = scaled(30) }
  ok(tc.join(), "join")
  expect({ rejected = 3 }, "no room in time")
  tc.start { items = 1 }
  waitfor(function() return dss.stats().blocked == 1 end, "waiting for room")
  expect({ blocked = 1 }, "1v0 waits for room")
  eq(dss.dispatch(1), 1, "make room")
  ok(tc.join(), "join")
  expect({ delivered = 15, decoded = 11, blocked = 0 }, "got in")
  eq(dss.dispatch(), 1, "dispatch")
  expect({ decoded = 12, queued = 0 }, "drained")
  dss.setmaxqueue(0)
  tc.check { threads = 2, completed = 1, stopped = 1, attempts = 5, delivered = 2, decoded = 2,
             ended = 2, queue_full = 2, timeout = 1, allocated = 5, freed = 5 }
end)

test("notified: a datagram per item, one per empty-to-non-empty transition with coalesce, fd writes", function()
  fresh()
  tc.setcallback(function() end)
  local s, port = listener()
  dss.setport(port)
  deliver(2)
  expect({ delivered = 17, queued = 2, notified = 2 }, "each: 2 datagrams")
  eq(dss.dispatch(), 2, "dispatch")
  dss.setport(port, "coalesce")
  deliver(3)
  expect({ delivered = 20, decoded = 14, queued = 3, notified = 3 }, "coalesce: 1 datagram")
  eq(dss.dispatch(), 3, "dispatch")
  dss.setport(0)
  local fd = dss.getfd()
  expect({ decoded = 17, queued = 0 }, "getfd on an empty queue writes nothing")
  deliver(2)
  expect({ delivered = 22, queued = 2, notified = 4 }, "one fd write")
  eq(dss.dispatch(), 2, "dispatch")
  eq(tc.readable(fd), false, "reset")
  dss.setport(port, "coalesce")
  deliver(1)
  expect({ delivered = 23, decoded = 19, queued = 1, notified = 6 }, "fd write and a datagram")
  dss.setport(port)
  deliver(2)
  expect({ delivered = 25, queued = 3, notified = 8 }, "each: 2 datagrams, no fd write")
  eq(dss.dispatch(), 3, "dispatch")
  dss.setport(0)
  local got = {}
  s:settimeout(0)
  while true do
    local d = s:receive()
    if not d then break end
    got[#got + 1] = d
  end
  s:close()
  eq(table.concat(got, ","), " 1, 2, 1, 1, 2, 3", "the datagrams")
  expect({ decoded = 22, queued = 0 }, "drained")
end)

test("maxqueued is the most items ever queued at once", function()
  fresh()
  tc.setcallback(function() end)
  deliver(10)
  expect({ delivered = 35, queued = 10, maxqueued = 10, notified = 9 }, "10 queued (and an fd write)")
  eq(dss.dispatch(), 10, "dispatch")
  deliver(4)
  expect({ delivered = 39, decoded = 32, queued = 4, notified = 10 }, "fewer: maxqueued stays")
  eq(dss.dispatch(), 4, "dispatch")
  expect({ decoded = 36, queued = 0 }, "drained")
end)

test("each Lua state has its own counters", function()
  local state, n = child [[
    tc.deliver(tc.utilid())
    return dss.stats().delivered
  ]]
  eq(n, 1, "the child's delivered")
  eq(tc.run(state, "return dss.stats().queued"), 1, "the child's queued")
  tc.close(state)
  expect(nil, "this state's counters unchanged")
end)

test("stats(): exactly the fields docs/lua-api.md lists, all integers", function()
  local here = (arg and arg[1] or ""):match("^(.*/)") or "./"
  local doc = readfile(here .. "../../docs/lua-api.md")
  local section = assert(doc:match("\n### stats%(%)\n(.-)\n###"), "the stats() section")
  local documented = {}
  for field in section:gmatch("\n| `([%w_]+)` |") do documented[#documented + 1] = field end
  table.sort(documented)
  local got = {}
  for k, v in pairs(dss.stats()) do
    got[#got + 1] = k
    eq(math.type and math.type(v) or (v % 1 == 0 and "integer"), "integer", k)
  end
  table.sort(got)
  eq(table.concat(got, " "), table.concat(documented, " "))
  eq(#got, 11)
end)
