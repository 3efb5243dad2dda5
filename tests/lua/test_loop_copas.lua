-- test_loop_copas.lua -- darksidesync.copas (lua/darksidesync/copas.lua) in
-- a real Copas loop: the shared cases of loop_cases.lua (producer threads,
-- the batch bound, errors), then stop() and a reader beside a Copas UDP
-- server. Copas 1.2 has no timers: the "timer" is the step loop's own, run
-- between copas.step calls, as a Copas 1.2 program does. Debian packages
-- Copas for 5.1 and 5.2 (LuaJIT uses the 5.1 tree); elsewhere one test
-- reports the skip. No sleeps: copas.step waits on the fd, up to the next
-- tick.

local has_copas, copas = pcall(require, "copas")
if not has_copas then
  test("copas not available on " .. LUA_VERSION .. ": skipped", function() end)
  return
end

local dss = require "darksidesync"
local tc = require "testclient"
local socket = require "socket"
local dcopas = require "darksidesync.copas"

-- One copas.step after stop(): the reader's thread must end in it.
local function stopped(reader)
  reader:stop()
  copas.step(0)
  eq(coroutine.status(reader.thread), "dead", "the reader's thread ended")
  eq(reader:isactive(), false, "inactive")
end

-- The loop_cases adapter: copas.step with a timeout up to the next tick,
-- the tick between steps; once done, the reader is stopped and its thread
-- must end in the next step.
local adapter = { name = "copas" }
function adapter.run(o)
  local reader = dcopas.addreader(o.reader)
  if o.started then o.started(reader) end
  local nexttick = tc.clock() + o.interval
  local timedout = false
  while true do
    copas.step(math.max(0, nexttick - tc.clock()))
    if tc.clock() >= nexttick then
      o.tick()
      nexttick = tc.clock() + o.interval
      if o.done() then break end
      if tc.clock() > o.deadline then timedout = true; break end
    end
  end
  stopped(reader)
  return reader, timedout
end

local deliver = require("loop_cases")(adapter).deliver

test("copas: addreader runs nothing before the loop steps; each step runs at most one batch", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  deliver(25)
  local reader = dcopas.addreader { max = 10 }
  eq(seen, 0, "nothing ran inside addreader")
  ok(reader:isactive(), "active")
  local per = {}
  for _ = 1, 5 do
    local before = seen
    copas.step(1)
    per[#per + 1] = seen - before
  end
  eq(table.concat(per, " "), "10 10 5 0 0", "items per step")
  stopped(reader)
end)

test("copas: once stopped, the reader runs nothing: items delivered after stop stay queued", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local reader = dcopas.addreader()
  stopped(reader)
  deliver(3)
  for _ = 1, 3 do copas.step(0) end
  eq(seen, 0, "nothing ran")
  eq(dss.queuesize(), 3, "queued")
  reader:stop() -- again: nothing
  eq(dss.dispatch(), 3, "dispatch")
end)

test("copas: a Copas UDP server and the reader in one loop: both served while producers deliver", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local udp = assert(socket.udp())
  assert(udp:setsockname("127.0.0.1", 0))
  local _, port = udp:getsockname()
  local got = 0
  copas.addserver(udp, function(s)
    s = copas.wrap(s)
    while got < 20 do
      s:receive(100)
      got = got + 1
    end
  end)
  local reader = dcopas.addreader { max = 50 }
  local sender = assert(socket.udp())
  tc.start { threads = 2, items = 500 }
  local sent = 0
  local deadline = tc.clock() + 20
  while (seen < 1000 or got < 20) and tc.clock() < deadline do
    if sent < 20 then assert(sender:sendto("x" .. sent, "127.0.0.1", port)); sent = sent + 1 end
    copas.step(1)
  end
  eq(seen, 1000, "items")
  eq(got, 20, "datagrams")
  ok(tc.join(), "join")
  tc.check { threads = 2, completed = 2, attempts = 1000, delivered = 1000, decoded = 1000,
             ended = 1000, allocated = 1000, freed = 1000 }
  stopped(reader)
  sender:close()
end)

test("copas: an error onerror itself raises ends the reader's thread (Copas reports it) and stops the reader", function()
  fresh()
  tc.setcallback(function() error("boom", 0) end)
  local reader = dcopas.addreader { onerror = function(msg) error("onerror: " .. msg, 0) end }
  deliver(2)
  local printed, print0 = nil, print
  print = function(...) printed = pack(...) end -- Copas 1.2 reports with print
  local okay, err = pcall(copas.step, 1)
  print = print0
  ok(okay, err)
  ok(printed, "Copas reported an error")
  eq(printed[1], "onerror: boom", "Copas reported the error")
  eq(coroutine.status(reader.thread), "dead", "the thread ended")
  eq(reader:isactive(), false, "inactive")
  eq(reader.stopped, true, "stopped (Copas closed it)")
  eq(dss.queuesize(), 1, "the second item stays queued")
  eq(dss.seterrorhandler(nil), nil, "no handler left set")
  tc.setcallback(function() end)
  eq(dss.dispatch(), 1, "dispatch")
end)

test("copas: addreader rejects bad options: exact reasons", function()
  eq(raises(function() dcopas.addreader { max = 2.5 } end),
     "bad argument #1 to 'addreader' (option 'max' must be a positive integer, got 2.5)")
  eq(raises(function() dcopas.addreader(true) end),
     "bad argument #1 to 'addreader' (table or nil expected, got boolean)")
end)
