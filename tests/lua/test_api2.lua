-- test_api2.lua -- the 2v0 C ABI as a client library sees it: the struct in
-- the registry beside 1v0's, deliver2's results outside the queue limit and
-- timeouts (those: test_maxqueue, test_timeout, test_deadlock), queued().
-- include/darksidesync_api.h "API 2v0".

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, INVALID_UTILID, NO_DECODE_PROVIDED = -100, -101, -105

local function fresh_()
  fresh()
  tc.setcallback(function() end)
end

local function expected(args) return args[3] * 1000 + args[4] end

test("registry['DSS.DarkSideSync'] holds 'DSS API 2v0' (a light userdata, version 'DSS API 2v0') beside 1v0", function()
  local t = debug.getregistry()["DSS.DarkSideSync"]
  eq(type(t), "table", "registry table")
  ok(tc.islight(t["DSS API 2v0"]), "2v0 is a light userdata")
  ok(tc.islight(t["DSS API 1v0"]), "1v0 still there")
  ok(t["DSS API 2v0"] ~= t["DSS API 1v0"], "two structs")
  eq(tc.api2(), t["DSS API 2v0"], "what the test client found")
  eq(tc.api2version(), "DSS API 2v0", "version member")
  eq(tc.apiversion(), "DSS API 1v0", "the 1v0 struct's")
end)

test("deliver2, fire and forget, flags 0, no timeout: as deliver", function()
  fresh_()
  local seen = {}
  tc.setcallback(function(_, _, seq) seen[#seen + 1] = seq end)
  tc.start { api = 2, items = 3 }
  ok(tc.join(), "join")
  eq(dss.dispatch(), 3, "dispatch")
  eq(table.concat(seen, " "), "1 2 3", "seen")
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, ended = 3,
             allocated = 3, freed = 3 }
end)

test("deliver2, blocking, answered: SUCCESS, the answer reaches the producer", function()
  fresh_()
  tc.start { api = 2, blocking = true, threads = 2, items = 2 }
  local n = 0
  waitfor(function()
    local r, _, args = dss.poll()
    if r ~= -1 then args[1](expected(args)); n = n + 1 end
    return n == 4
  end, "4 items")
  ok(tc.join(), "join")
  tc.check { threads = 2, completed = 2, attempts = 4, delivered = 4, released = 4, decoded = 4,
             returned = 4, answers_ok = 4, ended = 4 }
end)

test("deliver2, blocking: a decoder returning 0, a callback collected uncalled: SUCCESS", function()
  fresh_()
  tc.start { api = 2, blocking = true, decoder = "zero" }
  queued(1)
  eq(dss.poll(), 0, "poll")
  ok(tc.join(), "join")
  tc.start { api = 2, blocking = true }
  queued(1)
  local function take() dss.poll() end
  take()
  collectgarbage()
  collectgarbage()
  ok(tc.join(), "join")
  tc.check { threads = 2, completed = 2, attempts = 2, delivered = 2, released = 2, decoded = 2,
             decoded_zero = 1, garbage = 1, unanswered = 2, ended = 2 }
end)

test("deliver2's errors as deliver's: no decoder, bad utilid", function()
  fresh_()
  local u = tc.utilid(1)
  eq(tc.deliver(u, { api = 2, decoder = false }), NO_DECODE_PROVIDED, "no decoder")
  eq(tc.deliver(u, { api = 2, decoder = false, blocking = true }), NO_DECODE_PROVIDED, "blocking, no decoder")
  eq(tc.deliver("0xfffffffffffff", { api = 2 }), INVALID_UTILID, "garbage utilid")
  eq(tc.unreg(u), SUCCESS, "unreg")
  eq(tc.deliver(u, { api = 2 }), INVALID_UTILID, "stale utilid")
  eq(tc.deliver(u, { api = 2, blocking = true, timeout = 10 }), INVALID_UTILID, "stale utilid, blocking")
  eq(dss.queuesize(), 0, "nothing queued")
  tc.check { attempts = 5, allocated = 3, freed = 3,
             errors = { [NO_DECODE_PROVIDED] = 2, [INVALID_UTILID] = 3 } }
end)

test("queued(utilid): the items of that registration queued now, not those taken", function()
  fresh_()
  ok(tc.reg(2), "register lib 2")
  eq(tc.queued(1), 0, "lib 1, empty")
  eq(tc.queued(2), 0, "lib 2, empty")
  for _, lib in ipairs { 1, 2, 2, 1, 2 } do
    eq(tc.deliver(tc.utilid(lib), { lib = lib }), SUCCESS, "deliver as lib " .. lib)
  end
  eq(tc.queued(1), 2, "lib 1")
  eq(tc.queued(2), 3, "lib 2")
  eq(dss.poll(), 4, "poll (a lib 1 item)")
  eq(tc.queued(1), 1, "lib 1 after poll")
  eq(tc.queued(2), 3, "lib 2 after poll")
  eq(dss.dispatch(2), 2, "dispatch 2 (lib 2 items)")
  eq(tc.queued(1), 1, "lib 1")
  eq(tc.queued(2), 1, "lib 2")
  eq(tc.unreg(tc.utilid(2)), SUCCESS, "unreg lib 2")
  eq(tc.queued(1), 1, "lib 1 after lib 2's unreg")
  eq(dss.queuesize(), 1, "queuesize")
  eq(dss.dispatch(), 1, "dispatch")
  eq(tc.queued(1), 0, "lib 1, drained")
end)

test("queued(utilid) counts blocking items while queued, not while pending on the Lua side", function()
  fresh_()
  tc.start { api = 2, blocking = true, threads = 2 }
  queued(2)
  eq(tc.queued(1), 2, "2 queued")
  local _, _, a = dss.poll()
  eq(tc.queued(1), 1, "1 pending, 1 queued")
  local _, _, b = dss.poll()
  eq(tc.queued(1), 0, "2 pending")
  a[1](expected(a))
  b[1](expected(b))
  ok(tc.join(), "join")
  eq(tc.queued(1), 0, "done")
end)

test("queued(utilid) of a stale, garbage or other state's closed utilid: INVALID_UTILID", function()
  fresh_()
  local u = tc.utilid(1)
  eq(tc.queued("0xfffffffffffff"), INVALID_UTILID, "garbage")
  eq(tc.queued(u), 0, "live")
  eq(tc.unreg(u), SUCCESS, "unreg")
  eq(tc.queued(u), INVALID_UTILID, "stale")
  local state, cu = child [[
    tc.deliver(tc.utilid())
    return tc.tonumber(tc.utilid())
  ]]
  eq(tc.queued(cu), 1, "another state's utilid, from this thread")
  tc.close(state)
  eq(tc.queued(cu), INVALID_UTILID, "that state closed")
end)

test("queued(utilid) from producer threads' point of view: items of 4 producers, exact once they are done", function()
  fresh_()
  tc.start { threads = 4, items = 50 }
  ok(tc.join(), "join")
  eq(tc.queued(1), 200, "queued")
  eq(dss.dispatch(150), 150, "dispatch(150)")
  eq(tc.queued(1), 50, "queued")
  eq(dss.dispatch(), 50, "dispatch")
  eq(tc.queued(1), 0, "drained")
end)

test("DSS_strerror: a description for every code; unknown codes say so", function()
  local tc = require "testclient"
  local want = {
    [-100] = "success",
    [-99] = "queued, but the UDP notification could not be sent",
    [-101] = "invalid utilid (unknown, stale or unregistered)",
    [-102] = "darksidesync is not running in that Lua state (not loaded, or closing)",
    [-103] = "no cancel callback given",
    [-104] = "out of memory",
    [-105] = "no decoder given",
    [-106] = "darksidesync's registry table is missing",
    [-107] = "library not registered with that Lua state",
    [-108] = "library already registered (the existing utilid was returned)",
    [-109] = "timed out",
    [-110] = "queue full",
    [-111] = "cancelled (unregistered, or the Lua state closed)",
    [-112] = "would deadlock: the call would wait on the thread that runs the Lua state",
    [-113] = "invalid argument",
    [-114] = "channel closed",
  }
  for code = -115, -98 do
    eq(tc.strerror(code), want[code] or "unknown darksidesync code", "code " .. code)
  end
  eq(tc.strerror(0), "unknown darksidesync code")
end)
