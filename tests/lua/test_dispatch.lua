-- test_dispatch.lua -- dispatch([max]) and seterrorhandler([f]): how many
-- items run and in which order, blocking items, decoders ending items early,
-- callback and decoder errors with and without a handler, re-entrance, bad
-- arguments. docs/lua-api.md, "Beyond 1.0".

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS = -100

-- Delivers n fire-and-forget items of lib 1 from Lua (seq 1, 2, ... after
-- fresh()).
local function deliver(n, opts)
  for _ = 1, n do eq(tc.deliver(tc.utilid(1), opts), SUCCESS, "deliver") end
end

-- A callback recording the seq of each call (its third argument) in `seen`.
local function recorder()
  local seen = {}
  return seen, function(_, _, seq) seen[#seen + 1] = seq end
end

test("dispatch on an empty queue runs nothing and returns 0", function()
  fresh()
  eq(dss.dispatch(), 0, "dispatch()")
  eq(dss.dispatch(5), 0, "dispatch(5)")
  tc.check {}
end)

test("dispatch() runs exactly the items queued when it was called; one a callback delivers waits", function()
  fresh()
  local seen = {}
  tc.setcallback(function(_, _, seq)
    seen[#seen + 1] = seq
    if seq == 1 then eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver from a callback") end
  end)
  deliver(3)
  eq(dss.dispatch(), 3, "ran")
  eq(table.concat(seen, " "), "1 2 3", "seen")
  eq(dss.queuesize(), 1, "the item delivered meanwhile is still queued")
  eq(dss.dispatch(), 1, "ran next time")
  eq(table.concat(seen, " "), "1 2 3 4", "seen")
  eq(dss.queuesize(), 0, "queuesize")
  tc.check { attempts = 4, delivered = 4, decoded = 4, ended = 4, allocated = 4, freed = 4 }
end)

test("dispatch(max) runs at most max items, oldest first; dispatch(0) runs nothing", function()
  fresh()
  local seen, cb = recorder()
  tc.setcallback(cb)
  deliver(5)
  eq(dss.dispatch(0), 0, "dispatch(0)")
  eq(#seen, 0, "no callback ran")
  eq(dss.queuesize(), 5, "queuesize after dispatch(0)")
  eq(dss.dispatch(2), 2, "dispatch(2)")
  eq(table.concat(seen, " "), "1 2", "seen")
  eq(dss.queuesize(), 3, "queuesize")
  eq(dss.dispatch(1.0), 1, "dispatch(1.0)")
  eq(dss.dispatch(10), 2, "dispatch(10) with 2 queued")
  eq(table.concat(seen, " "), "1 2 3 4 5", "seen")
  eq(dss.dispatch(nil), 0, "dispatch(nil) on an empty queue")
  tc.check { attempts = 5, delivered = 5, decoded = 5, ended = 5, allocated = 5, freed = 5 }
end)

test("dispatch rejects a max that is not a non-negative integer: exact reasons", function()
  fresh()
  deliver(1)
  local function reason(v) return argreason(1, dss.dispatch, v) end
  eq(reason("two"), "non-negative integer expected, got string")
  eq(reason(true), "non-negative integer expected, got boolean")
  eq(reason({}), "non-negative integer expected, got table")
  for _, v in ipairs { -1, 1.5, -0.5, math.huge, -math.huge } do
    eq(reason(v), "non-negative integer expected, got " .. tostring(v + 0.0),
       "dispatch(" .. tostring(v) .. ")")
  end
  eq(dss.queuesize(), 1, "nothing ran")
end)

test("items run in the order they were queued, across libraries", function()
  fresh()
  ok(tc.reg(2), "register lib 2")
  local seen = {}
  tc.setcallback(function(lib, _, seq) seen[#seen + 1] = lib .. ":" .. seq end)
  for _, lib in ipairs { 1, 2, 2, 1, 2 } do
    eq(tc.deliver(tc.utilid(lib), { lib = lib }), SUCCESS, "deliver as lib " .. lib)
  end
  eq(dss.dispatch(), 5, "ran")
  eq(table.concat(seen, " "), "1:1 2:2 2:3 1:4 2:5", "order")
  tc.check({ attempts = 2, delivered = 2, decoded = 2, ended = 2, allocated = 2, freed = 2 }, nil, 1)
  tc.check({ attempts = 3, delivered = 3, decoded = 3, ended = 3, allocated = 3, freed = 3 }, nil, 2)
end)

test("a producer's items run in its order, each exactly once, while it delivers", function()
  fresh()
  local seen, cb = recorder()
  tc.setcallback(cb)
  tc.start { items = 200 }
  waitfor(function() dss.dispatch(); return #seen == 200 end, "200 items")
  ok(tc.join(), "join")
  for i = 1, 200 do eq(seen[i], i, "seen[" .. i .. "]") end
  eq(dss.dispatch(), 0, "then nothing")
  tc.check { threads = 1, completed = 1, attempts = 200, delivered = 200, decoded = 200,
             ended = 200, allocated = 200, freed = 200 }
end)

test("a blocking item's callback gets the waiting-thread callback first, then the decoder's values", function()
  fresh()
  local calls = {}
  tc.setcallback(function(...)
    local a = pack(...)
    calls[#calls + 1] = a
    eq(a.n, 4, "number of arguments")
    eq(type(a[1]), "userdata", "first argument")
    local r = pack(a[1](a[3] * 1000 + a[4]))
    eq(r[1], "ack", "the return callback's first value")
  end)
  tc.start { threads = 2, blocking = true }
  queued(2)
  eq(dss.dispatch(), 2, "ran")
  ok(tc.join(), "join")
  eq(#calls, 2, "callbacks")
  tc.check { threads = 2, completed = 2, attempts = 2, delivered = 2, released = 2, decoded = 2,
             returned = 2, answers_ok = 2, ended = 2 }
end)

test("a blocking item whose callback does not answer: the waiting-thread callback is collected, the producer released", function()
  fresh()
  tc.setcallback(function() end)
  tc.start { blocking = true }
  queued(1)
  eq(dss.dispatch(), 1, "ran")
  collectgarbage()
  collectgarbage()
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             garbage = 1, unanswered = 1, ended = 1 }
end)

test("an item whose decoder returned 0 counts as run; its callback is not called", function()
  fresh()
  local seen, cb = recorder()
  tc.setcallback(cb)
  tc.start { items = 2, decoder = "zero" }
  ok(tc.join(), "join")
  deliver(1)
  eq(dss.dispatch(), 3, "ran")
  eq(table.concat(seen, " "), "1", "callbacks: only the item delivered from Lua")
  eq(dss.queuesize(), 0, "queuesize")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, decoded_zero = 2,
             ended = 3, allocated = 3, freed = 3 }
end)

test("a blocking item whose decoder returns 0 is released by dispatch, its return callback not called", function()
  fresh()
  tc.start { blocking = true, decoder = "zero" }
  queued(1)
  eq(dss.dispatch(), 1, "ran")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             decoded_zero = 1, unanswered = 1, ended = 1 }
end)

test("with a handler, a callback's error goes to it and dispatch goes on", function()
  fresh()
  local seen, got = {}, {}
  tc.setcallback(function(_, _, seq)
    seen[#seen + 1] = seq
    if seq == 2 then error("boom", 0) end
    if seq == 3 then error({ code = 3 }) end
  end)
  local h = function(msg) got[#got + 1] = msg; return "ignored" end
  local n, prev = select("#", dss.seterrorhandler(h)), dss.seterrorhandler(h)
  eq(n, 1, "seterrorhandler returns one value")
  eq(prev, h, "the handler it replaced")
  deliver(4)
  eq(dss.dispatch(), 4, "ran, the failing ones included")
  eq(table.concat(seen, " "), "1 2 3 4", "seen")
  eq(#got, 2, "handler calls")
  eq(got[1], "boom", "the message")
  eq(type(got[2]), "table", "a non-string error object, as raised")
  eq(got[2].code, 3, "its content")
  eq(dss.queuesize(), 0, "queuesize")
  tc.check { attempts = 4, delivered = 4, decoded = 4, ended = 4, allocated = 4, freed = 4 }
end)

test("the handler runs at the point of the error: the failing callback is on the stack", function()
  fresh()
  local function failing() error("where", 0) end
  local found
  dss.seterrorhandler(function()
    for level = 1, 30 do
      local info = debug.getinfo(level, "f")
      if not info then break end
      if info.func == failing then found = level end
    end
  end)
  tc.setcallback(failing)
  deliver(1)
  eq(dss.dispatch(), 1, "ran")
  ok(found, "the callback was on the stack when the handler ran")
end)

test("with a handler, a decoder's error goes to it and dispatch goes on", function()
  fresh()
  local seen, cb = recorder()
  local got = {}
  tc.setcallback(cb)
  dss.seterrorhandler(function(msg) got[#got + 1] = unlabel(msg) end)
  tc.start { items = 2, decoder = "error" }
  ok(tc.join(), "join")
  deliver(1)
  eq(dss.dispatch(), 3, "ran")
  eq(table.concat(got, "|"), "testclient: decoder failed|testclient: decoder failed", "handler got")
  eq(table.concat(seen, " "), "1", "the good item's callback ran")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, decode_errors = 2,
             ended = 3, allocated = 3, freed = 3 }
end)

test("with a handler, a blocking item whose decoder raises: its producer is released", function()
  fresh()
  local got = {}
  dss.seterrorhandler(function(msg) got[#got + 1] = unlabel(msg) end)
  tc.start { blocking = true, decoder = "error" }
  queued(1)
  eq(dss.dispatch(), 1, "ran")
  ok(tc.join(), "join")
  eq(table.concat(got, "|"), "testclient: decoder failed", "handler got")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             decode_errors = 1, unanswered = 1, ended = 1 }
end)

test("without a handler, dispatch raises the callback's error after that item ended; the rest stay queued", function()
  fresh()
  local seen = {}
  tc.setcallback(function(_, _, seq)
    seen[#seen + 1] = seq
    if seq == 2 then error("boom", 0) end
  end)
  deliver(4)
  raises(dss.dispatch, "boom")
  eq(table.concat(seen, " "), "1 2", "seen")
  eq(dss.queuesize(), 2, "queuesize")
  tc.check { attempts = 4, delivered = 4, decoded = 2, ended = 2, allocated = 4, freed = 2, live = 2 }
  eq(dss.dispatch(), 2, "the rest")
  eq(table.concat(seen, " "), "1 2 3 4", "seen")
  tc.check { attempts = 4, delivered = 4, decoded = 4, ended = 4, allocated = 4, freed = 4 }
end)

test("without a handler, a decoder's error: dispatch raises it, that item ended, the rest stay queued", function()
  fresh()
  tc.start { items = 3, decoder = "error" }
  ok(tc.join(), "join")
  raises(dss.dispatch, labeled("testclient: decoder failed"))
  eq(dss.queuesize(), 2, "queuesize")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 1, decode_errors = 1,
             ended = 1, allocated = 3, freed = 1, live = 2 }
  raises(function() return dss.dispatch(5) end, labeled("testclient: decoder failed"))
  eq(dss.queuesize(), 1, "queuesize")
end)

test("without a handler, a blocking item's callback raises before answering: the producer is released when the callback is collected", function()
  fresh()
  tc.setcallback(function() error("no answer", 0) end)
  tc.start { blocking = true }
  queued(1)
  raises(dss.dispatch, "no answer")
  collectgarbage()
  collectgarbage()
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             garbage = 1, unanswered = 1, ended = 1 }
end)

test("a handler that raises: dispatch raises that error, the item ended, the rest stay queued", function()
  fresh()
  local seen = {}
  tc.setcallback(function(_, _, seq)
    seen[#seen + 1] = seq
    if seq == 1 then error("boom", 0) end
  end)
  local calls = 0
  dss.seterrorhandler(function(msg)
    calls = calls + 1
    error("handler: " .. tostring(msg), 0)
  end)
  deliver(3)
  raises(dss.dispatch, "handler: boom")
  eq(calls, 1, "handler calls")
  eq(table.concat(seen, " "), "1", "seen")
  eq(dss.queuesize(), 2, "queuesize")
  tc.check { attempts = 3, delivered = 3, decoded = 1, ended = 1, allocated = 3, freed = 1, live = 2 }
end)

test("seterrorhandler returns the handler it replaces, nil when there was none", function()
  fresh()
  local f, g = function() end, function() end
  eq(select("#", dss.seterrorhandler(f)), 1, "one value")
  eq(dss.seterrorhandler(g), f, "f replaced")
  eq(dss.seterrorhandler(nil), g, "g removed")
  eq(dss.seterrorhandler(), nil, "none was set")
  eq(dss.seterrorhandler(f), nil, "none was set")
  eq(dss.seterrorhandler(), f, "f removed")
end)

test("seterrorhandler(nil) and seterrorhandler() remove the handler", function()
  fresh()
  tc.setcallback(function() error("boom", 0) end)
  local got = 0
  dss.seterrorhandler(function() got = got + 1 end)
  deliver(3)
  eq(dss.dispatch(1), 1, "with the handler")
  dss.seterrorhandler(nil)
  raises(function() return dss.dispatch(1) end, "boom")
  dss.seterrorhandler(function() got = got + 1 end)
  dss.seterrorhandler()
  raises(function() return dss.dispatch(1) end, "boom")
  eq(got, 1, "handler calls")
end)

test("seterrorhandler rejects anything but a function or nil: exact reasons", function()
  local function reason(v) return argreason(1, dss.seterrorhandler, v) end
  eq(reason(1), "function or nil expected, got number")
  eq(reason("f"), "function or nil expected, got string")
  eq(reason({}), "function or nil expected, got table")
  eq(reason(false), "function or nil expected, got boolean")
end)

test("dispatch from inside a callback (re-entrant): the inner call runs the rest, the outer one stops", function()
  fresh()
  local order, inner = {}, nil
  tc.setcallback(function(_, _, seq)
    order[#order + 1] = "in " .. seq
    if seq == 1 then inner = dss.dispatch() end
    order[#order + 1] = "out " .. seq
  end)
  deliver(3)
  eq(dss.dispatch(), 1, "outer ran")
  eq(inner, 2, "inner ran")
  eq(table.concat(order, ", "), "in 1, in 2, out 2, in 3, out 3, out 1", "order")
  eq(dss.queuesize(), 0, "queuesize")
  tc.check { attempts = 3, delivered = 3, decoded = 3, ended = 3, allocated = 3, freed = 3 }
end)

test("poll from inside a dispatched callback", function()
  fresh()
  local order = {}
  tc.setcallback(function(_, _, seq)
    order[#order + 1] = seq
    if seq == 1 then
      local n, cb, args = dss.poll()
      eq(n, 1, "poll's remaining")
      cb(unpack(args))
    end
  end)
  deliver(3)
  eq(dss.dispatch(), 2, "ran by dispatch")
  eq(table.concat(order, " "), "1 2 3", "order")
end)

test("dispatch from a coroutine", function()
  fresh()
  local seen, cb = recorder()
  tc.setcallback(cb)
  deliver(2)
  eq(coroutine.wrap(function() return dss.dispatch() end)(), 2, "ran")
  eq(table.concat(seen, " "), "1 2", "seen")
end)

test("a dispatched callback that yields: the error says which client's item and what to do; a blocking producer is released once its waiting-thread callback is collected", function()
  fresh()
  tc.setcallback(function() coroutine.yield() end)
  tc.start { items = 1 }
  ok(tc.join(), "join")
  local co = coroutine.create(function() return dss.dispatch() end)
  local okay, err = coroutine.resume(co)
  ok(not okay, "dispatch raised")
  ok(err:find("attempt to yield across", 1, true), err)
  ok(err:find("%(darksidesync: the callback of an item of client 0x%x+ yielded, but dispatch%(%) runs callbacks in its own C frame"), err)
  -- With an error handler, the handler gets the hint.
  local got
  dss.seterrorhandler(function(msg) got = msg end)
  tc.start { items = 1 }
  ok(tc.join(), "join")
  co = coroutine.create(function() return dss.dispatch() end)
  local ran
  okay, ran = coroutine.resume(co)
  ok(okay, "handled")
  eq(ran, 1)
  ok(got and got:find("yielded, but dispatch() runs callbacks in its own C frame", 1, true), tostring(got))
  dss.seterrorhandler(nil)
  -- A blocking item whose callback yields before answering: the producer
  -- waits until the waiting-thread callback is garbage: then released.
  tc.setcallback(function(wt) coroutine.yield(wt) end)
  tc.start { blocking = true }
  queued(1)
  co = coroutine.create(function() return dss.dispatch() end)
  okay = coroutine.resume(co)
  ok(not okay, "raised")
  co = nil
  waitfor(function() collectgarbage(); return tc.counters().completed == 3 end, "the third producer released")
  ok(tc.join(), "join")
end)

test("dispatch(max, handler): the handler for this call only; the one set stays; geterrorhandler", function()
  fresh()
  local set_got, arg_got = {}, {}
  local set = function(msg) set_got[#set_got + 1] = msg end
  eq(dss.geterrorhandler(), nil, "none set")
  eq(dss.seterrorhandler(set), nil)
  eq(dss.geterrorhandler(), set, "geterrorhandler")
  tc.setcallback(function(_, _, seq) error("callback " .. seq, 0) end)
  tc.start { items = 3 }
  ok(tc.join(), "join")
  eq(dss.dispatch(2, function(msg) arg_got[#arg_got + 1] = msg end), 2, "ran with the argument's handler")
  eq(table.concat(arg_got, "|"), "callback 1|callback 2")
  eq(#set_got, 0, "the handler set was not called")
  eq(dss.geterrorhandler(), set, "and is still set")
  eq(dss.dispatch(), 1)
  eq(table.concat(set_got, "|"), "callback 3", "without the argument, the one set")
  -- A decoder's error reaches the argument's handler labelled.
  dss.seterrorhandler(nil)
  tc.start { items = 1, decoder = "error" }
  ok(tc.join(), "join")
  arg_got = {}
  eq(dss.dispatch(nil, function(msg) arg_got[#arg_got + 1] = msg end), 1)
  ok(arg_got[1]:match("^testclient: decoder failed %(raised by the decoder of darksidesync client 0x%x+%)$"), arg_got[1])
  -- nil: as if none were given; anything else is an argument error.
  tc.setcallback(function() end)
  tc.start { items = 1 }
  ok(tc.join(), "join")
  eq(dss.dispatch(5, nil), 1)
  eq(argreason(2, dss.dispatch, 1, "f"), "function or nil expected, got string")
  eq(dss.geterrorhandler(), nil)
end)
