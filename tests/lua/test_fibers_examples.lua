-- test_fibers_examples.lua -- the examples of examples/fibers/, each run as
-- a child process with this interpreter (LUA_PATH and LUA_CPATH inherited),
-- their exact output checked. Each must end on its own (fibers.stop()).

local interp = INTERP
local dir = (debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or ".") .. "/../../examples/fibers/"

-- run(script, ...): the script's stdout (stderr into it too), as lines,
-- and the exit status seen by close() (true on 5.1, which does not tell).
local function run(script, ...)
  local cmd = { "'" .. interp .. "'", "'" .. dir .. script .. "'" }
  for _, a in ipairs({ ... }) do cmd[#cmd + 1] = tostring(a) end
  local p = assert(io.popen(table.concat(cmd, " ") .. " 2>&1; echo \"exit $?\""))
  local out = p:read("*a")
  p:close()
  local lines = {}
  for l in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  return lines
end

local function expect(lines, want)
  eq(lines[#lines], "exit 0", "exit status (output: " .. table.concat(lines, " | ") .. ")")
  eq(table.concat(lines, "\n", 1, #lines - 1), table.concat(want, "\n"))
end

test("interpreter found", function()
  ok(interp and interp ~= "", "arg's lowest index")
end)

test("pingpong.lua: 10 hits, alternating, then the count", function()
  local want = {}
  for i = 1, 10 do want[i] = (i % 2 == 1 and "ping" or "pong") .. "\t" .. i end
  want[11] = "hits\t10"
  expect(run("pingpong.lua"), want)
end)

test("pingpong.lua 3", function()
  expect(run("pingpong.lua", 3), { "ping\t1", "pong\t2", "ping\t3", "hits\t3" })
end)

test("sieve.lua: the first 10 primes", function()
  expect(run("sieve.lua"), { "2", "3", "5", "7", "11", "13", "17", "19", "23", "29" })
end)

test("sieve.lua 25: the primes below 100", function()
  local want = {}
  for p = 2, 100 do
    local prime = true
    for d = 2, p - 1 do if p % d == 0 then prime = false break end end
    if prime then want[#want + 1] = tostring(p) end
  end
  eq(#want, 25)
  expect(run("sieve.lua", 25), want)
end)

test("select.lua: timeout, result, default, received, sent, default", function()
  expect(run("select.lua"), { "timeout", "result fast", "no message received", "received hi",
                              "sent again", "no message sent" })
end)

test("workers.lua: 9 jobs over 3 workers, results in job order", function()
  local want = {}
  for j = 1, 9 do want[j] = "job " .. j .. " -> " .. 2 * j end
  want[10] = "9 results, 3 of 3 workers busy"
  expect(run("workers.lua"), want)
end)

test("workers.lua 20 4", function()
  local want = {}
  for j = 1, 20 do want[j] = "job " .. j .. " -> " .. 2 * j end
  want[21] = "20 results, 4 of 4 workers busy"
  expect(run("workers.lua", 20, 4), want)
end)

test("cthreads.lua: the ticker's ticks and question, a socket and a timer through one fiber loop, the answer back in C", function()
  expect(run("cthreads.lua"), { "1", "2", "3", "4", "5", "question 5", "ticker:\t5 ticks seen",
                                "timer beat:\ttrue", "socket heard:\ttrue", "queue:\t0" })
end)

test("cthreads.lua 0: just the question", function()
  expect(run("cthreads.lua", 0), { "question 0", "ticker:\t0 ticks seen", "timer beat:\ttrue",
                                   "socket heard:\ttrue", "queue:\t0" })
end)

-- run_fds(n, script, ...): as run(), with the fd limit raised to n first
-- where the hard limit allows it (echo_server.lua scales itself down
-- otherwise).
local function run_fds(n, script, ...)
  local cmd = { "ulimit -n " .. n .. " 2>/dev/null;", "'" .. interp .. "'", "'" .. dir .. script .. "'" }
  for _, a in ipairs({ ... }) do cmd[#cmd + 1] = tostring(a) end
  local p = assert(io.popen(table.concat(cmd, " ") .. " 2>&1; echo \"exit $?\""))
  local out = p:read("*a")
  p:close()
  local lines = {}
  for l in out:gmatch("([^\n]*)\n") do lines[#lines + 1] = l end
  return lines
end

-- echo_server.lua's summary line, its seconds as a pattern; with a first
-- line when the fd limit scaled the clients down.
local function expect_echo(lines, clients, per)
  eq(lines[#lines], "exit 0", "exit status (output: " .. table.concat(lines, " | ") .. ")")
  local first = 1
  if #lines == 3 then
    local limit, fit, want = lines[1]:match("^fd limit (%d+): (%d+) clients instead of (%d+)$")
    ok(limit, "the scaling line: " .. lines[1])
    eq(tonumber(want), clients)
    ok(tonumber(fit) >= 1 and 2 * tonumber(fit) + 32 <= tonumber(limit), "scaled to fit the limit")
    clients = tonumber(fit)
    first = 2
  end
  eq(#lines, first + 1, "one summary line")
  local pattern = "^" .. clients .. " clients, " .. clients * per ..
                  " lines echoed, 0 mismatched, %d+%.%d%d seconds$"
  ok(lines[first]:match(pattern), "summary: " .. tostring(lines[first]))
end

test("echo_server.lua 20 5: a server fiber per connection, 20 client fibers, every echo matched", function()
  expect_echo(run("echo_server.lua", 20, 5), 20, 5)
end)

test("echo_server.lua: 1000 concurrent clients x 10 lines in one process (fd limit raised to 4096)", function()
  expect_echo(run_fds(4096, "echo_server.lua"), 1000, 10)
end)
