-- test_deadlock.lua -- the deadlock guard: a deliver that would wait (a
-- blocking item, or no room in a full queue), made on the thread running
-- this state's poll or dispatch right now (a decoder, or a dispatched
-- callback, calling back into its own client library), returns
-- DSS_ERR_WOULD_DEADLOCK at once, nothing queued; through 1v0 and 2v0. The
-- Lua thread between two drains (or before the first) too, for a wait
-- with no limit: nothing could answer while it waits. And no false alarm:
-- deliveries that do not wait, a limited wait on the Lua thread (it times
-- out), other threads. docs/lua-api.md "Deadlock guard".

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, TIMEOUT, QUEUE_FULL, WOULD_DEADLOCK = -100, -109, -110, -112

local function fresh_()
  fresh()
  tc.setcallback(function() end)
end

-- The delivery options tried from inside poll/dispatch: 1v0, 2v0 without a
-- limit, 2v0 with a timeout.
local variants = {
  { name = "1v0", opts = {} },
  { name = "2v0", opts = { api = 2 } },
  { name = "2v0 with a timeout", opts = { api = 2, timeout = scaled(2000) } },
}

local function with(opts, extra)
  local t = {}
  for k, v in pairs(opts) do t[k] = v end
  for k, v in pairs(extra or {}) do t[k] = v end
  return t
end

for _, v in ipairs(variants) do
  test(v.name .. ": a decoder run by poll making a blocking deliver to its own client: WOULD_DEADLOCK, nothing queued", function()
    fresh_()
    tc.start(with(v.opts, { decoder = "reenter" }))
    ok(tc.join(), "join")
    local r = pack(dss.poll())
    eq(r.n, 3, "poll's results: the item itself went on")
    eq(r[1], 0, "remaining: nothing queued by the decoder")
    eq(dss.queuesize(), 0, "queuesize")
    tc.check { threads = 1, completed = 1, attempts = 2, delivered = 1, decoded = 1, ended = 1,
               allocated = 1, freed = 1, reentered = 1, would_deadlock = 1 }
  end)

  test(v.name .. ": a decoder run by dispatch making a blocking deliver: WOULD_DEADLOCK", function()
    fresh_()
    tc.start(with(v.opts, { decoder = "reenter", items = 2 }))
    ok(tc.join(), "join")
    eq(dss.dispatch(), 2, "dispatch")
    eq(dss.queuesize(), 0, "queuesize")
    tc.check { threads = 1, completed = 1, attempts = 4, delivered = 2, decoded = 2, ended = 2,
               allocated = 2, freed = 2, reentered = 2, would_deadlock = 2 }
  end)

  test(v.name .. ": a dispatched callback making a blocking deliver: WOULD_DEADLOCK", function()
    fresh_()
    local rcs = {}
    tc.setcallback(function()
      rcs[#rcs + 1] = tc.deliver(tc.utilid(1), with(v.opts, { blocking = true }))
    end)
    eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
    eq(dss.dispatch(), 1, "dispatch")
    eq(table.concat(rcs, " "), tostring(WOULD_DEADLOCK), "the callback's deliver")
    eq(dss.queuesize(), 0, "queuesize")
    tc.check { attempts = 2, delivered = 1, decoded = 1, ended = 1, allocated = 1, freed = 1,
               would_deadlock = 1 }
  end)

  test(v.name .. ": a blocking item's dispatched callback making a blocking deliver: WOULD_DEADLOCK, then answers", function()
    fresh_()
    local rcs = {}
    tc.setcallback(function(wt, _, pid, seq)
      rcs[#rcs + 1] = tc.deliver(tc.utilid(1), with(v.opts, { blocking = true }))
      wt(pid * 1000 + seq)
    end)
    tc.start { blocking = true }
    queued(1)
    eq(dss.dispatch(), 1, "dispatch")
    ok(tc.join(), "join")
    eq(table.concat(rcs, " "), tostring(WOULD_DEADLOCK), "the callback's deliver")
    tc.check { threads = 1, completed = 1, attempts = 2, delivered = 1, released = 1, decoded = 1,
               returned = 1, answers_ok = 1, ended = 1, would_deadlock = 1 }
  end)

  test(v.name .. ": a dispatched callback delivering to a full queue (it would wait for room): WOULD_DEADLOCK", function()
    fresh_()
    local rcs = {}
    tc.setcallback(function(_, _, seq)
      if seq == 1 then rcs[#rcs + 1] = tc.deliver(tc.utilid(1), v.opts) end
    end)
    for _ = 1, 2 do eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver") end
    dss.setmaxqueue(1) -- the second item fills it while the first runs
    local rejected = dss.stats().rejected
    eq(dss.dispatch(1), 1, "dispatch(1)")
    eq(table.concat(rcs, " "), tostring(WOULD_DEADLOCK), "the callback's deliver")
    eq(dss.queuesize(), 1, "queuesize")
    eq(dss.stats().rejected, rejected, "not counted as rejected")
    tc.check { attempts = 3, delivered = 2, decoded = 1, ended = 1, allocated = 3, freed = 2, live = 1,
               would_deadlock = 1 }
  end)

  test(v.name .. ": a decoder run by poll delivering fire-and-forget to a full queue: WOULD_DEADLOCK", function()
    fresh_()
    tc.start(with(v.opts, { decoder = "reenter_ff", items = 3 }))
    ok(tc.join(), "join")
    dss.setmaxqueue(2)
    local n = dss.poll()
    eq(n, 2, "poll")
    eq(dss.queuesize(), 2, "queuesize")
    tc.check { threads = 1, completed = 1, attempts = 4, delivered = 3, decoded = 1, ended = 1,
               allocated = 4, freed = 2, live = 2, reentered = 1, would_deadlock = 1 }
  end)
end

test("2v0 with NOWAIT or timeout 0 from a dispatched callback, queue full: QUEUE_FULL (it would not wait)", function()
  fresh_()
  local rcs = {}
  tc.setcallback(function(_, _, seq)
    if seq == 1 then
      rcs[#rcs + 1] = tc.deliver(tc.utilid(1), { api = 2, flags = "nowait" })
      rcs[#rcs + 1] = tc.deliver(tc.utilid(1), { api = 2, timeout = 0 })
    end
  end)
  for _ = 1, 2 do eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver") end
  dss.setmaxqueue(1)
  local rejected = dss.stats().rejected
  eq(dss.dispatch(1), 1, "dispatch(1)")
  eq(table.concat(rcs, " "), QUEUE_FULL .. " " .. QUEUE_FULL, "the callback's delivers")
  eq(dss.stats().rejected - rejected, 2, "rejected")
  tc.check { attempts = 4, delivered = 2, decoded = 1, ended = 1, allocated = 4, freed = 3, live = 1,
             queue_full = 2 }
end)

test("no false alarm: fire-and-forget deliveries with room, from a decoder and from a dispatched callback", function()
  fresh_()
  local rcs = {}
  tc.setcallback(function(_, pid)
    if pid ~= 0 then rcs[#rcs + 1] = tc.deliver(tc.utilid(1)) end
  end)
  tc.start { decoder = "reenter_ff", items = 2 }
  ok(tc.join(), "join")
  eq(dss.dispatch(), 2, "dispatch")
  eq(table.concat(rcs, " "), SUCCESS .. " " .. SUCCESS, "the callbacks' delivers")
  eq(dss.queuesize(), 4, "queued by the decoders and the callbacks, not run by this dispatch")
  eq(dss.dispatch(), 4, "next dispatch")
  tc.check { threads = 1, completed = 1, attempts = 6, delivered = 6, decoded = 6, ended = 6,
             allocated = 6, freed = 6, reentered = 2 }
end)

test("no false alarm: other threads' blocking deliveries while the Lua thread dispatches", function()
  fresh_()
  tc.setcallback(function(wt, _, pid, seq) wt(pid * 1000 + seq) end)
  tc.start { threads = 4, items = 25, blocking = true }
  tc.start { threads = 2, items = 25, blocking = true, api = 2, timeout = scaled(10000) }
  waitfor(function() dss.dispatch(); return tc.counters().answers_ok == 150 end, "150 answers")
  ok(tc.join(), "join")
  tc.check { threads = 6, completed = 6, attempts = 150, delivered = 150, released = 150,
             decoded = 150, returned = 150, answers_ok = 150, ended = 150 }
end)

test("a fire-and-forget decoder that raises in poll: the error propagates; the guard ends with the poll", function()
  fresh_()
  tc.start { items = 1, decoder = "error" }
  ok(tc.join(), "join")
  raises(function() return dss.poll() end, labeled("testclient: decoder failed"))
  local opts = { api = 2, blocking = true, timeout = scaled(30) }
  eq(tc.deliver(tc.utilid(1), opts), TIMEOUT, "right after the error: outside the guard, it times out")
  eq(dss.queuesize(), 0, "nothing queued")
  tc.check { threads = 1, completed = 1, attempts = 2, delivered = 1, decoded = 1, decode_errors = 1,
             ended = 2, allocated = 1, freed = 1, timeout = 1, timedout_queued = 1 }
end)

test("a fire-and-forget decoder that runs poll itself, then makes a blocking deliver: still WOULD_DEADLOCK (the nested poll keeps the guard)", function()
  fresh_()
  local nested = 0
  tc.setcallback(function(a)
    if a == "nested" then
      nested = nested + 1
      eq(dss.poll(), -1, "the nested poll: nothing queued")
    end
  end)
  tc.start { items = 1, decoder = "nested", api = 2, timeout = scaled(2000) }
  ok(tc.join(), "join")
  local r = pack(dss.poll())
  eq(r.n, 3, "poll's results")
  eq(nested, 1, "the decoder ran a nested poll")
  tc.check { threads = 1, completed = 1, attempts = 2, delivered = 1, decoded = 1, ended = 1,
             allocated = 1, freed = 1, reentered = 1, would_deadlock = 1 }
end)

test("the guard ends with dispatch: a callback run after poll returned is outside it (2v0 times out instead)", function()
  fresh_()
  local rc
  tc.setcallback(function()
    rc = tc.deliver(tc.utilid(1), { api = 2, blocking = true, timeout = scaled(30) })
  end)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
  local n, cb, args = dss.poll()
  eq(n, 0, "poll")
  cb(unpack(args))
  eq(rc, TIMEOUT, "the callback's deliver, after poll returned")
  eq(dss.dispatch(), 0, "dispatch: nothing left")
  tc.check { attempts = 2, delivered = 1, decoded = 1, ended = 2, allocated = 1, freed = 1, timeout = 1,
             timedout_queued = 1 }
end)

test("the guard covers nested dispatch and poll, and ends with the outermost", function()
  fresh_()
  local rcs = {}
  tc.setcallback(function(_, _, seq)
    if seq == 1 then
      dss.dispatch(1) -- runs item 2 inside
      rcs[#rcs + 1] = tc.deliver(tc.utilid(1), { api = 2, blocking = true, timeout = scaled(2000) })
    elseif seq == 2 then
      local n, cb, args = dss.poll() -- item 3, polled inside a dispatched callback
      eq(n, 0, "inner poll")
      cb(unpack(args))
      rcs[#rcs + 1] = tc.deliver(tc.utilid(1), { api = 2, blocking = true, timeout = scaled(2000) })
    end
  end)
  for _ = 1, 3 do eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver") end
  eq(dss.dispatch(), 1, "dispatch")
  eq(table.concat(rcs, " "), WOULD_DEADLOCK .. " " .. WOULD_DEADLOCK, "after the inner calls returned")
  eq(tc.deliver(tc.utilid(1), { api = 2, blocking = true, timeout = scaled(30) }), TIMEOUT,
     "after the outermost returned")
  tc.check { attempts = 6, delivered = 3, decoded = 3, ended = 4, allocated = 3, freed = 3,
             would_deadlock = 2, timeout = 1, timedout_queued = 1 }
end)

test("the guard is per Lua state: a child state's dispatch delivering into this state waits (2v0 times out) unless this state drains on the thread", function()
  fresh_()
  local u = tc.tonumber(tc.utilid(1))
  local state, cid = child [[ return tc.ctx() ]]
  local code = ([[
    tc.setcallback(function() rc = tc.deliver(%.0f, { api = 2, blocking = true, timeout = %d }) end)
    tc.deliver(tc.utilid())
    local ran = dss.dispatch()
    return ran, rc
  ]]):format(u, scaled(30))
  -- This state is not draining: the child's deliver into it just times out.
  local ran, rc = tc.run(state, code)
  eq(ran, 1, "the child dispatched")
  eq(rc, TIMEOUT, "outside this state's drain")
  eq(dss.queuesize(), 0, "queuesize")
  -- The same from inside this state's dispatch: this thread drains this
  -- state, so the child's deliver into it would wait forever.
  local inner
  tc.setcallback(function() inner = pack(tc.run(state, code)) end)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
  eq(dss.dispatch(), 1, "dispatch")
  eq(inner[1], 1, "the child dispatched")
  eq(inner[2], WOULD_DEADLOCK, "inside this state's drain")
  eq(dss.queuesize(), 0, "queuesize")
  tc.close(state)
  tc.check({ attempts = 4, delivered = 2, decoded = 2, ended = 3, allocated = 2, freed = 2,
             timeout = 1, timedout_queued = 1, would_deadlock = 1, cancel_calls = 1 }, cid)
  tc.check { attempts = 1, delivered = 1, decoded = 1, ended = 1, allocated = 1, freed = 1 }
end)

test("the Lua thread outside poll/dispatch/wait: a blocking deliver with no limit returns WOULD_DEADLOCK at once, nothing queued", function()
  fresh_()
  eq(dss.poll(), -1, "a drain: this is the Lua thread")
  eq(tc.deliver(tc.utilid(1), { blocking = true }), WOULD_DEADLOCK, "1v0")
  eq(tc.deliver(tc.utilid(1), { blocking = true, api = 2 }), WOULD_DEADLOCK, "2v0, no limit")
  eq(dss.queuesize(), 0, "nothing queued")
  -- A full queue: waiting for room with no limit would never end either.
  dss.setmaxqueue(1)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "room for one")
  eq(tc.deliver(tc.utilid(1)), WOULD_DEADLOCK, "no room: would wait forever")
  dss.setmaxqueue(0)
  eq(dss.dispatch(), 1)
end)

test("the Lua thread outside a drain, with a limit: the wait times out (the item ended by cancellation)", function()
  fresh_()
  eq(tc.deliver(tc.utilid(1), { blocking = true, api = 2, timeout = 20 }), TIMEOUT, "2v0 with 20 ms")
  eq(dss.queuesize(), 0, "removed from the queue on timeout")
  tc.check { attempts = 1, timeout = 1, timedout_queued = 1, ended = 1 }
end)

test("a fresh state, before any drain: the thread that loaded darksidesync is the Lua thread", function()
  local _, rc = child([[
    tc.init()
    return tc.deliver(tc.utilid(1), { blocking = true })
  ]])
  eq(rc, WOULD_DEADLOCK)
end)
