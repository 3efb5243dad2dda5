-- test_loop_luv.lua -- darksidesync.luv (lua/darksidesync/luv.lua) in a
-- real luv loop: the shared cases of loop_cases.lua (producer threads, a
-- repeating uv timer, the batch bound, errors), then the watcher's own
-- start/stop/close. Where luv is not installed, one test reports the skip.
-- No sleeps: uv.run waits on the fd and the timer, bounded by a deadline.

local has_luv, uv = pcall(require, "luv")
if not has_luv then
  test("luv not available on " .. LUA_VERSION .. ": skipped", function() end)
  return
end

local dss = require "darksidesync"
local tc = require "testclient"
local dluv = require "darksidesync.luv"

-- The loop_cases adapter: a watcher and a uv timer; uv.run returns once
-- both are closed. Errors raised in the timer's callback (a failed check)
-- are kept and raised after uv.run: luv would exit the process on them.
local adapter = { name = "luv" }
function adapter.run(o)
  local watcher = dluv.new(o.reader)
  if o.started then o.started(watcher) end
  watcher:start()
  local timer = uv.new_timer()
  local ms = math.max(1, math.floor(o.interval * 1000 + 0.5))
  local timedout, failure = false, nil
  timer:start(ms, ms, function()
    local okay, err = pcall(function()
      o.tick()
      if o.done() then return true end
      if tc.clock() > o.deadline then timedout = true; return true end
    end)
    if not okay then failure = err end
    if not okay or err == true then
      watcher:close()
      timer:close()
    end
  end)
  uv.run()
  if failure then error(failure, 0) end
  eq(uv.loop_alive(), false, "uv.run returned with nothing left in the loop")
  eq(watcher:isactive(), false, "the watcher is closed")
  return watcher, timedout
end

local deliver = require("loop_cases")(adapter).deliver

test("luv: a closed watcher keeps nothing running: uv.run returns at once, items stay queued", function()
  fresh()
  tc.setcallback(function() end)
  local w = dluv.start()
  ok(w:isactive(), "active once started")
  w:close()
  eq(w:isactive(), false, "inactive once closed")
  deliver(3)
  uv.run() -- finishes closing the handle, then returns: nothing active
  eq(uv.loop_alive(), false, "loop alive")
  eq(dss.queuesize(), 3, "nothing ran")
  eq(w.wakes, 0, "no wake-up")
  w:close() -- again: nothing
  raises(function() w:start() end, "darksidesync.luv: the watcher is closed")
  eq(dss.dispatch(), 3, "the items are still there")
end)

test("luv: stop, then start again: items queued meanwhile run once the watcher is started", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local w = dluv.start()
  w:stop()
  eq(w:isactive(), false, "stopped")
  deliver(4)
  eq(uv.run("nowait"), false, "uv.run(nowait): nothing active")
  eq(seen, 0, "nothing ran while stopped")
  w:start()
  ok(w:isactive(), "started again")
  local timer = uv.new_timer()
  local deadline = tc.clock() + 10
  timer:start(1, 1, function()
    if seen == 4 or tc.clock() > deadline then w:close(); timer:close() end
  end)
  uv.run()
  eq(seen, 4, "ran once started again")
  eq(w.wakes, 1, "in one wake-up")
  eq(uv.loop_alive(), false, "loop alive")
end)

test("luv: a started watcher alone keeps uv.run running, until an item's callback closes it", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local w = dluv.start()
  -- The watcher keeps the loop alive: a producer's item arrives, and the
  -- callback closes the watcher; uv.run returns only then.
  tc.setcallback(function() seen = seen + 1; w:close() end)
  tc.start { items = 1, delay = 20 }
  uv.run()
  eq(seen, 1, "the item ran inside uv.run")
  ok(tc.join(), "join")
  eq(uv.loop_alive(), false, "loop alive")
end)

test("luv: one started watcher at a time: new and start raise while another is started", function()
  fresh()
  local ANOTHER = "darksidesync.luv: another watcher is started (libuv polls an fd with one handle only)"
  local a = dluv.start()
  eq(raises(function() dluv.new() end), ANOTHER, "new while a is started")
  a:stop()
  local b = dluv.new()
  a:start() -- itself again: fine
  eq(raises(function() b:start() end), ANOTHER, "b while a is started")
  eq(b:isactive(), false, "b is not started")
  a:stop()
  b:start()
  ok(b:isactive(), "b, once a is stopped")
  eq(raises(function() a:start() end), ANOTHER, "a while b is started")
  b:close()
  a:start()
  ok(a:isactive(), "a, once b is closed")
  a:close()
  uv.run()
  eq(uv.loop_alive(), false, "loop alive")
end)

test("luv: new rejects bad options: exact reasons", function()
  eq(raises(function() dluv.new { max = 0 } end),
     "bad argument #1 to 'new' (option 'max' must be a positive integer, got 0)")
  eq(raises(function() dluv.new { onerror = 1 } end),
     "bad argument #1 to 'new' (option 'onerror' must be a function, got number)")
  eq(raises(function() dluv.new(5) end),
     "bad argument #1 to 'new' (table or nil expected, got number)")
end)
