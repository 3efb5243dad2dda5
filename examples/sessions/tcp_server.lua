-- tcp_server.lua [SESSIONS [CLIENTS [LINES]]] -- a TCP echo server whose
-- connections are served by fibers spread over sessions: SESSIONS worker
-- sessions (default 2) each listen on the same port (SO_REUSEPORT: the
-- kernel spreads the connections) and serve each connection in a fiber of
-- their own. The main state runs CLIENTS client fibers (default 40), each
-- sending LINES lines (default 5) and checking every echo. A worker stops
-- when the main state says so on a channel: its accept is a choice between
-- the next connection and that message.
--
-- Prints one summary line; exits 0 only if every echo matched.

local session = require "darksidesync.session"
local channel = require "darksidesync.channel"
local fibers = require "darksidesync.fibers"
local waitgroup = require "darksidesync.fibers.waitgroup"
local fsocket = require "darksidesync.fibers.socket"
local socket = require "socket"

local nsessions = tonumber(arg[1]) or 2
local clients = tonumber(arg[2]) or 40
local lines = tonumber(arg[3]) or 5

-- A port for everyone: bound here (not listening: no connection comes
-- here) until every worker listens on it too.
local probe = socket.tcp4()
assert(probe:setoption("reuseaddr", true))
assert(probe:setoption("reuseport", true))
assert(probe:bind("127.0.0.1", 0))
local _, port = probe:getsockname()

-- A worker: listens, serves connections in fibers until told to quit, and
-- returns how many it served.
local function worker(port, ready, quit)
  local fibers = require "darksidesync.fibers"
  local op = require "darksidesync.fibers.op"
  local fsocket = require "darksidesync.fibers.socket"
  local socket = require "socket"
  local raw = socket.tcp4()
  assert(raw:setoption("reuseaddr", true))
  assert(raw:setoption("reuseport", true))
  assert(raw:bind("127.0.0.1", port))
  assert(raw:listen(128))
  local srv = fsocket.wrap(raw)
  ready:put(true)
  local served = 0
  while true do
    local conn = op.choice(srv:accept_op(), quit:get_op():wrap(function() return nil end)):perform()
    if not conn then break end
    served = served + 1
    fibers.spawn(function()
      while true do
        local line = conn:receive("*l")
        if not line or not conn:send(line .. "\n") then break end
      end
      conn:close()
    end)
  end
  srv:close()
  return served
end

local ready, quit = channel.new(nsessions), channel.new(0)
local workers = {}
for i = 1, nsessions do workers[i] = session.spawn(worker, port, ready, quit) end
for _ = 1, nsessions do ready:get() end
probe:close()

local matched, failures = 0, 0
fibers.main(function()
  local wg = waitgroup.new()
  wg:add(clients)
  for i = 1, clients do
    fibers.spawn(function()
      local c, err = fsocket.connect("127.0.0.1", port)
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
  fibers.stop()
end)

for _ = 1, nsessions do quit:put(true) end
local served, busy = 0, 0
for i = 1, nsessions do
  local n, err = workers[i]:join()
  if not n then error(err, 0) end
  served = served + n
  if n > 0 then busy = busy + 1 end
end
print(("%d clients, %d lines echoed, %d connections served by %d sessions"):format(
  clients, matched, served, nsessions))
if busy < nsessions then print(("(only %d sessions got connections)"):format(busy)) end
if not (matched == clients * lines and failures == 0 and served == clients) then
  error(("%d of %d echoes matched, %d failures, %d served"):format(
    matched, clients * lines, failures, served), 0)
end
