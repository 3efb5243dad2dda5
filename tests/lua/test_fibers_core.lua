-- test_fibers_core.lua -- darksidesync.fibers: the scheduler's turns, the
-- timer, fibers (spawn, yield, suspend, errors) and the facade module.
-- Time is driven by hand with current_scheduler:run(t).

local dss = require "darksidesync"
local fiber = require "darksidesync.fibers.fiber"
local sched = require "darksidesync.fibers.sched"
local fibers = require "darksidesync.fibers"
local S = fiber.current_scheduler

local function task(log, name) return { run = function() log[#log + 1] = name end } end

test("monotime: a float from a monotonic clock, never going back", function()
  local a = dss.monotime()
  eq(type(a), "number", "type")
  ok(a > 0, "positive")
  local b = dss.monotime()
  ok(b >= a, "monotonic")
  for _ = 1, 1000 do local c = dss.monotime(); ok(c >= b, "monotonic"); b = c end
end)

test("sched: one turn runs the tasks queued before it; tasks queued during it run next turn", function()
  local s = sched.new(function() return 0 end)
  local log = {}
  s:schedule({ run = function() log[#log + 1] = "a"; s:schedule(task(log, "c")) end })
  s:schedule(task(log, "b"))
  s:run()
  eq(table.concat(log, ","), "a,b", "turn 1")
  s:run()
  eq(table.concat(log, ","), "a,b,c", "turn 2")
  s:run()
  eq(table.concat(log, ","), "a,b,c", "turn 3: nothing")
end)

test("sched: timers fire in the turn their time is reached, in time order, ties in insertion order", function()
  local s = sched.new(function() return 100 end)
  eq(s:now(), 100, "now starts at the clock")
  local log = {}
  s:schedule_at_time(103, task(log, "t103"))
  s:schedule_at_time(101, task(log, "t101a"))
  s:schedule_at_time(101, task(log, "t101b"))
  s:schedule_after_sleep(1.5, task(log, "t101.5"))
  eq(s:next_wake_time(), 101, "next_wake_time")
  s:run(100.9)
  eq(table.concat(log, ","), "", "nothing due at 100.9")
  s:run(101)
  eq(table.concat(log, ","), "t101a,t101b", "at 101")
  eq(s:now(), 101, "now")
  s:run(102)
  eq(table.concat(log, ","), "t101a,t101b,t101.5", "at 102")
  s:run(50)
  eq(s:now(), 102, "the clock never goes back")
  s:run(1000)
  eq(table.concat(log, ","), "t101a,t101b,t101.5,t103", "at 1000")
  eq(s:next_wake_time(), math.huge, "no timer left")
  s:schedule(task(log, "x"))
  eq(s:next_wake_time(), 1000, "a task queued: now")
end)

test("sched: add_task_source: its schedule_tasks runs at the start of every turn, with the turn's time", function()
  local s = sched.new(function() return 0 end)
  local seen, log = {}, {}
  s:add_task_source({ schedule_tasks = function(_, sc, now)
    seen[#seen + 1] = now
    sc:schedule(task(log, "src" .. now))
  end })
  s:run(1)
  s:run(2)
  eq(table.concat(seen, ","), "1,2", "times")
  eq(table.concat(log, ","), "src1,src2", "its tasks run in the same turn")
  eq(s.event_waiter, nil, "no wait_for_events: not the event waiter")
end)

test("sched: main() waits in the event waiter and runs until stop()", function()
  local t = 0
  local s = sched.new(function() return t end)
  local waits = {}
  s:add_task_source({ schedule_tasks = function() end,
                      wait_for_events = function(_, _, _, timeout) waits[#waits + 1] = timeout; t = t + timeout end })
  local n = 0
  s:schedule_at_time(5, { run = function() n = n + 1; s:stop() end })
  s:main()
  eq(n, 1, "ran")
  eq(waits[1], 5, "waited until the timer")
  eq(t, 5, "clock")
end)

test("fiber: spawn passes extra arguments; a spawned fiber first runs next turn", function()
  local got
  fiber.spawn(function(a, b, c) got = { a, b, c } end, 1, nil, 3)
  eq(got, nil, "not yet")
  S:run()
  eq(got[1], 1); eq(got[2], nil); eq(got[3], 3)
end)

test("fiber: yield continues on the next turn; order within a turn is spawn order", function()
  local log = {}
  fiber.spawn(function() log[#log + 1] = "a1"; fiber.yield(); log[#log + 1] = "a2" end)
  fiber.spawn(function() log[#log + 1] = "b1"; fiber.yield(); log[#log + 1] = "b2"; fiber.yield(); log[#log + 1] = "b3" end)
  S:run()
  eq(table.concat(log, ","), "a1,b1", "turn 1")
  S:run()
  eq(table.concat(log, ","), "a1,b1,a2,b2", "turn 2")
  S:run()
  eq(table.concat(log, ","), "a1,b1,a2,b2,b3", "turn 3")
end)

test("fiber: suspend calls block_fn(scheduler, fiber, ...) and returns what the fiber is resumed with", function()
  local saved, got
  fiber.spawn(function()
    got = pack(fiber.suspend(function(s, f, x) ok(s == S, "scheduler"); saved = f; eq(x, "x") end, "x"))
  end)
  S:run()
  ok(saved and saved.alive, "suspended fiber")
  eq(fiber.current_fiber(), nil, "no current fiber outside")
  saved:resume(1, nil, 3)
  eq(got.n, 3); eq(got[1], 1); eq(got[3], 3)
  eq(saved.alive, false, "finished")
  raises(function() saved:resume() end, "dead fiber")
end)

test("fiber: blocking outside a fiber or in a coroutine inside one raises", function()
  raises(function() fiber.yield() end, "darksidesync.fibers: cannot block outside a fiber")
  local err
  fiber.spawn(function()
    local co = coroutine.create(function() fiber.yield() end)
    local _, e = coroutine.resume(co)
    err = tostring(e):gsub("^[^:\n]+:%d+: ", "")
  end)
  S:run()
  eq(err, "darksidesync.fibers: cannot block in a coroutine inside a fiber")
end)

test("fiber: an error ends that fiber only; the handler gets the error and its traceback", function()
  local got = {}
  local prev = fiber.set_error_handler(function(e, tb, f) got[#got + 1] = { e = e, tb = tb, f = f } end)
  eq(prev, nil, "the default handler reads back as nil")
  local after = false
  local function deep() error("boom") end
  fiber.spawn(function() fiber.yield(); deep() end)
  fiber.spawn(function() fiber.yield(); fiber.yield(); after = true end)
  S:run(); S:run(); S:run()
  fiber.set_error_handler(nil)
  eq(#got, 1, "one error")
  ok(tostring(got[1].e):match("boom$"), "the error")
  ok(got[1].tb:match("boom"), "the message in the traceback")
  ok(got[1].tb:match("stack traceback"), "a traceback")
  ok(got[1].tb:match("deep") or got[1].tb:match("in function"), "the failing frame")
  eq(got[1].f.alive, false, "the fiber ended")
  ok(after, "the other fiber went on")
  argreason(1, fiber.set_error_handler, 42)
end)

test("fiber: the default handler writes the traceback to stderr", function()
  local real = io.stderr
  local buf = {}
  io.stderr = { write = function(_, ...) for _, s in ipairs { ... } do buf[#buf + 1] = s end end }
  fiber.spawn(function() error("to stderr") end)
  local ok_, e = pcall(S.run, S)
  io.stderr = real
  ok(ok_, e)
  local out = table.concat(buf)
  ok(out:match("^darksidesync%.fibers: error in fiber: .-to stderr\nstack traceback:"), out)
end)

test("fiber: set_stop_on_error: an error stops the scheduler and main() raises it", function()
  fiber.set_error_handler(function() end)
  fiber.set_stop_on_error(true)
  local msg = raises(function()
    fibers.main(function() fiber.yield(); error("fatal") end)
  end, { pattern = "fatal" })
  fiber.set_stop_on_error(false)
  fiber.set_error_handler(nil)
  ok(msg:match("stack traceback"), "with its traceback")
end)

test("fibers: main(f, ...) spawns f with its arguments and runs until stop()", function()
  local got
  fibers.main(function(a, b)
    got = a + b
    fibers.spawn(function() fibers.yield(); fibers.stop() end)
  end, 2, 3)
  eq(got, 5)
  ok(fibers.current_scheduler == S, "current_scheduler")
  eq(type(fibers.now()), "number", "now")
end)
