-- test_session_examples.lua -- the examples of examples/sessions/, each
-- run as a child process with this interpreter (LUA_PATH and LUA_CPATH
-- inherited), their exact output checked.

local dir = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/../../examples/sessions/"

local function run(script, ...)
  local cmd = { shq(INTERP), shq(dir .. script) }
  for _, a in ipairs({ ... }) do cmd[#cmd + 1] = tostring(a) end
  return sh(table.concat(cmd, " "))
end

test("parallel_map.lua: the sum of the squares, on at most 4 threads", function()
  local out, status = run("parallel_map.lua", 30)
  eq(status, 0, out)
  local sum, peak = out:match("^sum of the squares of 1%.%.30: (%d+)\nthreads used at most: (%d+)\n$")
  eq(sum, "9455", out)
  ok(tonumber(peak) >= 1 and tonumber(peak) <= 4, out)
end)

test("pipeline.lua: three sessions through two channels, on the default pool", function()
  local out, status = run("pipeline.lua", 100)
  eq(status, 0, out)
  eq(out, "50 odd squares up to 100, their sum: 166650\n")
end)

test("tcp_server.lua: connections spread over sessions, every echo matched", function()
  local oks = pcall(require, "socket")
  if not oks then return end
  local out, status = run("tcp_server.lua", 2, 40, 5)
  eq(status, 0, out)
  local first = out:match("^[^\n]*")
  eq(first, "40 clients, 200 lines echoed, 40 connections served by 2 sessions")
end)

test("casting.lua: casting's API, two sessions of tasks over channels on 2 threads", function()
  local out, status = run("casting.lua", 100)
  eq(status, 0, out)
  eq(out, "workers:wait() raised: no such job\n" ..
          "300 jobs from 3 producers, the sum of 3 * i^2: 3045150\n")
  out, status = run("casting.lua", 7)
  eq(status, 0, out)
  eq(out, "workers:wait() raised: no such job\n" ..
          "21 jobs from 3 producers, the sum of 3 * i^2: 1260\n")
end)
