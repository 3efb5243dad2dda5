-- test_resolver_cpp.lua -- dss_resolver_cpp (examples/resolver_cpp), the
-- resolver example ported to the C++ helper include/darksidesync.hpp: the
-- same cases as test_resolver.lua (resolver_cases.lua), against the C++
-- library.

require("resolver_cases")("dss_resolver_cpp")

-- The helper itself, through dss_hpp_probe (examples/resolver_cpp/
-- hpp_probe.cpp): a client in a userdata, functors that count themselves
-- (probe.counts() -> alive, run, hooks called; process-wide, so the tests
-- compare before and after), calls from a thread of their own.

local dss = require "darksidesync"
local probe = require "dss_hpp_probe"
local tc = require "testclient"
local scale = tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1

-- ASan preloaded into the (C) interpreter cannot intercept __cxa_throw
-- unless libstdc++ is preloaded with it (it aborts at the first throw): the
-- tests whose functors throw run only where throwing works.
local preload = os.getenv("LD_PRELOAD") or ""
local can_throw = not (preload:match("asan") and not preload:match("libstdc%+%+"))
local throwing = can_throw and test or function(title)
  print("skip   " .. title .. " (ASan preloaded without libstdc++: C++ throw unavailable)")
end

local function alive() return (probe.counts()) end
local function ran() return (select(2, probe.counts())) end
local function hooks() return (select(3, probe.counts())) end

-- Polls the one item queued; returns what poll returned.
local function poll1()
  queued(1)
  return dss.poll()
end

test("hpp post from a thread: each functor runs once on the Lua thread, in order, then dies", function()
  local c = probe.client()
  local got = {}
  probe_cb = function(v) got[#got + 1] = v end
  local a0, r0 = alive(), ran()
  eq(c:post(3, "plain", 10), "DSS_SUCCESS", "post")
  eq(c:queued(), 3, "queued()")
  eq(alive() - a0, 3, "functors alive while queued")
  pump(function() return #got == 3 end, "3 callbacks")
  eq(table.concat(got, ","), "10,11,12", "arguments")
  eq(alive(), a0, "functors destroyed")
  eq(ran() - r0, 3, "functors run")
  c:close()
end)

throwing("hpp post: a functor that throws ends its item with no call, and dies", function()
  local c = probe.client()
  local a0, r0 = alive(), ran()
  eq(c:post_here("throw"), "DSS_SUCCESS", "post")
  eq(select("#", poll1()), 1, "the item ended in its decoder")
  eq(ran() - r0, 1, "functor run")
  eq(alive(), a0, "functor destroyed")
  c:close()
end)

test("hpp post: a functor returning 0 ends its item; one that raises has its error re-raised by poll; both die", function()
  local c = probe.client()
  local a0, r0 = alive(), ran()
  eq(c:post_here("zero"), "DSS_SUCCESS", "post")
  eq(select("#", poll1()), 1, "the item ended in its decoder")
  eq(c:post_here("raise", 7), "DSS_SUCCESS", "post")
  queued(1)
  raises(function() dss.poll() end, labeled("raised by a functor 7"))
  eq(dss.queuesize(), 0, "queue")
  eq(ran() - r0, 2, "functors run")
  eq(alive(), a0, "functors destroyed")
  c:close()
end)

test("hpp post: close() destroys the queued functors unrun; later posts get DSS_ERR_NOT_STARTED", function()
  local c = probe.client()
  local a0, r0 = alive(), ran()
  eq(c:post(5, "plain"), "DSS_SUCCESS", "post")
  eq(alive() - a0, 5, "alive while queued")
  c:close()
  eq(dss.queuesize(), 0, "queue after close")
  eq(alive(), a0, "destroyed")
  eq(ran(), r0, "none ran")
  eq(c:utilid(), nil, "utilid after close")
  eq(c:post(1, "plain"), "DSS_ERR_NOT_STARTED", "post after close")
  eq(c:queued(), -102, "queued() after close: DSS_ERR_NOT_STARTED")
  eq(alive(), a0, "a refused functor dies too")
end)

throwing("hpp post: std::bad_alloc copying the functor gives DSS_ERR_OUT_OF_MEMORY", function()
  local c = probe.client()
  eq(c:post_oom(), "DSS_ERR_OUT_OF_MEMORY", "post")
  eq(dss.queuesize(), 0, "nothing queued")
  c:close()
end)

test("hpp call: push, Lua answers through the waiting-thread callback, read gets the values and what it pushes is returned", function()
  local c = probe.client()
  probe_q = function(wt, v) return wt(v * 2) end
  c:call("plain", 21)
  local n, cb, args = poll1()
  eq(n, 0, "remaining")
  eq(cb, probe_q, "the function push pushed")
  eq(type(args[1]), "userdata", "the waiting-thread callback first")
  eq(args[2], 21, "push's argument")
  eq(cb(unpack(args)), "read", "what read pushed")
  local code, answer = c:join()
  eq(code, "DSS_SUCCESS", "code")
  eq(answer, 42, "answer")
  c:close()
end)

for _, kind in ipairs({ "throw", "zero" }) do
  local what = kind == "throw" and "push throwing" or "push returning 0"
  local register = kind == "throw" and throwing or test
  register("hpp call: " .. what .. " ends the question, read not run: DSS_SUCCESS", function()
    local c = probe.client()
    c:call(kind, 1)
    eq(select("#", poll1()), 1, "the item ended in its decoder")
    local code, answer = c:join()
    eq(code, "DSS_SUCCESS", "code")
    eq(answer, nil, "read did not run")
    c:close()
  end)
end

throwing("hpp call: read throwing still releases the caller; the waiting-thread callback returns nothing", function()
  local c = probe.client()
  c:call("throwread", 1)
  local _, _, args = poll1()
  eq(select("#", args[1](5)), 0, "wt(5) returns")
  local code, answer = c:join()
  eq(code, "DSS_SUCCESS", "code")
  eq(answer, nil, "no answer recorded")
  c:close()
end)

-- Polls the question and drops it (in a function of its own, so that
-- nothing on the stack keeps it).
local function poll_and_drop()
  local n, cb = poll1()
  eq(n, 0, "remaining")
  eq(type(cb), "function", "callback")
end

test("hpp call: the waiting-thread callback collected uncalled: DSS_SUCCESS, read not run", function()
  local c = probe.client()
  probe_q = function() end
  c:call("plain", 1)
  poll_and_drop()
  collectgarbage()
  collectgarbage()
  local code, answer = c:join()
  eq(code, "DSS_SUCCESS", "code")
  eq(answer, nil, "read did not run")
  c:close()
end)

test("hpp call: a timeout while queued or while Lua holds the question: DSS_ERR_TIMEOUT, the question spent", function()
  local c = probe.client()
  c:call("plain", 1, 50)
  local code, answer = c:join()
  eq(code, "DSS_ERR_TIMEOUT", "never polled")
  eq(answer, nil, "answer")
  eq(dss.queuesize(), 0, "the item was taken back")

  c:call("plain", 1, 1000 * scale)
  local _, _, args = poll1()
  code, answer = c:join()                 -- Lua holds the question: times out
  eq(code, "DSS_ERR_TIMEOUT", "polled, never answered")
  eq(select("#", args[1](9)), 0, "the spent waiting-thread callback returns nothing")
  eq(answer, nil, "read did not run")
  c:close()
end)

test("hpp call: close() while a call waits, queued or held by Lua: DSS_ERR_CANCELLED", function()
  local c = probe.client()
  c:call("plain", 1)
  queued(1)
  c:close()
  local code, answer = c:join()
  eq(code, "DSS_ERR_CANCELLED", "queued")
  eq(answer, nil, "answer")

  local d = probe.client()
  d:call("plain", 1)
  local _, _, args = poll1()
  d:close()
  code, answer = d:join()
  eq(code, "DSS_ERR_CANCELLED", "held by Lua")
  eq(select("#", args[1](9)), 0, "the cancelled waiting-thread callback returns nothing")
  eq(answer, nil, "read did not run")
end)

test("hpp call from the Lua thread (inside a functor): DSS_ERR_WOULD_DEADLOCK, no hang", function()
  local c = probe.client()
  local _, cb, args
  eq(c:post_here("deadlock", 3), "DSS_SUCCESS", "post")
  _, cb, args = poll1()
  eq(cb, probe_cb, "callback")
  eq(args[1], 3, "value")
  eq(args[2], "DSS_ERR_WOULD_DEADLOCK", "call's code")
  c:close()
end)

test("hpp: two clients in one state are two libraries: own utilids, closing one leaves the other", function()
  local c, d = probe.client(), probe.client()
  ok(c:utilid() and d:utilid() and c:utilid() ~= d:utilid(), "distinct utilids")
  local got = {}
  probe_cb = function(v) got[#got + 1] = v end
  eq(c:post(1, "plain", 1), "DSS_SUCCESS", "post c")
  eq(d:post(1, "plain", 2), "DSS_SUCCESS", "post d")
  c:close()
  pump(function() return #got == 1 end, "d's item")
  eq(got[1], 2, "d's item survived")
  eq(dss.queuesize(), 0, "c's item cancelled")
  d:close()
end)

test("hpp: opening without darksidesync raises the clear error from open()", function()
  local state, okay, err = tc.newstate("return pcall(require('dss_hpp_probe').client)")
  eq(okay, false, "client()")
  eq(err, "DarkSideSync API not found: require 'darksidesync' before loading this library", "message")
  tc.close(state)
end)

test("hpp: the Lua state closes first: functors destroyed unrun, hooks called once, later posts refused, late delete safe", function()
  local a0, r0, h0 = probe.counts()
  local state, n = tc.newstate([[
    dss = require "darksidesync"
    probe = require "dss_hpp_probe"
    probe.global_open()
    probe_q = function() end
    d = probe.client()
    d:call("plain", 1)                 -- a thread blocked in call()
    local deadline = os.time() + 10
    while dss.queuesize() < 1 and os.time() <= deadline do end
    WT = select(3, dss.poll())[1]      -- Lua holds the question
    c = probe.client()
    c:post(3, "plain")
    return dss.queuesize()
  ]])
  eq(n, 3, "queued in the child")
  eq(alive() - a0, 3, "queued functors")
  tc.close(state)                      -- no hang: the held question is cancelled
  eq(alive(), a0, "functors destroyed")
  eq(ran(), r0, "none ran")
  eq(hooks() - h0, 3, "each client's hook once")
  local code = probe.global_post()
  ok(code == "DSS_ERR_NOT_STARTED" or code == "DSS_ERR_INVALID_UTILID", "post after the state closed: " .. code)
  eq(alive(), a0, "the refused functor died")
  probe.global_free()
end)
