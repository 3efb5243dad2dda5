// driver.cpp -- the Lua side of the stress harness: the driver each state
// runs (loaded by open_state in lua_host.cpp). It drains the queue in one of
// five modes (poll, dispatch, wait, getfd, UDP), runs the callbacks
// (answering, dropping or holding waiting-thread callbacks), checks what
// darksidesync returns as it goes, and makes the objects whose finalizers
// drain the queue during lua_close (scenario_finalizer.cpp). The table H
// holds the C helpers it calls.
#include "runner.h"

namespace stress {

const char* const DRIVER = R"LUA(
local H = ...
local dss = require "darksidesync"
local unpack = table.unpack or unpack
local random = math.random
local held, nheld = {}, 0
local maxq = 0
local scale = H.scale
-- errors raised by callbacks (raised) or decoders (H.decraised()) must each
-- reach the error handler (handled) or a caller (caught), exactly once
local raised, handled, caught = 0, 0, 0
local decraised0 = H.decraised()  -- a per-thread count: this state's start
local mode, coalesce, has_handler = 0, false, false
local armed = false        -- coalesce: the queue was seen empty since the last datagram
local limit, bounded = 0, false
local fd
local C = { dispatched = 0, waits = 0, wait_timeouts = 0, fd_wakeups = 0,
            fd_spurious = 0, datagrams = 0, maxqueue_changes = 0 }
local WAITS = { 0, 0.001, 0.002, 0.01, 0.03 }
local LIMITS = { 0, 0, 1, 2, 3, 5, 16, 100 }

local function ours(msg)
  return type(msg) == "string" and
    (msg:find("stress raise", 1, true) or msg:find("stress decoder raise", 1, true)) ~= nil
end

local function handler(msg)
  if not ours(msg) then H.fail("error handler got: " .. tostring(msg)) end
  handled = handled + 1
end

-- wt(idx) returns idx * 2, or nothing at all when the item ended meanwhile
-- (an unreg from a producer thread, or its producer's timeout).
local function check(idx, ...)
  local n, r = select('#', ...), ...
  if n ~= 0 and (n ~= 1 or r ~= idx * 2) then
    error("waiting-thread callback of " .. idx .. " returned " .. tostring(r))
  end
end

-- fire and forget: cb(idx, action); blocking: cb(wt, idx, action)
local function cb(a, b, c)
  if type(a) == "number" then
    if c ~= nil then error("bad fire-and-forget arguments") end
    if b == 5 then
      raised = raised + 1
      error("stress raise " .. a)
    end
    if b ~= 1 then error("bad fire-and-forget arguments") end
    return
  end
  local wt, idx, action = a, b, c
  if action == 1 then
    check(idx, wt(idx))
  elseif action == 4 then
    check(idx, wt(idx))
    if select('#', wt(idx)) ~= 0 then error("second call returned values") end
  elseif action == 3 then
    nheld = nheld + 1
    held[nheld] = { wt, idx }
  elseif action ~= 2 then
    error("bad action " .. tostring(action))
  end
end

local function run_dispatch(max)
  local d0 = H.decoded()
  local ok, n
  if max then ok, n = pcall(dss.dispatch, max) else ok, n = pcall(dss.dispatch) end
  local d = H.decoded() - d0
  if ok then
    if n ~= d then
      H.fail(("dispatch(%s) returned %s, %d decoders ran"):format(tostring(max), tostring(n), d))
    end
    if max and n > max then H.fail(("dispatch(%d) ran %d"):format(max, n)) end
    C.dispatched = C.dispatched + d
    return d
  end
  if not ours(n) then error(n, 0) end  -- (a finalizer's: the state stopped)
  if has_handler then H.fail("dispatch raised with an error handler set: " .. tostring(n)) end
  caught = caught + 1
  C.dispatched = C.dispatched + d
  return d
end

local function run_poll(maxpolls)
  local ran = 0
  for _ = 1, maxpolls do
    local ok, n, f, args = pcall(dss.poll)
    if not ok then
      if not ours(n) then error(n, 0) end
      caught = caught + 1
      ran = ran + 1
    else
      if n == -1 then break end
      ran = ran + 1
      if n > maxq then maxq = n end
      if f then
        local ok2, e = pcall(f, unpack(args))
        if not ok2 then
          if not ours(e) then error(e, 0) end
          caught = caught + 1
        end
      end
    end
  end
  return ran
end

-- dispatch until the queue is seen empty (bounded)
local function drain()
  local total = 0
  for _ = 1, 16 do
    total = total + run_dispatch()
    if dss.queuesize() == 0 then
      armed = coalesce
      return total
    end
  end
  armed = false
  return total
end

-- mode 2: wait(t) for an item, then dispatch()
local function step_wait()
  local t = WAITS[random(#WAITS)]
  local t0 = H.now()
  local n = dss.wait(t)
  C.waits = C.waits + 1
  if n == 0 then
    C.wait_timeouts = C.wait_timeouts + 1
    local el = H.now() - t0
    if el < t - 0.001 then H.fail(("wait(%g) returned 0 after %.4f s"):format(t, el)) end
    if dss.queuesize() > 0 and dss.wait(2 * scale) == 0 and dss.queuesize() > 0 then
      H.fail("wait(2) returned 0 with items queued")
    end
  elseif type(n) ~= "number" or n < 1 then
    H.fail("wait returned " .. tostring(n))
  else
    return run_dispatch()
  end
  return 0
end

-- mode 3: poll(2) on getfd(), then dispatch()
local function step_fd()
  local ran = 0
  local f = dss.getfd()
  if fd and f ~= fd then H.fail("getfd returned " .. tostring(f) .. ", before " .. fd) end
  fd = f
  if H.fdready(fd, 20) then
    C.fd_wakeups = C.fd_wakeups + 1
    ran = run_dispatch()
    if ran == 0 then C.fd_spurious = C.fd_spurious + 1 end
  elseif dss.queuesize() > 0 and not H.fdready(fd, 2000 * scale) and dss.queuesize() > 0 then
    H.fail("the wake-up fd stayed unreadable for 2 s with items queued")
  end
  return ran
end

-- mode 4: wait for a datagram, then drain
local function step_udp()
  local got = H.udp(20)
  if got == 0 and armed and dss.queuesize() > 0 then
    local nf = dss.stats().notifyfailed
    got = H.udp(2000 * scale)
    if got == 0 and dss.queuesize() > 0 and dss.stats().notifyfailed == nf then
      H.fail("coalesce: items queued since the queue was seen empty, and no datagram in 2 s")
    end
  end
  C.datagrams = C.datagrams + got
  if got > 0 or not armed then return drain() end
  return 0
end

-- the queue's limit: checked, and changed now and then
local function check_limit()
  local q = dss.queuesize()
  if limit > 0 then
    if bounded and q > limit then
      H.fail(("queuesize() %d above the limit %d it was seen under"):format(q, limit))
    end
    if q <= limit then bounded = true end
  end
  if random() < 0.01 then
    limit = LIMITS[random(#LIMITS)]
    dss.setmaxqueue(limit)
    if dss.getmaxqueue() ~= limit then H.fail("getmaxqueue() is not " .. limit) end
    bounded = false
    C.maxqueue_changes = C.maxqueue_changes + 1
  end
end

local function step(resolve, gc)
  local ran = 0
  if mode == 0 then
    ran = run_poll(64)
  elseif mode == 1 then
    ran = run_dispatch(random() < 0.5 and random(0, 64) or nil)
  elseif mode == 2 then
    ran = step_wait()
  elseif mode == 3 then
    ran = step_fd()
  else
    ran = step_udp()
  end
  check_limit()
  if nheld > 0 and random() < resolve then
    local k = random(nheld)
    local h = held[k]
    held[k] = held[nheld]
    held[nheld] = nil
    nheld = nheld - 1
    if random() < 0.5 then
      check(h[2], h[1](h[2]))
    end
  end
  if gc then collectgarbage() end
  local r = raised + H.decraised() - decraised0
  if r ~= handled + caught then
    H.fail(("%d errors raised, %d reached the handler, %d a caller"):format(r, handled, caught))
  end
  return ran, maxq
end

-- mode: 0 poll, 1 dispatch, 2 wait, 3 getfd, 4 UDP (port, co: coalesce);
-- h: set the error handler
local function setmode(m, port, co, h)
  mode = m
  armed = false
  if m == 4 then
    if co then dss.setport(port, "coalesce")
    elseif random() < 0.5 then dss.setport(port)
    else dss.setport(port, "each") end
    if dss.getport() ~= port then H.fail("getport() is not " .. port) end
  elseif dss.setport(0) ~= 1 then
    H.fail("setport(0) did not return 1")
  end
  coalesce = m == 4 and co
  if h then dss.seterrorhandler(handler)
  elseif random() < 0.5 then dss.seterrorhandler(nil)
  else dss.seterrorhandler() end
  has_handler = h
end

local function report()
  C.raised = raised
  C.fd = fd or -1
  return C
end

-- unreg during decode: the queue unbounded, so that a flood is queued whole
local function unbound()
  limit = 0
  bounded = false
  dss.setmaxqueue(0)
end

-- close with a draining finalizer -------------------------------------------
-- Objects whose __gc runs a plan during lua_close; anchored here, so that
-- only lua_close collects them.
local STOPPED = "not started, or already stopped"
local fins = {}

local function fin_check(ok, e)
  if not ok and not (type(e) == "string" and (e:find(STOPPED, 1, true) or ours(e))) then
    H.fail("finalizer: " .. tostring(e))
  end
end

local function answer_held()
  for k = nheld, 1, -1 do
    if random() < 0.5 then
      local h = held[k]
      held[k] = held[nheld]
      held[nheld] = nil
      nheld = nheld - 1
      check(h[2], h[1](h[2]))
    end
  end
end

local function dispatch_all()
  for _ = 1, 64 do
    if run_dispatch() == 0 or dss.queuesize() == 0 then return end
  end
end

-- plan: a letter a step. p: poll until the queue is empty; d: dispatch
-- until it is; D: dispatch(n) once; h: answer some held waiting-thread
-- callbacks; r: register a new client (H.reglate). Errors are caught: a
-- state already stopped says so, and the stress errors are expected.
local function runplan(plan)
  H.finrun()
  for i = 1, #plan do
    local c = plan:sub(i, i)
    if c == "p" then fin_check(pcall(run_poll, 4000))
    elseif c == "d" then fin_check(pcall(dispatch_all))
    elseif c == "D" then fin_check(pcall(run_dispatch, random(1, 16)))
    elseif c == "h" then fin_check(pcall(answer_held))
    elseif c == "r" then fin_check(pcall(H.reglate))
    end
  end
end

local setgc
if newproxy then  -- 5.1, LuaJIT
  setgc = function(f)
    local u = newproxy(true)
    getmetatable(u).__gc = f
    return u
  end
else
  setgc = function(f) return setmetatable({}, { __gc = f }) end
end

local function arm(plan)
  fins[#fins + 1] = setgc(function() runplan(plan) end)
end

return cb, step, setmode, report, dss, arm, unbound
)LUA";

}  // namespace stress
