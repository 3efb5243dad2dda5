-- luv.lua -- the luv rows of the benchmark (Debian lua-luv), run by the Lua
-- interpreter in the same invocation as dss_bench, which reads its output
-- ("key value" lines) and prints the ratios. luv's threads (uv.new_thread,
-- uv.new_work) each run a Lua state of their own.
--
--   lua5.1 bench/luv.lua [scale]
local uv = require "luv"
local scale = tonumber(arg and arg[1]) or 1
local function scaled(n) return math.max(1000, math.floor(n * scale)) end

local function out(k, v) io.write(k, " ", string.format("%.6g", v), "\n") end

-- 1. async:send flood from a thread: luv keeps only the last value sent
-- before the loop gets to the handle, so most values are lost. The thread
-- then signals a second handle; the loop closes both a little later.
do
  local n = scaled(200000)
  local got = 0
  local async = uv.new_async(function() got = got + 1 end)
  local fin
  fin = uv.new_async(function()
    fin:close()
    local timer = uv.new_timer()
    timer:start(20, 0, function() timer:close(); async:close() end)
  end)
  local th = uv.new_thread(function(a, f, count)
    for i = 1, count do a:send(i) end
    f:send()
  end, async, fin, n)
  uv.run()
  th:join()
  out("flood_sent", n)
  out("flood_delivered", got)
end

-- 2. A lossless route: uv.new_work (a thread-pool job per item, its result
-- handed to a Lua callback on the loop).
do
  local n = scaled(100000)
  local got = 0
  local work = uv.new_work(function(x) return x end, function() got = got + 1 end)
  local t0 = uv.hrtime()
  for i = 1, n do work:queue(i) end
  uv.run()
  local secs = (uv.hrtime() - t0) / 1e9
  assert(got == n, "new_work lost items")
  out("work_rate", n / secs)
end

-- 3. A blocking round trip: a thread sends a request through an async
-- handle and blocks reading the answer from a pipe the loop writes to; the
-- loop sleeps in uv.run between requests.
do
  local n = scaled(10000)
  local fds = uv.pipe({nonblock = false}, {nonblock = false})
  local stats
  local req = uv.new_async(function(v)
    uv.fs_write(fds.write, string.format("%8d", v + 1))
  end)
  local done
  done = uv.new_async(function(p50, p99, p999, rate)
    stats = {p50, p99, p999, rate}
    req:close(); done:close()
  end)
  local th = uv.new_thread(function(rq, dn, rfd, count)
    local uv = require "luv"
    local lat = {}
    local t0 = uv.hrtime()
    for i = 1, count do
      local a = uv.hrtime()
      rq:send(i)
      local s = uv.fs_read(rfd, 8)
      assert(tonumber(s) == i + 1, "bad answer")
      lat[i] = (uv.hrtime() - a) / 1e3
    end
    local secs = (uv.hrtime() - t0) / 1e9
    table.sort(lat)
    local function at(p) return lat[math.floor(p * (#lat - 1)) + 1] end
    dn:send(at(0.5), at(0.99), at(0.999), count / secs)
  end, req, done, fds.read, n)
  uv.run()
  th:join()
  out("rt_p50", stats[1]); out("rt_p99", stats[2]); out("rt_p999", stats[3])
  out("rt_rate", stats[4])
end
