-- test_clients.lua -- several client libraries in one Lua state (the test
-- client acts as lib 1, through the helper, and lib 2, through the API struct
-- directly), and several Lua states in one process, each with its own queue.
-- Contract sections 1, 3 (utilid per state and lib) and 7 (one state's close
-- affects only its clients).

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, INVALID_UTILID = -100, -101

test("two libraries: each item reaches the decoder of the library that delivered it", function()
  fresh()
  local u2, rc = tc.reg(2)
  eq(rc, SUCCESS, "reg lib 2")
  ok(u2 ~= tc.utilid(1), "distinct utilids")
  local got = {}
  tc.setcallback(function(lib, pid, seq) got[#got + 1] = lib .. ":" .. pid .. ":" .. seq end)
  local p2 = tc.start { lib = 2, items = 3 }
  ok(tc.join(), "join")
  local p1 = tc.start { lib = 1, items = 2 }
  ok(tc.join(), "join")
  for _ = 1, 5 do
    local _, cb, args = dss.poll()
    cb(unpack(args))
  end
  eq(table.concat(got, " "), ("2:%d:1 2:%d:2 2:%d:3 1:%d:1 1:%d:2"):format(p2, p2, p2, p1, p1))
  tc.check({ threads = 1, completed = 1, attempts = 2, delivered = 2, decoded = 2, ended = 2,
             allocated = 2, freed = 2 }, nil, 1)
  tc.check({ threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, ended = 3,
             allocated = 3, freed = 3 }, nil, 2)
end)

test("two libraries: a blocking item of lib 2 is answered through lib 2's return callback", function()
  fresh()
  tc.reg(2)
  tc.start { lib = 2, blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  eq(args[2], 2, "decoded by lib 2")
  eq(select("#", args[1](args[3] * 1000 + args[4])), 3, "results")
  ok(tc.join(), "join")
  tc.check({ threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             returned = 1, answers_ok = 1, ended = 1 }, nil, 2)
  tc.check({}, nil, 1)
end)

test("two libraries: unreg of one cancels only its items; the other stays registered", function()
  fresh()
  local u2 = tc.reg(2)
  tc.start { lib = 2, items = 2 }
  ok(tc.join(), "join")
  tc.start { lib = 1, items = 2 }
  ok(tc.join(), "join")
  tc.start { lib = 2, blocking = true }
  queued(5)
  eq(tc.unreg(u2), SUCCESS, "unreg lib 2")
  ok(tc.join(), "join: lib 2's blocked producer was released")
  eq(dss.queuesize(), 2, "lib 1's items stay")
  local u, rc = tc.getutilid(2)
  eq(u, nil, "lib 2 gone")
  eq(rc, -107, "code")
  eq(tc.getutilid(1), tc.utilid(1), "lib 1 still registered")
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "lib 1 still delivers")
  eq(tc.deliver(u2, { lib = 2 }), INVALID_UTILID, "lib 2 does not")
  for left = 2, 0, -1 do eq(dss.poll(), left, "remaining") end
  tc.check({ threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, ended = 3,
             allocated = 3, freed = 3 }, nil, 1)
  tc.check({ threads = 2, completed = 2, attempts = 4, delivered = 3, released = 1,
             cancelled_queued = 3, unanswered = 1, ended = 3, allocated = 3, freed = 3,
             errors = { [INVALID_UTILID] = 1 } }, nil, 2)
end)

test("two Lua states: each has its own queue, and its own utilid for the same library", function()
  fresh()
  local state, cid, cu = child [[
    tc.start { items = 2 }
    return tc.ctx(), tc.tonumber(tc.utilid())
  ]]
  ok(cid ~= tc.ctx(), "a context of its own")
  ok(cu ~= tc.tonumber(tc.utilid(1)), "a utilid of its own")
  tc.start { items = 3 }
  ok(tc.join(), "join")
  ok(tc.join(cid), "join the child's")
  eq(dss.queuesize(), 3, "our queue")
  eq(tc.run(state, "return dss.queuesize()"), 2, "the child's queue")
  eq(tc.run(state, [[
    local seqs, unpack = {}, unpack or table.unpack
    tc.setcallback(function(lib, pid, seq) seqs[#seqs + 1] = seq end)
    for _ = 1, 2 do
      local _, cb, args = dss.poll()
      cb(unpack(args))
    end
    return table.concat(seqs, " ") .. " / " .. dss.poll()
  ]]), "1 2 / -1", "the child drains its own")
  eq(dss.queuesize(), 3, "our queue unchanged")
  tc.close(state)
  tc.check({ threads = 1, completed = 1, attempts = 2, delivered = 2, decoded = 2, ended = 2,
             allocated = 2, freed = 2, cancel_calls = 1 }, cid)
  for left = 2, 0, -1 do eq(dss.poll(), left, "remaining") end
end)

test("an item delivered to another state's utilid lands in that state's queue", function()
  fresh()
  local state, cu = child [[
    return tc.tonumber(tc.utilid())
  ]]
  eq(tc.deliver(cu), SUCCESS, "deliver to the child's utilid")
  eq(dss.queuesize(), 0, "our queue")
  eq(tc.run(state, "return dss.queuesize()"), 1, "the child's queue")
  eq(tc.run(state, "return (dss.poll())"), 0, "the child polls it")
  tc.close(state)
  tc.check { attempts = 1, delivered = 1, decoded = 1, ended = 1, allocated = 1, freed = 1 }
end)

test("closing a state cancels each library registered with it, and no other", function()
  fresh()
  tc.reg(2)
  tc.start { lib = 2, items = 1 }
  ok(tc.join(), "join")
  local state, cid = child [[
    tc.reg(2)
    tc.start { lib = 1, items = 1 }
    tc.start { lib = 2, items = 2 }
    return tc.ctx()
  ]]
  ok(tc.join(cid), "join the child's")
  tc.close(state)
  tc.check({ threads = 1, completed = 1, attempts = 1, delivered = 1, cancelled_queued = 1,
             ended = 1, allocated = 1, freed = 1, cancel_calls = 1 }, cid, 1)
  tc.check({ threads = 1, completed = 1, attempts = 2, delivered = 2, cancelled_queued = 2,
             ended = 2, allocated = 2, freed = 2, cancel_calls = 1 }, cid, 2)
  eq(dss.queuesize(), 1, "our queue")
  eq(dss.poll(), 0, "our item")
  tc.check({ threads = 1, completed = 1, attempts = 1, delivered = 1, decoded = 1, ended = 1,
             allocated = 1, freed = 1 }, nil, 2)
  tc.check({}, nil, 1)
end)
