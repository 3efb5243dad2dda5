-- test_interrupt.lua -- Ctrl-C stops a script asleep in darksidesync:
-- wait() (no limit, or a long one), a poller's wait, and fibers.main() of a
-- loop with nothing to do, each in a child process of this interpreter
-- that gets SIGINT once it says it is about to sleep. The stock
-- interpreter's handler raises "interrupted!"; a second Ctrl-C kills.

local interp = INTERP


-- sigint(code, n): runs code in a child; once it wrote "waiting" to
-- stderr, sends it SIGINT (and again after each further "waiting", up to n
-- signals in all); returns its exit status and its stderr. A child still
-- alive 10 s after the last signal is killed (status 137).
local function sigint(code, n)
  n = n or 1
  local err = os.tmpname()
  local script = table.concat({
    shq(interp) .. " -e " .. shq(code) .. " 2>" .. err .. " &",
    "pid=$!",
    "sent=0",
    "while [ $sent -lt " .. n .. " ]; do",
    "  i=0",
    "  while [ $(grep -c waiting " .. err .. ") -le $sent ] && [ $i -lt 1000 ]; do",
    "    kill -0 $pid 2>/dev/null || break; sleep 0.01; i=$((i+1))",
    "  done",
    "  kill -INT $pid 2>/dev/null; sent=$((sent+1))",
    "done",
    "i=0; while kill -0 $pid 2>/dev/null && [ $i -lt 1000 ]; do sleep 0.01; i=$((i+1)); done",
    "kill -KILL $pid 2>/dev/null",
    "wait $pid; echo $?",
  }, "\n")
  local p = assert(io.popen("sh -c " .. shq(script)))
  local status = tonumber(p:read("*a"):match("(%d+)%s*$"))
  p:close()
  local f = assert(io.open(err))
  local text = f:read("*a")
  f:close()
  os.remove(err)
  return status, text
end

local WAITING = "io.stderr:write('waiting\\n'); io.stderr:flush(); "

test("Ctrl-C stops wait() with no timeout: the interpreter raises 'interrupted!'", function()
  local status, err = sigint("local d = require 'darksidesync'; " .. WAITING ..
                             "d.wait(); io.stderr:write('returned\\n')")
  eq(status, 1, "exit status (stderr: " .. err .. ")")
  ok(err:find("interrupted!", 1, true), "stderr: " .. err)
  ok(not err:find("returned", 1, true), "the script went no further")
end)

test("Ctrl-C stops a long wait(3600)", function()
  local status, err = sigint("local d = require 'darksidesync'; " .. WAITING .. "d.wait(3600)")
  eq(status, 1, "exit status (stderr: " .. err .. ")")
  ok(err:find("interrupted!", 1, true), "stderr: " .. err)
end)

test("Ctrl-C with C producer threads running: it still stops the wait", function()
  -- Threads of the test client, each delivering one item after 60 s: the
  -- kernel may hand the signal to any of them.
  local status, err = sigint("local d = require 'darksidesync'; local tc = require 'testclient'; " ..
                             "tc.init(); tc.start { items = 1, delay = 60000, threads = 4 }; " ..
                             WAITING .. "d.wait()")
  ok(status == 1, "exit status " .. tostring(status) .. " (stderr: " .. err .. ")")
  ok(err:find("interrupted!", 1, true), "stderr: " .. err)
end)

test("the wait in a pcall: the error is caught; the handler is back to the interpreter's, so a second Ctrl-C kills", function()
  local status, err = sigint("local d = require 'darksidesync'; " .. WAITING ..
                             "local ok, e = pcall(function() d.wait(); for i = 1, 10 do end end); " ..
                             "io.stderr:write('caught: ', tostring(e), '\\n'); " ..
                             WAITING .. "d.wait(); io.stderr:write('returned\\n')", 2)
  ok(err:find("caught: [^\n]*interrupted!"), "stderr: " .. err)
  eq(status, 130, "killed by the second SIGINT (stderr: " .. err .. ")")
  ok(not err:find("returned", 1, true), "the second wait did not return")
end)

test("Ctrl-C stops a poller's wait with no timeout", function()
  local status, err = sigint("local d = require 'darksidesync'; local p = d.poller(); " ..
                             "p:add(d.getfd(), d.POLL.IN); " .. WAITING .. "p:wait()")
  eq(status, 1, "exit status (stderr: " .. err .. ")")
  ok(err:find("interrupted!", 1, true), "stderr: " .. err)
end)

test("Ctrl-C stops fibers.main() with only a long sleeper, in darksidesync.wait and in the poller", function()
  for _, pollio in ipairs { "", "require('darksidesync.fibers.pollio').install_poll_io_handler(); " } do
    local status, err = sigint("local fibers = require 'darksidesync.fibers'; " ..
                               "local sleep = require 'darksidesync.fibers.sleep'; " .. pollio ..
                               "fibers.spawn(function() " .. WAITING .. "sleep.sleep(3600) end); fibers.main()")
    eq(status, 1, "exit status (stderr: " .. err .. ")")
    ok(err:find("interrupted!", 1, true), "stderr: " .. err)
  end
end)
