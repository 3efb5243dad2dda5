--- darksidesync.copas -- darksidesync in a Copas loop.
--
-- One call, `addreader()`, adds a Copas thread that waits for
-- darksidesync's wake-up fd to be readable and then runs at most `max`
-- queued items (default 1000) with `darksidesync.dispatch(max)`.
--
--     local copas = require "copas"
--     local reader = require("darksidesync.copas").addreader()
--     copas.loop()
--
-- How: Copas 1.2 waits for a socket with `copas.receive(skt)`, which calls
-- `skt:receive()` and, on "timeout", parks the thread in its read set until
-- `socket.select` finds the socket readable. The reader is such an object:
-- `getfd()` is darksidesync's fd, `receive()` answers "timeout" until Copas
-- resumes the thread for the fd. No UDP socket, no port, and
-- `darksidesync.setport` is left alone (so this coexists with the `dss`
-- helper). After each batch the
-- thread parks again even when items remain (the fd is level-triggered,
-- readable exactly while the queue is non-empty, so the next `copas.step`
-- resumes it): Copas serves its other sockets between batches.
--
-- Callbacks run inside `darksidesync.dispatch` and must not yield: a
-- callback that wants Copas I/O (or `copas.sleep` on newer Copas) starts a
-- thread for it with `copas.addthread`. For callbacks that yield themselves,
-- use the `dss` helper's handler instead (`dss.getsocket("coalesce")` with
-- `dss.gethandler()`: it polls items and calls callbacks from Lua).
--
-- Errors: a callback's error goes to darksidesync's error handler
-- (`darksidesync.seterrorhandler`) if one is set, else to the `onerror`
-- option (default: stderr, with a traceback), called at the point of the
-- error; the items after it still run (see darksidesync.reader). The
-- thread never dies of a callback's error. Only an error raised by
-- `onerror` itself ends it (Copas prints it, as for any of its threads, and
-- the reader stops).
--
-- Tested with Copas 1.2 (Debian lua-copas: Lua 5.1, 5.2 and LuaJIT).
local reader = require "darksidesync.reader"

local M = {}

local Reader = setmetatable({}, { __index = reader.methods })
Reader.__index = Reader

--- Adds a darksidesync reader to the Copas loop: a Copas thread that runs
-- at most `max` items each time darksidesync's fd is readable, until
-- `stop()`.
-- @param opts nil or a table: `max` (items per wake-up, a positive integer,
--   default 1000), `onerror` (receives a callback's error when no
--   darksidesync error handler is set; default: prints it on stderr), `copas` (the Copas module, default `require "copas"`)
-- @return the reader: `stop()`, `isactive()`, `dispatch()`; fields `fd`,
--   `max`, `wakes`, `ran`, `errors`, `thread` (the Copas coroutine)
function M.addreader(opts)
  local copas = type(opts) == "table" and opts.copas or require "copas"
  local self = setmetatable(reader.new(opts, "darksidesync.copas", "addreader"), Reader)
  self.stopped = false
  -- The first receive parks the thread (it runs inside addthread, outside
  -- the loop, until its first yield); so does the first one after a batch.
  self.park = true
  self.thread = copas.addthread(function()
    while true do
      copas.receive(self) -- returns once the fd is readable, or stopped
      if self.stopped then return end
      self:dispatch()
      self.park = true
    end
  end)
  return self
end

--- For socket.select (through Copas): darksidesync's fd.
-- @return the fd
function Reader:getfd()
  return self.fd
end

--- For socket.select (through Copas): true once the reader is stopped (so
-- that select returns it at once and Copas resumes its thread, which ends),
-- false before (the fd tells when there is work).
-- @return a boolean
function Reader:dirty()
  return self.stopped
end

--- For copas.receive: nil and "closed" once stopped (the thread ends); nil
-- and "timeout" (park the thread in the read set, until select finds the fd
-- readable) at the first call and right after each batch; otherwise true
-- (run a batch: the thread was resumed because the fd is readable).
-- @return true, or nil and "timeout" or "closed"
function Reader:receive()
  if self.stopped then return nil, "closed" end
  if self.park then
    self.park = false
    return nil, "timeout"
  end
  return true
end

--- For Copas (it closes a thread's socket when the thread ends, with
-- copas.autoclose): stops the reader.
function Reader:close()
  self:stop()
end

--- Stops the reader: its thread ends in the next `copas.step` (the reader
-- reports itself dirty to select, so Copas resumes the thread at once).
-- Items stay queued. Calling it again does nothing.
function Reader:stop()
  self.stopped = true
end

--- Whether the reader is running (not stopped, its thread not dead).
-- @return a boolean
function Reader:isactive()
  return not self.stopped and coroutine.status(self.thread) ~= "dead"
end

return M
