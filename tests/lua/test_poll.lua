-- test_poll.lua -- poll() and queuesize() with fire-and-forget items: the
-- three shapes of poll's result, the decoder's results, decoders that
-- misbehave, and many items from many producers. Contract sections 4, 5, 7.

local dss = require "darksidesync"
local tc = require "testclient"

local function callback() end

test("poll on an empty queue returns the single value -1", function()
  fresh()
  local r = pack(dss.poll())
  eq(r.n, 1, "number of results")
  eq(r[1], -1, "result")
  eq(dss.queuesize(), 0, "queuesize")
end)

test("poll takes the oldest item: remaining count, the decoder's callback, its arguments in order", function()
  fresh()
  tc.setcallback(callback)
  local pid = tc.start { items = 3 }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 3, "queuesize")
  for seq = 1, 3 do
    local r = pack(dss.poll())
    eq(r.n, 3, "number of results")
    eq(r[1], 3 - seq, "remaining")
    ok(rawequal(r[2], callback), "the callback the decoder pushed")
    local args = r[3]
    eq(type(args), "table", "args")
    eq(#args, 3, "#args")
    eq(args[1], 1, "lib")
    eq(args[2], pid, "producer id")
    eq(args[3], seq, "seq: oldest first")
  end
  eq(dss.poll(), -1, "then empty")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, ended = 3,
             allocated = 3, freed = 3 }
end)

test("typical use: callback(unpack(args)) gets lib, producer id and seq", function()
  fresh()
  local got = {}
  tc.setcallback(function(lib, pid, seq) got[#got + 1] = lib .. "/" .. pid .. "/" .. seq end)
  local pid = tc.start { items = 2 }
  ok(tc.join(), "join")
  for _ = 1, 2 do
    local n, cb, args = dss.poll()
    if n ~= -1 and cb then cb(unpack(args)) end
  end
  eq(table.concat(got, " "), "1/" .. pid .. "/1 1/" .. pid .. "/2")
end)

test("queuesize counts exactly the items queued and not yet polled", function()
  fresh()
  eq(dss.queuesize(), 0, "empty")
  tc.start { items = 5 }
  ok(tc.join(), "join")
  eq(dss.queuesize(), 5, "after 5 deliveries")
  dss.poll()
  eq(dss.queuesize(), 4, "after a poll")
  eq(tc.deliver(tc.utilid(1)), -100, "deliver")
  eq(dss.queuesize(), 5, "after another delivery")
  for left = 4, 0, -1 do eq(dss.poll(), left, "remaining") end
  eq(dss.queuesize(), 0, "drained")
end)

test("a decoder returning 0 ends the item: poll returns only the number still queued", function()
  fresh()
  tc.setcallback(callback)
  tc.start { items = 2, decoder = "zero" }
  ok(tc.join(), "join")
  local r = pack(dss.poll())
  eq(r.n, 1, "number of results")
  eq(r[1], 1, "remaining")
  r = pack(dss.poll())
  eq(r.n, 1, "number of results")
  eq(r[1], 0, "remaining")
  eq(dss.poll(), -1, "then empty")
  tc.check { threads = 1, completed = 1, attempts = 2, delivered = 2, decoded = 2, decoded_zero = 2,
             ended = 2, allocated = 2, freed = 2 }
end)

test("a decoder returning less than 0 ends the item as 0 does", function()
  fresh()
  tc.start { items = 1, decoder = "negative" }
  ok(tc.join(), "join")
  local r = pack(dss.poll())
  eq(r.n, 1, "number of results")
  eq(r[1], 0, "remaining")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, decoded = 1, decoded_zero = 1,
             ended = 1, allocated = 1, freed = 1 }
end)

test("a decoder pushing only the callback: args is an empty table", function()
  fresh()
  tc.setcallback(callback)
  tc.start { decoder = "bare" }
  ok(tc.join(), "join")
  local r = pack(dss.poll())
  eq(r.n, 3, "number of results")
  ok(rawequal(r[2], callback), "callback")
  eq(type(r[3]), "table", "args")
  eq(next(r[3]), nil, "args is empty")
end)

test("values a decoder leaves below its results are dropped", function()
  fresh()
  tc.setcallback(callback)
  local pid = tc.start { decoder = "junk" }
  ok(tc.join(), "join")
  local r = pack(dss.poll())
  eq(r.n, 3, "number of results")
  ok(rawequal(r[2], callback), "callback")
  local args = r[3]
  eq(#args, 3, "#args")
  eq(args[1], 1, "lib")
  eq(args[2], pid, "producer id")
  eq(args[3], 1, "seq")
end)

test("a decoder that raises: poll raises its message, the item ends once, the queue stays usable", function()
  fresh()
  tc.start { items = 2, decoder = "error" }
  ok(tc.join(), "join")
  raises(dss.poll, labeled("testclient: decoder failed"))
  eq(dss.queuesize(), 1, "queuesize after the first")
  raises(dss.poll, labeled("testclient: decoder failed"))
  eq(dss.queuesize(), 0, "queuesize after the second")
  eq(dss.poll(), -1, "then empty")
  tc.setcallback(callback)
  local pid = tc.start { items = 1 }
  ok(tc.join(), "join")
  local n, cb, args = dss.poll()
  eq(n, 0, "remaining")
  ok(rawequal(cb, callback), "callback")
  eq(args[2], pid, "producer id")
  tc.check { threads = 2, completed = 2, attempts = 3, delivered = 3, decoded = 3, decode_errors = 2,
             ended = 3, allocated = 3, freed = 3 }
end)

test("a decoder returning more values than it pushed: poll raises, the item ends once", function()
  fresh()
  tc.start { items = 2, decoder = "overcount" }
  ok(tc.join(), "join")
  raises(dss.poll, labeled("darksidesync: decoder returned 5 but pushed 1 value(s)"))
  eq(dss.queuesize(), 1, "queuesize")
  raises(dss.poll, labeled("darksidesync: decoder returned 5 but pushed 1 value(s)"))
  eq(dss.poll(), -1, "then empty")
  tc.check { threads = 1, completed = 1, attempts = 2, delivered = 2, decoded = 2, ended = 2,
             allocated = 2, freed = 2 }
end)

test("poll from a coroutine", function()
  fresh()
  tc.setcallback(callback)
  local pid = tc.start { items = 1 }
  ok(tc.join(), "join")
  local r = pack(coroutine.wrap(function() return dss.poll() end)())
  eq(r.n, 3, "number of results")
  eq(r[1], 0, "remaining")
  ok(rawequal(r[2], callback), "callback")
  eq(r[3][2], pid, "producer id")
end)

test("poll from inside a callback (re-entrant)", function()
  fresh()
  local order = {}
  local function cb(_, _, seq)
    order[#order + 1] = "in " .. seq
    local n, inner, args = dss.poll()
    if n ~= -1 then inner(unpack(args)) end
    order[#order + 1] = "out " .. seq
  end
  tc.setcallback(cb)
  tc.start { items = 2 }
  ok(tc.join(), "join")
  local n, f, args = dss.poll()
  eq(n, 1, "remaining")
  f(unpack(args))
  eq(table.concat(order, ", "), "in 1, in 2, out 2, out 1")
  eq(dss.poll(), -1, "then empty")
end)

test("many items: 4 producers x 1000, polled while they deliver; counts exact, each producer's order kept", function()
  fresh()
  local last, bad, got = {}, 0, 0
  tc.setcallback(function(_, pid, seq)
    if seq ~= (last[pid] or 0) + 1 then bad = bad + 1 end
    last[pid] = seq
    got = got + 1
  end)
  local first = tc.start { threads = 4, items = 1000 }
  waitfor(function()
    local n, cb, args = dss.poll()
    if n ~= -1 then cb(unpack(args)) end
    return got == 4000
  end, "4000 items")
  ok(tc.join(), "join")
  eq(dss.poll(), -1, "then empty")
  eq(bad, 0, "items out of order")
  for pid = first, first + 3 do eq(last[pid], 1000, "last seq of producer " .. pid) end
  tc.check { threads = 4, completed = 4, attempts = 4000, delivered = 4000, decoded = 4000,
             ended = 4000, allocated = 4000, freed = 4000 }
end)
