-- test_signal.lua -- the dss_signal example (examples/signal): POSIX signals
-- delivered to Lua callbacks through darksidesync.
--
-- raise() runs the handler on the calling thread before it returns, so each
-- raise writes its byte to the self-pipe at once and no two raises coalesce:
-- counts are exact. Signals go pipe -> one watcher thread -> darksidesync's
-- queue, all in order, so a last "fence" signal, once its callback ran, proves
-- that every signal raised before it was polled.

local dss = require "darksidesync"
local sig = require "dss_signal"
local tc = require "testclient"

-- pump(pred, what) (run.lua): polls, calling the callbacks, until pred().

-- fence(name): raises signal `name` (with a watch of its own for the time)
-- and polls until its callback ran: everything raised before was polled.
local function fence(name)
  name = name or "SIGHUP"
  local done = false
  sig.watch(name, function() done = true end)
  sig.raise(name)
  pump(function() return done end, "the fence signal " .. name)
  sig.unwatch(name)
end

-- A log of callback calls, and a callback that appends to it.
local log
local function rec(tag)
  return function(...)
    local t = { ... }
    ok(select("#", ...) == 1, "one argument")
    log[#log + 1] = (tag or "") .. t[1]
  end
end

-- clean(): no watch, nothing queued, an empty log.
local function clean()
  sig.stop()
  while dss.poll() ~= -1 do end
  log = {}
  eq(sig.status(), "stopped", "status")
end

local ALL = { "SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGUSR2" }
local initial = {}
for _, name in ipairs(ALL) do
  initial[name] = sig.disposition(name)
  assert(initial[name] ~= "watched", name .. " watched before any test")
end

test("watch: three raises of SIGUSR1 run its callback exactly three times, with the name", function()
  clean()
  eq(sig.disposition("SIGUSR1"), initial.SIGUSR1, "disposition before")
  sig.watch("SIGUSR1", rec())
  eq(sig.disposition("SIGUSR1"), "watched", "disposition while watched")
  eq(sig.status(), "watching", "status")
  for _ = 1, 3 do eq(sig.raise("SIGUSR1"), true, "raise") end
  pump(function() return #log == 3 end, "three callbacks")
  fence()
  eq(table.concat(log, ","), "SIGUSR1,SIGUSR1,SIGUSR1", "log")
  eq(dss.queuesize(), 0, "queue drained")
  eq(sig.unwatch("SIGUSR1"), true, "unwatch")
  eq(sig.disposition("SIGUSR1"), initial.SIGUSR1, "disposition after unwatch")
  eq(sig.status(), "stopped", "status after the last unwatch")
end)

test("several signals arrive in the order raised", function()
  clean()
  sig.watch("SIGUSR1", rec())
  sig.watch("SIGUSR2", rec())
  sig.watch("SIGHUP", rec())
  sig.watch("SIGTERM", rec())
  local order = { "SIGUSR1", "SIGUSR2", "SIGUSR1", "SIGHUP", "SIGUSR2", "SIGUSR2", "SIGTERM" }
  for _, name in ipairs(order) do sig.raise(name) end
  pump(function() return log[#log] == "SIGTERM" end, "the last signal")
  eq(table.concat(log, ","), table.concat(order, ","), "log")
  eq(dss.queuesize(), 0, "queue drained")
  sig.stop()
end)

test("short names (INT, TERM, HUP, USR1, USR2) name the same signals; callbacks get the full name", function()
  clean()
  sig.watch("USR1", rec())
  sig.watch("TERM", rec())
  eq(table.concat(sig.watching(), ","), "SIGTERM,SIGUSR1", "watching")
  sig.raise("USR1")
  sig.raise("SIGTERM")
  sig.raise("SIGUSR1")
  pump(function() return #log == 3 end, "three callbacks")
  fence("HUP")
  eq(table.concat(log, ","), "SIGUSR1,SIGTERM,SIGUSR1", "log")
  eq(sig.disposition("HUP"), initial.SIGHUP, "disposition by short name")
  eq(sig.unwatch("TERM"), true, "unwatch TERM")
  eq(sig.unwatch("SIGUSR1"), true, "unwatch SIGUSR1")
  eq(sig.status(), "stopped", "status")
end)

test("SIGTERM with a watch does not end the process", function()
  clean()
  sig.watch("SIGTERM", rec("got "))
  sig.raise("SIGTERM")
  sig.raise("SIGTERM")
  pump(function() return #log == 2 end, "two callbacks")
  fence()
  eq(table.concat(log, ","), "got SIGTERM,got SIGTERM", "log")
  sig.stop()
  eq(sig.disposition("SIGTERM"), initial.SIGTERM, "disposition back")
end)

test("SIGINT: the interpreter's own handler is put back on unwatch", function()
  clean()
  local before = sig.disposition("SIGINT")
  ok(before ~= "watched", "not watched before")
  sig.watch("INT", rec())
  eq(sig.disposition("SIGINT"), "watched", "disposition while watched")
  sig.raise("SIGINT")
  pump(function() return #log == 1 end, "the callback")
  eq(log[1], "SIGINT", "log")
  eq(sig.unwatch("SIGINT"), true, "unwatch")
  eq(sig.disposition("SIGINT"), before, "disposition back")
end)

test("unwatch: true if watched, false otherwise; watching() lists in a fixed order", function()
  clean()
  eq(#sig.watching(), 0, "nothing watched")
  eq(sig.unwatch("SIGUSR2"), false, "unwatch of an unwatched signal")
  sig.watch("SIGUSR2", rec())
  sig.watch("SIGHUP", rec())
  sig.watch("SIGINT", rec())
  eq(table.concat(sig.watching(), ","), "SIGINT,SIGHUP,SIGUSR2", "watching")
  eq(sig.unwatch("SIGHUP"), true, "unwatch SIGHUP")
  eq(sig.unwatch("SIGHUP"), false, "unwatch SIGHUP again")
  eq(table.concat(sig.watching(), ","), "SIGINT,SIGUSR2", "watching")
  eq(sig.status(), "watching", "status: still watching")
  sig.unwatch("SIGINT")
  sig.unwatch("SIGUSR2")
  eq(#sig.watching(), 0, "nothing watched")
  eq(sig.status(), "stopped", "status")
  for _, name in ipairs(ALL) do eq(sig.disposition(name), initial[name], name) end
end)

test("watch of a watched signal replaces its callback", function()
  clean()
  sig.watch("SIGUSR1", rec("first "))
  sig.watch("SIGUSR1", rec("second "))
  eq(table.concat(sig.watching(), ","), "SIGUSR1", "watching")
  sig.raise("SIGUSR1")
  pump(function() return #log == 1 end, "the callback")
  fence()
  eq(table.concat(log, ","), "second SIGUSR1", "log")
  sig.stop()
  eq(sig.disposition("SIGUSR1"), initial.SIGUSR1, "disposition back")
end)

test("a signal queued when its watch ends: poll ends it without a callback", function()
  clean()
  sig.watch("SIGUSR1", rec())
  sig.raise("SIGUSR1")
  queued(1)
  eq(sig.unwatch("SIGUSR1"), true, "unwatch")
  local r = pack(dss.poll())
  eq(r.n, 1, "poll returned one value (the decoder returned 0)")
  eq(r[1], 0, "remaining")
  eq(#log, 0, "no callback")
end)

test("a signal queued before unwatch does not reach a new watch of the same signal", function()
  clean()
  sig.watch("SIGUSR1", rec("old "))
  sig.raise("SIGUSR1")
  queued(1)
  sig.unwatch("SIGUSR1")
  sig.watch("SIGUSR1", rec("new "))
  local r = pack(dss.poll())
  eq(r.n, 1, "poll returned one value")
  eq(r[1], 0, "remaining")
  sig.raise("SIGUSR1")
  pump(function() return #log == 1 end, "the new callback")
  eq(log[1], "new SIGUSR1", "log")
  sig.stop()
end)

test("stop(): ends every watch and the watcher thread, items queued end without callback; idempotent", function()
  clean()
  sig.watch("SIGUSR1", rec())
  sig.watch("SIGUSR2", rec())
  sig.watch("SIGTERM", rec())
  sig.raise("SIGUSR2")
  sig.raise("SIGUSR1")
  queued(2)
  eq(select("#", sig.stop()), 0, "stop returns nothing")
  eq(sig.status(), "stopped", "status")
  eq(#sig.watching(), 0, "watching")
  for _, name in ipairs(ALL) do eq(sig.disposition(name), initial[name], name) end
  eq(dss.poll(), 1, "first item: no callback")
  eq(dss.poll(), 0, "second item: no callback")
  eq(dss.poll(), -1, "queue empty")
  eq(#log, 0, "no callback ran")
  sig.stop()
  sig.stop()
  eq(sig.status(), "stopped", "status after stop again")
end)

test("watch after stop starts again; 25 watch/raise/stop cycles", function()
  clean()
  for i = 1, 25 do
    sig.watch("SIGUSR1", rec())
    sig.watch("SIGUSR2", rec())
    sig.raise("SIGUSR1")
    sig.raise("SIGUSR2")
    pump(function() return #log == 2 * i end, "cycle " .. i)
    sig.stop()
    eq(sig.status(), "stopped", "status, cycle " .. i)
  end
  eq(#log, 50, "callbacks")
  eq(dss.queuesize(), 0, "queue")
  eq(sig.disposition("SIGUSR1"), initial.SIGUSR1, "SIGUSR1")
  eq(sig.disposition("SIGUSR2"), initial.SIGUSR2, "SIGUSR2")
end)

test("a callback may raise another watched signal, and unwatch its own", function()
  clean()
  sig.watch("SIGUSR1", function(name)
    log[#log + 1] = name
    sig.raise("SIGUSR2")
    eq(sig.unwatch("SIGUSR1"), true, "unwatch from the callback")
  end)
  sig.watch("SIGUSR2", rec())
  sig.raise("SIGUSR1")
  pump(function() return #log == 2 end, "both callbacks")
  fence()
  eq(table.concat(log, ","), "SIGUSR1,SIGUSR2", "log")
  eq(table.concat(sig.watching(), ","), "SIGUSR2", "watching")
  sig.stop()
end)

test("errors: unknown names, wrong types", function()
  clean()
  local expected = "expected SIGINT, SIGTERM, SIGHUP, SIGUSR1 or SIGUSR2)"
  local f = function() end
  raises(function() sig.watch("FOO", f) end,
         "bad argument #1 to 'watch' (unknown signal 'FOO'; " .. expected)
  raises(function() sig.watch("sigusr1", f) end,
         "bad argument #1 to 'watch' (unknown signal 'sigusr1'; " .. expected)
  raises(function() sig.watch("SIGKILL", f) end,
         "bad argument #1 to 'watch' (unknown signal 'SIGKILL'; " .. expected)
  raises(function() sig.watch("", f) end,
         "bad argument #1 to 'watch' (unknown signal ''; " .. expected)
  raises(function() sig.watch("SIG", f) end,
         "bad argument #1 to 'watch' (unknown signal 'SIG'; " .. expected)
  raises(function() sig.watch(10, f) end,
         "bad argument #1 to 'watch' (signal name expected, got number)")
  raises(function() sig.watch() end,
         "bad argument #1 to 'watch' (signal name expected, got no value)")
  raises(function() sig.watch("SIGUSR1") end,
         "bad argument #2 to 'watch' (function expected, got no value)")
  raises(function() sig.watch("SIGUSR1", "print") end,
         "bad argument #2 to 'watch' (function expected, got string)")
  raises(function() sig.unwatch("FOO") end,
         "bad argument #1 to 'unwatch' (unknown signal 'FOO'; " .. expected)
  raises(function() sig.unwatch(nil) end,
         "bad argument #1 to 'unwatch' (signal name expected, got nil)")
  raises(function() sig.raise("SIGSEGV") end,
         "bad argument #1 to 'raise' (unknown signal 'SIGSEGV'; " .. expected)
  raises(function() sig.disposition({}) end,
         "bad argument #1 to 'disposition' (signal name expected, got table)")
  eq(sig.status(), "stopped", "nothing was watched")
  for _, name in ipairs(ALL) do eq(sig.disposition(name), initial[name], name) end
end)

test("a second Lua state cannot watch while this one does, and leaves our watch alone", function()
  clean()
  sig.watch("SIGUSR1", rec())
  local state = child [[ sig = require "dss_signal" ]]
  eq(tc.run(state, [[ return select(2, pcall(sig.watch, "SIGUSR2", print)) ]]),
     "dss_signal: another Lua state is watching signals (only one may at a time)", "watch")
  local status, n, unwatched = tc.run(state, [[
    local status, n, unwatched = sig.status(), #sig.watching(), sig.unwatch("SIGUSR1")
    sig.stop()
    return status, n, unwatched
  ]])
  eq(status, "busy", "the other state's status")
  eq(n, 0, "the other state's watching()")
  eq(unwatched, false, "the other state's unwatch")
  eq(sig.status(), "watching", "our status")
  eq(sig.disposition("SIGUSR2"), initial.SIGUSR2, "SIGUSR2 untouched")
  tc.close(state)
  eq(table.concat(sig.watching(), ","), "SIGUSR1", "still watching")
  sig.raise("SIGUSR1")
  pump(function() return #log == 1 end, "our callback")
  sig.stop()
end)

test("closing a Lua state that watches, with a signal queued: its watch ends, another state may watch", function()
  clean()
  local state = child [[
    sig = require "dss_signal"
    sig.watch("SIGUSR1", function() error("never called") end)
    sig.watch("SIGTERM", function() error("never called") end)
    sig.raise("SIGUSR1")
  ]]
  waitfor(function() return tc.run(state, "return dss.queuesize()") == 1 end,
          "the child's item queued")
  eq(sig.status(), "busy", "status while the other state watches")
  eq(sig.disposition("SIGUSR1"), "watched", "disposition")
  raises(function() sig.watch("SIGUSR2", rec()) end,
         "dss_signal: another Lua state is watching signals (only one may at a time)")
  tc.close(state)  -- cancel: dispositions back, thread joined, item freed
  eq(sig.status(), "stopped", "status after the close")
  for _, name in ipairs(ALL) do eq(sig.disposition(name), initial[name], name) end
  eq(dss.queuesize(), 0, "nothing came to our queue")
  sig.watch("SIGUSR1", rec())
  sig.raise("SIGUSR1")
  pump(function() return #log == 1 end, "our callback")
  fence()
  eq(table.concat(log, ","), "SIGUSR1", "log")
  sig.stop()
end)

test("a signal from another process (kill -USR1 $PPID) reaches the callback once", function()
  clean()
  sig.watch("SIGUSR1", rec())
  os.execute("kill -USR1 $PPID")  -- sh's parent: this process
  pump(function() return #log == 1 end, "the callback")
  fence()
  eq(table.concat(log, ","), "SIGUSR1", "log")
  sig.stop()
end)

-- Quotes s for the shell.

-- Runs code with this interpreter in a process of its own (it inherits
-- LUA_CPATH), after the shell commands pre; returns its output and its exit
-- status.
local function spawn(pre, code)
  local interp = assert(arg and arg[-1], "the interpreter's name is unknown")
  local p = assert(io.popen(pre .. " " .. shq(interp) .. " -e " .. shq([[
    dss = require "darksidesync"
    sig = require "dss_signal"
    unpack = unpack or table.unpack
    function pump(pred)
      local deadline = os.time() + 11
      repeat
        local n, cb, args = dss.poll()
        if n ~= -1 and cb then cb(unpack(args)) end
        if os.time() > deadline then error("timed out") end
      until pred()
    end
    function wait(pred)
      local deadline = os.time() + 11
      repeat
        if os.time() > deadline then error("timed out") end
      until pred()
    end
  ]] .. code) .. " 2>&1; echo \"exit $?\""))
  local out = p:read("*a")
  p:close()
  return out:match("^(.-)exit (%d+)\n$")
end

test("interpreter exit with a watch running and a signal queued, no stop(): clean, status 0", function()
  local out, status = spawn("", [[
    local got = 0
    sig.watch("SIGUSR1", function(name) got = got + 1; io.write(name, "\n") end)
    sig.watch("SIGTERM", function() io.write("never polled\n") end)
    sig.raise("SIGUSR1")
    pump(function() return got == 1 end)
    sig.raise("SIGTERM")
    wait(function() return dss.queuesize() == 1 end)  -- queued, never polled
    io.write(sig.status(), ", ", table.concat(sig.watching(), " "), "\n")
  ]])  -- ends without stop(): lua_close runs our cancel
  eq(status, "0", "exit status, output " .. string.format("%q", tostring(out)))
  eq(out, "SIGUSR1\nwatching, SIGTERM SIGUSR1\n", "output")
end)

test("an inherited SIG_IGN is watched, then put back on unwatch", function()
  local out, status = spawn("trap '' USR2;", [[
    local got = 0
    io.write(sig.disposition("SIGUSR2"), "\n")
    sig.watch("SIGUSR2", function() got = got + 1 end)
    io.write(sig.disposition("SIGUSR2"), "\n")
    sig.raise("SIGUSR2")
    pump(function() return got == 1 end)
    sig.unwatch("SIGUSR2")
    io.write(sig.disposition("SIGUSR2"), "\n")
    sig.raise("SIGUSR2")  -- ignored
    io.write("alive, ", got, " callback\n")
  ]])
  eq(status, "0", "exit status, output " .. string.format("%q", tostring(out)))
  eq(out, "ignore\nwatched\nignore\nalive, 1 callback\n", "output")
end)

test("after unwatch, SIGTERM's default action is back: it ends the process", function()
  local out, status = spawn("", [[
    local got = 0
    sig.watch("SIGTERM", function() got = got + 1 end)
    sig.raise("SIGTERM")
    pump(function() return got == 1 end)
    sig.unwatch("SIGTERM")
    io.write(sig.disposition("SIGTERM"), ", ", got, " callback\n")
    io.stdout:flush()
    sig.raise("SIGTERM")
    io.write("still alive\n")
  ]])
  eq(status, "143", "exit status (128 + SIGTERM), output " .. string.format("%q", tostring(out)))
  -- The shell may add its own "Terminated" line.
  ok(out:match("^default, 1 callback\n"), "output " .. string.format("%q", tostring(out)))
  ok(not out:find("still alive"), "the process ended at the raise")
end)
