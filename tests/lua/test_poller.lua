-- test_poller.lua -- darksidesync.poller (epoll and poll(2)), the
-- lua-fibers-style epoll module, and darksidesync.fibers.pollio's fd ops
-- under the scheduler, which then sleeps in the poller: a socket, a timer
-- and an item from a C thread each wake the same loop. Sockets are
-- LuaSocket UDP sockets on 127.0.0.1.

local dss = require "darksidesync"
local tc = require "testclient"
local socket = require "socket"
local fiber = require "darksidesync.fibers.fiber"
local fibers = require "darksidesync.fibers"
local op = require "darksidesync.fibers.op"
local sleep = require "darksidesync.fibers.sleep"
local pollio = require "darksidesync.fibers.pollio"
local epoll = require "darksidesync.fibers.epoll"
local waitgroup = require "darksidesync.fibers.waitgroup"

local IN, OUT = dss.POLL.IN, dss.POLL.OUT

-- A bound, non-blocking UDP socket and a sender aimed at it.
local function udp_pair()
  local r = assert(socket.udp())
  assert(r:setsockname("127.0.0.1", 0))
  r:settimeout(0)
  local s = assert(socket.udp())
  assert(s:setpeername(r:getsockname()))
  return r, s
end

local function main_with_guard(f)
  local timed_out = false
  local guard = fiber.spawn(function()
    sleep.sleep(20 * (tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1))
    timed_out = true
    fiber.stop()
  end)
  fibers.main(f)
  ok(not timed_out, "finished before the guard's 20 s")
  return guard
end

for _, backend in ipairs { "epoll", "poll" } do
  test(backend .. ": poller() names its backend; a bad backend is an argument error", function()
    local p = assert(dss.poller(backend))
    eq(p:backend(), backend)
    ok(tostring(p):match("^darksidesync.poller %(" .. backend .. ", "), tostring(p))
    eq(p:armed(), 0)
    p:close()
    eq(argreason(1, dss.poller, "kqueue"), "invalid option 'kqueue'")
  end)

  test(backend .. ": one-shot interests fire once; persistent ones on every wait", function()
    local p = assert(dss.poller(backend))
    local r, s = udp_pair()
    local fd = r:getfd()
    eq(p:add(fd, IN), true)
    local n, out = p:wait(0)
    eq(n, 0, "nothing sent yet")
    eq(type(out), "table")
    s:send("a")
    n, out = p:wait(5, out)
    eq(n, 1)
    eq(out[1], fd)
    eq(out[2], IN)
    eq(p:wait(0), 0, "the one-shot interest fired")
    eq(p:armed(), 0)
    eq(p:add(fd, IN, false), true)
    for _ = 1, 3 do
      n, out = p:wait(5, out)
      eq(n, 1)
      eq(out[1], fd)
    end
    eq(r:receive(), "a")
    eq(p:wait(0), 0, "drained")
    eq(p:del(fd), true)
    eq(p:armed(), 0)
    eq(p:add(s:getfd(), OUT), true)
    n, out = p:wait(5)
    eq(n, 1)
    eq(out[1], s:getfd())
    eq(out[2], OUT)
    p:close()
    r:close(); s:close()
  end)

  test(backend .. ": errors: bad arguments raise, failed calls return nil, message, errno", function()
    local p = assert(dss.poller(backend))
    eq(argreason(2, p.add, p, -1, IN), "fd out of range")
    eq(argreason(2, p.add, p, "x", IN), "fd (an integer) expected")
    eq(argreason(2, p.add, p, 1.5, IN), "fd (an integer) expected")
    eq(argreason(3, p.add, p, 0, 0), "events (a mask of IN, OUT, PRI, RDHUP) expected")
    eq(argreason(3, p.add, p, 0, dss.POLL.ERR), "events (a mask of IN, OUT, PRI, RDHUP) expected")
    eq(argreason(2, p.wait, p, "soon"), "timeout (seconds) expected")
    local u = udp_pair()
    local fd = u:getfd()
    u:close()
    local a, b, c = p:add(fd, IN)
    eq(a, nil)
    eq(b, "darksidesync.poller: add: Bad file descriptor")
    eq(c, 9)
    a, b, c = p:del(fd)
    eq(a, nil)
    eq(b, "darksidesync.poller: del: No such file or directory")
    eq(c, 2)
    p:close()
    p:close() -- idempotent
    ok(tostring(p):match("^darksidesync.poller %(closed, "), tostring(p))
    raises(function() p:wait(0) end, "darksidesync.poller: the poller is closed")
    raises(function() p:add(0, IN) end, "darksidesync.poller: the poller is closed")
  end)

  test(backend .. ": set replaces an interest (0 forgets the fd); armed() counts", function()
    local p = assert(dss.poller(backend))
    local r, s = udp_pair()
    eq(p:add(r:getfd(), IN), true)
    eq(p:add(s:getfd(), IN), true)
    eq(p:armed(), 2)
    eq(p:set(s:getfd(), OUT), true) -- replaced: writable at once
    local n, out = p:wait(5)
    eq(n, 1)
    eq(out[1], s:getfd())
    eq(out[2], OUT)
    eq(p:armed(), 1)
    eq(p:set(r:getfd(), 0), true)
    eq(p:armed(), 0)
    eq(p:del(r:getfd()), nil, "set to 0 forgot it")
    eq(argreason(3, p.add, p, r:getfd(), 0), "events (a mask of IN, OUT, PRI, RDHUP) expected")
    p:close()
    r:close(); s:close()
  end)

  test(backend .. ": a timeout never ends early", function()
    local p = assert(dss.poller(backend))
    local r = udp_pair()
    p:add(r:getfd(), IN)
    for _, t in ipairs { 0.0005, 0.004, 0.02 } do
      local t0 = dss.monotime()
      eq(p:wait(t), 0)
      local dt = dss.monotime() - t0
      ok(dt >= t, "slept " .. dt .. " s of " .. t)
    end
    p:close()
  end)

  test(backend .. ": the hub's fd in a poller: an item from a C thread wakes an unlimited wait", function()
    fresh()
    local p = assert(dss.poller(backend))
    local hubfd = dss.getfd()
    p:add(hubfd, IN, false)
    eq(p:wait(0), 0, "empty queue: not readable")
    tc.start { items = 1, delay = 20 }
    local t0 = dss.monotime()
    local n, out = p:wait()
    eq(n, 1)
    eq(out[1], hubfd)
    local items = 0
    tc.setcallback(function() items = items + 1 end)
    eq(dss.dispatch(), 1)
    eq(items, 1)
    ok(tc.join(), "join")
    eq(p:wait(0), 0, "drained: not readable")
    p:close()
  end)
end

test("epoll module: lua-fibers' names; one-shot adds; poll(ms) gives fd -> events", function()
  eq(epoll.RD, dss.POLL.IN + dss.POLL.RDHUP)
  eq(epoll.WR, OUT)
  eq(epoll.RDWR, epoll.RD + epoll.WR)
  eq(epoll.ERR, dss.POLL.ERR + dss.POLL.HUP)
  local ep = epoll.new()
  local r, s = udp_pair()
  local fd = r:getfd()
  ep:add(fd, epoll.RD)
  eq(next(ep:poll()), nil, "default timeout 0, nothing ready")
  s:send("x")
  local events = ep:poll(5000)
  eq(events[fd], dss.POLL.IN)
  eq(next(ep:poll(0)), nil, "one-shot")
  ep:add(fd, epoll.RD)
  eq(ep:poll(0)[fd], dss.POLL.IN)
  eq(ep:del(fd), true)
  ep:close()
  raises(function() epoll.new("kqueue") end, { pattern = "invalid option 'kqueue'" })
  r:close(); s:close()
end)

test("pollio: fd_readable_op loses to a sleep, then wins when data comes; no waiter piles up", function()
  local r, s = udp_pair()
  local fd = r:getfd()
  local h = pollio.install_poll_io_handler()
  eq(pollio.install_poll_io_handler(), h, "idempotent")
  local results = {}
  main_with_guard(function()
    for _ = 1, 50 do
      results[#results + 1] = op.choice(
        pollio.fd_readable_op(fd):wrap(function() return "readable" end),
        sleep.sleep_op(0.001):wrap(function() return "timeout" end)):perform()
    end
    local waiting = h.readers[fd] and #h.readers[fd] or 0
    ok(waiting <= 1, "stale waiters pruned: " .. waiting)
    fiber.spawn(function() sleep.sleep(0.01); s:send("hi") end)
    results[#results + 1] = op.choice(
      pollio.fd_readable_op(fd):wrap(function() return "readable" end),
      sleep.sleep_op(10):wrap(function() return "timeout" end)):perform()
    fiber.stop()
  end)
  eq(#results, 51)
  eq(results[1], "timeout")
  eq(results[50], "timeout")
  eq(results[51], "readable")
  eq(r:receive(), "hi")
  r:close(); s:close()
end)

test("pollio: two readers and a writer of one fd: each woken by its own event", function()
  local r, s = udp_pair()
  local fd = r:getfd()
  local log = {}
  main_with_guard(function()
    local wg = waitgroup.new()
    wg:add(3)
    for i = 1, 2 do
      fiber.spawn(function()
        pollio.fd_readable(fd)
        log[#log + 1] = "reader" .. i
        wg:done()
      end)
    end
    fiber.spawn(function()
      pollio.fd_writable(fd) -- a UDP socket is writable at once
      log[#log + 1] = "writer"
      wg:done()
      sleep.sleep(0.01)
      s:send("data")
    end)
    wg:wait()
    fiber.stop()
  end)
  eq(table.concat(log, " "), "writer reader1 reader2")
  eq(r:receive(), "data")
  r:close(); s:close()
end)

test("pollio: fd_closed wakes the fibers waiting on the fd", function()
  local r = udp_pair()
  local fd = r:getfd()
  local woke = 0
  main_with_guard(function()
    for _ = 1, 3 do
      fiber.spawn(function() pollio.fd_readable(fd); woke = woke + 1 end)
    end
    sleep.sleep(0.005)
    eq(woke, 0, "nothing to read yet")
    pollio.fd_closed(fd)
    r:close()
    sleep.sleep(0.005)
    fiber.stop()
  end)
  eq(woke, 3)
end)

test("pollio: wait_fd with a waiter that waits again from complete(); a closed fd wakes it on the next turn, without recursion", function()
  local r, s = udp_pair()
  local fd = r:getfd()
  local calls = 0
  local finished = require("darksidesync.fibers.cond").new()
  local waiter = { live = true }
  function waiter.waiting(self) return self.live end
  function waiter.complete(self)
    calls = calls + 1
    if calls < 3 then
      pollio.wait_fd(fd, false, self) -- read again when the next datagram comes
      if calls == 1 then s:send("two") end
    else
      self.live = false
      finished:signal()
    end
  end
  main_with_guard(function()
    pollio.wait_fd(fd, false, waiter)
    s:send("one")
    finished:wait()
    fiber.stop()
  end)
  eq(calls, 3)
  -- A closed fd: the poller refuses it; the waiter is woken on the next
  -- turn, and waiting again each time does not recurse.
  local r2 = udp_pair()
  local dead = r2:getfd()
  r2:close()
  calls = 0
  local w2 = {}
  function w2.waiting() return calls < 50 end
  function w2.complete(self)
    calls = calls + 1
    if calls < 50 then pollio.wait_fd(dead, false, self) end
  end
  local turns = 0
  main_with_guard(function()
    pollio.wait_fd(dead, false, w2)
    while calls < 50 do turns = turns + 1; fiber.yield() end
    fiber.stop()
  end)
  eq(calls, 50)
  ok(turns >= 49, "one wake per turn: " .. turns)
  r:close(); s:close()
end)

test("pollio: bad fds are argument errors", function()
  raises(function() pollio.fd_readable_op("x") end,
    "bad argument #1 to 'fd_readable_op' (fd expected, got string)")
  raises(function() pollio.fd_writable_op(-2) end,
    "bad argument #1 to 'fd_writable_op' (fd expected, got -2)")
end)

test("pollio: one loop, three wake-ups: a timer, a socket and an item from a C thread", function()
  fresh()
  local r, s = udp_pair()
  local order = {}
  tc.setcallback(function() order[#order + 1] = "item"; fiber.stop() end)
  main_with_guard(function()
    fiber.spawn(function()
      sleep.sleep(0.01)
      order[#order + 1] = "timer"
      s:send("ping")
    end)
    fiber.spawn(function()
      pollio.fd_readable(r:getfd())
      order[#order + 1] = "socket:" .. r:receive()
      tc.start { items = 1, delay = 10 }
    end)
  end)
  ok(tc.join(), "join")
  eq(table.concat(order, " "), "timer socket:ping item")
  r:close(); s:close()
end)
