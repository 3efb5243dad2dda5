-- sessions.lua -- issue 15: one S row alone, for profiling (callgrind,
-- massif) or timing by hand. Usage, from the top of the tree:
--   LUA_PATH='lua/?.lua;;' LUA_CPATH='build/hb/?.so;;' \
--     lua5.4 bench/prof/sessions.lua spawn|stream|tables|pingpong|idle|state N
-- spawn: N sessions spawned and joined; stream/tables: N values through a
-- capacity-64 channel; pingpong: N round trips; idle: N sessions parked,
-- then released.
local session = require "darksidesync.session"
local channel = require "darksidesync.channel"
local now = require("darksidesync").monotime
local mode, n = arg[1], tonumber(arg[2] or "1000")
session.pool({ min = 2, max = 2 })
local function joined(s)
  local r, e = s:join()
  if r == nil and e then error(e) end
  return r
end
joined(session.spawn(function() return 1 end)) -- the pool's threads

local t0 = now()
if mode == "spawn" then
  local s = {}
  for i = 1, n do s[i] = session.spawn(function(x) return x end, i) end
  for i = 1, n do joined(s[i]) end
elseif mode == "stream" or mode == "tables" then
  local ch = channel.new(64)
  local p = session.spawn(function(ch, n, tables)
    local t = { a = 1, b = 2, c = 3, d = 4, e = 5, f = 6, g = 7, h = 8, i = 9, j = 10 }
    for i = 1, n do ch:put(tables and t or i) end
    return true
  end, ch, n, mode == "tables")
  local c = session.spawn(function(ch, n)
    for _ = 1, n do ch:get() end
    return true
  end, ch, n)
  joined(p)
  joined(c)
elseif mode == "pingpong" then
  local a2b, b2a = channel.new(1), channel.new(1)
  local b = session.spawn(function(inc, out)
    local v = inc:get()
    while v do out:put(v); v = inc:get() end
    return true
  end, a2b, b2a)
  local a = session.spawn(function(out, inc, k)
    local now = require("darksidesync").monotime
    local lat = {}
    for i = 1, k do
      local t = now()
      out:put(i)
      inc:get()
      lat[i] = now() - t
    end
    out:close()
    table.sort(lat)
    return lat[math.floor(0.5 * (k - 1)) + 1] * 1e6, lat[math.floor(0.99 * (k - 1)) + 1] * 1e6
  end, a2b, b2a, n)
  local p50, p99 = a:join()
  joined(b)
  io.stderr:write(string.format("pingpong p50 %.1f us, p99 %.1f us\n", p50, p99))
elseif mode == "idle" then
  local ch, s = channel.new(0), {}
  for i = 1, n do s[i] = session.spawn(function(ch) ch:get() return true end, ch) end
  repeat
    local p = session.pool()
  until p.busy == 0 and p.queued == 0 and p.sessions == n
  io.stderr:write(string.format("parked: %.3f s\n", now() - t0))
  ch:close()
  for i = 1, n do joined(s[i]) end
else
  error("mode: spawn|stream|tables|pingpong|idle")
end
io.stderr:write(string.format("%s %d: %.3f s\n", mode, n, now() - t0))
session.close()
