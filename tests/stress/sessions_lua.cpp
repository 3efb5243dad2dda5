// sessions_lua.cpp -- the Lua side of the sessions scenario
// (scenario_sessions.cpp): the host script a round runs in its main state,
// and the body each session runs. The table H holds the C helpers the host
// calls; sessions know nothing of the harness: they report every message
// they receive, forward, eat or drop on the receipts channel, before doing
// anything else with it.
//
// A message is one id at one hop: the C producer puts hop 0, a session
// forwards hop + 1. On the wire it is either an integer, id * 64 + hop (the
// C producer's first value; a few more values may follow), or a table
// {id, hop, pad} (sessions, now and then).
//
// Receipts, each a table {kind, id, hop, sid, channel}:
//   1 received   a session got message (id, hop) from channel
//   2 forwarded  a session's put of (id, hop) into channel returned true
//   3 eaten      a session consumed (id, hop): its end
//   4 dropped    a session's every forward of (id, hop) met closed
//                channels: its end
// The host adds 5 (drained): it got (id, hop) from a channel (a sink during
// the traffic, or any channel once every session ended).
#include "runner.h"

namespace stress {

// What both chunks below start with: a Lehmer generator, rng(seed)(n) in
// 1..n, so that every choice follows from the seed.
#define SESS_RNG_LUA                                 \
  "local function rng(s)\n"                          \
  "  local x = s % 2147483647\n"                     \
  "  if x <= 0 then x = x + 2147483646 end\n"        \
  "  return function(n)\n"                           \
  "    x = (x * 16807) % 2147483647\n"               \
  "    return x % n + 1\n"                           \
  "  end\n"                                          \
  "end\n"

// The session's function, as source text: spawn(SESS_BODY, sid, seed,
// chans, plan, receipts). plan[f] = {reads = {c...}, writes = {c...},
// eat = percent, pause = percent}: one fiber each. Returns the session's
// counts: received, forwarded, eaten, dropped, put timeouts, get timeouts.
const char* const SESS_BODY = SESS_RNG_LUA R"LUA(
local sid, seed, chans, plan, rep = ...
local fiber = require "darksidesync.fibers.fiber"
local op = require "darksidesync.fibers.op"
local sleep = require "darksidesync.fibers.sleep"
local fchannel = require "darksidesync.fibers.channel"
local floor = math.floor
local unpack = table.unpack or unpack


local function decode(v)
  if type(v) == "table" then return v[1], v[2] end
  return floor(v / 64), v % 64
end

local function remove(list, c)
  for i = #list, 1, -1 do
    if list[i] == c then table.remove(list, i) end
  end
end

local function worker(fi, f)
  local r = rng(seed * 31 + fi)
  local reads, writes = {}, {}
  for i, c in ipairs(f.reads) do reads[i] = c end
  for i, c in ipairs(f.writes) do writes[i] = c end
  local n = { recv = 0, fwd = 0, eat = 0, drop = 0, ptmo = 0, gtmo = 0 }

  -- Puts (id, hop) somewhere: one put, a choice of two, either with a
  -- timeout; a few tries. Reports what became of it.
  local function forward(id, hop)
    for _ = 1, 4 do
      if #writes == 0 then break end
      local v = r(3) == 1 and { id, hop, "pad" } or id * 64 + hop
      local a = writes[r(#writes)]
      local how = r(4)
      local c, ok
      if how == 1 then
        c, ok = a, chans[a]:put(v)
      else
        local arms = { chans[a]:put_op(v):wrap(function(x) return a, x end) }
        if how >= 3 then
          local b = writes[r(#writes)]
          if b ~= a then
            arms[2] = chans[b]:put_op(v):wrap(function(x) return b, x end)
          end
        end
        if how ~= 3 then
          arms[#arms + 1] = sleep.sleep_op(r(10) / 1000):wrap(function() return 0 end)
        end
        c, ok = op.choice(unpack(arms)):perform()
      end
      if c == 0 then
        n.ptmo = n.ptmo + 1
      elseif ok then
        rep:put({ 2, id, hop, sid, c })
        n.fwd = n.fwd + 1
        return
      else
        remove(writes, c) -- closed
      end
    end
    if #writes == 0 then
      rep:put({ 4, id, hop - 1, sid, 0 })
      n.drop = n.drop + 1
    else
      rep:put({ 3, id, hop - 1, sid, 0 })
      n.eat = n.eat + 1
    end
  end

  while #reads > 0 do
    local k = r(#reads < 3 and #reads or 3)
    local start = r(#reads)
    local c, v
    if k == 1 and r(2) == 1 then
      c = reads[start]
      v = chans[c]:get()
    else
      local arms = {}
      for j = 1, k do
        local cj = reads[(start + j - 2) % #reads + 1]
        arms[j] = chans[cj]:get_op():wrap(function(x) return cj, x end)
      end
      if r(3) == 1 then
        arms[#arms + 1] = sleep.sleep_op(r(20) / 1000):wrap(function() return 0 end)
      end
      c, v = op.choice(unpack(arms)):perform()
    end
    if c == 0 then
      n.gtmo = n.gtmo + 1
    elseif v == nil then
      remove(reads, c) -- closed and empty
    else
      local id, hop = decode(v)
      rep:put({ 1, id, hop, sid, c }) -- first of all
      n.recv = n.recv + 1
      if hop >= 60 or #writes == 0 or r(100) <= f.eat then
        rep:put({ 3, id, hop, sid, 0 })
        n.eat = n.eat + 1
      else
        forward(id, hop + 1)
      end
      if r(100) <= f.pause then sleep.sleep(r(3) / 1000) end
    end
  end
  return n
end

local others = fchannel.new()
for fi = 2, #plan do
  fiber.spawn(function() others:put(worker(fi, plan[fi])) end)
end
local t = worker(1, plan[1])
for _ = 2, #plan do
  local o = others:get()
  for key, v in pairs(o) do t[key] = t[key] + v end
end
return t.recv, t.fwd, t.eat, t.drop, t.ptmo, t.gtmo
)LUA";

// The host script: one round, in a fresh main state. Arguments: H, the
// round's seed, the session body, the traffic time (s), the join timeout (s).
// Plans the channels and sessions, starts the C producers, runs the
// traffic (cancels, closes, late spawns), then stops the producers, closes
// every channel, joins every session, drains the channels and the
// receipts, and returns.
const char* const SESS_HOST = SESS_RNG_LUA R"LUA(
local H, seed, body, traffic, join_timeout = ...
local session = require "darksidesync.session"
local channel = require "darksidesync.channel"
local fiber = require "darksidesync.fibers.fiber"
local op = require "darksidesync.fibers.op"
local sleep = require "darksidesync.fibers.sleep"
local fchannel = require "darksidesync.fibers.channel"
local unpack = table.unpack or unpack

local r = rng(seed)

session.pool({ min = 1, max = 3 })

-- Channels: 1 .. nsink are sinks (no session reads them; the host does);
-- capacities 0 (rendezvous), 1, 2 .. 8, or unbounded.
local nchan = 5 + r(8)
local nsink = r(2)
local chans = {}
for c = 1, nchan do
  local k = r(4)
  local cap = (k == 1 and 0) or (k == 2 and 1) or (k == 3 and 1 + r(7)) or math.huge
  chans[c] = channel.new(cap)
  H.channel(c, cap == math.huge and -1 or cap)
end
local receipts = channel.new(math.huge)

local function pick_set(lo, hi, from)
  local set, seen = {}, {}
  for _ = 1, lo + r(hi - lo + 1) - 1 do
    local c = from + r(nchan - from + 1) - 1
    if not seen[c] then seen[c] = true; set[#set + 1] = c end
  end
  return set
end

-- Sessions: 1 to 4 fibers each, reading 1 to 3 non-sink channels, writing
-- 1 to 3 channels (sinks included; now and then none: the fiber eats all).
local nsess = 16 + r(24)
local plans = {}
for sid = 1, nsess do
  local p = {}
  for fi = 1, r(4) do
    local f = { reads = pick_set(1, 3, nsink + 1), writes = pick_set(1, 3, 1),
                eat = 5 + r(25), pause = r(10) }
    if r(12) == 1 then f.writes = {} end
    H.fiber(sid)
    for _, c in ipairs(f.reads) do H.reads(sid, c) end
    p[fi] = f
  end
  plans[sid] = p
end

-- The C producers put into non-sink channels (and a sink now and then).
for c = 1, nchan do
  if c > nsink or r(3) == 1 then H.target(c, chans[c]) end
end

local S, spawned = {}, 0
local function spawn(sid)
  S[sid] = session.spawn(body, sid, seed * 1000 + sid, chans, plans[sid], receipts)
  H.spawned(sid)
  spawned = spawned + 1
end

local recorder_done = fchannel.new(1)
local stopping = false

fiber.spawn(function() -- every receipt to the harness, as it comes
  while true do
    local t = receipts:get()
    if t == nil then break end
    H.rec(t[1], t[2], t[3], t[4], t[5])
  end
  recorder_done:put(true)
end)

local function decode(v)
  if type(v) == "table" then return v[1], v[2] end
  return math.floor(v / 64), v % 64
end

-- The host reads the sinks during the traffic: a choice of their gets and
-- a sleep.
local sink_done = fchannel.new(1)
fiber.spawn(function()
  local open = {}
  for c = 1, nsink do open[c] = c end
  while not stopping and #open > 0 do
    local arms = {}
    for i, c in ipairs(open) do
      arms[i] = chans[c]:get_op():wrap(function(v) return c, v end)
    end
    arms[#arms + 1] = sleep.sleep_op(0.005):wrap(function() return 0 end)
    local c, v = op.choice(unpack(arms)):perform()
    if c ~= 0 then
      if v == nil then
        for i = #open, 1, -1 do if open[i] == c then table.remove(open, i) end end
      else
        local id, hop = decode(v)
        H.rec(5, id, hop, 0, c)
      end
    end
  end
  sink_done:put(true)
end)

-- Joins sid, boundedly; tells the harness how it ended.
local function join(sid)
  local s = S[sid]
  local res = { s:join(join_timeout) }
  if res[1] == nil and res[2] == "timeout" then
    H.joined(sid, "hung", s:status())
  elseif res[1] == nil then
    local kind = tostring(res[2]) == "cancelled" and "cancelled" or "error"
    H.joined(sid, kind, s:status(), tostring(res[2]))
  else
    H.joined(sid, "done", s:status(), unpack(res, 1, 6))
  end
end

fiber.spawn(function()
  local first = nsess - r(math.floor(nsess / 4) + 1) + 1
  for sid = 1, first do spawn(sid) end
  H.start(r(2))
  local t_end = fiber.now() + traffic
  local closes = 0
  while fiber.now() < t_end do
    sleep.sleep((5 + r(40)) / 1000)
    local what = r(10)
    if what <= 3 and spawned > 0 then
      local sid = r(spawned)
      S[sid]:cancel()
      H.cancel(sid)
    elseif what == 4 and closes < 2 then
      local c = r(nchan)
      chans[c]:close()
      H.closed(c)
      closes = closes + 1
    elseif spawned < nsess then
      spawn(spawned + 1)
    end
  end
  while spawned < nsess do spawn(spawned + 1) end
  -- The end: the producers stop (a moment for their last puts), every
  -- channel closes (releasing what still waits), every session ends.
  H.stop()
  local t_wait = fiber.now() + 0.5
  while H.running() and fiber.now() < t_wait do sleep.sleep(0.002) end
  stopping = true
  sink_done:get()
  for c = 1, nchan do chans[c]:close() end
  H.join()
  for sid = 1, nsess do join(sid) end
  -- What the channels still hold.
  for c = 1, nchan do
    while true do
      local v = chans[c]:get()
      if v == nil then break end
      local id, hop = decode(v)
      H.rec(5, id, hop, 0, c)
    end
  end
  receipts:close()
  recorder_done:get()
  if r(2) == 1 then session.close() end
  fiber.stop()
end)
fiber.main()
)LUA";

}  // namespace stress
