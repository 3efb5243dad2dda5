-- test_lifecycle.lua -- regressions of issue 13, each written for the
-- behaviour the issue expects:
--  1. A finalizer that drains (poll, dispatch) or registers during lua_close
--     must not keep the hub from closing: every producer released, each
--     client's cancel called once, nothing touching freed memory.
--  2. Once unreg (the ABI call, from any thread) returned, no callback of
--     that client runs with a live lua_State any more.
--  3. deliver2 with a timeout beyond what the clock can hold waits without
--     limit (boundaries: 0 never waits, a small timeout times out).
--  4. The deadlock guard's mark is set only while a drain runs: not left
--     behind by a decoder that raised (pcall, coroutines, tail calls), and
--     still active inside decoders and dispatched callbacks.
--  5. A client's cancel that raises a Lua error does not stop the close; a
--     waiting-thread callback whose metatable was removed and that was
--     collected is never written to by its producer.
--  6. Numeric strings are numbers wherever a number is taken (as 1.0 did
--     through luaL_checkinteger).
-- Close-time cases run in child states (testclient.newstate) so that a
-- producer that stays blocked only fails the test (join is bounded, 10 s);
-- the memory cases show under ASan (-DDSS_SANITIZE=ON). LuaJIT finalizes
-- objects made by finalizers during lua_close too, so case 1 has no such
-- path there (the tests still hold).

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, INVALID_UTILID, NOT_STARTED = -100, -101, -102
local TIMEOUT, QUEUE_FULL, WOULD_DEADLOCK = -109, -110, -112
local DECODER_FAILED = "testclient: decoder failed"

-- with(a, b, ...): a new table with the fields of a, then b, ...
local function with(...)
  local t = {}
  for i = 1, select("#", ...) do
    for k, v in pairs((select(i, ...))) do t[k] = v end
  end
  return t
end

-- check_any(alternatives[, ctxid[, lib]]): the counters match one of the
-- expected sets exactly (tc.check); returns its index, or raises listing
-- how each one differs.
local function check_any(alts, cid, lib)
  local errs = {}
  for i, alt in ipairs(alts) do
    local okay, err = pcall(tc.check, alt, cid, lib)
    if okay then return i end
    errs[#errs + 1] = "#" .. i .. ": " .. tostring(err)
  end
  error("counters match none of the expected outcomes:\n  " .. table.concat(errs, "\n  "), 2)
end

-- check_lib(expected, ctxid, lib): tc.check of one lib, naming it.
local function check_lib(expected, cid, lib)
  local okay, err = pcall(tc.check, expected, cid, lib)
  if not okay then error("lib " .. lib .. ": " .. tostring(err), 2) end
end

local function child_queued(state, n)
  waitfor(function() return tc.run(state, "return dss.queuesize()") == n end,
          n .. " item(s) queued in the child")
end

local function notes(cid) return table.concat(tc.notes(cid), "; ") end

-- Code for a child state: onclose(f) makes an object whose finalizer calls
-- f, reachable until the state closes. Made last, it is the newest object
-- with a finalizer, so at lua_close its finalizer runs before darksidesync's
-- own close logic (every Lua version finalizes newest first). An object
-- given a finalizer while lua_close runs finalizers is never finalized,
-- except on LuaJIT.
local ONCLOSE = [[
  pack = table.pack or function(...) return { n = select("#", ...), ... } end
  KEEP = {}
  function onclose(f)
    local o
    if newproxy then
      o = newproxy(true)
      getmetatable(o).__gc = function() f() end
    else
      o = setmetatable({}, { __gc = function() f() end })
    end
    KEEP[#KEEP + 1] = o
  end
]]

local function fresh_()
  fresh()
  tc.setcallback(function() end)
end

---------------------------------------------------------------------------
-- 1. Finalizers that drain or register during lua_close.
---------------------------------------------------------------------------

-- What a finalizer run during lua_close does with the blocking item queued.
local DRAIN = {
  poll_drop = [[
    onclose(function()
      local r = pack(pcall(dss.poll))
      tc.note("poll: " .. tostring(r[1]) .. ", " .. tostring(r[2]) .. ", " ..
              type(r[4] and r[4][1]))
    end)
  ]],
  dispatch_drop = [[
    tc.setcallback(function(wt) tc.note("callback: " .. type(wt)) end)
    onclose(function()
      local okay, n = pcall(dss.dispatch)
      tc.note("dispatch: " .. tostring(okay) .. ", " .. tostring(n))
    end)
  ]],
  poll_answer = [[
    onclose(function()
      local okay, n, cb, args = pcall(dss.poll)
      tc.note("poll: " .. tostring(okay) .. ", " .. tostring(n))
      if okay and args then
        local r = pack(args[1](args[3] * 1000 + args[4]))
        tc.note("answer: " .. tostring(r[1]))
      end
    end)
  ]],
}

-- The counters once the item was released, by how the producer delivered
-- it: every way the closing state can have ended it.
local function released_by_close(api)
  local base
  if api == 1 then
    base = { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1,
             unanswered = 1, ended = 1, cancel_calls = 1 }
  else -- deliver2: CANCELLED
    base = { threads = 1, stopped = 1, attempts = 1, cancelled = 1, ended = 1, cancel_calls = 1 }
  end
  return {
    with(base, { decoded = 1, cancelled_pending = 1 }), -- polled, then cancelled
    with(base, { cancelled_queued = 1 }),               -- poll refused while closing
  }
end

local drain_cases = {
  { title = "1v0 producer, the finalizer polls it and drops the waiting-thread callback",
    start = "{ blocking = true }", drain = "poll_drop", api = 1 },
  { title = "2v0 producer (no timeout), the finalizer polls it and drops the callback",
    start = "{ blocking = true, api = 2 }", drain = "poll_drop", api = 2 },
  { title = "1v0 producer, the finalizer dispatches it; the callback drops the waiting-thread callback",
    start = "{ blocking = true }", drain = "dispatch_drop", api = 1 },
}

for _, case in ipairs(drain_cases) do
  test("lua_close: a finalizer drains a blocking item during close (" .. case.title ..
       "): the producer is released, cancel called once", function()
    local state, cid = child(ONCLOSE .. [[
      tc.start ]] .. case.start .. [[
      return tc.ctx()
    ]])
    child_queued(state, 1)
    tc.run(state, DRAIN[case.drain])
    tc.close(state)
    ok(tc.join(cid), "join: the producer was released (notes: " .. notes(cid) .. ")")
    check_any(released_by_close(case.api), cid)
  end)
end

test("lua_close: a finalizer polls a blocking item and answers it during close: cancel is still called once", function()
  local state, cid = child(ONCLOSE .. [[
    tc.start { blocking = true }
    return tc.ctx()
  ]])
  child_queued(state, 1)
  tc.run(state, DRAIN.poll_answer)
  tc.close(state)
  ok(tc.join(cid), "join: the producer was released (notes: " .. notes(cid) .. ")")
  local base = { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1,
                 ended = 1, cancel_calls = 1 }
  check_any({
    with(base, { decoded = 1, returned = 1, answers_ok = 1 }),    -- answered, then closed
    with(base, { decoded = 1, cancelled_pending = 1, unanswered = 1 }),
    with(base, { cancelled_queued = 1, unanswered = 1 }),         -- poll refused while closing
  }, cid)
end)

test("lua_close: a 2v0 producer whose timeout passes after the close, its item polled by a finalizer during close: CANCELLED at close, nothing written to freed memory (ASan)", function()
  -- Today the hub is not closed, the waiting-thread callback made during
  -- close is freed with the state unfinalized, and at its deadline the
  -- producer writes into it (heap-use-after-free under ASan).
  local state, cid = child(ONCLOSE .. ([[
    tc.start { blocking = true, api = 2, timeout = %d }
    return tc.ctx()
  ]]):format(scaled(1000)))
  child_queued(state, 1)
  tc.run(state, DRAIN.poll_drop)
  tc.close(state)
  ok(tc.join(cid), "join (notes: " .. notes(cid) .. ")")
  check_any(released_by_close(2), cid)
end)

test("lua_close: a finalizer registers another client library during close: the hub still closes, producers released, each client cancelled once", function()
  local state, cid = child(ONCLOSE .. [[
    tc.start { blocking = true }
    return tc.ctx()
  ]])
  child_queued(state, 1)
  tc.run(state, [[
    onclose(function()
      local u, rc = tc.reg(2)
      tc.note("reg: " .. tostring(rc))
    end)
  ]])
  tc.close(state)
  ok(tc.join(cid), "join: the producer was released (notes: " .. notes(cid) .. ")")
  check_lib({ threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1,
              cancelled_queued = 1, unanswered = 1, ended = 1, cancel_calls = 1 }, cid, 1)
  local rc = tonumber(tc.notes(cid)[1]:match("^reg: (%-?%d+)$"))
  ok(rc == SUCCESS or rc == NOT_STARTED, "reg during close returned " .. tostring(rc))
  check_lib({ cancel_calls = rc == SUCCESS and 1 or 0 }, cid, 2)
end)

test("lua_close: a finalizer registers another client library during close, only fire-and-forget items queued: they are cancelled (decoder(L = NULL)) and freed, each client cancelled once", function()
  local state, cid = child(ONCLOSE .. [[
    tc.start { items = 2 }
    return tc.ctx()
  ]])
  child_queued(state, 2)
  tc.run(state, [[
    onclose(function()
      local u, rc = tc.reg(2)
      tc.note("reg: " .. tostring(rc))
    end)
  ]])
  tc.close(state)
  ok(tc.join(cid), "join")
  check_lib({ threads = 1, completed = 1, attempts = 2, delivered = 2, cancelled_queued = 2,
              ended = 2, allocated = 2, freed = 2, cancel_calls = 1 }, cid, 1)
  local rc = tonumber(tc.notes(cid)[1]:match("^reg: (%-?%d+)$"))
  ok(rc == SUCCESS or rc == NOT_STARTED, "reg during close returned " .. tostring(rc))
  check_lib({ cancel_calls = rc == SUCCESS and 1 or 0 }, cid, 2)
end)

test("lua_close: a finalizer re-initializes its client library during close (unreg, then init): the hub still closes, producers released, each client cancelled once", function()
  local state, cid = child(ONCLOSE .. [[
    tc.reg(2)
    tc.start { blocking = true, lib = 2 }
    return tc.ctx()
  ]])
  child_queued(state, 1)
  tc.run(state, [[
    onclose(function()
      tc.note("unreg: " .. tostring(tc.unreg(tc.utilid(1))))
      tc.note("init: " .. tostring((pcall(tc.init))))
    end)
  ]])
  tc.close(state)
  ok(tc.join(cid), "join: the producer was released (notes: " .. notes(cid) .. ")")
  check_lib({ threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1,
              cancelled_queued = 1, unanswered = 1, ended = 1, cancel_calls = 1 }, cid, 2)
  local n = tc.notes(cid)
  local unreg_rc, init_ok = tonumber(n[1]:match("^unreg: (%-?%d+)$")), n[2] == "init: true"
  -- Lib 1 is a client at the end if its unreg failed or its init worked.
  check_lib({ cancel_calls = (unreg_rc ~= SUCCESS or init_ok) and 1 or 0 }, cid, 1)
end)

---------------------------------------------------------------------------
-- 2. unreg returns only once that client's callbacks are done.
---------------------------------------------------------------------------

test("unreg from another thread while poll runs a fire-and-forget item's decoder: unreg returns only after the decoder returned", function()
  fresh_()
  tc.start { decoder = "hold" }
  ok(tc.join(), "join")
  tc.unregonhold(1) -- unregisters lib 1 as soon as the decoder holds
  dss.poll()
  eq(tc.unregjoin(), SUCCESS, "the unreg thread's unreg")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, decoded = 1, ended = 1,
             allocated = 1, freed = 1, held = 1, after_unreg = 0 }
end)

test("unreg from another thread while poll runs a blocking item's decoder: unreg returns only after it; the item is cancelled (L = NULL), the producer released", function()
  fresh_()
  tc.start { blocking = true, decoder = "hold" }
  queued(1)
  tc.unregonhold(1)
  dss.poll()
  eq(tc.unregjoin(), SUCCESS, "the unreg thread's unreg")
  ok(tc.join(), "join: the producer was released")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             held = 1, cancelled_pending = 1, unanswered = 1, ended = 1, after_unreg = 0 }
end)

test("unreg from another thread while dispatch runs a decoder: unreg returns only after the decoder returned", function()
  fresh_()
  tc.start { decoder = "hold" }
  ok(tc.join(), "join")
  tc.unregonhold(1)
  eq(dss.dispatch(), 1, "dispatch")
  eq(tc.unregjoin(), SUCCESS, "the unreg thread's unreg")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, decoded = 1, ended = 1,
             allocated = 1, freed = 1, held = 1, after_unreg = 0 }
end)

test("unreg from another thread while a waiting-thread callback runs the return callback: unreg returns only after it returned", function()
  fresh_()
  tc.start { blocking = true, ret = "hold" }
  queued(1)
  local _, _, args = dss.poll()
  tc.unregonhold(1) -- as soon as the return callback holds
  local r = pack(args[1](args[3] * 1000 + args[4]))
  eq(r[1], "ack", "what the return callback pushed")
  eq(tc.unregjoin(), SUCCESS, "the unreg thread's unreg")
  ok(tc.join(), "join: the producer was released")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1, held = 1, after_unreg = 0 }
end)

---------------------------------------------------------------------------
-- 3. Huge timeouts.
---------------------------------------------------------------------------

-- Timeouts (ms) no clock holds a deadline for, or that are (near) the top
-- of a 64-bit long: all mean "no limit" (a limit of years is no different
-- for these tests). Decimal strings: testclient passes them to deliver2 as
-- longs, exactly, on every Lua version.
local HUGE_TIMEOUTS = {
  { "LONG_MAX", "9223372036854775807" },
  { "LONG_MAX - 1", "9223372036854775806" },
  { "2^62", "4611686018427387904" },
  { "LLONG_MAX / 1000", "9223372036854775" },
  { "2^53", "9007199254740992" },
  { "9223372036855 (just past INT64_MAX ns in ms)", "9223372036855" },
  { "9223372036854 (INT64_MAX ns in ms)", "9223372036854" },
  { "1e11 (about 3 years)", "100000000000" },
}

-- Waits until the deliver2 of lib 1's producer is settled in (kind
-- "queued": its item queued; "room": waiting for room), then proves it
-- stays there: a second producer (lib 2) makes the same kind of delivery
-- with a 50 ms timeout after it, and has to time out first. Whatever the
-- first producer would have done "at once" is done by then.
local function prove_still_waiting(kind, ref_opts, what)
  waitfor(function()
    local c = tc.counters(nil, 1)
    return c.timeout > 0 or c.errors_other > 0 or next(c.errors) ~= nil or
           (kind == "queued" and dss.queuesize() == 1) or (kind == "room" and dss.stats().blocked == 1)
  end, what .. ": the producer's delivery")
  tc.start(with(ref_opts, { lib = 2, api = 2, timeout = scaled(50) }))
  waitfor(function()
    local c = tc.counters(nil, 2)
    return c.completed + c.stopped == 1
  end, what .. ": the reference producer returned")
  check_lib({ threads = 1, stopped = 1, attempts = 1, timeout = 1,
              ended = ref_opts.blocking and 1 or 0, timedout_queued = ref_opts.blocking and 1 or 0,
              allocated = ref_opts.blocking and 0 or 1, freed = ref_opts.blocking and 0 or 1 },
            nil, 2)
  local c = tc.counters(nil, 1)
  eq(c.timeout, 0, what .. ": lib 1 timeouts")
  eq(next(c.errors), nil, what .. ": lib 1 other errors")
end

ok(tc.LONG_MAX == "9223372036854775807", "a 64-bit long (LONG_MAX is " .. tostring(tc.LONG_MAX) .. ")")

for _, t in ipairs(HUGE_TIMEOUTS) do
  test("deliver2 blocking with timeout " .. t[1] .. " ms: waits without limit until answered (SUCCESS, no timeout)", function()
    fresh_()
    tc.reg(2)
    tc.setcallback(function(wt, _, pid, seq) if wt then wt(pid * 1000 + seq) end end)
    tc.start { api = 2, blocking = true, timeout = t[2] }
    prove_still_waiting("queued", { blocking = true }, t[1])
    eq(dss.queuesize(), 1, "still queued")
    eq(tc.queued(1), 1, "queued(utilid)")
    eq(dss.stats().blocked, 1, "stats blocked")
    eq(dss.dispatch(), 1, "dispatch: answered")
    ok(tc.join(), "join")
    check_lib({ threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
                returned = 1, answers_ok = 1, ended = 1 }, nil, 1)
  end)

  test("deliver2 fire-and-forget into a full queue with timeout " .. t[1] .. " ms: waits for room, then is queued", function()
    fresh_()
    tc.reg(2)
    dss.setmaxqueue(1)
    eq(tc.deliver(tc.utilid(1)), SUCCESS, "fill the queue")
    tc.start { api = 2, timeout = t[2] }
    prove_still_waiting("room", {}, t[1])
    eq(dss.stats().blocked, 1, "stats blocked: waiting for room")
    eq(dss.queuesize(), 1, "queuesize")
    ok(dss.poll() ~= -1, "poll: makes room") -- the producer may be in already
    waitfor(function() return dss.queuesize() == 1 end, "the waiting item queued")
    ok(tc.join(), "join")
    eq((dss.poll()), 0, "poll")
    check_lib({ threads = 1, completed = 1, attempts = 2, delivered = 2, decoded = 2, ended = 2,
                allocated = 2, freed = 2 }, nil, 1)
  end)
end

test("deliver2 timeout boundaries: 0 never waits (TIMEOUT once queued, QUEUE_FULL when full); 30 ms times out; LONG_MAX waits (above)", function()
  fresh_()
  local u = tc.utilid(1)
  eq(tc.deliver(u, { api = 2, blocking = true, timeout = 0 }), TIMEOUT, "blocking, 0")
  eq(tc.deliver(u, { api = 2, blocking = true, timeout = scaled(30) }), TIMEOUT, "blocking, 30 ms")
  eq(dss.queuesize(), 0, "nothing left queued")
  dss.setmaxqueue(1)
  eq(tc.deliver(u), SUCCESS, "fill the queue")
  eq(tc.deliver(u, { api = 2, timeout = 0 }), QUEUE_FULL, "fire and forget, full, 0")
  local t0 = tc.clock()
  eq(tc.deliver(u, { api = 2, timeout = scaled(30) }), TIMEOUT, "fire and forget, full, 30 ms")
  ok(tc.clock() - t0 >= 0.025, "waited about the timeout")
  eq(dss.queuesize(), 1, "queuesize")
  tc.check { attempts = 5, delivered = 1, timeout = 3, queue_full = 1, timedout_queued = 2, ended = 2,
             allocated = 3, freed = 2, live = 1 }
end)

---------------------------------------------------------------------------
-- 4. The deadlock guard's mark.
---------------------------------------------------------------------------

local function blocking(ms) return { api = 2, blocking = true, timeout = scaled(ms) } end

-- A queued fire-and-forget item whose decoder raises.
local function error_item()
  eq(tc.deliver(tc.utilid(1), { decoder = "error" }), SUCCESS, "deliver an item whose decoder raises")
end

local function strip(msg) return (tostring(msg):gsub("^[^:\n]+:%d+: ", "")) end

test("pcall(poll) with a fire-and-forget decoder that raises leaves no mark: a blocking deliver2 from the Lua thread right after times out", function()
  fresh_()
  error_item()
  local okay, err = pcall(dss.poll)
  eq(okay, false, "pcall(poll)")
  eq(unlabel(strip(err)), DECODER_FAILED, "the decoder's error")
  eq(tc.deliver(tc.utilid(1), blocking(30)), TIMEOUT, "right after the error")
  tc.check { attempts = 2, delivered = 1, decoded = 1, decode_errors = 1, ended = 2, allocated = 1,
             freed = 1, timeout = 1, timedout_queued = 1 }
end)

test("after a fire-and-forget decoder raised in poll, a fire-and-forget deliver2 into a full queue waits its timeout (TIMEOUT), not WOULD_DEADLOCK", function()
  fresh_()
  error_item()
  raises(function() return dss.poll() end, labeled(DECODER_FAILED)) -- a tail call
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "fill the queue")
  dss.setmaxqueue(1)
  local t0 = tc.clock()
  eq(tc.deliver(tc.utilid(1), { api = 2, timeout = scaled(30) }), TIMEOUT, "into the full queue")
  ok(tc.clock() - t0 >= 0.025, "waited about the timeout")
  eq((dss.poll()), 0, "poll")
  tc.check { attempts = 3, delivered = 2, decoded = 2, decode_errors = 1, ended = 2, allocated = 3,
             freed = 3, timeout = 1 }
end)

test("an error in poll inside a coroutine leaves no mark: a blocking deliver2 from the main thread and from another coroutine times out", function()
  fresh_()
  error_item()
  local co = coroutine.create(function() return dss.poll() end)
  local okay, err = coroutine.resume(co)
  eq(okay, false, "resume")
  eq(unlabel(strip(err)), DECODER_FAILED, "the decoder's error")
  eq(tc.deliver(tc.utilid(1), blocking(30)), TIMEOUT, "from the main thread")
  eq(coroutine.wrap(function() return tc.deliver(tc.utilid(1), blocking(30)) end)(), TIMEOUT,
     "from another coroutine")
  tc.check { attempts = 3, delivered = 1, decoded = 1, decode_errors = 1, ended = 3, allocated = 1,
             freed = 1, timeout = 2, timedout_queued = 2 }
end)

test("a coroutine-based loop after an error in poll: its later polls and dispatches (in coroutines) leave no mark either", function()
  fresh_()
  error_item()
  raises(function() return dss.poll() end, labeled(DECODER_FAILED))
  local rcs = {}
  for _ = 1, 3 do -- each turn of the loop runs in a coroutine of its own
    local turn = coroutine.wrap(function()
      eq(dss.poll(), -1, "poll")
      eq(dss.dispatch(), 0, "dispatch")
      coroutine.yield()
      return tc.deliver(tc.utilid(1), blocking(30))
    end)
    turn()
    rcs[#rcs + 1] = turn()
  end
  rcs[#rcs + 1] = tc.deliver(tc.utilid(1), blocking(30))
  eq(table.concat(rcs, " "), table.concat({ TIMEOUT, TIMEOUT, TIMEOUT, TIMEOUT }, " "),
     "the loop's coroutines, then the main thread")
  tc.check { attempts = 5, delivered = 1, decoded = 1, decode_errors = 1, ended = 5, allocated = 1,
             freed = 1, timeout = 4, timedout_queued = 4 }
end)

test("a fire-and-forget decoder raising in a poll nested in a dispatched callback: the guard stays on until dispatch returns, and is off after", function()
  fresh_()
  local rcs = {}
  tc.setcallback(function(_, _, seq)
    if seq ~= 1 then return end
    local okay, err = pcall(dss.poll) -- item 2: its decoder raises
    rcs[#rcs + 1] = okay and "no error" or unlabel(strip(err))
    rcs[#rcs + 1] = tc.deliver(tc.utilid(1), blocking(2000))
    rcs[#rcs + 1] = coroutine.wrap(function() return tc.deliver(tc.utilid(1), blocking(2000)) end)()
  end)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
  error_item()
  eq(dss.dispatch(1), 1, "dispatch(1)")
  eq(table.concat(rcs, " | "), table.concat({ DECODER_FAILED, WOULD_DEADLOCK, WOULD_DEADLOCK }, " | "),
     "inside the dispatched callback, after the nested error")
  eq(tc.deliver(tc.utilid(1), blocking(30)), TIMEOUT, "after dispatch returned")
  tc.check { attempts = 5, delivered = 2, decoded = 2, decode_errors = 1, ended = 3, allocated = 2,
             freed = 2, would_deadlock = 2, timeout = 1, timedout_queued = 1 }
end)

test("after an error in poll, the guard is still on inside a decoder (poll, and poll in a coroutine) and a dispatched callback (and a coroutine it resumes)", function()
  fresh_()
  error_item()
  raises(function() return dss.poll() end, labeled(DECODER_FAILED))
  -- Decoders delivering a blocking item of their own.
  tc.start { decoder = "reenter", api = 2, timeout = scaled(2000), items = 2 }
  ok(tc.join(), "join")
  eq(select("#", dss.poll()), 3, "poll")
  eq(select("#", coroutine.wrap(function() return dss.poll() end)()), 3, "poll in a coroutine")
  -- A dispatched callback, directly and through a coroutine.
  local rcs = {}
  tc.setcallback(function()
    rcs[#rcs + 1] = tc.deliver(tc.utilid(1), blocking(2000))
    rcs[#rcs + 1] = coroutine.wrap(function() return tc.deliver(tc.utilid(1), blocking(2000)) end)()
  end)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
  eq(dss.dispatch(), 1, "dispatch")
  eq(table.concat(rcs, " "), WOULD_DEADLOCK .. " " .. WOULD_DEADLOCK, "the dispatched callback's delivers")
  eq(tc.deliver(tc.utilid(1), blocking(30)), TIMEOUT, "outside any drain")
  tc.check { threads = 1, completed = 1, attempts = 9, delivered = 4, decoded = 4, decode_errors = 1,
             ended = 5, allocated = 4, freed = 4, reentered = 2, would_deadlock = 4, timeout = 1,
             timedout_queued = 1 }
end)

-- Every other way out of a drain by an error: none leaves a mark.
local error_exits = {
  { "a blocking item's decoder raises in poll", function()
      tc.start { blocking = true, decoder = "error" }
      queued(1)
      raises(function() return dss.poll() end, labeled(DECODER_FAILED))
      ok(tc.join(), "join")
    end },
  { "a decoder raises in dispatch", function()
      error_item()
      raises(function() return dss.dispatch() end, labeled(DECODER_FAILED))
    end },
  { "a callback raises in dispatch", function()
      tc.setcallback(function() error("callback failed", 0) end)
      eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
      raises(function() return dss.dispatch() end, "callback failed")
      tc.setcallback(function() end)
    end },
  { "dispatch's error handler raises", function()
      tc.setcallback(function() error("callback failed", 0) end)
      dss.seterrorhandler(function() error("handler failed", 0) end)
      eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
      raises(function() return dss.dispatch() end, "handler failed")
      dss.seterrorhandler(nil)
      tc.setcallback(function() end)
    end },
  { "a fire-and-forget decoder raises in poll inside a coroutine inside pcall", function()
      error_item()
      local okay = pcall(coroutine.wrap(function() return dss.poll() end))
      eq(okay, false, "raised")
    end },
}

for _, e in ipairs(error_exits) do
  test("the guard's mark after " .. e[1] .. ": gone (a blocking deliver2 times out)", function()
    fresh_()
    e[2]()
    local before = tc.counters()
    eq(tc.deliver(tc.utilid(1), blocking(30)), TIMEOUT, "after the error")
    local after = tc.counters()
    eq(after.would_deadlock, before.would_deadlock, "would_deadlock")
    eq(after.timeout - before.timeout, 1, "timeout")
  end)
end

---------------------------------------------------------------------------
-- 5. A cancel that raises; a waiting-thread callback without metatable.
---------------------------------------------------------------------------

for _, raiser in ipairs { 1, 2 } do
  test("lua_close: lib " .. raiser .. "'s cancel raises a Lua error: the close still completes (both cancels called, both unregistered, producers released)", function()
    fresh()
    local state, cid, u1, u2 = child(([[
      tc.reg(2)
      tc.setcancelerror(%d, true)
      tc.start { blocking = true }
      tc.start { blocking = true, lib = 2 }
      return tc.ctx(), tc.tonumber(tc.utilid(1)), tc.tonumber(tc.utilid(2))
    ]]):format(raiser))
    child_queued(state, 2)
    tc.close(state)
    ok(tc.join(cid), "join: the producers were released")
    for lib = 1, 2 do
      check_lib({ threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1,
                  cancelled_queued = 1, unanswered = 1, ended = 1, cancel_calls = 1,
                  cancel_raised = lib == raiser and 1 or 0 }, cid, lib)
    end
    for lib, u in ipairs { u1, u2 } do
      local rc = tc.deliver(u)
      ok(rc == INVALID_UTILID or rc == NOT_STARTED, "lib " .. lib .. ": deliver after close returned " .. rc)
      eq(tc.unreg(u), INVALID_UTILID, "lib " .. lib .. ": unreg after close (darksidesync unregistered it)")
    end
  end)
end

-- The outcomes for a blocking item whose waiting-thread callback lost its
-- metatable and was collected: released when collected (as garbage, or
-- cancelled), else by its timeout (2v0) or the state's close (1v0).
local function nomt_outcomes(api, closed)
  local alts = {}
  if api == 1 then
    local base = { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
                   unanswered = 1, ended = 1 }
    alts[#alts + 1] = with(base, { garbage = 1 })
    alts[#alts + 1] = with(base, { cancelled_pending = 1 })
  else
    local base = { threads = 1, attempts = 1, decoded = 1, ended = 1 }
    alts[#alts + 1] = with(base, { completed = 1, delivered = 1, released = 1, unanswered = 1, garbage = 1 })
    alts[#alts + 1] = with(base, { stopped = 1, cancelled = 1, cancelled_pending = 1 })
    alts[#alts + 1] = with(base, { stopped = 1, timeout = 1, timedout_pending = 1 })
  end
  if closed then
    for i, a in ipairs(alts) do alts[i] = with(a, { cancel_calls = 1 }) end
  end
  return alts
end

local NOMT = [[
  local n, _, args = dss.poll()
  debug.setmetatable(args[1], nil)
  args = nil
  for _ = 1, 4 do collectgarbage() end
  return n
]]

test("debug.setmetatable(wt, nil), then collected: a 2v0 producer whose timeout passes afterwards is released, nothing writes to the freed callback (ASan)", function()
  local state, cid = child(([[
    tc.start { blocking = true, api = 2, timeout = %d }
    return tc.ctx()
  ]]):format(scaled(1000)))
  child_queued(state, 1)
  eq(tc.run(state, NOMT), 0, "polled, metatable removed, collected")
  ok(tc.join(cid), "join: released by its timeout at the latest")
  check_any(nomt_outcomes(2, false), cid)
  tc.close(state)
  check_any(nomt_outcomes(2, true), cid)
end)

test("debug.setmetatable(wt, nil), then collected: a 1v0 producer is released when the state closes at the latest, nothing writes to the freed callback (ASan)", function()
  local state, cid = child [[
    tc.start { blocking = true }
    return tc.ctx()
  ]]
  child_queued(state, 1)
  eq(tc.run(state, NOMT), 0, "polled, metatable removed, collected")
  tc.close(state)
  ok(tc.join(cid), "join: released by the close at the latest")
  check_any(nomt_outcomes(1, true), cid)
end)

---------------------------------------------------------------------------
-- 6. Numeric strings.
---------------------------------------------------------------------------

test("numeric strings are accepted where a number is taken: setport, setmaxqueue, dispatch(max), wait(timeout)", function()
  fresh_()
  eq(dss.setport("5000"), 1, "setport('5000')")
  eq(dss.getport(), 5000, "getport")
  eq(dss.setport(" 5001 ", "coalesce"), 1, "setport(' 5001 ', 'coalesce')")
  eq(dss.getport(), 5001, "getport")
  eq(dss.setport("0"), 1, "setport('0')")
  eq(dss.getport(), 0, "getport")
  eq(select("#", dss.setmaxqueue("3")), 0, "setmaxqueue('3') returns nothing")
  eq(dss.getmaxqueue(), 3, "getmaxqueue")
  dss.setmaxqueue("0")
  eq(dss.getmaxqueue(), 0, "getmaxqueue")
  for _ = 1, 3 do eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver") end
  eq(dss.dispatch("2"), 2, "dispatch('2')")
  eq(dss.wait("0"), 1, "wait('0') with an item queued")
  eq(dss.dispatch("1.0"), 1, "dispatch('1.0')")
  eq(dss.wait("0"), 0, "wait('0') on an empty queue")
  eq(dss.wait("0.0"), 0, "wait('0.0')")
  tc.check { attempts = 3, delivered = 3, decoded = 3, ended = 3, allocated = 3, freed = 3 }
end)

test("a numeric string that is not a valid value raises what the number raises", function()
  fresh_()
  local cases = {
    { 1, dss.setport, "1.5", 1.5 },
    { 1, dss.setport, "-1", -1 },
    { 1, dss.setport, "65536", 65536 },
    { 1, dss.setmaxqueue, "-1", -1 },
    { 1, dss.setmaxqueue, "1.5", 1.5 },
    { 1, dss.dispatch, "-1", -1 },
    { 1, dss.dispatch, "0.5", 0.5 },
    { 1, dss.wait, "-1", -1 },
  }
  for i, c in ipairs(cases) do
    eq(argreason(c[1], c[2], c[3]), argreason(c[1], c[2], c[4]), "case " .. i .. " (" .. c[3] .. ")")
  end
  eq(dss.getport(), 0, "port unchanged")
  eq(dss.getmaxqueue(), 0, "limit unchanged")
end)

test("non-numeric strings still raise the existing messages", function()
  fresh_()
  for _, s in ipairs { "abc", "", "80x", "0x", "1e" } do
    eq(argreason(1, dss.setport, s), "port number expected, got string", "setport(" .. s .. ")")
    eq(argreason(1, dss.setmaxqueue, s), "non-negative integer expected, got string", "setmaxqueue(" .. s .. ")")
    eq(argreason(1, dss.dispatch, s), "non-negative integer expected, got string", "dispatch(" .. s .. ")")
    eq(argreason(1, dss.wait, s), "non-negative number of seconds expected, got string", "wait(" .. s .. ")")
  end
  eq(dss.getport(), 0, "port unchanged")
  eq(dss.getmaxqueue(), 0, "limit unchanged")
end)
