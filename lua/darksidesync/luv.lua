--- darksidesync.luv -- darksidesync in a luv (libuv) loop.
--
-- Watches darksidesync's wake-up fd with a `uv_poll` handle; each time libuv
-- reports it readable, runs at most `max` queued items (default 1000) with
-- `darksidesync.dispatch(max)`. The fd is level-triggered (readable exactly
-- while the queue is non-empty) and so is libuv's poll: when a batch leaves
-- items queued, the handle fires again at the loop's next turn, after the
-- loop's timers and other handles ran.
--
--     local uv = require "luv"
--     local watcher = require("darksidesync.luv").start()
--     local timer = uv.new_timer()
--     timer:start(100, 100, function() print("tick") end)
--     uv.run()              -- items' callbacks run inside the loop
--     -- elsewhere, to end: watcher:close(); timer:close()
--
-- A started watcher keeps `uv.run()` running (it is an active handle);
-- `stop()` or `close()` lets the loop end once nothing else is active.
-- One started watcher at a time: libuv polls an fd with one handle only
-- (`new` raises while another watcher is started, `start` likewise).
--
-- Errors: a callback's error goes to darksidesync's error handler
-- (`darksidesync.seterrorhandler`) if one is set, else to the `onerror`
-- option (default: stderr, with a traceback), called at the point of the
-- error; the items after it still run (see darksidesync.reader). No
-- callback's error escapes into libuv. Only an error raised by `onerror`
-- itself does, like an error in any luv callback (luv's default: print it
-- and exit the process). A poll error reported by libuv (the fd closed
-- under it) stops the watcher and goes to `onerror`.
--
-- Works on Lua 5.1-5.4 and LuaJIT (Debian: lua-luv).
local reader = require "darksidesync.reader"

local M = {}

local Watcher = setmetatable({}, { __index = reader.methods })
Watcher.__index = Watcher

-- The watcher started now, if any: libuv malfunctions with two active poll
-- handles on one fd (luv runs one loop per Lua state).
local started = nil

--- A new watcher, not started.
-- @param opts nil or a table: `max` (items per wake-up, a positive integer,
--   default 1000), `onerror` (receives a callback's error when no
--   darksidesync error handler is set, and poll errors; default: prints it
--   on stderr), `uv` (the luv module, default `require "luv"`).
-- Raises "darksidesync.luv: another watcher is started (libuv polls an fd
-- with one handle only)" while another watcher is started, and
-- "darksidesync.luv: cannot watch the fd: <libuv's error>" when libuv
-- refuses the handle for another reason.
-- @return the watcher: methods `start`, `stop`, `close`, `isactive`,
--   `dispatch`; fields `handle` (the uv_poll handle), `fd`, `max`, `wakes`,
--   `ran`, `errors`
function M.new(opts)
  local uv = type(opts) == "table" and opts.uv or require "luv"
  local self = reader.new(opts, "darksidesync.luv", "new")
  setmetatable(self, Watcher)
  -- Checked first: libuv would refuse the handle (EEXIST), and luv then
  -- leaks the memory it allocated for it.
  if started and started:isactive() then
    error("darksidesync.luv: another watcher is started (libuv polls an fd with one handle only)", 2)
  end
  local handle, err = uv.new_poll(self.fd)
  if not handle then -- e.g. EEXIST: a handle of another luv on the fd
    error("darksidesync.luv: cannot watch the fd: " .. tostring(err), 2)
  end
  self.handle = handle
  self.closed = false
  return self
end

--- A new watcher, started: `M.new(opts):start()`.
-- @param opts as for `new`
-- @return the watcher
function M.start(opts)
  return M.new(opts):start()
end

--- Starts watching (again). Raises when the watcher is closed, or when
-- another watcher is started (stop or close that one first).
-- @return the watcher
function Watcher:start()
  if self.closed then error("darksidesync.luv: the watcher is closed", 2) end
  if started and started ~= self and started:isactive() then
    error("darksidesync.luv: another watcher is started (libuv polls an fd with one handle only)", 2)
  end
  local okay, err = self.handle:start("r", function(err)
    if err then
      self:stop()
      self.errors = self.errors + 1
      self.onerror("darksidesync.luv: poll error: " .. tostring(err))
      return
    end
    self:dispatch()
  end)
  if not okay then error("darksidesync.luv: cannot start the watcher: " .. tostring(err), 2) end
  started = self
  return self
end

--- Stops watching; `start` may start it again. Items stay queued.
-- @return the watcher
function Watcher:stop()
  if not self.closed then self.handle:stop() end
  if started == self then started = nil end
  return self
end

--- Stops watching for good and closes the uv_poll handle (libuv finishes
-- closing it in the loop's next turn). Items stay queued; darksidesync's fd
-- stays open (it is darksidesync's). Calling it again does nothing.
function Watcher:close()
  if self.closed then return end
  self.closed = true
  self.handle:stop()
  self.handle:close()
  if started == self then started = nil end
end

--- Whether the watcher is watching (started, not stopped or closed).
-- @return a boolean
function Watcher:isactive()
  return not self.closed and self.handle:is_active() == true
end

return M
