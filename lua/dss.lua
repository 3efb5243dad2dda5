--- dss -- the LuaSocket helper of darksidesync, as 1.0 shipped it.
--
-- Lets a `socket.select` or Copas loop sleep until a background thread
-- delivers something: darksidesync sends a UDP datagram to a socket this
-- module binds on localhost, and the handler reads one datagram and runs one
-- queued item.
--
--     local copas = require "copas"
--     local dss = require "dss"
--     copas.addserver(dss.getsocket(), function(skt)
--       skt = copas.wrap(skt)
--       local handler = dss.gethandler()
--       while true do handler(skt) end
--     end)
--     copas.loop()
--
-- Works on Lua 5.1-5.4 and LuaJIT. On plain Lua 5.1, where a callback that
-- yields (as Copas callbacks may) cannot run under pcall, callbacks run under
-- coxpcall when it is installed.
local socket = require "socket"
local darksidesync = require "darksidesync"

local unpack = unpack or table.unpack

local dss = {}

local FIRST_PORT, LAST_PORT = 50000, 50200

-- xpcall(f, handler, ...) with arguments, on every version; yield-safe on
-- 5.1 through coxpcall when available.
local xpcall_args
do
  local xp = xpcall
  if _VERSION == "Lua 5.1" and not rawget(_G, "jit") then
    local okay, coxpcall = pcall(require, "coxpcall")
    if okay and type(coxpcall) == "table" and coxpcall.xpcall then
      xp = coxpcall.xpcall
    elseif rawget(_G, "coxpcall") then
      xp = rawget(_G, "coxpcall")
    end
  end
  xpcall_args = function(f, handler, ...)
    local n, args = select("#", ...), { ... }
    return xp(function() return f(unpack(args, 1, n)) end, handler)
  end
end

-- The default error handler: prints the message with a traceback.
local function default_errorhandler(msg)
  print(debug.traceback("dss: error in a darksidesync callback: " .. tostring(msg), 2))
end

local errorhandler = default_errorhandler
local skt, port

--- Returns the UDP socket darksidesync notifies, creating it on first use.
-- It is bound to localhost on the first free port from 50000 to 50200, and
-- darksidesync.setport is called with that port.
-- @return the LuaSocket UDP socket and its port, or nil and an error message
function dss.getsocket()
  if skt then return skt, port end
  local lasterr = "no port tried"
  for p = FIRST_PORT, LAST_PORT do
    local s, err = socket.udp()
    if not s then return nil, "dss: cannot create a UDP socket: " .. tostring(err) end
    local okay
    okay, err = s:setsockname("127.0.0.1", p)
    if okay then
      darksidesync.setport(p)
      skt, port = s, p
      return skt, port
    end
    s:close()
    lasterr = err
  end
  return nil, ("dss: no free UDP port from %d to %d (%s)"):format(FIRST_PORT, LAST_PORT,
                                                               tostring(lasterr))
end

-- Reads one datagram, polls once, and runs the callback (protected).
local function handler(s)
  s:receive(8192)
  local _, callback, args = darksidesync.poll()
  if callback then
    xpcall_args(callback, errorhandler, unpack(args))
  end
end

--- Returns the socket handler: `handler(skt)` reads one datagram from skt,
-- calls darksidesync.poll() once and, if that returned a callback, calls it
-- with its arguments in protected mode; an error goes to the error handler.
function dss.gethandler()
  return handler
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
