-- test_stopping.lua -- docs/lua-api.md, "Stopping cleanly": the order
-- stop producing, release what is blocked on Lua (drain, or unregister),
-- then join. The naive order (join while a producer is blocked in a
-- blocking deliver) hangs: shown in a child interpreter that is killed
-- after a bounded window; the documented orders finish, with every
-- producer released and every item ended exactly once.

local here = (arg and arg[1] or ""):match("^(.*/)") or "./"
local root = here .. "../../"
local scale = tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1

local interp = INTERP

-- observe(code): runs code in a child interpreter. Once the child wrote
-- "joining" on stderr (10 s at most), gives it `window` seconds to end;
-- returns "finished <status>" or "hung" (it was then killed), its stdout
-- and its stderr.
local function observe(code, window)
  local src, out, err = os.tmpname(), os.tmpname(), os.tmpname()
  local f = assert(io.open(src, "w"))
  f:write(code)
  f:close()
  local ticks = math.floor((window or 2) * scale * 100)
  local script = table.concat({
    shq(interp) .. " " .. shq(src) .. " >" .. out .. " 2>" .. err .. " &",
    "pid=$!",
    "i=0; while ! grep -q joining " .. err .. " && kill -0 $pid 2>/dev/null && [ $i -lt " .. 1000 * scale .. " ]; do sleep 0.01; i=$((i+1)); done",
    "i=0; while kill -0 $pid 2>/dev/null && [ $i -lt " .. ticks .. " ]; do sleep 0.01; i=$((i+1)); done",
    "if kill -0 $pid 2>/dev/null; then kill -KILL $pid; wait $pid 2>/dev/null; echo hung;",
    "else wait $pid; echo \"finished $?\"; fi",
  }, "\n")
  local p = assert(io.popen("sh -c " .. shq(script)))
  local verdict = p:read("*a"):gsub("%s+$", "")
  p:close()
  local function slurp(path)
    local h = assert(io.open(path))
    local s = h:read("*a")
    h:close()
    os.remove(path)
    return s
  end
  os.remove(src)
  return verdict, slurp(out), slurp(err)
end

-- The first ```lua block of docs/lua-api.md's "Stopping cleanly": the
-- ticker, drained until its blocking question was answered, then joined.
local function documented()
  local f = assert(io.open(root .. "docs/lua-api.md"))
  local text = f:read("*a")
  f:close()
  local section = assert(text:match("\n## Stopping cleanly\n(.-)\n## "), "the section")
  return assert(section:match("```lua\n(.-)```"), "its first lua block")
end
local NOT_HERE = "%-%- Not here: ticker%.join%(%) now[^\n]*\n"

test("the documented program has the line where joining would be wrong", function()
  ok(documented():find(NOT_HERE), "the 'Not here' comment")
end)

test("naive order: the documented program with ticker.join() before draining hangs (a producer waits for Lua, Lua waits in join)", function()
  -- The join comes once both items are queued: the tick and the blocking
  -- question, so the thread is inside its blocking deliver.
  local code = documented():gsub(NOT_HERE, function()
    return "while darksidesync.queuesize() < 4 do darksidesync.wait(1.0) end\n" ..
           "io.stderr:write('joining\\n'); io.stderr:flush()\n" ..
           "print('joined', ticker.join())\n"
  end)
  local verdict, out, err = observe(code)
  eq(verdict, "hung", "the naive program (stdout: " .. out .. ", stderr: " .. err .. ")")
  eq(out, "", "it never got past the join")
end)

test("documented order: drain until the question was answered, then join: finishes, the thread got the answer", function()
  local code = documented():gsub(NOT_HERE, function()
    return "io.stderr:write('joining\\n'); io.stderr:flush()\n"
  end)
  local verdict, out, err = observe(code)
  eq(verdict, "finished 0", "the documented program (stderr: " .. err .. ")")
  eq(out, "stop\n", "ticker.join()'s answer")
end)

test("documented order, the library doing all three steps: resolver.shutdown() with a worker blocked on a question", function()
  local verdict, out, err = observe([[
    local darksidesync = require "darksidesync"
    local resolver = require "dss_resolver"
    resolver.resolve("printer.invalid", print, function() return true end)
    while darksidesync.queuesize() == 0 do darksidesync.wait(1.0) end
    print("blocked", darksidesync.stats().blocked)
    io.stderr:write("joining\n"); io.stderr:flush()
    resolver.shutdown()
    print("pending", resolver.pending(), "queued", darksidesync.queuesize(),
          "cancelled", darksidesync.stats().cancelled, "blocked", darksidesync.stats().blocked)
  ]])
  eq(verdict, "finished 0", "stderr: " .. err)
  eq(out, "blocked\t1\npending\t0\tqueued\t0\tcancelled\t1\tblocked\t0\n")
end)

-- In this process, with the test client: 4 producers each blocked in a
-- blocking deliver of their first of 3 items, none answered.
local function four_blocked(api)
  local dss, tc = require "darksidesync", require "testclient"
  fresh()
  tc.setcallback(function() error("no callback runs") end)
  tc.start { threads = 4, items = 3, blocking = true, api = api }
  queued(4)
  waitfor(function() return dss.stats().blocked == 4 end, "4 producers blocked")
  return dss, tc
end

test("unregister, then join (1v0): the 4 queued items cancelled, the 4 producers released, join returns at once", function()
  local dss, tc = four_blocked(1)
  eq(tc.unreg(tc.utilid(1)), -100, "unreg: DSS_SUCCESS")
  eq(dss.queuesize(), 0, "queue")
  eq(tc.join(), true, "join")
  eq(dss.stats().blocked, 0, "producers blocked")
  eq(dss.stats().cancelled, 4, "items cancelled")
  -- 1v0: the cancelled deliver returns SUCCESS (as 1.0), the next one
  -- INVALID_UTILID, and the producer stops.
  tc.check { threads = 4, attempts = 8, delivered = 4, released = 4, cancelled_queued = 4,
             unanswered = 4, ended = 4, stopped = 4, errors = { [-101] = 4 } }
end)

test("unregister, then join (2v0): every blocked deliver2 returns DSS_ERR_CANCELLED", function()
  local dss, tc = four_blocked(2)
  eq(tc.unreg(tc.utilid(1)), -100, "unreg: DSS_SUCCESS")
  eq(tc.join(), true, "join")
  eq(dss.stats().blocked, 0, "producers blocked")
  tc.check { threads = 4, attempts = 4, cancelled = 4, cancelled_queued = 4, ended = 4, stopped = 4 }
end)

test("unregister with items already polled and their answers pending: the waiting-thread callbacks are spent, each item ends once", function()
  local dss, tc = four_blocked(1)
  local held = {}
  tc.setcallback(function(wt) held[#held + 1] = wt end)
  for _ = 1, 2 do
    local n, cb, args = dss.poll()
    ok(n ~= -1 and cb, "an item")
    cb(unpack(args))
  end
  eq(#held, 2, "waiting-thread callbacks held")
  eq(tc.unreg(tc.utilid(1)), -100, "unreg")
  eq(tc.join(), true, "join")
  for _, wt in ipairs(held) do eq(select("#", wt(1)), 0, "a spent waiting-thread callback returns nothing") end
  tc.check { threads = 4, attempts = 8, delivered = 4, released = 4, decoded = 2, cancelled_queued = 2,
             cancelled_pending = 2, unanswered = 4, ended = 4, stopped = 4, errors = { [-101] = 4 } }
end)

test("drain until the producers are done, then join: every item answered once, join returns at once", function()
  local dss, tc = require "darksidesync", require "testclient"
  fresh()
  tc.setcallback(function(wt, lib, pid, seq) wt(pid * 1000 + seq) end)
  tc.start { threads = 3, items = 2, blocking = true }
  waitfor(function()
    if dss.wait(1.0) > 0 then dss.dispatch() end
    return tc.counters().completed == 3
  end, "the 3 producers done")
  eq(tc.join(), true, "join")
  tc.check { threads = 3, attempts = 6, delivered = 6, released = 6, decoded = 6, returned = 6,
             answers_ok = 6, ended = 6, completed = 3 }
end)
