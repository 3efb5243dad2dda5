-- loop_cases.lua -- the cases every event-loop helper's test runs
-- (test_loop_luv, test_loop_cqueues, test_loop_copas, test_loop_select),
-- against the real loop, through an adapter:
--
--   require("loop_cases")(adapter)   -- from a test file run by run.lua
--
-- It returns helpers for the test file's own cases: deliver(n) queues n
-- fire-and-forget items of the test client's library 1.
--
-- adapter.name: the helper's name, for test titles.
-- adapter.run(o): makes a reader with options o.reader (the helper's own
--   idiom: a luv watcher, an attached cqueues reader, a Copas reader, a
--   select reader), calls o.started(reader) if given, and runs the loop
--   with a repeating timer every o.interval seconds that calls o.tick() and
--   then checks o.done(): once it is true (or the deadline passed), the
--   timer and the reader are stopped, and run returns once the loop itself
--   has returned (uv.run, cq:loop) or ended, having checked that nothing
--   is left running. Returns the reader and whether the deadline passed.
--
-- Producers are the test client's threads (tests/clients/testclient.c);
-- every count is exact. Nothing sleeps: the loop waits on darksidesync's fd,
-- bounded by a deadline; producers pace themselves with their delay option,
-- and the callbacks of one case spin to make each batch outlast the timer's
-- interval.

local dss = require "darksidesync"
local tc = require "testclient"

local SCALE = tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1
local DEADLINE = 30 * SCALE -- seconds a run may take at most

-- A callback recording items: seen, answered, order_bad (an item of a
-- producer not one more than its last), and per-wake counts when given the
-- reader (r.reader).
local function recorder()
  local r = { seen = 0, answered = 0, order_bad = 0, last = {}, perwake = {} }
  function r.cb(a, b, c, d)
    local wt, pid, seq
    if type(a) == "userdata" then wt, pid, seq = a, c, d else pid, seq = b, c end
    if seq ~= (r.last[pid] or 0) + 1 then r.order_bad = r.order_bad + 1 end
    r.last[pid] = seq
    r.seen = r.seen + 1
    if r.reader then
      local w = r.reader.wakes
      r.perwake[w] = (r.perwake[w] or 0) + 1
    end
    if wt then
      wt(pid * 1000 + seq) -- the answer the producer checks
      r.answered = r.answered + 1
    end
  end
  return r
end

-- Queues n fire-and-forget items of the test client's library 1, each
-- accepted (DSS_SUCCESS).
local function deliver(n)
  for _ = 1, n do eq(tc.deliver(tc.utilid(1)), -100, "deliver") end
end

return function(adapter)
  local name = adapter.name

  -- adapter.run with a deadline check: fails when the run timed out.
  local function run(o)
    o.tick = o.tick or function() end
    o.interval = o.interval or 0.001
    o.deadline = tc.clock() + DEADLINE
    local reader, timedout = adapter.run(o)
    eq(timedout, false, name .. ": the run passed its deadline")
    return reader
  end

  test(name .. ": producers deliver fire-and-forget and blocking items while a repeating timer runs: every item arrives once, in order per producer, blocking producers get their answers, the timer kept firing, and the loop returns once stopped", function()
    fresh()
    local r = recorder()
    tc.setcallback(r.cb)
    local FF, BL = 300, 50
    local total = 2 * FF + 2 * BL
    -- Paced producers: the flow lasts at least FF ms (each sleeps 1 ms
    -- before each deliver).
    tc.start { threads = 2, items = FF, delay = 1 }
    tc.start { threads = 2, items = BL, blocking = true, delay = 2 }
    local ticks, during, prev, maxgap = 0, 0, nil, 0
    local reader = run {
      started = function(rd) r.reader = rd end,
      interval = 0.005,
      tick = function()
        local now = tc.clock()
        ticks = ticks + 1
        if r.seen > 0 and r.seen < total then
          during = during + 1
          if prev and now - prev > maxgap then maxgap = now - prev end
        end
        prev = now
      end,
      done = function() return r.seen == total end,
    }
    eq(r.seen, total, "items that arrived in the loop")
    eq(r.order_bad, 0, "items out of order")
    eq(r.answered, 2 * BL, "blocking items answered")
    eq(reader.ran, total, "items the reader ran")
    eq(reader.errors, 0, "errors")
    ok(tc.join(), "join: every producer finished")
    tc.check { threads = 4, completed = 4, attempts = total, delivered = total, decoded = total,
               ended = total, allocated = 2 * FF, freed = 2 * FF, released = 2 * BL,
               returned = 2 * BL, answers_ok = 2 * BL }
    -- At least FF ms of flow, a 5 ms timer: about 60 ticks; fewer than 10
    -- means the loop stalled while items flowed.
    ok(during >= 10, "the timer fired while items flowed: " .. during .. " times (" ..
                     ticks .. " in all)")
    ok(maxgap < 1.0 * SCALE, "the longest gap between ticks while items flowed: " .. maxgap .. " s")
    eq(dss.queuesize(), 0, "queue drained")
    eq(tc.readable(dss.getfd()), false, "the fd is reset")
  end)

  test(name .. ": a flood of 4 x 5000 items: no wake-up runs more than max (100), the loop comes back until the queue is empty", function()
    fresh()
    local r = recorder()
    tc.setcallback(r.cb)
    local total = 4 * 5000
    tc.start { threads = 4, items = 5000 }
    local reader = run {
      reader = { max = 100 },
      started = function(rd) r.reader = rd end,
      done = function() return r.seen == total end,
    }
    eq(r.seen, total, "items that arrived in the loop")
    eq(r.order_bad, 0, "items out of order")
    local most, sum, full, wakes = 0, 0, 0, 0
    for _, n in pairs(r.perwake) do
      wakes = wakes + 1
      sum = sum + n
      if n > most then most = n end
      if n == 100 then full = full + 1 end
    end
    eq(sum, total, "items counted per wake-up")
    ok(most <= 100, "the most items one wake-up ran: " .. most)
    ok(full >= 1, "some wake-up hit the bound (" .. full .. " did)")
    ok(wakes >= total / 100, "wake-ups that ran items: " .. wakes)
    eq(reader.ran, total, "items the reader ran")
    ok(reader.wakes >= wakes, "reader wake-ups")
    ok(tc.join(), "join")
    tc.check { threads = 4, completed = 4, attempts = total, delivered = total, decoded = total,
               ended = total, allocated = total, freed = total }
    eq(dss.queuesize(), 0, "queue drained")
    eq(tc.readable(dss.getfd()), false, "the fd is reset")
  end)

  test(name .. ": the timer runs between every two batches when a batch outlasts its interval", function()
    fresh()
    tc.start { items = 200 }
    ok(tc.join(), "join")
    eq(dss.queuesize(), 200, "queued")
    local events, lastwake, rd = {}, nil, nil
    tc.setcallback(function()
      if rd.wakes ~= lastwake then
        lastwake = rd.wakes
        events[#events + 1] = "B"
      end
      local t = tc.clock() + 0.0003 -- work: 10 items outlast the 1 ms timer
      while tc.clock() < t do end
    end)
    local ran = 0
    local reader = run {
      reader = { max = 10 },
      started = function(x) rd = x end,
      interval = 0.001,
      tick = function() events[#events + 1] = "T" end,
      done = function() ran = rd.ran; return ran == 200 end,
    }
    eq(reader.ran, 200, "ran")
    local s = table.concat(events)
    local batches = select(2, s:gsub("B", "B"))
    eq(batches, 20, "batches: " .. s)
    eq(s:find("BB", 1, true), nil, "two batches with no tick between: " .. s)
    tc.check { threads = 1, completed = 1, attempts = 200, delivered = 200, decoded = 200,
               ended = 200, allocated = 200, freed = 200 }
  end)

  -- Five items from Lua; the callback raises on the third.
  local function raising()
    fresh()
    local calls = {}
    tc.setcallback(function(_, _, seq)
      calls[#calls + 1] = seq
      if seq == 3 then error("boom " .. seq, 0) end
    end)
    deliver(5)
    return calls
  end

  test(name .. ": a callback raises: the error goes to darksidesync's error handler and the later items still run", function()
    local calls = raising()
    local errs = {}
    dss.seterrorhandler(function(msg) errs[#errs + 1] = msg end)
    local onerror = {}
    local reader = run {
      reader = { onerror = function(msg) onerror[#onerror + 1] = msg end },
      done = function() return #calls == 5 end,
    }
    eq(table.concat(calls, " "), "1 2 3 4 5", "callbacks called")
    eq(#errs, 1, "errors handed to the handler")
    eq(errs[1], "boom 3", "the error")
    eq(#onerror, 0, "errors handed to onerror")
    eq(reader.errors, 0, "errors the reader caught")
    eq(reader.ran, 5, "ran (the one that raised counts)")
    eq(reader.wakes, 1, "one wake-up")
    eq(dss.queuesize(), 0, "queue drained")
    tc.check { attempts = 5, delivered = 5, decoded = 5, ended = 5, allocated = 5, freed = 5 }
  end)

  test(name .. ": a callback raises with no error handler set: onerror gets it at the point of the error, the later items still run", function()
    local calls = raising()
    local onerror, where = {}, nil
    local reader = run {
      reader = { onerror = function(msg)
        onerror[#onerror + 1] = msg
        where = debug.traceback()
      end },
      done = function() return #calls == 5 end,
    }
    eq(table.concat(calls, " "), "1 2 3 4 5", "callbacks called")
    eq(#onerror, 1, "errors handed to onerror")
    eq(onerror[1], "boom 3", "the error")
    ok(where:find("loop_cases.lua:%d+: in function"), "a traceback from where it was raised:\n" .. where)
    eq(reader.errors, 1, "errors the reader handed to onerror")
    eq(reader.wakes, 1, "one wake-up")
    eq(reader.ran, 5, "ran (the one that raised counts)")
    eq(dss.seterrorhandler(nil), nil, "no darksidesync error handler left set")
    eq(dss.queuesize(), 0, "queue drained")
    tc.check { attempts = 5, delivered = 5, decoded = 5, ended = 5, allocated = 5, freed = 5 }
  end)

  test(name .. ": darksidesync's error handler raises: onerror gets that error, the batch ends, the rest run at the next wake-up", function()
    local calls = raising()
    local handler = function(msg) error("handler: " .. msg, 0) end
    dss.seterrorhandler(handler)
    local onerror = {}
    local reader = run {
      reader = { onerror = function(msg) onerror[#onerror + 1] = msg end },
      done = function() return #calls == 5 end,
    }
    eq(table.concat(calls, " "), "1 2 3 4 5", "callbacks called")
    eq(#onerror, 1, "errors handed to onerror")
    eq(onerror[1], "handler: boom 3", "the error")
    eq(reader.errors, 1, "errors the reader handed to onerror")
    eq(reader.wakes, 2, "wake-ups: the one that raised, then one for items 4 and 5")
    eq(reader.ran, 2, "items run by the wake-up that returned")
    eq(dss.seterrorhandler(nil), handler, "darksidesync's handler is still set")
    eq(dss.queuesize(), 0, "queue drained")
    tc.check { attempts = 5, delivered = 5, decoded = 5, ended = 5, allocated = 5, freed = 5 }
  end)

  return { deliver = deliver }
end
