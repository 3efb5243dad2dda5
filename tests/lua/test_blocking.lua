-- test_blocking.lua -- blocking deliveries (ret != NULL): the waiting-thread
-- callback in args[1], its call, its collection, decoders and return
-- callbacks that end the cycle early or raise. Contract sections 3 (deliver),
-- 4 (the waiting-thread callback), 5 and 7.

local dss = require "darksidesync"
local tc = require "testclient"

-- The answer a producer expects for the item whose args these are
-- ({wt, lib, pid, seq}).
local function expected(args) return args[3] * 1000 + args[4] end

local function callback() end

test("a blocking item: args[1] is the waiting-thread callback, then the decoder's values; the producer waits", function()
  fresh()
  tc.setcallback(callback)
  local pid = tc.start { blocking = true }
  queued(1)
  local r = pack(dss.poll())
  eq(r.n, 3, "number of results")
  eq(r[1], 0, "remaining")
  ok(rawequal(r[2], callback), "callback")
  local args = r[3]
  eq(#args, 4, "#args")
  eq(type(args[1]), "userdata", "args[1]")
  eq(args[2], 1, "lib")
  eq(args[3], pid, "producer id")
  eq(args[4], 1, "seq")
  eq(tc.counters().released, 0, "the producer is still blocked")
  args[1](expected(args))
  ok(tc.join(), "join")
end)

test("calling it: the return callback gets the Lua arguments, its pushed values are returned, the producer is released", function()
  fresh()
  tc.setcallback(callback)
  tc.start { blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  local wt = args[1]
  ok(tostring(wt):match("pending"), "tostring: pending")
  local r = pack(wt(expected(args), "x", nil))
  eq(r.n, 3, "number of results")
  eq(r[1], "ack", "first")
  eq(r[2], 1, "seq")
  eq(r[3], 3, "arguments the return callback saw")
  ok(tostring(wt):match("done"), "tostring: done")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }
end)

test("only the first call counts: later calls do nothing and return nothing", function()
  fresh()
  tc.start { blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  local wt = args[1]
  eq(select("#", wt(expected(args))), 3, "first call")
  ok(tc.join(), "join")
  eq(select("#", wt(expected(args))), 0, "second call")
  eq(select("#", wt()), 0, "third call")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }
end)

test("the producer gets the answer Lua gave: right, wrong, none", function()
  fresh()
  tc.start { blocking = true, items = 3 }
  local answers = { function(args) return expected(args) end,
                    function() return 999 end,
                    function() return end }
  for i = 1, 3 do
    queued(1)
    local _, _, args = dss.poll()
    eq(args[4], i, "seq")
    args[1](answers[i](args))
  end
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, released = 3, decoded = 3,
             returned = 3, answers_ok = 1, answers_bad = 1, unanswered = 1, ended = 3 }
end)

test("collected uncalled: the return callback runs with garbage = 1 and no Lua arguments; the producer is released", function()
  fresh()
  tc.start { blocking = true }
  queued(1)
  -- In a function of its own, so that no stack slot keeps the callback.
  local function take()
    local n, _, args = dss.poll()
    eq(n, 0, "remaining")
    eq(type(args[1]), "userdata", "args[1]")
  end
  take()
  collectgarbage()
  collectgarbage()
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             garbage = 1, unanswered = 1, ended = 1 }
end)

for _, case in ipairs { { "zero", "0" }, { "negative", "less than 0" } } do
  test("a decoder returning " .. case[2] .. " releases the producer; the return callback is not called", function()
    fresh()
    tc.start { blocking = true, decoder = case[1] }
    queued(1)
    local r = pack(dss.poll())
    eq(r.n, 1, "number of results")
    eq(r[1], 0, "remaining")
    ok(tc.join(), "join")
    tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
               decoded_zero = 1, unanswered = 1, ended = 1 }
  end)
end

test("a decoder pushing only the callback: args holds only the waiting-thread callback", function()
  fresh()
  tc.setcallback(callback)
  local pid = tc.start { blocking = true, decoder = "bare" }
  queued(1)
  local r = pack(dss.poll())
  eq(r.n, 3, "number of results")
  ok(rawequal(r[2], callback), "callback")
  local args = r[3]
  eq(#args, 1, "#args")
  eq(type(args[1]), "userdata", "args[1]")
  args[1](pid * 1000 + 1)
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }
end)

test("a return callback pushing nothing: the call returns nothing, the answer still reaches the producer", function()
  fresh()
  tc.start { blocking = true, ret = "none" }
  queued(1)
  local _, _, args = dss.poll()
  eq(select("#", args[1](expected(args))), 0, "results")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }
end)

test("a decoder that raises: poll raises its message, the producer is released, the queue stays usable", function()
  fresh()
  tc.start { blocking = true, decoder = "error" }
  queued(1)
  raises(dss.poll, labeled("testclient: decoder failed"))
  ok(tc.join(), "join")
  eq(dss.poll(), -1, "then empty")
  tc.start { blocking = true }
  queued(1)
  local n, _, args = dss.poll()
  eq(n, 0, "remaining")
  args[1](expected(args))
  ok(tc.join(), "join")
  tc.check { threads = 2, completed = 2, attempts = 2, delivered = 2, released = 2, decoded = 2,
             decode_errors = 1, returned = 1, answers_ok = 1, unanswered = 1, ended = 2 }
end)

test("a return callback that raises: the call raises its message, the producer is released, later calls do nothing", function()
  fresh()
  tc.start { blocking = true, ret = "error" }
  queued(1)
  local _, _, args = dss.poll()
  local wt = args[1]
  raises(function() wt(expected(args)) end, labeled("testclient: return callback failed", "return callback"))
  ok(tc.join(), "join")
  eq(select("#", wt(expected(args))), 0, "second call")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, return_errors = 1, unanswered = 1, ended = 1 }
end)

test("each waiting-thread callback answers its own producer, in any order", function()
  fresh()
  tc.start { blocking = true, threads = 3 }
  queued(3)
  local held = {}
  for i = 1, 3 do
    local _, _, args = dss.poll()
    held[i] = args
  end
  for i = 3, 1, -1 do held[i][1](expected(held[i])) end
  ok(tc.join(), "join")
  tc.check { threads = 3, completed = 3, attempts = 3, delivered = 3, released = 3, decoded = 3,
             returned = 3, answers_ok = 3, ended = 3 }
end)

test("a waiting-thread callback called from a coroutine", function()
  fresh()
  tc.start { blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  local r = pack(coroutine.wrap(function() return args[1](expected(args)) end)())
  eq(r.n, 3, "number of results")
  eq(r[1], "ack", "first")
  ok(tc.join(), "join")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }
end)

test("many blocking items: 4 producers x 100, each answered; counts exact, each producer's order kept", function()
  fresh()
  local last, bad, done = {}, 0, 0
  tc.setcallback(function(wt, _, pid, seq)
    if seq ~= (last[pid] or 0) + 1 then bad = bad + 1 end
    last[pid] = seq
    wt(pid * 1000 + seq)
    done = done + 1
  end)
  tc.start { blocking = true, threads = 4, items = 100 }
  waitfor(function()
    local n, cb, args = dss.poll()
    if n ~= -1 then cb(unpack(args)) end
    return done == 400
  end, "400 items")
  ok(tc.join(), "join")
  eq(bad, 0, "items out of order")
  tc.check { threads = 4, completed = 4, attempts = 400, delivered = 400, released = 400,
             decoded = 400, returned = 400, answers_ok = 400, ended = 400 }
end)
