-- test_fibers_sync.lua -- darksidesync.fibers.cond, .waitgroup, .mutex,
-- .queue and .go, turn by turn (time driven by hand).

local fiber = require "darksidesync.fibers.fiber"
local op = require "darksidesync.fibers.op"
local cond = require "darksidesync.fibers.cond"
local waitgroup = require "darksidesync.fibers.waitgroup"
local mutex = require "darksidesync.fibers.mutex"
local queue = require "darksidesync.fibers.queue"
local go = require "darksidesync.fibers.go"
local sleep = require "darksidesync.fibers.sleep"
local S = fiber.current_scheduler

local function turns(n) for _ = 1, n or 1 do S:run() end end

test("cond: waiter then signaller: turn 1 a,c,d; turn 2 b (the lua-fibers order)", function()
  local log, c = {}, cond.new()
  fiber.spawn(function() log[#log + 1] = "a"; c:wait(); log[#log + 1] = "b" end)
  fiber.spawn(function() log[#log + 1] = "c"; c:signal(); log[#log + 1] = "d" end)
  turns()
  eq(table.concat(log, ","), "a,c,d", "turn 1")
  turns()
  eq(table.concat(log, ","), "a,c,d,b", "turn 2")
end)

test("cond: one signal wakes 1000 waiters; one-shot: later waits return at once", function()
  local c, woke = cond.new(), 0
  for _ = 1, 1000 do fiber.spawn(function() c:wait(); woke = woke + 1 end) end
  turns()
  eq(woke, 0)
  c:signal()
  c:signal()
  turns()
  eq(woke, 1000)
  c:wait() -- outside a fiber: already signalled, does not block
  eq(c:wait_op():poll(), true)
  eq(cond.new().wait_operation, cond.new().wait_op, "era-A alias")
end)

test("waitgroup: wait returns once every done() ran; a new group does not block", function()
  local wg = waitgroup.new()
  local called = false
  wg:wait_op():perform_alt(function() called = true end)
  eq(called, false, "a new waitgroup is ready")
  wg:add(3)
  eq(wg:wait_op():wrap(function() return "ready" end):perform_alt(function() return "busy" end), "busy")
  local waited = false
  fiber.spawn(function() wg:wait(); waited = true end)
  for _ = 1, 3 do fiber.spawn(function() fiber.yield(); wg:done() end) end
  turns(2)
  eq(waited, false, "not all done yet at the turn they ran")
  turns()
  eq(waited, true)
end)

test("waitgroup: negative counter raises, counter unchanged; add(0) does nothing", function()
  local wg = waitgroup.new()
  raises(function() wg:done() end, "waitgroup counter goes negative")
  eq(wg._counter, 0)
  wg:add(2)
  raises(function() wg:add(-3) end, "waitgroup counter goes negative")
  eq(wg._counter, 2)
  wg:add(0)
  wg:add(-2)
  wg:add(0)
  eq(wg:wait_op():poll(), true)
  argreason(1, function(n) return wg:add(n) end, "x")
end)

test("waitgroup: works for several generations", function()
  local wg = waitgroup.new()
  for gen = 1, 3 do
    wg:add(gen)
    local waited = 0
    for _ = 1, 2 do fiber.spawn(function() wg:wait(); waited = waited + 1 end) end
    turns()
    eq(waited, 0, "generation " .. gen .. ": blocked")
    for _ = 1, gen do wg:done() end
    turns()
    eq(waited, 2, "generation " .. gen .. ": released")
  end
end)

test("waitgroup: an add made while others wait extends the wait", function()
  local wg = waitgroup.new()
  wg:add(1)
  local released = false
  fiber.spawn(function() wg:wait(); released = true end)
  turns()
  wg:add(1)
  wg:done()
  turns()
  eq(released, false, "still one outstanding")
  wg:done()
  turns()
  eq(released, true)
end)

test("mutex: trylock returns true then false; unlock; unlocking an unlocked mutex raises", function()
  local m = mutex.new()
  eq(m:trylock(), true)
  eq(m:trylock(), false)
  m:unlock()
  eq(m:trylock(), true)
  m:unlock()
  raises(function() m:unlock() end, "unlock of an unlocked mutex")
  eq(m.lock_operation, m.lock_op, "alias")
end)

test("mutex: 1000 workers lock, yield, increment, unlock: no lost update; FIFO hand-over", function()
  local m, x, order = mutex.new(), 0, {}
  for i = 1, 1000 do
    fiber.spawn(function()
      m:lock()
      order[#order + 1] = i
      local v = x
      fiber.yield()
      x = v + 1
      m:unlock()
    end)
  end
  for _ = 1, 3000 do turns() end
  eq(x, 1000)
  for i = 1, 1000 do if order[i] ~= i then error("out of order at " .. i) end end
  eq(m:trylock(), true, "free at the end")
  m:unlock()
end)

test("mutex: lock in a choice with a timeout: a loser does not take the mutex", function()
  local m = mutex.new()
  m:lock()
  local r
  fiber.spawn(function()
    r = op.choice(m:lock_op():wrap(function() return "locked" end),
                  sleep.sleep_op(1):wrap(function() return "timeout" end)):perform()
  end)
  turns()
  S:run(S:time() + 2)
  eq(r, "timeout")
  m:unlock()
  eq(m:trylock(), true, "the stale waiter was skipped")
  m:unlock()
end)

test("queue: FIFO; bounded puts block when full; nil is refused", function()
  local q = queue.new(2)
  q:put(1); q:put(2)
  local put3 = false
  fiber.spawn(function() q:put(3); put3 = true end)
  turns()
  eq(put3, false)
  eq(q:get(), 1)
  turns()
  eq(put3, true)
  eq(q:get(), 2); eq(q:get(), 3)
  argreason(1, function() return q:put(nil) end)
  argreason(1, function() return q:put_op(nil) end)
  argreason(1, queue.new, 0)
  local u = queue.new()
  for i = 1, 10000 do u:put(i) end
  for i = 1, 10000 do eq(u:get(), i) end
  local got
  fiber.spawn(function() got = u:get() end)
  turns()
  u:put("late")
  turns()
  eq(got, "late")
end)

test("go: go(fn, args) spawns fn(unpack(args)); go(fn) with no args", function()
  local got, none = nil, nil
  go(function(a, b, c) got = { a, b, c } end, { 1, 2, 3 })
  go(function(...) none = select("#", ...) end)
  turns()
  eq(got[1] + got[2] + got[3], 6)
  eq(none, 0)
end)
