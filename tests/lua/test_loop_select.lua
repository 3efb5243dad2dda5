-- test_loop_select.lua -- darksidesync.select (lua/darksidesync/select.lua)
-- in a plain LuaSocket socket.select loop: the shared cases of
-- loop_cases.lua (producer threads, the loop's own repeating timer, the
-- batch bound, errors), then the reader beside a UDP socket, the
-- level-triggered fd seen through select, and the options every helper
-- takes (darksidesync.reader). Where LuaSocket is not installed, one test
-- reports the skip. No sleeps: select waits on the fd, up to the next tick.

local has_socket, socket = pcall(require, "socket")
if not has_socket then
  test("LuaSocket not available on " .. LUA_VERSION .. ": skipped", function() end)
  return
end

local dss = require "darksidesync"
local tc = require "testclient"
local dselect = require "darksidesync.select"

-- The loop_cases adapter: a select loop whose timeout is the time to the
-- next tick of its timer; it ends once done (checked at each tick).
local adapter = { name = "select" }
function adapter.run(o)
  local reader = dselect.new(o.reader)
  if o.started then o.started(reader) end
  local nexttick = tc.clock() + o.interval
  while true do
    local r = socket.select({ reader }, nil, math.max(0, nexttick - tc.clock()))
    if r[reader] then reader:dispatch() end
    if tc.clock() >= nexttick then
      o.tick()
      nexttick = tc.clock() + o.interval
      if o.done() then return reader, false end
      if tc.clock() > o.deadline then return reader, true end
    end
  end
end

local deliver = require("loop_cases")(adapter).deliver

test("select: the fd is level-triggered: select reports the reader again after each bounded batch until the queue is empty", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local reader = dselect.new { max = 10 }
  eq(#socket.select({ reader }, nil, 0), 0, "empty: not readable")
  deliver(25)
  local ran = {}
  while true do
    local r = socket.select({ reader }, nil, 0)
    if not r[reader] then break end
    ran[#ran + 1] = reader:dispatch()
    ok(#ran <= 10, "ends")
  end
  eq(table.concat(ran, " "), "10 10 5", "items per wake-up")
  eq(seen, 25, "callbacks")
  eq(reader.wakes, 3, "wakes")
  eq(reader.ran, 25, "ran")
  eq(dss.queuesize(), 0, "queue")
end)

test("select: the reader and a UDP socket in one read set: both are served while producers deliver", function()
  fresh()
  local seen = 0
  tc.setcallback(function() seen = seen + 1 end)
  local udp = assert(socket.udp())
  assert(udp:setsockname("127.0.0.1", 0))
  local _, port = udp:getsockname()
  local sender = assert(socket.udp())
  local reader = dselect.new { max = 50 }
  tc.start { threads = 2, items = 500 }
  local sent, got = 0, 0
  local deadline = tc.clock() + 20
  while (seen < 1000 or got < 20) and tc.clock() < deadline do
    if sent < 20 then assert(sender:sendto("x" .. sent, "127.0.0.1", port)); sent = sent + 1 end
    local r = socket.select({ reader, udp }, nil, 1)
    if r[reader] then reader:dispatch() end
    if r[udp] then assert(udp:receive()); got = got + 1 end
  end
  eq(seen, 1000, "items")
  eq(got, 20, "datagrams")
  ok(tc.join(), "join")
  tc.check { threads = 2, completed = 2, attempts = 1000, delivered = 1000, decoded = 1000,
             ended = 1000, allocated = 1000, freed = 1000 }
  udp:close()
  sender:close()
end)

test("select: an error onerror itself raises is raised from dispatch; the items after it stay queued", function()
  fresh()
  tc.setcallback(function(_, _, seq) if seq == 2 then error("boom", 0) end end)
  deliver(4)
  local reader = dselect.new { onerror = function(msg) error("onerror: " .. msg, 0) end }
  eq(raises(function() reader:dispatch() end), "onerror: boom", "the error")
  eq(dss.queuesize(), 2, "items 3 and 4 still queued")
  eq(dss.seterrorhandler(nil), nil, "no handler left set")
  eq(reader.errors, 1, "errors")
  tc.setcallback(function() end)
  eq(reader:dispatch(), 2, "the rest at the next call")
end)

test("select: a reader's getfd is darksidesync's fd; dirty is false", function()
  local reader = dselect.new()
  eq(reader:getfd(), dss.getfd(), "getfd")
  eq(reader.fd, dss.getfd(), "fd")
  eq(reader:dirty(), false, "dirty")
  eq(reader.max, 1000, "the default bound")
end)

test("select: new rejects bad options: exact reasons (the options every helper takes)", function()
  local function reason(opts)
    return raises(function() dselect.new(opts) end):match("^bad argument #1 to 'new' %((.*)%)$")
  end
  for _, v in ipairs { 0, -1, 1.5, 0 / 0, math.huge } do
    eq(reason { max = v }, "option 'max' must be a positive integer, got " .. tostring(v),
       "max = " .. tostring(v))
  end
  eq(reason { max = "10" }, "option 'max' must be a positive integer, got 10")
  eq(reason { onerror = true }, "option 'onerror' must be a function, got boolean")
  eq(reason(42), "table or nil expected, got number")
  eq(reason("x"), "table or nil expected, got string")
  eq(dselect.new { max = 1 }.max, 1, "max = 1")
  eq(dselect.new { max = 7.0 }.max, 7, "max = 7.0")
end)
