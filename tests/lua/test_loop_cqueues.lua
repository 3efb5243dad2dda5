-- test_loop_cqueues.lua -- darksidesync.cqueues (lua/darksidesync/cqueues.lua)
-- in a real cqueues controller: the shared cases of loop_cases.lua
-- (producer threads, a repeating timer coroutine, the batch bound, errors)
-- through attach(cq), then the pollable of new() in a coroutine of one's
-- own, and stop(). Where cqueues is not installed (Debian: lua-cqueues), one
-- test reports the skip. No sleeps: cq:loop waits on the fd and the timer,
-- bounded by a deadline.

local has_cqueues, cqueues = pcall(require, "cqueues")
if not has_cqueues then
  test("cqueues not available on " .. LUA_VERSION .. ": skipped", function() end)
  return
end

local dss = require "darksidesync"
local tc = require "testclient"
local dcq = require "darksidesync.cqueues"

-- cq:loop() on cq; it must return true with no coroutine left.
local function loop(cq)
  local okay, err = cq:loop()
  eq(okay, true, "cq:loop() returned true (" .. tostring(err) .. ")")
  ok(cq:empty(), "no coroutine left in the controller")
  eq(cq:count(), 0, "cq:count()")
end

-- The loop_cases adapter: an attached reader and a timer coroutine that
-- stops it once done; cq:loop() returns once both coroutines ended.
local adapter = { name = "cqueues" }
function adapter.run(o)
  local cq = cqueues.new()
  local reader = dcq.attach(cq, o.reader)
  if o.started then o.started(reader) end
  local timedout = false
  cq:wrap(function()
    while true do
      cqueues.sleep(o.interval)
      o.tick()
      if o.done() then break end
      if tc.clock() > o.deadline then timedout = true; break end
    end
    reader:stop()
  end)
  loop(cq)
  return reader, timedout
end

local deliver = require("loop_cases")(adapter).deliver

test("cqueues: the pollable of new() in a coroutine of one's own: cqueues.poll(reader), then reader:dispatch()", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local reader = dcq.new { max = 30 }
  eq(reader:pollfd(), dss.getfd(), "pollfd")
  eq(reader:events(), "r", "events")
  eq(reader:timeout(), nil, "timeout")
  tc.start { threads = 2, items = 100 }
  local cq = cqueues.new()
  local deadline = tc.clock() + 20
  cq:wrap(function()
    while seen < 200 and tc.clock() < deadline do
      local ready = cqueues.poll(reader, 1.0)
      if ready == reader then reader:dispatch() end
    end
  end)
  loop(cq)
  eq(seen, 200, "items")
  eq(reader.ran, 200, "ran")
  ok(reader.wakes >= 7, "at most 30 per wake-up: " .. reader.wakes .. " wake-ups")
  ok(tc.join(), "join")
  tc.check { threads = 2, completed = 2, attempts = 200, delivered = 200, decoded = 200,
             ended = 200, allocated = 200, freed = 200 }
end)

test("cqueues: stop() while the attached coroutine waits ends it at once; items stay queued and cq:loop() returns", function()
  fresh()
  tc.setcallback(function() error("must not run") end)
  local cq = cqueues.new()
  local reader = dcq.attach(cq)
  cq:wrap(function()
    cqueues.sleep(0.01)
    deliver(3) -- queued while the reader is about to stop
    reader:stop()
  end)
  loop(cq)
  eq(reader.wakes, 0, "no wake-up")
  eq(dss.queuesize(), 3, "the items stay queued")
  reader:stop() -- again: nothing
  tc.setcallback(function() end)
  eq(dss.dispatch(), 3, "still there")
end)

test("cqueues: stop() from a callback ends the attached coroutine after its batch", function()
  fresh()
  local cq = cqueues.new()
  local reader
  local seen = 0
  tc.setcallback(function() seen = seen + 1; if seen == 2 then reader:stop() end end)
  reader = dcq.attach(cq, { max = 3 })
  deliver(5)
  loop(cq)
  eq(seen, 3, "the batch ran to its end")
  eq(reader.wakes, 1, "one wake-up")
  eq(dss.queuesize(), 2, "the rest stay queued")
  eq(dss.dispatch(), 2, "dispatch")
end)

test("cqueues: an error onerror itself raises ends the attached coroutine: cq:loop() returns it", function()
  fresh()
  tc.setcallback(function() error("boom", 0) end)
  local cq = cqueues.new()
  dcq.attach(cq, { onerror = function(msg) error("onerror: " .. msg, 0) end })
  deliver(2)
  local okay, err = cq:loop()
  eq(okay, false, "cq:loop() failed")
  eq(err, "onerror: boom", "with the error")
  eq(dss.queuesize(), 1, "the second item stays queued")
  eq(dss.seterrorhandler(nil), nil, "no handler left set")
  tc.setcallback(function() end)
  eq(dss.dispatch(), 1, "dispatch")
end)

test("cqueues: attach and new reject bad arguments: exact reasons", function()
  eq(raises(function() dcq.attach(nil) end),
     "bad argument #1 to 'attach' (cqueues controller expected, got nil)")
  eq(raises(function() dcq.attach(cqueues.new(), { max = 0 }) end),
     "bad argument #1 to 'attach' (option 'max' must be a positive integer, got 0)")
  eq(raises(function() dcq.new { onerror = 1 } end),
     "bad argument #1 to 'new' (option 'onerror' must be a function, got number)")
end)
