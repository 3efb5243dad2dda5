-- test_fibers_items.lua -- darksidesync.fibers.items: ready_op / ready (an
-- op completing with the queue size once items are queued) and set_auto
-- (the automatic draining of the queue into fibers, off and on), with items
-- delivered by the test client's C threads.

local dss = require "darksidesync"
local tc = require "testclient"
local fiber = require "darksidesync.fibers.fiber"
local fibers = require "darksidesync.fibers"
local op = require "darksidesync.fibers.op"
local sleep = require "darksidesync.fibers.sleep"
local items = require "darksidesync.fibers.items"

local sched = fiber.current_scheduler

-- main_with_guard(f): fibers.main(f), stopped with a failure after 20 s.
local function main_with_guard(f)
  local timed_out = false
  fiber.spawn(function() sleep.sleep(20 * (tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1)); timed_out = true; fiber.stop() end)
  fibers.main(f)
  ok(not timed_out, "finished before the guard's 20 s")
end

-- Drains the queue by hand: each callback called here; returns how many.
local function drain()
  local n = 0
  while true do
    local left, cb, args = dss.poll()
    if left == -1 then return n end
    if cb then cb(unpack(args)); n = n + 1 end
  end
end

-- Every test starts with auto on and the queue empty.
local function reset()
  fresh()
  items.set_auto(true)
  drain()
  eq(dss.queuesize(), 0, "queue empty")
end

test("set_auto / get_auto: default on; set_auto returns the previous setting", function()
  reset()
  eq(items.get_auto(), true, "default")
  eq(items.set_auto(false), true, "previous")
  eq(items.get_auto(), false)
  eq(items.set_auto(nil), false, "previous")
  eq(items.get_auto(), false, "nil is off")
  eq(items.set_auto(1), false)
  eq(items.get_auto(), true, "a true value is on")
end)

test("ready_op: not ready on an empty queue; ready with the queue size when items are queued, without blocking", function()
  reset()
  eq(items.ready_op():poll(), false, "empty: not ready")
  tc.start { items = 3 }
  ok(tc.join(), "join")
  queued(3)
  local r = pack(items.ready_op():poll())
  eq(r.n, 2); eq(r[1], true); eq(r[2], 3)
  eq(items.ready(), 3, "ready() outside a fiber: it does not block")
  eq(dss.queuesize(), 3, "ready takes no item")
  local got = 0
  tc.setcallback(function() got = got + 1 end)
  eq(drain(), 3)
  eq(got, 3)
end)

test("auto off: the source never polls; items wait queued; auto on again: each runs in a fiber of its own", function()
  reset()
  items.set_auto(false)
  local ran = {}
  tc.setcallback(function(_, _, seq) ran[#ran + 1] = { seq, fiber.current_fiber() } end)
  tc.start { items = 3 }
  ok(tc.join(), "join")
  queued(3)
  local decoded = dss.stats().decoded
  for _ = 1, 5 do sched:run() end
  eq(#ran, 0, "no callback ran")
  eq(dss.queuesize(), 3, "all still queued")
  eq(dss.stats().decoded, decoded, "none decoded: no poll")
  items.set_auto(true)
  sched:run() -- the source spawns three fibers at its start; they run in it
  eq(#ran, 3, "three callbacks")
  eq(dss.queuesize(), 0, "drained")
  for i = 1, 3 do
    eq(ran[i][1], i, "in order")
    ok(ran[i][2] ~= nil, "in a fiber")
    for j = 1, i - 1 do ok(ran[i][2] ~= ran[j][2], "each in its own fiber") end
  end
end)

test("an item from a C thread wakes a fiber blocked in ready(), which drains it with poll()", function()
  reset()
  items.set_auto(false)
  local log = {}
  local drainer
  tc.setcallback(function(lib, _, seq)
    log[#log + 1] = "cb " .. lib .. "/" .. seq
    ok(fiber.current_fiber() == drainer, "the callback runs in the draining fiber")
  end)
  main_with_guard(function()
    drainer = fiber.current_fiber()
    fiber.spawn(function() -- runs once the drainer is blocked
      log[#log + 1] = "start"
      tc.start { items = 1 }
    end)
    eq(dss.queuesize(), 0, "nothing queued yet")
    local n = items.ready()
    log[#log + 1] = "ready " .. n
    eq(drain(), 1, "one item drained")
    fiber.stop()
  end)
  items.set_auto(true)
  ok(tc.join(), "join")
  eq(table.concat(log, ","), "start,ready 1,cb 1/1")
  eq(dss.queuesize(), 0)
end)

test("several fibers blocked in ready() all wake, with the queue size", function()
  reset()
  items.set_auto(false)
  local sizes = {}
  local woke = 0
  main_with_guard(function()
    for i = 1, 3 do
      fiber.spawn(function()
        sizes[i] = items.ready()
        woke = woke + 1
        if woke == 3 then
          tc.setcallback(function() end)
          eq(drain(), 2)
          fiber.stop()
        end
      end)
    end
    fiber.yield() -- all three are blocked now
    tc.start { items = 2 }
    ok(tc.join(), "join") -- both queued before the next turn
  end)
  items.set_auto(true)
  eq(woke, 3)
  for i = 1, 3 do eq(sizes[i], 2, "size seen by waiter " .. i) end
end)

test("choice(ready_op(), sleep_op()): the sleep wins on an empty queue, ready wins once an item is queued", function()
  reset()
  items.set_auto(false)
  local results = {}
  local function sel()
    return op.choice(items.ready_op():wrap(function(n) return "ready", n end),
                     sleep.sleep_op(0.01):wrap(function() return "sleep" end)):perform()
  end
  main_with_guard(function()
    results[1] = table.concat({ sel() }, " ")
    -- 40 more lost ready_ops: their stale waiters are skipped and pruned
    for _ = 1, 40 do eq(sel(), "sleep") end
    tc.start { items = 1 }
    ok(tc.join(), "join")
    results[2] = table.concat({ sel() }, " ") -- ready at once
    -- blocked in the choice when the item comes: ready wins
    tc.setcallback(function() end)
    eq(drain(), 1)
    fiber.spawn(function() tc.start { items = 1 } end)
    local t0 = dss.monotime()
    local a, b = op.choice(items.ready_op():wrap(function(n) return "ready", n end),
                           sleep.sleep_op(10):wrap(function() return "sleep" end)):perform()
    results[3] = a .. " " .. tostring(b)
    ok(dss.monotime() - t0 < 5, "woken by the item, not the 10 s sleep")
    eq(drain(), 1)
    fiber.stop()
  end)
  items.set_auto(true)
  ok(tc.join(), "join")
  eq(results[1], "sleep")
  eq(results[2], "ready 1")
  eq(results[3], "ready 1")
end)

test("with auto on, a waiter in ready() wakes too, and the source still runs the items in fibers", function()
  reset()
  local n_seen, ran = nil, 0
  tc.setcallback(function() ran = ran + 1 end)
  main_with_guard(function()
    fiber.spawn(function() tc.start { items = 1 } end)
    n_seen = items.ready()
    fiber.yield() -- the item's fiber, spawned in the same turn, runs next turn
    fiber.stop()
  end)
  ok(tc.join(), "join")
  eq(n_seen, 1)
  eq(ran, 1)
  eq(dss.queuesize(), 0)
end)

-- turns_during(f): runs main(f) and counts the scheduler's turns.
local function turns_during(f)
  local counter = { n = 0 }
  function counter.schedule_tasks(self) self.n = self.n + 1 end
  sched.sources[#sched.sources + 1] = counter -- a plain source: not the event waiter
  main_with_guard(f)
  for i = #sched.sources, 1, -1 do
    if sched.sources[i] == counter then table.remove(sched.sources, i) end
  end
  return counter.n
end

for _, with_pollio in ipairs { false, true } do
  local how = with_pollio and "in the poller" or "in darksidesync.wait"
  test("auto off with items queued and nobody in ready(): main() sleeps " .. how .. " instead of spinning", function()
    reset()
    if with_pollio then require("darksidesync.fibers.pollio").install_poll_io_handler() end
    items.set_auto(false)
    tc.setcallback(function() end)
    tc.start { items = 2 }
    ok(tc.join(), "join")
    eq(dss.queuesize(), 2)
    local turns = turns_during(function()
      sleep.sleep(0.05)
      fiber.stop()
    end)
    ok(turns <= 10, "a handful of turns, not a spin: " .. turns)
    eq(dss.queuesize(), 2, "still queued")
    items.set_auto(true)
    eq(drain(), 2)
  end)
end
