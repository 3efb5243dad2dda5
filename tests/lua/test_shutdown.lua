-- test_shutdown.lua -- how items end when their registration goes: unreg
-- with items queued or pending on the Lua side, and lua_close of a Lua state
-- (created in this process by the test client) with producers blocked,
-- pending callbacks, clients that do not unregister, producers still
-- delivering. Contract sections 3 (unreg, cancel), 4, 5 and 7.

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, INVALID_UTILID, NOT_STARTED = -100, -101, -102

local function child_queued(state, n)
  waitfor(function() return tc.run(state, "return dss.queuesize()") == n end,
          n .. " item(s) queued in the child")
end

test("unreg cancels queued items through decoder(L = NULL) and releases blocked producers", function()
  fresh()
  tc.start { items = 3 }
  ok(tc.join(), "join")
  tc.start { threads = 2, blocking = true }
  queued(5)
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  eq(dss.queuesize(), 0, "queuesize")
  ok(tc.join(), "join: the blocked producers were released")
  eq(dss.poll(), -1, "nothing left to poll")
  tc.check { threads = 3, completed = 3, attempts = 5, delivered = 5, released = 2,
             cancelled_queued = 5, unanswered = 2, ended = 5, allocated = 3, freed = 3 }
end)

test("unreg cancels a held waiting-thread callback through ret(L = NULL); calling it later does nothing", function()
  fresh()
  tc.start { blocking = true }
  queued(1)
  local _, _, args = dss.poll()
  local wt = args[1]
  eq(tc.unreg(tc.utilid(1)), SUCCESS, "unreg")
  ok(tc.join(), "join: the producer was released")
  eq(select("#", wt(1000 + 1)), 0, "a later call returns nothing")
  ok(tostring(wt):match("done"), "tostring: done")
  tc.check { threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             cancelled_pending = 1, unanswered = 1, ended = 1 }
end)

test("a decoder that unregisters its own lib: the queued items are cancelled, the callback it made is spent", function()
  fresh()
  tc.start { blocking = true, decoder = "unreg" }
  queued(1)
  tc.start { items = 2 }
  queued(3)
  local n, _, args = dss.poll()
  eq(n, 0, "remaining")
  eq(type(args[1]), "userdata", "args[1]")
  ok(tc.join(), "join: every producer returned")
  eq(select("#", args[1](1000 + 1)), 0, "the waiting-thread callback is spent")
  tc.check { threads = 2, completed = 2, attempts = 3, delivered = 3, released = 1, decoded = 1,
             cancelled_queued = 2, cancelled_pending = 1, unanswered = 1, ended = 3,
             allocated = 2, freed = 2 }
end)

test("lua_close with 4 producers blocked: 4 cancelled through decoder(L = NULL), all released, cancel called once, later delivers fail", function()
  fresh()
  local state, cid, u = child [[
    tc.start { threads = 4, blocking = true }
    return tc.ctx(), tc.tonumber(tc.utilid())
  ]]
  child_queued(state, 4)
  tc.close(state)
  ok(tc.join(cid), "join: the producers were released")
  tc.check({ threads = 4, completed = 4, attempts = 4, delivered = 4, released = 4,
             cancelled_queued = 4, unanswered = 4, ended = 4, cancel_calls = 1 }, cid)
  local rc = tc.deliver(u)
  ok(rc == INVALID_UTILID or rc == NOT_STARTED, "deliver after close returned " .. rc)
  eq(tc.unreg(u), INVALID_UTILID, "unreg after close")
end)

test("lua_close with a waiting-thread callback pending: ret(L = NULL), not garbage", function()
  fresh()
  local state, cid = child [[
    tc.start { blocking = true }
    return tc.ctx()
  ]]
  child_queued(state, 1)
  eq(tc.run(state, [[
    local n, _, args = dss.poll()
    WT = args[1]
    return n
  ]]), 0, "polled in the child")
  tc.close(state)
  ok(tc.join(cid), "join: the producer was released")
  tc.check({ threads = 1, completed = 1, attempts = 1, delivered = 1, released = 1, decoded = 1,
             cancelled_pending = 1, unanswered = 1, ended = 1, cancel_calls = 1 }, cid)
end)

test("lua_close: a client whose cancel does not unregister is unregistered by darksidesync", function()
  fresh()
  local state, cid, u = child [[
    tc.setnounreg(true)
    tc.start { items = 2 }
    return tc.ctx(), tc.tonumber(tc.utilid())
  ]]
  child_queued(state, 2)
  tc.close(state)
  ok(tc.join(cid), "join")
  tc.check({ threads = 1, completed = 1, attempts = 2, delivered = 2, cancelled_queued = 2,
             ended = 2, allocated = 2, freed = 2, cancel_calls = 1 }, cid)
  eq(tc.deliver(u), INVALID_UTILID, "deliver after close")
  eq(tc.unreg(u), INVALID_UTILID, "unreg after close: darksidesync did it")
end)

test("lua_close while producers keep delivering: each delivered item ends once, each producer stops on -101 or -102", function()
  fresh()
  -- Fire-and-forget producers as lib 1, blocking ones as lib 2.
  local state, cid = child [[
    tc.reg(2)
    tc.start { threads = 4, items = 20000 }
    tc.start { threads = 2, items = 1000, blocking = true, lib = 2 }
    return tc.ctx()
  ]]
  waitfor(function() return tc.run(state, "return dss.queuesize()") >= 100 end, "100 items queued")
  tc.close(state)
  ok(tc.join(cid), "join")
  for lib = 1, 2 do
    local c = tc.counters(cid, lib)
    local what = "lib " .. lib .. ": "
    local errors = 0
    for code, n in pairs(c.errors) do
      ok(code == INVALID_UTILID or code == NOT_STARTED, what .. "deliver error " .. code)
      errors = errors + n
    end
    eq(c.completed + c.stopped, lib == 1 and 4 or 2, what .. "producers that returned")
    eq(errors, c.stopped, what .. "one error per stopped producer")
    eq(c.attempts, c.delivered + errors, what .. "attempts")
    eq(c.cancelled_queued, c.delivered, what .. "every delivered item was cancelled")
    eq(c.ended, c.delivered, what .. "every delivered item ended")
    eq(c.decoded + c.cancelled_pending + c.garbage + c.returned, 0, what .. "nothing else happened")
    eq(c.bad_ends, 0, what .. "items not ended exactly once")
    eq(c.misrouted, 0, what .. "callbacks with a wrong lib or utilid")
    eq(c.cancel_calls, 1, what .. "cancel calls")
    if lib == 1 then
      eq(c.live, 0, what .. "items not freed")
    else
      eq(c.stopped, 2, what .. "blocking producers stopped by the close")
      eq(c.released, c.delivered, what .. "blocking items released")
      eq(c.unanswered, c.delivered, what .. "blocking items unanswered")
    end
  end
end)

test("lua_close of one state leaves the other states' clients and queues alone", function()
  fresh()
  tc.start { items = 2 }
  ok(tc.join(), "join")
  local state, cid = child [[
    tc.start { items = 3 }
    return tc.ctx()
  ]]
  child_queued(state, 3)
  tc.close(state)
  ok(tc.join(cid), "join")
  tc.check({ threads = 1, completed = 1, attempts = 3, delivered = 3, cancelled_queued = 3,
             ended = 3, allocated = 3, freed = 3, cancel_calls = 1 }, cid)
  eq(dss.queuesize(), 2, "our queue")
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "our registration")
  for left = 2, 0, -1 do eq(dss.poll(), left, "remaining") end
  tc.check { threads = 1, completed = 1, attempts = 3, delivered = 3, decoded = 3, ended = 3,
             allocated = 3, freed = 3 }
end)

test("once the module stopped (finalizers run at lua_close), its functions raise and reg/getutilid return NOT_STARTED", function()
  local state, cid = tc.newstate [[
    local dss, tc
    -- A finalizer made before darksidesync is required runs after it stopped.
    local function fin()
      for _, name in ipairs { "poll", "queuesize", "getport", "setport" } do
        local okay, err = pcall(dss[name], 1)
        tc.note(name .. ": " .. tostring(okay) .. ", " .. tostring(err))
      end
      local u, rc = tc.reg(2)
      tc.note("reg: " .. tostring(u) .. ", " .. rc)
      u, rc = tc.getutilid(1)
      tc.note("getutilid: " .. tostring(u) .. ", " .. rc)
      rc = tc.deliver(tc.utilid(1))
      tc.note("deliver: " .. ((rc == -101 or rc == -102) and "failed" or rc))
      -- A late require must not start a queue that nobody would close.
      package.loaded.darksidesync = nil
      local okay, err = pcall(require, "darksidesync")
      tc.note("require: " .. tostring(okay) .. ", " .. tostring(err))
    end
    if newproxy then
      GC = newproxy(true)
      getmetatable(GC).__gc = fin
    else
      GC = setmetatable({}, { __gc = fin })
    end
    dss = require "darksidesync"
    tc = require "testclient"
    return tc.ctx()
  ]]
  tc.close(state)
  local stopped = "darksidesync: not started, or already stopped"
  eq(table.concat(tc.notes(cid), "\n"), table.concat({
    "poll: false, " .. stopped,
    "queuesize: false, " .. stopped,
    "getport: false, " .. stopped,
    "setport: false, " .. stopped,
    "reg: nil, -102",
    "getutilid: nil, -102",
    "deliver: failed",
    "require: false, " .. stopped,
  }, "\n"))
  tc.check({ cancel_calls = 1, attempts = 1, allocated = 1, freed = 1,
             errors = tc.counters(cid).errors }, cid)
end)

-- Quotes s for the shell.

-- Runs code with this interpreter in a process of its own, env (shell
-- assignments) prepended; returns its output and its exit status.
local function spawn(env, code)
  local interp = assert(arg and arg[-1], "the interpreter's name is unknown")
  local p = assert(io.popen(env .. " " .. shq(interp) .. " -e " .. shq(code) ..
                            " 2>&1; echo \"exit $?\""))
  local out = p:read("*a")
  p:close()
  return out:match("^(.-)exit (%d+)\n$")
end

test("interpreter exit: a client library that does not pin itself is still loaded when its cancel runs", function()
  -- At lua_close darksidesync calls the cancel of each client still
  -- registered. The client library, loaded after darksidesync, must not
  -- have been unloaded before that.
  local out, status = spawn("TESTCLIENT_NOPIN=1 ASAN_OPTIONS=detect_leaks=0", [[
    require "darksidesync"
    local tc = require "testclient"
    io.write("registered ", tostring(tc.utilid() ~= nil), "\n")
    io.stdout:flush()
  ]])
  eq(status, "0", "exit status, output " .. string.format("%q", out))
  eq(out, "registered true\n", "output")
end)
