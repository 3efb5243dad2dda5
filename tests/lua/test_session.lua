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

-- --- cancellation: "cancelled" raised in each blocked fiber -----------------

-- Bounded waits, so that a broken cancellation fails rather than hangs:
-- ch:get() once something is in ch; s:join() with a timeout.
local function get_within(ch, what)
  local dss = require "darksidesync"
  waitfor(function()
    if ch:len() > 0 then return true end
    dss.wait(0.001)
  end, what)
  return ch:get()
end

local function join_within(s)
  return s:join(10 * (tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1))
end

-- Reads `n` reports (strings "name=what") from the channel, into a table.
local function reports(ch, n)
  local t, count = {}, 0
  for i = 1, n do
    local r = get_within(ch, "report " .. i .. " of " .. n)
    local k, v = r:match("^([^=]+)=(.*)$")
    ok(k, "a report: " .. tostring(r))
    ok(t[k] == nil, "one report of " .. k)
    t[k] = v
    count = count + 1
  end
  eq(count, n)
  eq(ch:len(), 0, "reports left over")
  return t
end

-- The session of the next test: one fiber blocked in each kind of op, every
-- one reporting, before it blocks, "name=ready" on `ready`, and after,
-- what ended it on `out` ("name=error:<err>" from the error handler, on
-- every Lua version: a 5.1 fiber cannot pcall a blocking op).
local function blocked_everywhere(ready, out, cget, cfull, c0, inner_ch)
  local fiber = require "darksidesync.fibers.fiber"
  local fibers = require "darksidesync.fibers"
  local op = require "darksidesync.fibers.op"
  local fchannel = require "darksidesync.fibers.channel"
  local cond = require "darksidesync.fibers.cond"
  local sleep = require "darksidesync.fibers.sleep"
  local pollio = require "darksidesync.fibers.pollio"
  local dss = require "darksidesync"
  local session = require "darksidesync.session"
  local names = {}
  local prev
  prev = fiber.set_error_handler(function(err, tb, f)
    out:put(names[f] .. "=error:" .. tostring(err))
    if prev then prev(err, tb, f) end
  end)
  local function go(name, fn)
    fibers.spawn(function()
      names[fiber.current_fiber()] = name
      ready:put(name .. "=ready")
      local r = fn()
      out:put(name .. "=returned:" .. tostring(r))
    end)
  end
  local lget, lput = fchannel.new(0), fchannel.new(0)
  local lfull = fchannel.new(1)
  lfull:put("in the buffer")
  local poller = assert(dss.poller())
  local fd = assert(poller:getfd())  -- an epoll set with nothing in it: never readable
  local inner = session.spawn(function(c) return c:get() end, inner_ch)
  go("local_get", function() return lget:get() end)
  go("local_put", function() return lput:put("lost?") end)
  go("local_put_full", function() return lfull:put("no room") end)
  go("local_get_op", function() return lget:get_op():perform() end)
  go("cross_get", function() return cget:get() end)
  go("cross_put_full", function() return cfull:put("no room") end)
  go("cross_put_0", function() return c0:put("nobody takes it") end)
  go("sleep", function() return sleep.sleep(1000) end)
  go("sleep_op", function() return sleep.sleep_op(1000):perform() end)
  go("fd", function() return pollio.fd_readable(fd) end)
  go("cond", function() return cond.new():wait() end)
  go("never", function() return op.never():perform() end)
  go("join", function() return inner:join() end)
  go("choice", function()
    return op.choice(lget:get_op(), cget:get_op(), c0:put_op("x"), sleep.sleep_op(1000),
      pollio.fd_readable_op(fd), inner:join_op()):perform()
  end)
  go("yield_loop", function()
    while true do fibers.yield() end
  end)
  names[fiber.current_fiber()] = "main"
  ready:put("main=ready")
  return lget:get()
end

test("cancel raises 'cancelled' in every blocked fiber: channels, sleeps, fds, choice", function()
  local ready, out = channel.new(math.huge), channel.new(math.huge)
  local cget, cfull, c0, inner_ch = channel.new(0), channel.new(1), channel.new(0), channel.new(0)
  eq(cfull:put("fills it"), true)
  local s = session.spawn(blocked_everywhere, ready, out, cget, cfull, c0, inner_ch)
  local names = { "local_get", "local_put", "local_put_full", "local_get_op", "cross_get",
    "cross_put_full", "cross_put_0", "sleep", "sleep_op", "fd", "cond", "never", "join",
    "choice", "yield_loop", "main" }
  -- Each reports "ready" in the turn it blocks in (no switch in between).
  local r = reports(ready, #names)
  for _, n in ipairs(names) do eq(r[n], "ready", n) end
  eq(s:join(0), nil)
  s:cancel()
  local a, e = join_within(s)
  eq(a, nil)
  eq(e, "cancelled")
  eq(s:status(), "cancelled")
  r = reports(out, #names)
  for _, n in ipairs(names) do eq(r[n], "error:cancelled", n) end
  -- The cancelled puts left nothing behind; the channels work on.
  eq(cfull:len(), 1)
  eq(cfull:get(), "fills it")
  eq(c0:len(), 0)
  eq(cget:len(), 0)
  -- The inner session still waits on its channel.
  eq(inner_ch:put("end"), true)
  -- A cancel after the end does nothing.
  s:cancel()
  eq(s:status(), "cancelled")
end)

test("cancel: a fiber that catches it, then blocks again, gets it at once; the session ends", function()
  if LUA_VERSION == "5.1" then return end -- 5.1: no blocking inside pcall
  local out = channel.new(math.huge)
  local ready = channel.new(1)
  local s = session.spawn(function(ready, out)
    local fibers = require "darksidesync.fibers"
    local fchannel = require "darksidesync.fibers.channel"
    local sleep = require "darksidesync.fibers.sleep"
    local session = require "darksidesync.session"
    local lch, lbuf = fchannel.new(0), fchannel.new(2)
    fibers.spawn(function()
      local okp, ep = pcall(lch.put, lch, "the putter's value")
      out:put("putter=" .. tostring(okp) .. ":" .. tostring(ep))
    end)
    local function catch(f, ...)
      local okc, e = pcall(f, ...)
      return tostring(okc) .. ":" .. tostring(e) .. ":" .. tostring(session.is_cancelled(e))
    end
    local nobody = require("darksidesync.channel").new(0)
    ready:put(true)
    out:put("first=" .. catch(nobody.get, nobody))
    -- Blocking ops raise at once now, with no switch between them.
    out:put("sleep=" .. catch(sleep.sleep, 1000))
    out:put("yield=" .. catch(fibers.yield))
    out:put("get=" .. catch(lch.get, lch))
    out:put("get_op=" .. catch(function() return lch:get_op():perform() end))
    -- Ops ready at once still complete.
    lbuf:put(1)
    out:put("ready_ops=" .. tostring(lbuf:get()) .. "," .. tostring(lch:get_op():poll()))
    return "caught it"
  end, ready, out)
  eq(get_within(ready, "ready"), true)
  s:cancel()
  local a, e = join_within(s)
  eq(a, nil)
  eq(e, "cancelled", "a function that caught the cancellation and returned")
  eq(s:status(), "cancelled")
  local r = reports(out, 7)
  eq(r.first, "false:cancelled:true")
  eq(r.sleep, "false:cancelled:true")
  eq(r.yield, "false:cancelled:true")
  eq(r.get, "false:cancelled:true")
  eq(r.get_op, "false:cancelled:true")
  eq(r.ready_ops, "1,false")  -- the cancelled putter's value is not in the channel
  eq(r.putter, "false:cancelled")
end)

test("cancel: a fiber spawned after the cancellation raises at its first blocking op", function()
  local out = channel.new(math.huge)
  local ready = channel.new(1)
  local s = session.spawn(function(ready, out)
    local fiber = require "darksidesync.fibers.fiber"
    local fibers = require "darksidesync.fibers"
    local sleep = require "darksidesync.fibers.sleep"
    local fchannel = require "darksidesync.fibers.channel"
    local names = { [fiber.current_fiber()] = "main" }
    local prev
    prev = fiber.set_error_handler(function(err, tb, f)
      out:put(names[f] .. "=" .. tostring(err))
      if names[f] == "main" then
        -- Cleanup in fibers of their own: they may not block any more.
        fibers.spawn(function()
          names[fiber.current_fiber()] = "cleanup_get"
          local n = 0
          for i = 1, 3 do n = n + i end  -- runs
          out:put("cleanup_ran=" .. n)
          fchannel.new(0):get()
          out:put("cleanup=not reached")
        end)
        fibers.spawn(function()
          names[fiber.current_fiber()] = "cleanup_sleep"
          sleep.sleep(1000)
          out:put("cleanup=not reached")
        end)
      end
      if prev then prev(err, tb, f) end
    end)
    local nobody = require("darksidesync.channel").new(0)
    ready:put(true)
    return nobody:get()
  end, ready, out)
  eq(get_within(ready, "ready"), true)
  s:cancel()
  eq(select(2, join_within(s)), "cancelled")
  local r = reports(out, 4)
  eq(r.main, "cancelled")
  eq(r.cleanup_ran, "6")
  eq(r.cleanup_get, "cancelled")
  eq(r.cleanup_sleep, "cancelled")
end)

-- The relay of the next test: every value got from `inp` goes to `out`
-- (unbounded: the put never blocks), until the cancellation ends it.
local function relay(inp, out, ready)
  ready:put(true)
  while true do out:put(inp:get()) end
end

-- Drains ch (closed, or nothing more to come) into the counts of seen.
local function count_into(seen, ch, n)
  for _ = 1, n do
    local v = ch:get()
    seen[v] = (seen[v] or 0) + 1
  end
end

test("cancel: a value put around the cancel is got exactly once, by the session or after it", function()
  -- Buffered: the main state puts, the session relays; the cancel comes
  -- between two puts, at a different point each round. Rendezvous: a
  -- putter session puts, and the main state takes what the cancelled
  -- relay did not (a value lost would leave a get waiting: bounded).
  local n, rounds = 40, 8
  for round = 1, rounds do
    local inp, out, ready = channel.new(math.huge), channel.new(math.huge), channel.new(1)
    local s = session.spawn(relay, inp, out, ready)
    eq(get_within(ready, "ready"), true)
    local k = round * 5
    for i = 1, n do
      inp:put(i)
      if i == k then s:cancel() end
    end
    eq(select(2, join_within(s)), "cancelled")
    local seen = {}
    local relayed, left = out:len(), inp:len()
    eq(relayed + left, n, "round " .. round .. ": relayed " .. relayed .. " + left " .. left)
    count_into(seen, out, relayed)
    count_into(seen, inp, left)
    for i = 1, n do eq(seen[i], 1, "round " .. round .. ": value " .. i) end
  end
  for round = 1, rounds do
    local inp, out, ready = channel.new(0), channel.new(math.huge), channel.new(1)
    local s = session.spawn(relay, inp, out, ready)
    local p = session.spawn(function(c, m)
      for i = 1, m do assert(c:put(i) == true) end
    end, inp, n)
    eq(get_within(ready, "ready"), true)
    -- Cancel once `round` values went through (the relay is then blocked
    -- in its get, or about to be, and the putter in its put).
    for _ = 1, round do ok(get_within(out, "a relayed value")) end
    s:cancel()
    eq(select(2, join_within(s)), "cancelled")
    -- The relay's values, then the rest, from the putter.
    local seen = {}
    local relayed = out:len()
    count_into(seen, out, relayed)
    for i = 1, round do seen[i] = (seen[i] or 0) + 1 end  -- the ones read above
    local rest = n - round - relayed
    for _ = 1, rest do
      local v = get_within(inp, "the putter's next value")
      seen[v] = (seen[v] or 0) + 1
    end
    eq(select("#", join_within(p)), 0, "the putter ended")
    eq(inp:len(), 0)
    for i = 1, n do eq(seen[i], 1, "round " .. round .. ": value " .. i) end
  end
end)

test("cancel: a session whose fiber loops on yield stops at its next switch", function()
  local ready = channel.new(1)
  local s = session.spawn(function(ready)
    local fibers = require "darksidesync.fibers"
    local n = 0
    ready:put(true)
    while true do
      n = n + 1
      fibers.yield()
    end
  end, ready)
  eq(get_within(ready, "ready"), true)
  s:cancel()
  local r, e = join_within(s)
  eq(r, nil)
  eq(e, "cancelled")
end)

test("cancel: an ended session stays ended; cancelling it does nothing", function()
  local s = session.spawn(function() return "result" end)
  local dss = require "darksidesync"
  waitfor(function()
    if s:status() ~= "running" then return true end
    dss.wait(0.001)
  end, "the session ends")
  s:cancel()
  s:cancel()
  eq(s:status(), "done")
  eq(s:join(), "result")
  s:cancel()
  eq(s:status(), "done")
end)

test("cancel: the main state's fibers are not affected", function()
  local fibers = require "darksidesync.fibers"
  local fchannel = require "darksidesync.fibers.channel"
  local sleep = require "darksidesync.fibers.sleep"
  local ready = channel.new(1)
  local s = session.spawn(function(ready)
    ready:put(true)
    require("darksidesync.fibers.sleep").sleep(1000)
  end, ready)
  local got = {}
  fibers.spawn(function()
    local lch = fchannel.new(0)
    fibers.spawn(function() lch:put("local") end)
    eq(get_within(ready, "ready"), true)
    s:cancel()
    got.join = select(2, join_within(s))
    sleep.sleep(0.001)
    got.sleep = true
    got.get = lch:get()
    fibers.stop()
  end)
  fibers.main()
  eq(got.join, "cancelled")
  eq(got.sleep, true)
  eq(got.get, "local")
end)

test("closing a main state whose sessions' fibers catch the cancellation ends them all and exits", function()
  local script = os.tmpname()
  writefile(script, [[
    local session = require "darksidesync.session"
    local channel = require "darksidesync.channel"
    local ready = channel.new(math.huge)
    local n = 8
    for i = 1, n do
      session.spawn(function(ready)
        local fibers = require "darksidesync.fibers"
        local sleep = require "darksidesync.fibers.sleep"
        local catch = _VERSION ~= "Lua 5.1" or rawget(_G, "jit") ~= nil
        for j = 1, 3 do
          fibers.spawn(function()
            if catch then
              -- Caught: it blocks again, and gets it again at once.
              local ok1 = pcall(sleep.sleep, 1000)
              local ok2 = pcall(function() return require("darksidesync.channel").new(0):get() end)
              assert(not ok1 and not ok2)
            end
            sleep.sleep(1000)
          end)
        end
        ready:put(true)
        if catch then pcall(sleep.sleep, 1000) end
        sleep.sleep(1000)
      end, ready)
    end
    for i = 1, n do ready:get() end
    print("live", session.pool().sessions)
  ]])
  local out, status = sh(shq(INTERP) .. " " .. shq(script))
  os.remove(script)
  eq(out, "live\t8\n")
  eq(status, 0)
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
