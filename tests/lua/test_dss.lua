-- test_dss.lua -- the `dss` LuaSocket helper (contract section 6): its
-- socket, its handler driven by real datagrams, its error handler, and a
-- Copas loop where Debian packages Copas (5.1, 5.2, LuaJIT).

local darksidesync = require "darksidesync"
local tc = require "testclient"
local socket = require "socket"
local dss = require "dss"

-- Each test: a fresh client, and a socket timeout so that a missing
-- datagram fails the test instead of hanging it.
local function setup()
  fresh()
  local skt, port = assert(dss.getsocket())
  darksidesync.setport(port)  -- fresh() turned notification off
  skt:settimeout(10)
  -- Drop datagrams an earlier test left unread.
  skt:settimeout(0)
  while skt:receive(8192) do end
  skt:settimeout(10)
  return skt, port
end

test("getsocket: a UDP socket on localhost, port 50000-50200, set with setport; created once", function()
  local skt, port = dss.getsocket()
  ok(skt, "socket")
  ok(tostring(skt):match("^udp"), "a LuaSocket UDP socket: " .. tostring(skt))
  eq(math.type and math.type(port) or "integer", "integer", "port is an integer")
  ok(port >= 50000 and port <= 50200, "port in range: " .. tostring(port))
  eq(darksidesync.getport(), port, "darksidesync notifies that port")
  local ip, p = skt:getsockname()
  eq(ip, "127.0.0.1", "bound to localhost")
  eq(tonumber(p), port, "bound port")
  local skt2, port2 = dss.getsocket()
  ok(rawequal(skt, skt2), "the same socket the second time")
  eq(port2, port, "the same port")
end)

test("getsocket skips ports in use (another process's helper holds 50000)", function()
  -- This test state already holds one port; a second, independent helper
  -- (a fresh copy of the module) must take another one.
  package.loaded.dss = nil
  local other = require "dss"
  package.loaded.dss = dss
  local myport = select(2, dss.getsocket())
  local skt2, port2 = other.getsocket()
  ok(skt2, "second socket")
  ok(port2 ~= myport, "a different port: " .. tostring(port2))
  ok(port2 >= 50000 and port2 <= 50200, "in range")
  skt2:close()
  darksidesync.setport(myport)
end)

test("handler: one datagram, one poll, the callback called with its arguments", function()
  local skt = setup()
  local got = {}
  tc.setcallback(function(lib, pid, seq) got[#got + 1] = pid .. "/" .. seq end)
  local pid = tc.start { items = 3 }
  ok(tc.join(), "join")
  local handler = dss.gethandler()
  eq(type(handler), "function", "gethandler returns a function")
  for _ = 1, 3 do handler(skt) end
  eq(table.concat(got, " "), pid .. "/1 " .. pid .. "/2 " .. pid .. "/3", "callbacks in order")
  eq(dss.queuesize(), 0, "queue drained")
  skt:settimeout(0)
  eq(skt:receive(8192), nil, "no datagram left")
end)

test("handler: a blocking item's callback gets the waiting-thread callback first", function()
  local skt = setup()
  tc.setcallback(function(wt, lib, pid, seq) wt(pid * 1000 + seq) end)
  tc.start { items = 2, blocking = true }
  local handler = dss.gethandler()
  handler(skt)
  handler(skt)
  ok(tc.join(), "join: both producers released")
  local c = tc.counters()
  eq(c.answers_ok, 2, "answers the producer checked")
  eq(c.released, 2, "released")
end)

test("handler: a datagram with nothing queued runs nothing", function()
  local skt, port = setup()
  local sender = socket.udp()
  sender:sendto(" 1", "127.0.0.1", port)
  local called = 0
  tc.setcallback(function() called = called + 1 end)
  dss.gethandler()(skt)
  eq(called, 0, "no callback")
  sender:close()
end)

test("handler: a callback error goes to the error handler set; the handler goes on", function()
  local skt = setup()
  local errors = {}
  dss.seterrorhandler(function(msg) errors[#errors + 1] = msg end)
  local calls = 0
  tc.setcallback(function(lib, pid, seq)
    calls = calls + 1
    if seq == 1 then error("boom " .. seq, 0) end
  end)
  tc.start { items = 2 }
  ok(tc.join(), "join")
  local handler = dss.gethandler()
  handler(skt)
  handler(skt)
  eq(calls, 2, "both callbacks ran")
  eq(#errors, 1, "one error")
  eq(errors[1], "boom 1", "the error message")
  dss.seterrorhandler(nil)
end)

test("the default error handler prints the message with a traceback; nil restores it", function()
  local skt = setup()
  dss.seterrorhandler(function() error("not this one") end)
  dss.seterrorhandler(nil)
  tc.setcallback(function() error("kaboom", 0) end)
  tc.start { items = 1 }
  ok(tc.join(), "join")
  local printed = {}
  local oldprint = print
  print = function(...) printed[#printed + 1] = table.concat({ ... }, "\t") end
  local okay, err = pcall(dss.gethandler(), skt)
  print = oldprint
  ok(okay, "the handler itself does not raise: " .. tostring(err))
  eq(#printed, 1, "one message printed")
  ok(printed[1]:find("kaboom", 1, true), "message printed: " .. printed[1])
  ok(printed[1]:find("stack traceback", 1, true), "with a traceback")
end)

test("seterrorhandler rejects what is not a function or nil", function()
  raises(function() dss.seterrorhandler(42) end,
         "bad argument #1 to 'seterrorhandler' (function or nil expected, got number)")
  raises(function() dss.seterrorhandler("f") end,
         "bad argument #1 to 'seterrorhandler' (function or nil expected, got string)")
end)

test("queuesize is darksidesync.queuesize", function()
  setup()
  tc.start { items = 4 }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 4)
  eq(dss.queuesize(), darksidesync.queuesize())
  while darksidesync.poll() ~= -1 do end
  eq(dss.queuesize(), 0)
end)

-- Copas, as 1.0's readme drives the handler. Debian packages Copas for 5.1
-- and 5.2 (LuaJIT uses the 5.1 tree).
local has_copas, copas = pcall(require, "copas")
if has_copas then
  test("a Copas loop: every item arrives, in order per producer; blocking producers get their answers", function()
    local skt = setup()
    local seen, answered, lastseq, order_bad = 0, 0, {}, 0
    tc.setcallback(function(a, b, c, d)
      local wt, pid, seq
      if type(a) == "userdata" then wt, pid, seq = a, c, d else pid, seq = b, c end
      if seq ~= (lastseq[pid] or 0) + 1 then order_bad = order_bad + 1 end
      lastseq[pid] = seq
      seen = seen + 1
      if wt then wt(pid * 1000 + seq); answered = answered + 1 end
    end)
    skt:settimeout(0)
    copas.addserver(skt, function(s)
      s = copas.wrap(s)
      local handler = dss.gethandler()
      while true do handler(s) end
    end)
    tc.start { threads = 2, items = 50 }
    tc.start { threads = 2, items = 5, blocking = true }
    local ticks, steps = 0, 0
    local deadline = os.time() + 20
    while seen < 110 and os.time() <= deadline do
      -- A step with a timeout: with nothing to read it returns, and the
      -- loop's own timer ticks.
      if not copas.step(0.01) then ticks = ticks + 1 end
      steps = steps + 1
    end
    eq(seen, 110, "items that arrived")
    eq(order_bad, 0, "out of order")
    eq(answered, 10, "blocking items answered")
    ok(tc.join(), "join: every producer finished")
    eq(tc.counters().answers_ok, 10, "answers checked by the producers")
    ok(steps > 0, "steps")
    eq(dss.queuesize(), 0, "queue drained")
  end)
end
