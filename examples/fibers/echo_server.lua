-- echo_server.lua [CLIENTS [LINES]] -- a TCP echo server and its clients in
-- one process, all fibers over darksidesync.fibers.socket: one fiber
-- accepting, one fiber per connection echoing lines, and CLIENTS client
-- fibers (default 1000) each connecting, sending LINES lines (default 10)
-- one at a time and checking every echo. Prints one summary line; exits 0
-- only if every echo matched.
--
-- Each client costs two fds (its socket and the server's): when the fd
-- limit (ulimit -n) is too low for CLIENTS, the count is scaled down to fit
-- and a first line says so.

local fibers = require "darksidesync.fibers"
local waitgroup = require "darksidesync.fibers.waitgroup"
local socket = require "darksidesync.fibers.socket"
local dss = require "darksidesync"

local clients = tonumber(arg[1]) or 1000
local lines = tonumber(arg[2]) or 10

-- The fd limit this process has (a child shell inherits it).
local function fd_limit()
  local p = io.popen("ulimit -n 2>/dev/null")
  local out = p and p:read("*a") or ""
  if p then p:close() end
  if out:match("unlimited") then return math.huge end
  return tonumber(out:match("%d+"))
end

local limit = fd_limit()
local spare = 32 -- stdio, the poller, darksidesync's fd, the listener
if limit and 2 * clients + spare > limit then
  local fit = math.floor((limit - spare) / 2)
  print(("fd limit %d: %d clients instead of %d"):format(limit, fit, clients))
  clients = fit
end

local matched, failures = 0, 0

fibers.main(function()
  local srv = assert(socket.bind("127.0.0.1", 0, 1024))
  local _, port = srv:getsockname()

  -- The server: one fiber per connection, echoing lines until the client
  -- closes.
  fibers.spawn(function()
    while true do
      local conn = srv:accept()
      if not conn then return end -- the listener closed
      fibers.spawn(function()
        while true do
          local line = conn:receive("*l")
          if not line or not conn:send(line .. "\n") then break end
        end
        conn:close()
      end)
    end
  end)

  local t0 = dss.monotime()
  local wg = waitgroup.new()
  wg:add(clients)
  for i = 1, clients do
    fibers.spawn(function()
      local c, err = socket.connect("127.0.0.1", port)
      if not c then
        failures = failures + 1
        io.stderr:write("client ", i, ": ", tostring(err), "\n")
      else
        for j = 1, lines do
          local msg = ("client %d says %d"):format(i, j)
          c:send(msg .. "\n")
          if c:receive("*l") == msg then matched = matched + 1 else failures = failures + 1 end
        end
        c:close()
      end
      wg:done()
    end)
  end
  wg:wait()
  local dt = dss.monotime() - t0
  srv:close()
  print(("%d clients, %d lines echoed, %d mismatched, %.2f seconds"):format(
    clients, matched, clients * lines - matched, dt))
  fibers.stop()
end)

-- Not os.exit: it would skip closing the Lua state (LuaJIT's takes no
-- "close" flag), which leak checkers report. An error exits with 1.
if not (matched == clients * lines and failures == 0) then
  error(("%d of %d echoes matched, %d failures"):format(matched, clients * lines, failures), 0)
end
