-- test_session.lua -- darksidesync.session: spawn, join, cancel, status,
-- the pool; channels between sessions and the main state; bad inputs.

local session = require "darksidesync.session"
local channel = require "darksidesync.channel"

test("spawn a function: join returns its results, copied", function()
  local s = session.spawn(function(a, b) return a + b, { sum = a + b }, "x" end, 2, 3)
  local r1, r2, r3 = s:join()
  eq(r1, 5)
  eq(r2.sum, 5)
  eq(r3, "x")
  eq(s:status(), "done")
end)

test("spawn source text: ... are its arguments", function()
  local s = session.spawn("local a, b = ... return a * b", 6, 7)
  eq(s:join(), 42)
end)

test("integers stay integers, nil results count", function()
  local s = session.spawn(function() return nil, 1, nil end)
  local n = select("#", s:join())
  eq(n, 3)
  if math.type then
    local s2 = session.spawn(function() return 3 end)
    eq(math.type(s2:join()), "integer")
  end
end)

test("a session has the standard libraries and the spawner's package.path", function()
  local s = session.spawn(function()
    return type(string.format), type(table.concat), type(io.write), type(os.time),
      type(coroutine.wrap), package.path
  end)
  local a, b, c, d, e, path = s:join()
  eq(a, "function")
  eq(b, "function")
  eq(c, "function")
  eq(d, "function")
  eq(e, "function")
  eq(path, package.path)
end)

test("an error: join returns nil and the message with a traceback", function()
  local s = session.spawn(function() error("boom") end)
  local r, err = s:join()
  eq(r, nil)
  ok(tostring(err):find("boom", 1, true), "the message: " .. tostring(err))
  ok(tostring(err):find("stack traceback", 1, true), "a traceback: " .. tostring(err))
  eq(s:status(), "error")
end)

test("a syntax error in source text is the session's error", function()
  local s = session.spawn("return +")
  local r, err = s:join()
  eq(r, nil)
  ok(tostring(err):find("(session)", 1, true), tostring(err))
end)

test("joining twice raises", function()
  local s = session.spawn(function() return 1 end)
  eq(s:join(), 1)
  raises(function() s:join() end, "darksidesync.session: already joined")
end)

test("join with a timeout: nil, 'timeout' while it runs; later the results", function()
  local ch = channel.new(0)
  local s = session.spawn(function(c) return c:get() end, ch)
  local r, e = s:join(0.01)
  eq(r, nil)
  eq(e, "timeout")
  eq(s:status(), "running")
  ch:put("go")
  eq(s:join(), "go")
end)

test("uncopyable arguments are an error at spawn", function()
  raises(function() session.spawn(function() end, io.stdout) end,
    { pattern = "cannot copy a userdata" })
  local up = 1
  raises(function() session.spawn(function() return up end) end,
    { pattern = "upvalue" })
  raises(function() session.spawn(42) end, { pattern = "function or source text expected" })
end)

test("results that cannot be copied are the session's error", function()
  local s = session.spawn(function() return io.stdout end)
  local r, err = s:join()
  eq(r, nil)
  ok(tostring(err):find("cannot return the results", 1, true), tostring(err))
end)

test("channels between sessions: a pipeline passes every value once", function()
  local a, b = channel.new(4), channel.new(4)
  local s1 = session.spawn(function(out, n)
    for i = 1, n do out:put(i) end
    out:close()
  end, a, 200)
  local s2 = session.spawn(function(inp, out)
    while true do
      local v = inp:get()
      if v == nil then break end
      out:put(v * 2)
    end
    out:close()
  end, a, b)
  local sum, count = 0, 0
  while true do
    local v = b:get()
    if v == nil then break end
    sum, count = sum + v, count + 1
  end
  eq(count, 200)
  eq(sum, 200 * 201)
  s1:join()
  s2:join()
end)

test("many sessions on a small pool: every one ends, threads stay few", function()
  session.pool { min = 1, max = 2 }
  local list = {}
  for i = 1, 100 do list[i] = session.spawn(function(x) return x * x end, i) end
  local sum = 0
  for i = 1, 100 do sum = sum + list[i]:join() end
  eq(sum, 338350)
  local p = session.pool()
  ok(p.peak <= 2, "peak threads " .. p.peak)
  eq(p.max, 2)
end)

-- (64, not more: under valgrind every session's start costs about half a
-- second.)
test("idle sessions hold no thread: 64 parked on a channel, 2 threads", function()
  session.pool { min = 1, max = 2 }
  local n = 64
  local ch = channel.new(0)
  local list = {}
  for i = 1, n do list[i] = session.spawn(function(c) return c:get() end, ch) end
  -- Every one parks: no thread runs, none waits for one.
  -- (The check gives its CPU away between tries: under valgrind the
  -- threads take turns.)
  local dss = require "darksidesync"
  waitfor(function()
    local p = session.pool()
    if p.busy == 0 and p.queued == 0 and p.sessions == n then return true end
    dss.wait(0.001)
  end, n .. " sessions parked", 25)
  for i = 1, n do ch:put(i) end
  local sum = 0
  for i = 1, n do sum = sum + list[i]:join() end
  eq(sum, n * (n + 1) / 2)
  ok(session.pool().peak <= 2, "peak " .. session.pool().peak)
end)

test("a sleeping session parks and wakes at its timer", function()
  local s = session.spawn(function()
    local sleep = require "darksidesync.fibers.sleep"
    local dss = require "darksidesync"
    local t0 = dss.monotime()
    sleep.sleep(0.02)
    return dss.monotime() - t0
  end)
  local dt = s:join()
  ok(dt >= 0.02, "slept " .. dt)
end)

test("a session waiting on an fd parks and wakes when it is readable", function()
  local oks, socket = pcall(require, "socket")
  if not oks then return end
  local ch = channel.new(1)
  local s = session.spawn(function(c)
    local socket = require "socket"
    local pollio = require "darksidesync.fibers.pollio"
    local u = assert(socket.udp())
    assert(u:setsockname("127.0.0.1", 0))
    local _, port = u:getsockname()
    c:put(port)
    pollio.fd_readable(u:getfd())
    local data = u:receive()
    u:close()
    return data
  end, ch)
  local port = ch:get()
  -- Parked: no thread runs it while it waits for the datagram.
  waitfor(function() return session.pool().busy == 0 end, "the session parks")
  local u = socket.udp()
  u:sendto("ping", "127.0.0.1", port)
  u:close()
  eq(s:join(), "ping")
end)

test("cancel: a session asleep ends 'cancelled'", function()
  local s = session.spawn(function()
    require("darksidesync.fibers.sleep").sleep(1000)
    return "woke"
  end)
  eq(s:join(0.01), nil)
  s:cancel()
  local r, e = s:join()
  eq(r, nil)
  eq(e, "cancelled")
  eq(s:status(), "cancelled")
end)

test("cancel: a session whose fiber waits on a channel ends 'cancelled'", function()
  local ch = channel.new(0)
  local s = session.spawn(function(c) return c:get() end, ch)
  eq(s:join(0.01), nil)
  s:cancel()
  local r, e = s:join()
  eq(r, nil)
  eq(e, "cancelled")
  -- Its get was dropped with its state: a put finds only the new taker.
  local t = session.spawn(function(c) return c:get() end, ch)
  eq(ch:put("for t"), true)
  eq(t:join(), "for t")
end)

test("a session's fibers: tasks talk over a channel, the function joins them", function()
  local s = session.spawn(function(n)
    local fibers = require "darksidesync.fibers"
    local channel = require "darksidesync.channel"
    local ch = channel.new(0)
    local done = channel.new(1)
    fibers.spawn(function()
      local sum = 0
      for _ = 1, n do sum = sum + ch:get() end
      done:put(sum)
    end)
    for i = 1, n do ch:put(i) end
    return done:get()
  end, 100)
  eq(s:join(), 5050)
end)

test("sessions spawn sessions", function()
  local s = session.spawn(function()
    local session = require "darksidesync.session"
    local inner = session.spawn(function(x) return x + 1 end, 41)
    return inner:join(), session.insession()
  end)
  local v, inside = s:join()
  eq(v, 42)
  eq(inside, true)
  eq(session.insession(), false)
end)

test("join in a fiber waits without the thread: nested sessions on one thread", function()
  -- One thread for sure: a second one left by an earlier test (idle, not
  -- retired yet) could run the inner session before the first join.
  session.pool { min = 1, max = 1, idle = 0 }
  local dss = require "darksidesync"
  waitfor(function()
    if session.pool().threads <= 1 then return true end
    dss.wait(0.001)
  end, "the pool down to one thread")
  session.pool { idle = 2 }
  local s = session.spawn(function()
    local session = require "darksidesync.session"
    local inner = session.spawn(function(x) return x * 2 end, 21)
    local r1, e1 = inner:join(0)  -- not run yet: its thread is ours
    return inner:join(), r1, e1
  end)
  local v, r1, e1 = s:join()
  eq(v, 42)
  eq(r1, nil)
  eq(e1, "timeout")
  session.pool { min = 1, max = 2 }
end)

test("join_op composes with choice", function()
  local s = session.spawn(function()
    local session = require "darksidesync.session"
    local op = require "darksidesync.fibers.op"
    local sleep = require "darksidesync.fibers.sleep"
    local slow = session.spawn(function() require("darksidesync.fibers.sleep").sleep(10) end)
    local which = op.choice(slow:join_op():wrap(function() return "joined" end),
      sleep.sleep_op(0.01):wrap(function() return "slept" end)):perform()
    slow:cancel()
    return which, slow:join()
  end)
  local which, r, e = s:join()
  eq(which, "slept")
  eq(r, nil)
  eq(e, "cancelled")
end)

test("tostring names the session", function()
  local s = session.spawn(function() end)
  ok(tostring(s):find("^darksidesync.session: "), tostring(s))
  s:join()
end)

test("closing a main state with sessions asleep ends them all and exits", function()
  local script = os.tmpname()
  writefile(script, [[
    local session = require "darksidesync.session"
    local list = {}
    for i = 1, 50 do
      list[i] = session.spawn(function() require("darksidesync.fibers.sleep").sleep(1000) end)
    end
    print("live", session.pool().sessions >= 1)
  ]])
  local out, status = sh(shq(INTERP) .. " " .. shq(script))
  os.remove(script)
  eq(out, "live\ttrue\n")
  eq(status, 0)
end)

test("close() from a session raises", function()
  local s = session.spawn(function()
    return pcall(require("darksidesync.session").close)
  end)
  local okay, err = s:join()
  eq(okay, false)
  ok(tostring(err):find("cannot close the pool from one of its sessions", 1, true), tostring(err))
end)

-- Last: the pool stays closed for the rest of this state.
test("close(): cancels the sessions, joins the threads; spawn raises after", function()
  local s = session.spawn(function()
    require("darksidesync.fibers.sleep").sleep(1000)
  end)
  session.close()
  local r, e = s:join()
  eq(r, nil)
  eq(e, "cancelled")
  eq(session.pool().threads, 0)
  raises(function() session.spawn(function() end) end, "darksidesync.session: the pool is closed")
end)
