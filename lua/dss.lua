--- dss -- the LuaSocket helper of darksidesync, as 1.0 shipped it, with the
-- coalesced mode of "Beyond 1.0".
--
-- Lets a `socket.select` or Copas loop sleep until a background thread
-- delivers something: darksidesync sends UDP datagrams to a socket this
-- module binds on localhost, and the handler reads a datagram and runs
-- queued items.
--
--     local copas = require "copas"
--     local dss = require "dss"
--     copas.addserver(dss.getsocket(), function(skt)   -- or getsocket("coalesce")
--       skt = copas.wrap(skt)
--       local handler = dss.gethandler()
--       while true do handler(skt) end
--     end)
--     copas.loop()
--
-- Two modes, picked by getsocket(mode):
--   "each"      (the default, 1.0's) one datagram per delivered item; the
--               handler reads one datagram and runs one item.
--   "coalesce"  one datagram when the queue goes from empty to non-empty;
--               the handler reads it and runs items until the queue is empty.
-- In both, the handler returns only when the queue is empty or a datagram is
-- waiting on the socket (so the loop calls it again): no item is left queued
-- with nothing to wake the loop up, even when the kernel dropped datagrams.
--
-- By default callbacks are called from Lua (poll, then the callback under
-- xpcall), never from inside darksidesync.dispatch: a callback may yield, as
-- Copas callbacks do; gethandler("dispatch") trades that for speed. Works on Lua 5.1-5.4 and LuaJIT. On plain Lua 5.1, where a
-- callback that yields cannot run under pcall, callbacks run under coxpcall
-- when it is installed.
local socket = require "socket"
local darksidesync = require "darksidesync"
local reader = require "darksidesync.reader"

local unpack = unpack or table.unpack

local dss = {}

local FIRST_PORT, LAST_PORT = 50000, 50200

-- The most items one handler call runs. Past it the handler sends its socket
-- a datagram itself and returns, so that a flood of items cannot keep a Copas
-- loop from running its other coroutines.
local BATCH = 1000

local MODES = { each = true, coalesce = true }

-- xpcall(f, handler, ...) with arguments, on every version; yield-safe on
-- 5.1 through coxpcall when available. Lua 5.2+ and LuaJIT pass the
-- arguments themselves; plain 5.1 needs a closure per call.
local xpcall_args
do
  if _VERSION ~= "Lua 5.1" or rawget(_G, "jit") then
    xpcall_args = xpcall
  else
    local xp = xpcall
    local okay, coxpcall = pcall(require, "coxpcall")
    if okay and type(coxpcall) == "table" and coxpcall.xpcall then
      xp = coxpcall.xpcall
    elseif rawget(_G, "coxpcall") then
      xp = rawget(_G, "coxpcall")
    end
    xpcall_args = function(f, handler, ...)
      local n, args = select("#", ...), { ... }
      return xp(function() return f(unpack(args, 1, n)) end, handler)
    end
  end
end

-- The default error handler: prints the message with a traceback.
local function default_errorhandler(msg)
  print(debug.traceback("dss: error in a darksidesync callback: " .. tostring(msg), 2))
end

local errorhandler = default_errorhandler
local skt, port
local current = "each" -- the mode the handler follows (see getsocket)

-- The LuaSocket socket under s: s itself, or the socket copas.wrap(s)
-- wrapped (Copas keeps it in the field `socket`).
local function rawsocket(s)
  if type(s) == "table" and s.socket ~= nil then return s.socket end
  return s
end

-- A poller (darksidesync.poller) holding raw's fd, per socket: the
-- per-item handler asks whether a datagram waits after every item it runs,
-- and poller:wait(0) is one epoll_wait where socket.select also builds its
-- argument and result tables (issue 18: 2.8 against 5.3 us a call on the
-- bench machine; the Lua thread's CPU per item in per-item mode went from
-- 4.6 to 3.8 us). Weak keys: a socket collected takes its poller with it.
local pollers = setmetatable({}, { __mode = "k" })
local POLLIN = darksidesync.POLL and darksidesync.POLL.IN
local events = {}

-- raw's poller, made on first use; nil where there is none to make (no
-- poller in this build, no fd, or it failed): socket.select then.
local function pollerof(raw)
  local fd = raw.getfd and raw:getfd()
  if not (POLLIN and darksidesync.poller and type(fd) == "number" and fd >= 0) then
    return nil
  end
  local e = pollers[raw]
  if e and e.fd == fd then return e.poller or nil end
  if e and e.poller then e.poller:close() end  -- the socket's fd changed
  local p = darksidesync.poller()
  if p and not p:add(fd, POLLIN, false) then  -- level-triggered, not one-shot
    p:close()
    p = nil
  end
  pollers[raw] = { fd = fd, poller = p or false }  -- false: failed, not retried
  return p
end

-- Whether a datagram is waiting on raw (a LuaSocket socket), without waiting.
local function readable(raw)
  local p = pollerof(raw)
  if p then
    local n = p:wait(0, events)
    if n then return n > 0 end
  end
  local r = socket.select({ raw }, nil, 0)
  return r[1] ~= nil
end

-- Sends raw (or, failing that, the helper's socket) a datagram of its own,
-- so that the loop calls the handler again for the items still queued.
local function wake(raw)
  local ip, p
  if raw ~= nil and raw.getsockname then ip, p = raw:getsockname() end
  local from = raw
  if not (ip and p and raw.sendto) then
    if not skt then return end
    from, ip, p = skt, "127.0.0.1", port
  end
  from:sendto(" " .. darksidesync.queuesize(), ip, tonumber(p))
end

-- Polls one item and runs its callback, protected: an error raised by the
-- callback, or by a client's decoder (poll raises it), goes to the error
-- handler.
local function runone()
  local okay, _, callback, args = xpcall(darksidesync.poll, errorhandler)
  if okay and callback then
    xpcall_args(callback, errorhandler, unpack(args))
  end
end

-- Runs up to k queued items with darksidesync.dispatch, protected: an error
-- (a callback's or a decoder's) goes to darksidesync's error handler when
-- one is set, else to ours -- called at the point of the error, as a message
-- handler -- and the items after it still run. Returns how many items it
-- took (at least 1).
local function dispatchsome(k)
  local _, okay, ran = reader.dispatchwith(errorhandler, k)
  -- Not okay: the error handler itself raised (as with poll's xpcall, that
  -- error is dropped).
  if okay and ran > 0 then return ran end
  return 1
end

-- The handlers: see dss.gethandler. `run(k)` runs up to k items and returns
-- how many it took.
local function makehandler(run)
  return function(s)
    local raw = rawsocket(s)
    s:receive(8192)
    local n = 0
    if current == "coalesce" then
      -- Read the other datagrams already there first: the drain below runs
      -- their items. Reading them after the drain could eat the datagram of
      -- an item queued after it.
      while n < BATCH and readable(raw) do
        raw:receive(8192)
        n = n + 1
      end
      n = 0
      while darksidesync.queuesize() > 0 do
        if n >= BATCH then wake(raw); return end
        n = n + run(BATCH - n)
      end
    else
      -- 1.0: one datagram, one item.
      n = run(1)
      -- Items left but no datagram waiting: the kernel dropped some (its
      -- buffer was full), or an item is queued and its datagram not sent
      -- yet. Run them rather than leave them stranded; a late datagram then
      -- finds the queue empty and runs nothing.
      while darksidesync.queuesize() > 0 and not readable(raw) do
        if n >= BATCH then wake(raw); return end
        n = n + run(1)
      end
    end
  end
end

local function pollsome()
  runone()
  return 1
end

local handlers = {
  poll = makehandler(pollsome),
  dispatch = makehandler(dispatchsome),
}

--- Returns the UDP socket darksidesync notifies, creating it on first use.
-- It is bound to localhost on the first free port from 50000 to 50200, and
-- darksidesync.setport is called with that port and the mode.
--
-- mode: "each" (one datagram per item, 1.0's) or "coalesce" (one datagram
-- per empty-to-non-empty transition of the queue). Omitted (or nil): "each"
-- on the first call; a later call returns the socket and changes nothing, as
-- in 1.0. Given on a later call: darksidesync.setport(port, mode) is called
-- again, and the handler follows the new mode from its next call on. Each
-- time setport is called with items already queued, the helper sends its
-- socket one datagram itself, so that the loop wakes up for them.
-- @param mode nil, "each" or "coalesce"
-- @return the LuaSocket UDP socket and its port, or nil and an error message
function dss.getsocket(mode)
  if mode ~= nil then
    local t = type(mode)
    if t ~= "string" and t ~= "number" then
      error(("bad argument #1 to 'getsocket' (string expected, got %s)"):format(t), 2)
    end
    if not MODES[mode] then
      error(("bad argument #1 to 'getsocket' (invalid option '%s')"):format(tostring(mode)), 2)
    end
  end
  if skt then
    if mode ~= nil then
      darksidesync.setport(port, mode)
      current = mode
      if darksidesync.queuesize() > 0 then wake(skt) end
    end
    return skt, port
  end
  mode = mode or "each"
  local lasterr = "no port tried"
  for p = FIRST_PORT, LAST_PORT do
    local s, err = socket.udp()
    if not s then return nil, "dss: cannot create a UDP socket: " .. tostring(err) end
    local okay
    okay, err = s:setsockname("127.0.0.1", p)
    if okay then
      darksidesync.setport(p, mode)
      skt, port, current = s, p, mode
      if darksidesync.queuesize() > 0 then wake(skt) end
      return skt, port
    end
    s:close()
    lasterr = err
  end
  return nil, ("dss: no free UDP port from %d to %d (%s)"):format(FIRST_PORT, LAST_PORT,
                                                               tostring(lasterr))
end

--- Returns the socket handler, `handler(skt)`, for the helper's socket (or
-- copas.wrap of it). It follows the mode of the latest getsocket call, at
-- each call:
--   "each":     reads one datagram, runs one item; then, while items are
--               queued and no datagram is waiting, runs those too.
--   "coalesce": reads one datagram, then the others already waiting, and
--               runs items until the queue is empty.
-- It runs at most 1000 items per call: past that it sends its socket a
-- datagram and returns. So it returns only with the queue empty or a
-- datagram waiting. An error, raised by a callback or by a client's
-- decoder, goes to the error handler (dss.seterrorhandler) and the items
-- after it still run.
--
-- How items run, by `how`:
--   "poll" (the default): each item is taken with darksidesync.poll() and
--               its callback called from Lua in protected mode, so that a
--               callback may yield (as Copas callbacks do).
--   "dispatch": items run through darksidesync.dispatch(), callbacks called
--               straight from C with no table per item: several times
--               faster, but a callback must not yield.
-- @param how nil, "poll" or "dispatch"
-- @return the handler
function dss.gethandler(how)
  if how == nil then how = "poll" end
  local h = handlers[how]
  if type(how) ~= "string" or not h then
    error(("bad argument #1 to 'gethandler' (\"poll\" or \"dispatch\" expected, got %s)")
          :format(type(how) == "string" and ("'" .. how .. "'") or type(how)), 2)
  end
  return h
end

--- The number of items queued in darksidesync (darksidesync.queuesize()).
function dss.queuesize()
  return darksidesync.queuesize()
end

--- Sets the function that receives errors raised by callbacks run by the
-- handler. It is called as an xpcall message handler (so debug.traceback
-- works in it). nil restores the default, which prints the message with a
-- traceback.
-- @param f a function, or nil
function dss.seterrorhandler(f)
  if f ~= nil and type(f) ~= "function" then
    error(("bad argument #1 to 'seterrorhandler' (function or nil expected, got %s)")
          :format(type(f)), 2)
  end
  errorhandler = f or default_errorhandler
end

return dss
