-- test_udp.lua -- setport/getport and the UDP notification: one datagram
-- " <count after queuing>" to 127.0.0.1:port per delivered item, read with
-- LuaSocket. Contract sections 4 (setport, getport, UDP) and 7 (ASCII text).

local dss = require "darksidesync"
local tc = require "testclient"
local socket = require "socket"

-- A UDP socket on 127.0.0.1, any free port; receive waits 5 s at most.
local function listener()
  local s = assert(socket.udp())
  assert(s:setsockname("127.0.0.1", 0))
  s:settimeout(5)
  local _, port = s:getsockname()
  return s, tonumber(port)
end

-- The reason in luaL_argerror's "bad argument #1 to 'name' (reason)" that
-- setport(...) raises; the name differs between Lua versions.
local function setport_reason(...)
  local args = pack(...)
  local msg = raises(function()
    local r = dss.setport(unpack(args, 1, args.n)) -- not a tail call: keep the name
    return r
  end, { pattern = "^bad argument #1 to '[^']*' %(.*%)$" })
  return msg:match("%((.*)%)$")
end

test("getport is 0 by default; setport returns 1 and getport reflects it, 0 and 65535 included", function()
  eq(dss.getport(), 0, "default")
  eq(dss.setport(65535), 1, "setport(65535)")
  eq(dss.getport(), 65535, "getport")
  eq(dss.setport(8080.0), 1, "setport(8080.0)")
  eq(dss.getport(), 8080, "getport")
  eq(dss.setport(0), 1, "setport(0)")
  eq(dss.getport(), 0, "getport")
end)

test("setport rejects a missing or non-number port: 'port number expected, got <type>'", function()
  eq(setport_reason(), "port number expected, got no value")
  eq(setport_reason("eighty"), "port number expected, got string")
  eq(setport_reason("80x"), "port number expected, got string")
  eq(setport_reason(nil), "port number expected, got nil")
  eq(setport_reason({}), "port number expected, got table")
  eq(setport_reason(true), "port number expected, got boolean")
  eq(dss.getport(), 0, "port unchanged")
end)

test("setport takes a numeric string as its number, as 1.0 and Lua's own checks do", function()
  eq(dss.setport("5000"), 1, "setport('5000')")
  eq(dss.getport(), 5000, "getport")
  eq(dss.setport(" 0x10 "), 1, "setport(' 0x10 ')")
  eq(dss.getport(), 16, "getport")
  eq(dss.setport("0"), 1, "setport('0')")
  eq(dss.getport(), 0, "getport")
end)

test("setport rejects a fraction, a negative or a too large port: 'port must be an integer from 0 to 65535'", function()
  for _, p in ipairs { 1.5, -1, 65536, 2 ^ 63, math.huge, -math.huge, 0 / 0, "1.5", "-1", "65536" } do
    eq(setport_reason(p), "port must be an integer from 0 to 65535", "setport(" .. tostring(p) .. ")")
  end
  eq(dss.getport(), 0, "port unchanged")
end)

test("each delivered item sends one datagram ' <count after queuing>' from 127.0.0.1", function()
  fresh()
  local s, port = listener()
  eq(dss.setport(port), 1, "setport")
  tc.start { items = 3 }
  ok(tc.join(), "join")
  for i = 1, 3 do
    local data, ip = s:receivefrom()
    eq(data, " " .. i, "datagram " .. i)
    eq(ip, "127.0.0.1", "sender")
  end
  -- One poll per datagram.
  for left = 2, 0, -1 do eq(dss.poll(), left, "remaining") end
  dss.setport(0)
  s:close()
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, ended = 3,
             allocated = 3, freed = 3 }
end)

test("setport(0) turns notification off; another port moves it", function()
  fresh()
  local s1, p1 = listener()
  local s2, p2 = listener()
  local u = tc.utilid(1)
  dss.setport(p1)
  eq(tc.deliver(u), -100, "deliver to port 1")
  dss.setport(0)
  eq(tc.deliver(u), -100, "deliver with notification off")
  dss.setport(p1)
  eq(tc.deliver(u), -100, "deliver to port 1 again")
  dss.setport(p2)
  eq(tc.deliver(u), -100, "deliver to port 2")
  dss.setport(0)
  eq(s1:receive(), " 1", "port 1's first datagram")
  eq(s1:receive(), " 3", "port 1's second datagram: none for the second item")
  eq(s2:receive(), " 4", "port 2's first datagram")
  s1:close()
  s2:close()
  tc.check { attempts = 4, delivered = 4, allocated = 4, live = 4 }
end)

test("blocking deliveries notify too", function()
  fresh()
  local s, port = listener()
  dss.setport(port)
  tc.start { threads = 2, blocking = true }
  queued(2)
  local got = { assert(s:receive()), assert(s:receive()) }
  table.sort(got)
  eq(table.concat(got, ","), " 1, 2", "datagrams")
  for _ = 1, 2 do
    local _, _, args = dss.poll()
    args[1](args[3] * 1000 + args[4])
  end
  ok(tc.join(), "join")
  dss.setport(0)
  s:close()
  tc.check { threads = 2, completed = 2, attempts = 2, delivered = 2, released = 2, decoded = 2,
             returned = 2, answers_ok = 2, ended = 2 }
end)

test("the wake-up loop: read a datagram, poll once, while a producer delivers", function()
  fresh()
  local s, port = listener()
  dss.setport(port)
  local seen = {}
  tc.setcallback(function(_, _, seq) seen[#seen + 1] = seq end)
  tc.start { items = 20 }
  for i = 1, 20 do
    local data = assert(s:receive())
    ok(data:match("^ %d+$"), "datagram " .. i .. ": " .. data)
    local n, cb, args = dss.poll()
    ok(n ~= -1, "poll after datagram " .. i)
    cb(unpack(args))
  end
  ok(tc.join(), "join")
  eq(dss.poll(), -1, "then empty")
  eq(table.concat(seen, " "), "1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20")
  dss.setport(0)
  s:close()
  tc.check { threads = 1, completed = 1, attempts = 20, delivered = 20, decoded = 20, ended = 20,
             allocated = 20, freed = 20 }
end)
