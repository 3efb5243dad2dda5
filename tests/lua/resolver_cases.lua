-- resolver_cases.lua -- the tests of the resolver example client libraries:
-- dss_resolver (examples/resolver, C) and dss_resolver_cpp
-- (examples/resolver_cpp, the same over include/darksidesync.hpp), which
-- have the same Lua API. Asynchronous getaddrinfo on a thread pool, results
-- delivered fire and forget, retry questions asked with blocking
-- deliveries, shutdown and lua_close with lookups in flight.
--
--   require("resolver_cases")("dss_resolver")   -- from a test file run by run.lua
--
-- No network: names under ".invalid" fail at once (the library never asks
-- getaddrinfo about them), "localhost" and the names of /etc/hosts resolve
-- from the hosts file. Every wait is bounded (waitfor), nothing sleeps.
-- Error messages start with the module's name.

return function(M)
  local dss = require "darksidesync"
  local resolver = require(M)
  local tc = require "testclient"

  -- Polls, calling each callback, until pred() returns a true value.
  local drain = pump  -- run.lua

  -- This process's number of threads (Linux), or nil.
  local function threads()
    local f = io.open("/proc/self/status")
    if not f then return nil end
    local s = f:read("*a")
    f:close()
    return tonumber(s:match("\nThreads:%s*(%d+)"))
  end

  -- The threads before any lookup: darksidesync and the test client start none.
  local BASE = threads()

  -- Waits until the process has exactly n threads (skipped without /proc, or
  -- n nil). A bounded wait even right after pthread_join: the kernel wakes the
  -- joiner before it has taken the thread out of /proc's count.
  local function threads_settle(n, what)
    if not BASE or not n then return end
    waitfor(function() return threads() == n end, what or (n .. " threads"))
  end

  -- The names of /etc/hosts: {name = {address = true, ...}}, and their count.
  local function hosts()
    local names, count = {}, 0
    for line in io.lines("/etc/hosts") do
      local fields = {}
      for w in line:gsub("#.*", ""):gmatch("%S+") do fields[#fields + 1] = w end
      for i = 2, #fields do
        local name = fields[i]
        if not name:lower():match("invalid%.?$") then
          if not names[name] then
            names[name] = {}
            count = count + 1
          end
          names[name][fields[1]] = true
        end
      end
    end
    return names, count
  end

  -- Each value of list appears once.
  local function unique(list)
    local seen = {}
    for _, v in ipairs(list) do
      if seen[v] then return false end
      seen[v] = true
    end
    return true
  end

  local function contains(list, value)
    for _, v in ipairs(list) do
      if v == value then return true end
    end
    return false
  end

  -- Asserts that fn raises "bad argument #n to '<any name>' (msg)".
  local function argerr(fn, n, msg)
    local esc = msg:gsub("%p", "%%%0")
    raises(fn, { pattern = "^bad argument #" .. n .. " to '[^']+' %(" .. esc .. "%)$" })
  end

  -- A callback that records each call's arguments in list.
  local function recorder(list)
    return function(...) list[#list + 1] = pack(...) end
  end

  -- Quotes s for the shell.
  local function shq(s) return "'" .. s:gsub("'", [['\'']]) .. "'" end

  test("resolve(\"localhost\"): unique numeric addresses with 127.0.0.1, no error, 1 attempt", function()
    resolver.setretry(nil)
    local got = {}
    resolver.resolve("localhost", recorder(got))
    eq(resolver.pending(), 1, "pending while in flight")
    drain(function() return #got == 1 end, "the result")
    local r = got[1]
    eq(r.n, 4, "callback arguments")
    eq(r[1], "localhost", "name")
    eq(type(r[2]), "table", "addresses")
    ok(contains(r[2], "127.0.0.1"), "127.0.0.1 among " .. table.concat(r[2], " "))
    ok(unique(r[2]), "addresses unique")
    for _, a in ipairs(r[2]) do ok(a:match("^[%x:.%%%w]+$"), "numeric address " .. a) end
    eq(r[3], nil, "err")
    eq(r[4], 1, "attempts")
    eq(resolver.pending(), 0, "pending after")
    eq(dss.queuesize(), 0, "queue drained")
  end)

  test("every name in /etc/hosts resolves, in one batch, to an address the file lists for it", function()
    local names, count = hosts()
    ok(count > 0, "names in /etc/hosts")
    local got = {}
    for name in pairs(names) do resolver.resolve(name, recorder(got)) end
    eq(resolver.pending(), count, "pending")
    drain(function() return #got == count end, count .. " results")
    local seen = {}
    for _, r in ipairs(got) do
      local name, addrs, err, attempts = r[1], r[2], r[3], r[4]
      ok(names[name], "a name we asked for: " .. tostring(name))
      ok(not seen[name], "one result per name: " .. name)
      seen[name] = true
      eq(err, nil, "err for " .. name)
      eq(attempts, 1, "attempts for " .. name)
      ok(unique(addrs), "unique addresses for " .. name)
      local listed = false
      for _, a in ipairs(addrs) do listed = listed or names[name][a] ~= nil end
      ok(listed, name .. " resolved to " .. table.concat(addrs, " "))
    end
    eq(resolver.pending(), 0, "pending after")
  end)

  test("x.invalid without a retry function: one failure, attempts 1, a gai_strerror message", function()
    resolver.setretry(nil)
    local got = {}
    resolver.resolve("x.invalid", recorder(got))
    drain(function() return #got == 1 end, "the failure")
    local r = got[1]
    eq(r.n, 4, "callback arguments")
    eq(r[1], "x.invalid", "name")
    eq(r[2], nil, "addresses")
    eq(type(r[3]), "string", "err")
    ok(#r[3] > 0, "err not empty")
    eq(r[4], 1, "attempts")
    eq(resolver.pending(), 0, "pending after")
    eq(dss.poll(), -1, "nothing more delivered")
  end)

  test("every name under the .invalid TLD fails at once, whatever its case or trailing dot", function()
    local names = { "invalid", "INVALID", "x.invalid.", "a.b.Invalid", "localhost.invalid" }
    local got = {}
    for _, name in ipairs(names) do resolver.resolve(name, recorder(got)) end
    drain(function() return #got == #names end, "the failures")
    local msg = got[1][3]
    for _, r in ipairs(got) do
      eq(r[2], nil, "addresses of " .. r[1])
      eq(r[3], msg, "err of " .. r[1])
      eq(r[4], 1, "attempts of " .. r[1])
    end
  end)

  test("retry answering true, true, false: asked 3 times with attempts 1, 2, 3; the failure has attempts 3", function()
    resolver.setretry(nil)
    local asked, got, answers = {}, {}, { true, true, false }
    resolver.resolve("y.invalid", recorder(got), function(name, err, attempt)
      asked[#asked + 1] = pack(name, err, attempt)
      return answers[#asked]
    end)
    drain(function() return #got == 1 end, "the failure")
    eq(#asked, 3, "questions")
    for i = 1, 3 do
      eq(asked[i].n, 3, "retry arguments")
      eq(asked[i][1], "y.invalid", "name")
      eq(asked[i][2], got[1][3], "err")
      eq(asked[i][3], i, "attempt")
    end
    eq(got[1][2], nil, "addresses")
    eq(got[1][4], 3, "attempts")
    eq(resolver.pending(), 0, "pending after")
  end)

  test("the retry question as polled: cb(wt, name, err, attempt) asks retry, answers wt, returns the answer", function()
    local got = {}
    resolver.resolve("q.invalid", recorder(got), function(_, _, attempt) return attempt < 2 end)
    queued(1)
    eq(resolver.pending(), 1, "pending while the question waits")
    local n, cb, args = dss.poll()
    eq(n, 0, "remaining")
    eq(type(cb), "function", "callback")
    eq(#args, 4, "args")
    eq(type(args[1]), "userdata", "args[1] is the waiting-thread callback")
    eq(args[2], "q.invalid", "name")
    eq(type(args[3]), "string", "err")
    eq(args[4], 1, "attempt")
    eq(cb(unpack(args)), true, "the answer")
    eq(select("#", args[1](false)), 0, "a second answer does nothing")
    queued(1)
    n, cb, args = dss.poll()
    eq(args[4], 2, "attempt")
    eq(cb(unpack(args)), false, "the answer")
    drain(function() return #got == 1 end, "the failure")
    eq(got[1][4], 2, "attempts")
    eq(got[1][3], args[3], "err")
  end)

  test("retry always true: asked maxattempts - 1 times, the failure has maxattempts", function()
    eq(resolver.maxattempts, 5, "maxattempts")
    local asked, got = {}, {}
    resolver.resolve("cap.invalid", recorder(got), function(_, _, attempt)
      asked[#asked + 1] = attempt
      return true
    end)
    drain(function() return #got == 1 end, "the failure")
    eq(table.concat(asked, ","), "1,2,3,4", "attempts asked about")
    eq(got[1][4], 5, "attempts")
  end)

  test("setretry: the default for lookups without one; a lookup's own retry wins; setretry(nil) removes it", function()
    local defaults, own, got = {}, {}, {}
    resolver.setretry(function(name, _, attempt)
      defaults[#defaults + 1] = name .. attempt
      return attempt < 2
    end)
    resolver.resolve("d.invalid", recorder(got))
    drain(function() return #got == 1 end, "the first failure")
    eq(table.concat(defaults, ","), "d.invalid1,d.invalid2", "the default was asked")
    eq(got[1][4], 2, "attempts")

    resolver.resolve("o.invalid", recorder(got), function(name, _, attempt)
      own[#own + 1] = name .. attempt
      return false
    end)
    drain(function() return #got == 2 end, "the second failure")
    eq(table.concat(own, ","), "o.invalid1", "the lookup's own retry was asked")
    eq(#defaults, 2, "the default was not asked")
    eq(got[2][4], 1, "attempts")

    resolver.setretry(nil)
    resolver.resolve("n.invalid", recorder(got))
    drain(function() return #got == 3 end, "the third failure")
    eq(#defaults, 2, "the default is gone")
    eq(got[3][4], 1, "attempts")
  end)

  test("setretry(nil) while a question is queued: the question ends at poll, the failure follows", function()
    local asked, got = 0, {}
    resolver.setretry(function() asked = asked + 1; return true end)
    resolver.resolve("late.invalid", recorder(got))
    queued(1)
    resolver.setretry(nil)
    eq(select("#", dss.poll()), 1, "the question ended in its decoder")
    drain(function() return #got == 1 end, "the failure")
    eq(asked, 0, "retry not asked")
    eq(got[1][4], 1, "attempts")
  end)

  test("a retry function that raises: its error comes out of the question's callback, no retry", function()
    local got = {}
    resolver.resolve("boom.invalid", recorder(got), function() error("no retry for you", 0) end)
    queued(1)
    local _, cb, args = dss.poll()
    raises(function() cb(unpack(args)) end, "no retry for you")
    ok(tostring(args[1]):match("done"), "the waiting-thread callback was answered: " .. tostring(args[1]))
    drain(function() return #got == 1 end, "the failure")
    eq(got[1][2], nil, "addresses")
    eq(got[1][4], 1, "attempts")
    eq(resolver.pending(), 0, "pending after")
  end)

  -- Polls the question and drops it uncalled (in a function of its own, so
  -- that nothing on the stack keeps it).
  local function poll_and_drop()
    local n, cb, args = dss.poll()
    eq(n, 0, "remaining")
    eq(type(cb), "function", "callback")
    eq(type(args[1]), "userdata", "args[1]")
  end

  test("a retry question collected uncalled counts as no: retry not called, the failure has attempts 1", function()
    local asked, got = 0, {}
    resolver.resolve("gc.invalid", recorder(got), function() asked = asked + 1; return true end)
    queued(1)
    poll_and_drop()
    collectgarbage()
    collectgarbage()
    drain(function() return #got == 1 end, "the failure")
    eq(asked, 0, "retry not called")
    eq(got[1][2], nil, "addresses")
    eq(got[1][4], 1, "attempts")
    eq(resolver.pending(), 0, "pending after")
  end)

  test("the pool: 16 lookups on 2 workers all complete; never more than 2 worker threads; pending back to 0", function()
    resolver.setretry(nil)
    resolver.setpoolsize(2)
    eq(resolver.getpoolsize(), 2, "getpoolsize")
    local got, most = {}, 0
    for i = 1, 16 do
      resolver.resolve(i % 4 == 0 and ("p" .. i .. ".invalid") or "localhost", recorder(got))
    end
    eq(resolver.pending(), 16, "pending")
    drain(function()
      if BASE then most = math.max(most, threads()) end
      return #got == 16
    end, "16 results")
    if BASE then ok(most <= BASE + 2, "at most 2 workers: " .. most .. " threads, " .. BASE .. " before") end
    local failed = 0
    for _, r in ipairs(got) do
      if r[3] then failed = failed + 1 else ok(contains(r[2], "127.0.0.1"), "localhost") end
    end
    eq(failed, 4, "failures")
    eq(resolver.pending(), 0, "pending after")
    threads_settle(BASE and BASE + 2, "2 workers")
  end)

  test("the pool: setpoolsize(1) serves lookups one at a time, in FIFO order; setpoolsize(4) grows it", function()
    resolver.setpoolsize(1)
    threads_settle(BASE and BASE + 1, "the extra worker gone")
    local names = { "localhost", "a.invalid", "localhost", "b.invalid", "c.invalid", "localhost" }
    local got = {}
    for _, name in ipairs(names) do resolver.resolve(name, recorder(got)) end
    drain(function() return #got == #names end, "the results")
    local order = {}
    for i, r in ipairs(got) do order[i] = r[1] end
    eq(table.concat(order, " "), table.concat(names, " "), "order")

    resolver.setpoolsize(4)
    eq(resolver.getpoolsize(), 4, "getpoolsize")
    got = {}
    for _ = 1, 8 do resolver.resolve("localhost", recorder(got)) end
    drain(function() return #got == 8 end, "8 results")
    threads_settle(BASE and BASE + 4, "4 workers")
    resolver.setpoolsize(2)
    threads_settle(BASE and BASE + 2, "back to 2 workers")
  end)

  test("setpoolsize rejects what is not an integer from 1 to 16", function()
    local range = "pool size must be an integer from 1 to 16"
    argerr(function() resolver.setpoolsize(0) end, 1, range)
    argerr(function() resolver.setpoolsize(17) end, 1, range)
    argerr(function() resolver.setpoolsize(1.5) end, 1, range)
    argerr(function() resolver.setpoolsize(-1) end, 1, range)
    argerr(function() resolver.setpoolsize(0 / 0) end, 1, range)
    argerr(function() resolver.setpoolsize(1 / 0) end, 1, range)
    argerr(function() resolver.setpoolsize("2") end, 1, "number expected, got string")
    argerr(function() resolver.setpoolsize() end, 1, "number expected, got no value")
    eq(resolver.getpoolsize(), 2, "unchanged")
    resolver.setpoolsize(16.0)
    eq(resolver.getpoolsize(), 16, "16.0 accepted")
    resolver.setpoolsize(2)
  end)

  test("resolve and setretry reject bad arguments", function()
    local f = function() end
    argerr(function() resolver.resolve() end, 1, "string expected, got no value")
    argerr(function() resolver.resolve(nil, f) end, 1, "string expected, got nil")
    argerr(function() resolver.resolve(127001, f) end, 1, "string expected, got number")
    argerr(function() resolver.resolve({}, f) end, 1, "string expected, got table")
    argerr(function() resolver.resolve("", f) end, 1, "name is empty")
    argerr(function() resolver.resolve("local\0host", f) end, 1, "name contains a zero byte")
    argerr(function() resolver.resolve("localhost") end, 2, "function expected, got no value")
    argerr(function() resolver.resolve("localhost", nil) end, 2, "function expected, got nil")
    argerr(function() resolver.resolve("localhost", "f") end, 2, "function expected, got string")
    argerr(function() resolver.resolve("localhost", f, true) end, 3, "function or nil expected, got boolean")
    argerr(function() resolver.resolve("localhost", f, {}) end, 3, "function or nil expected, got table")
    argerr(function() resolver.setretry(1) end, 1, "function or nil expected, got number")
    argerr(function() resolver.setretry(false) end, 1, "function or nil expected, got boolean")
    eq(resolver.pending(), 0, "nothing was started")
    eq(dss.queuesize(), 0, "nothing was queued")
  end)

  test("requiring again in the same state gives a table over the same resolver", function()
    package.loaded[M] = nil
    local again = require(M)
    package.loaded[M] = resolver
    ok(again ~= resolver, "a new table")
    eq(again.getpoolsize(), resolver.getpoolsize(), "same pool size")
    local got = {}
    again.resolve("localhost", recorder(got))
    eq(resolver.pending(), 1, "pending seen through the first table")
    drain(function() return #got == 1 end, "the result")
    eq(resolver.pending(), 0, "pending after")
  end)

  test("without darksidesync, require '" .. M .. "' raises a clear error", function()
    local state, okay, err = tc.newstate("return pcall(require, '" .. M .. "')")
    eq(okay, false, "require")
    ok(err:match("require 'darksidesync' before loading this library"), err)
    tc.close(state)
  end)

  -- A child Lua state in this process with darksidesync and the resolver
  -- loaded as the globals dss and r, and a helper: count(name) -> results so
  -- far for name. Returns the state and code's results.
  local function child(code)
    return tc.newstate([[
      dss = require "darksidesync"
      r = require "]] .. M .. [["
      got = {}
      function cb(name) got[name] = (got[name] or 0) + 1 end
    ]] .. code)
  end

  local function child_queued(state, n)
    waitfor(function() return tc.run(state, "return dss.queuesize()") == n end,
            n .. " item(s) queued in the child")
  end

  test("shutdown() with results queued, questions asked and lookups waiting: all dropped, workers joined, idempotent", function()
    local before = threads()
    local state = child [[
      r.setpoolsize(2)
      r.setretry(function() return true end)
      r.resolve("localhost", cb)
      r.resolve("localhost", cb)
    ]]
    child_queued(state, 2)             -- two results queued
    tc.run(state, [[
      r.resolve("q1.invalid", cb)
      r.resolve("q2.invalid", cb)
      r.resolve("q3.invalid", cb)
      r.resolve("localhost", cb)
    ]])
    child_queued(state, 4)             -- and both workers blocked in a question
    eq(tc.run(state, [[
      -- poll the results, then hold one question unanswered
      local a = select(3, dss.poll()); local b = select(3, dss.poll())
      local n, _, args = dss.poll()
      WT = args[1]
      return n
    ]]), 1, "one question left queued")
    eq(tc.run(state, "return r.pending()"), 4, "pending: 2 questions, 2 lookups waiting")
    threads_settle(before and before + 2, "the child's 2 workers")
    tc.run(state, "r.shutdown()")
    threads_settle(before, "workers joined")
    eq(tc.run(state, "return r.pending(), dss.queuesize()"), 0, "pending after shutdown")
    eq(select(2, tc.run(state, "return r.pending(), dss.queuesize()")), 0, "queue after shutdown")
    eq(tc.run(state, "return select('#', WT(true))"), 0, "the held question was cancelled")
    tc.run(state, "r.shutdown()")      -- again: nothing happens
    eq(tc.run(state, [[
      local ok, err = pcall(r.resolve, "localhost", cb)
      return err
    ]]), M .. ": the resolver is shut down", "resolve after shutdown")
    eq(tc.run(state, "return dss.poll()"), -1, "nothing delivered after shutdown")
    tc.close(state)
    threads_settle(before, "threads after close")
  end)

  test("lua_close with results queued, a question held, others asked and lookups waiting: no thread left", function()
    local before = threads()
    local state = child [[
      r.setpoolsize(1)
      r.resolve("localhost", cb)
      r.resolve("localhost", cb)
    ]]
    child_queued(state, 2)             -- two results
    tc.run(state, [[
      r.setpoolsize(3)
      r.resolve("h.invalid", cb, function() return true end)
    ]])
    child_queued(state, 3)
    eq(tc.run(state, [[
      local a = select(3, dss.poll()); local b = select(3, dss.poll())
      local n, _, args = dss.poll()    -- the question: held unanswered
      WT = args[1]
      r.resolve("q1.invalid", cb, function() return true end)
      r.resolve("q2.invalid", cb, function() return true end)
      r.resolve("localhost", cb)
      r.resolve("localhost", cb)
      return n
    ]]), 0, "polled the question")
    child_queued(state, 2)             -- two more questions: all 3 workers blocked
    tc.run(state, [[
      r.resolve("localhost", cb)
      r.resolve("localhost", cb)
    ]])
    eq(tc.run(state, "return r.pending()"), 7, "pending in the child")
    threads_settle(before and before + 3, "the child's 3 workers")
    tc.close(state)
    threads_settle(before, "no thread left")
  end)

  test("lua_close while results stream in: every item ends once, no thread left", function()
    local before = threads()
    local state = child [[
      r.setpoolsize(4)
      for i = 1, 200 do r.resolve(i % 2 == 0 and "localhost" or ("f" .. i .. ".invalid"), cb) end
    ]]
    waitfor(function() return tc.run(state, "return dss.queuesize()") >= 20 end, "20 results queued")
    tc.close(state)
    threads_settle(before, "no thread left")
  end)

  test("a process exiting with lookups in flight and a question held: exit status 0, no hang", function()
    local interp = assert(arg and arg[-1], "the interpreter's name is unknown")
    local code = [[
      local dss = require "darksidesync"
      local r = require "]] .. M .. [["
      r.setretry(function() return true end)
      r.resolve("q1.invalid", function() end)
      r.resolve("q2.invalid", function() end)
      for i = 1, 4 do r.resolve("localhost", function() end) end
      r.resolve("q3.invalid", function() end, function() return false end)
      local deadline = os.time() + 10
      while dss.queuesize() < 2 and os.time() <= deadline do end
      local n, cb, args = dss.poll()
      WT = args and args[1]
      io.write("pending ", r.pending(), " queued ", dss.queuesize(), "\n")
    ]]
    local p = assert(io.popen("timeout 60 " .. shq(interp) .. " -e " .. shq(code) ..
                              " 2>&1; echo \"exit $?\""))
    local out = p:read("*a")
    p:close()
    local text, status = out:match("^(.-)exit (%d+)\n$")
    eq(status, "0", "exit status, output " .. string.format("%q", out))
    eq(text, "pending 7 queued 1\n", "output")
  end)
end
