-- test_session_fibers.lua -- inside a session, every fibers module works
-- (cond, mutex, waitgroup, queue, go, sleep, fibers channels), and items a
-- C library's threads deliver to the session's own state wake it and run
-- in its fibers, blocking ones answered.

local session = require "darksidesync.session"

test("fibers modules in a session: go, mutex, waitgroup, queue, cond, sleep, fibers channels", function()
  local s = session.spawn(function()
    local go = require "darksidesync.fibers.go"
    local mutex = require "darksidesync.fibers.mutex"
    local waitgroup = require "darksidesync.fibers.waitgroup"
    local queue = require "darksidesync.fibers.queue"
    local cond = require "darksidesync.fibers.cond"
    local sleep = require "darksidesync.fibers.sleep"
    local fchannel = require "darksidesync.fibers.channel"
    local mu, wg, q, total = mutex.new(), waitgroup.new(), queue.new(2), 0
    for i = 1, 5 do
      wg:add(1)
      go(function(k)
        mu:lock()
        local t = total
        sleep.sleep(0.001) -- the others wait on the mutex meanwhile
        total = t + k
        mu:unlock()
        q:put(k)
        wg:done()
      end, { i })
    end
    local sum = 0
    for _ = 1, 5 do sum = sum + q:get() end
    wg:wait()
    local c, ch, signalled = cond.new(), fchannel.new(), false
    go(function() c:wait(); signalled = true; ch:put("after the signal") end)
    sleep.sleep(0.001)
    c:signal()
    return total, sum, ch:get(), signalled
  end)
  local total, sum, msg, signalled = s:join(30)
  eq(total, 15)
  eq(sum, 15)
  eq(msg, "after the signal")
  eq(signalled, true)
end)

test("items from a C library's threads run in a session's fibers; blocking ones are answered", function()
  local s = session.spawn(function()
    local tc = require "testclient"
    local cond = require "darksidesync.fibers.cond"
    local sleep = require "darksidesync.fibers.sleep"
    local got, all = 0, cond.new()
    tc.setcallback(function(wt, _, pid, seq)
      sleep.sleep(0.001) -- a callback that blocks blocks its fiber only
      wt(pid * 1000 + seq)
      got = got + 1
      if got == 20 then all:signal() end
    end)
    tc.start { blocking = true, threads = 4, items = 5 }
    all:wait()
    local joined = tc.join()
    local ok, err = pcall(tc.check, { threads = 4, completed = 4, attempts = 20, delivered = 20,
      released = 20, decoded = 20, returned = 20, answers_ok = 20, ended = 20 })
    return got, joined, ok, err
  end)
  local got, joined, ok_, err = s:join(30)
  eq(got, 20)
  ok(joined, "the client's threads joined")
  eq(err, nil)
  eq(ok_, true)
end)

test("a plain wait() loop sees channel traffic: a fiber's get completes through the hub", function()
  local dss = require "darksidesync"
  local channel = require "darksidesync.channel"
  local fiber = require "darksidesync.fibers.fiber"
  local S = fiber.current_scheduler
  local ch = channel.new(0)
  local got
  fiber.spawn(function() got = ch:get() end)
  S:run() -- one turn: the fiber blocks on the empty channel
  eq(got, nil)
  eq(dss.queuesize(), 0)
  local s = session.spawn(function(c) return c:put("from a session") end, ch)
  -- The loop's own sleep: it returns once the completion is queued.
  local deadline = dss.monotime() + 30
  while dss.queuesize() == 0 and dss.monotime() < deadline do dss.wait(deadline - dss.monotime()) end
  eq(dss.queuesize(), 1, "one item: the completion")
  S:run() -- the turn takes it and resumes the fiber
  eq(got, "from a session")
  eq(dss.queuesize(), 0)
  eq(s:join(10), true)
end)

test("a darksidesync.* module that fails to load in a session: the error names the module and its file", function()
  local dir = os.tmpname()
  os.remove(dir)
  sh("mkdir -p " .. shq(dir .. "/darksidesync"))
  local file = dir .. "/darksidesync/broken_for_test.lua"
  writefile(file, "return {\n")
  local saved = package.path
  package.path = dir .. "/?.lua;" .. package.path
  local s = session.spawn(function() return require "darksidesync.broken_for_test" end)
  package.path = saved
  local r, err = s:join(30)
  sh("rm -rf " .. shq(dir))
  eq(r, nil)
  ok(tostring(err):find("error loading module 'darksidesync.broken_for_test' from file '" .. file .. "':", 1, true),
    "the searcher's message: " .. tostring(err))
end)
