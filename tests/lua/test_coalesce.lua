-- test_coalesce.lua -- setport(port, mode): "coalesce" sends one datagram
-- " <count>" per empty-to-non-empty transition of the queue, "each" (the
-- default) one per item; bad modes. Read with LuaSocket, as test_udp.lua.
-- docs/lua-api.md "setport(port [, mode])".

local dss = require "darksidesync"
local tc = require "testclient"
local socket = require "socket"

local SUCCESS = -100

local function fresh_()
  fresh()
  tc.setcallback(function() end)
end

-- A UDP socket on 127.0.0.1, any free port; receive waits 5 s at most.
local function listener()
  local s = assert(socket.udp())
  assert(s:setsockname("127.0.0.1", 0))
  s:settimeout(5)
  local _, port = s:getsockname()
  return s, tonumber(port)
end

-- Every datagram already received by s, without waiting (on loopback a
-- datagram is in the receiving socket when sendto returns).
local function drain(s)
  local got = {}
  s:settimeout(0)
  while true do
    local d = s:receive()
    if not d then break end
    got[#got + 1] = d
  end
  s:settimeout(5)
  return table.concat(got, ",")
end

local function deliver(n)
  for _ = 1, n do eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver") end
end

test("coalesce: one datagram when the queue goes from empty to non-empty, none for the items after", function()
  fresh_()
  local s, port = listener()
  eq(dss.setport(port, "coalesce"), 1, "setport")
  eq(dss.getport(), port, "getport")
  deliver(3)
  eq(s:receive(), " 1", "the datagram")
  eq(dss.dispatch(), 3, "drain with dispatch")
  deliver(1)
  eq(s:receive(), " 1", "the next datagram: the next transition, nothing for items 2 and 3")
  eq(drain(s), "", "nothing more")
  eq(dss.dispatch(), 1, "dispatch")
  dss.setport(0)
  s:close()
  tc.check { attempts = 4, delivered = 4, decoded = 4, ended = 4, allocated = 4, freed = 4 }
end)

test("coalesce: draining only part of the queue sends nothing new; emptying it with poll re-arms", function()
  fresh_()
  local s, port = listener()
  dss.setport(port, "coalesce")
  deliver(2)
  eq(dss.poll(), 1, "poll one")
  deliver(1)
  eq(dss.poll(), 1, "poll one")
  eq(dss.poll(), 0, "poll the last")
  deliver(2)
  eq(drain(s), " 1, 1", "one datagram per transition")
  eq(dss.dispatch(), 2, "dispatch")
  dss.setport(0)
  s:close()
end)

test("coalesce: a transition made by unreg emptying the queue re-arms too", function()
  fresh_()
  local s, port = listener()
  dss.setport(port, "coalesce")
  deliver(2)
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  tc.init()
  deliver(1)
  eq(drain(s), " 1, 1", "one datagram per transition")
  eq(dss.dispatch(), 1, "dispatch")
  dss.setport(0)
  s:close()
end)

test("coalesce with producer threads: items all arrive; one datagram per transition, as stats counts them", function()
  fresh_()
  local s, port = listener()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local notified = dss.stats().notified
  dss.setport(port, "coalesce")
  tc.start { threads = 3, items = 100 }
  local datagrams = 0
  while seen < 300 do
    local d = s:receive()
    ok(d, "a datagram before the bound")
    ok(d:match("^ %d+$"), "payload " .. tostring(d))
    datagrams = datagrams + 1
    -- Drain the queue (items delivered meanwhile included): the next
    -- datagram then comes with the next transition.
    while dss.queuesize() > 0 do dss.dispatch() end
  end
  ok(tc.join(), "join")
  dss.setport(0)
  local rest = drain(s)
  local extra = rest == "" and 0 or select(2, rest:gsub(",", "")) + 1
  s:close()
  eq(seen, 300, "items")
  ok(datagrams >= 1 and datagrams <= 300, "datagrams read: " .. datagrams)
  eq(dss.stats().notified - notified, datagrams + extra, "datagrams sent = notified")
  tc.check { threads = 3, completed = 3, attempts = 300, delivered = 300, decoded = 300, ended = 300,
             allocated = 300, freed = 300 }
end)

test("the default stays one datagram per item; setport(port) after coalesce goes back to it", function()
  fresh_()
  local s, port = listener()
  dss.setport(port, "coalesce")
  dss.setport(port)
  deliver(2)
  eq(drain(s), " 1, 2", "each")
  eq(dss.dispatch(), 2, "dispatch")
  dss.setport(port, "each")
  deliver(2)
  eq(drain(s), " 1, 2", "each, named")
  eq(dss.dispatch(), 2, "dispatch")
  dss.setport(0)
  s:close()
end)

test("setport(0, 'coalesce') turns notification off", function()
  fresh_()
  local s, port = listener()
  dss.setport(port, "coalesce")
  eq(dss.setport(0, "coalesce"), 1, "setport")
  eq(dss.getport(), 0, "getport")
  deliver(1)
  dss.setport(port, "coalesce")
  deliver(1)
  eq(drain(s), "", "no transition while off, none after")
  eq(dss.dispatch(), 2, "dispatch")
  deliver(1)
  eq(drain(s), " 1", "the next transition")
  eq(dss.dispatch(), 1, "dispatch")
  dss.setport(0)
  s:close()
end)

test("a bad mode: bad argument #2 'invalid option', port unchanged", function()
  dss.setport(0)
  local function reason(...) return argreason(2, dss.setport, ...) end
  eq(reason(8080, "x"), "invalid option 'x'")
  eq(reason(8080, "Coalesce"), "invalid option 'Coalesce'")
  eq(reason(8080, ""), "invalid option ''")
  eq(reason(8080, 1), "invalid option '1'")
  ok(reason(8080, {}):match("^string expected, got table$"), "a table")
  eq(dss.getport(), 0, "port unchanged")
  -- The port is checked first.
  eq(argreason(1, dss.setport, -1, "x"), "port must be an integer from 0 to 65535")
end)
