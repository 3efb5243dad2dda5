--- darksidesync.cqueues -- darksidesync in a cqueues controller.
--
-- `new()` returns a pollable object (`pollfd` is darksidesync's wake-up fd,
-- `events` is "r"): a coroutine in a controller waits for items with
-- `cqueues.poll(reader)`, then runs at most `max` of them (default 1000)
-- with `reader:dispatch()`. `attach(cq)` wraps that loop in a coroutine of
-- controller `cq` for you; its `stop()` ends the coroutine, so that
-- `cq:loop()` returns once the controller's other coroutines are done.
--
--     local cqueues = require "cqueues"
--     local cq = cqueues.new()
--     local reader = require("darksidesync.cqueues").attach(cq)
--     cq:wrap(function()
--       for _ = 1, 10 do cqueues.sleep(0.1); print("tick") end
--       reader:stop()
--     end)
--     assert(cq:loop())
--
-- The fd is level-triggered (readable exactly while the queue is
-- non-empty): after a batch that left items queued, the next poll returns
-- at once, in the controller's next step, so the controller's other
-- coroutines run between batches.
--
-- Errors: a callback's error goes to darksidesync's error handler
-- (`darksidesync.seterrorhandler`) if one is set, else to the `onerror`
-- option (default: stderr, with a traceback), called at the point of the
-- error; the items after it still run (see darksidesync.reader). The
-- attached coroutine never dies of a callback's error, so `cq:loop()` does
-- not return with one. Only an error raised by `onerror` itself ends the
-- coroutine, and `cq:loop()` returns it, as for any coroutine.
--
-- Works on Lua 5.1-5.4 and LuaJIT (Debian: lua-cqueues).
local reader = require "darksidesync.reader"

local M = {}

local Reader = setmetatable({}, { __index = reader.methods })
Reader.__index = Reader

--- A new pollable reader (not attached to a controller).
-- @param opts nil or a table: `max` (items per dispatch call, a positive
--   integer, default 1000), `onerror` (receives a callback's error when no
--   darksidesync error handler is set; default: prints it on stderr)
-- @return the reader: pollable (`pollfd()`, `events()`, `timeout()`), with
--   `dispatch()` (runs at most max items; returns how many ran, or nil and
--   the error) and `stop()`; fields `fd`, `max`, `wakes`, `ran`, `errors`
function M.new(opts)
  local self = setmetatable(reader.new(opts, "darksidesync.cqueues", "new"), Reader)
  self.stopped = false
  return self
end

--- A reader, with a coroutine on controller `cq` that waits for items and
-- dispatches them until `stop()` is called.
-- @param cq a cqueues controller (`cqueues.new()`)
-- @param opts as for `new`
-- @return the reader
function M.attach(cq, opts)
  if (type(cq) ~= "userdata" and type(cq) ~= "table") or not cq.wrap then
    error(("bad argument #1 to 'attach' (cqueues controller expected, got %s)"):format(type(cq)), 2)
  end
  local cqueues = require "cqueues"
  local condition = require "cqueues.condition"
  local self = setmetatable(reader.new(opts, "darksidesync.cqueues", "attach"), Reader)
  self.stopped = false
  self.cond = condition.new()
  cq:wrap(function()
    while not self.stopped do
      cqueues.poll(self, self.cond)
      if self.stopped then break end
      self:dispatch()
    end
  end)
  return self
end

--- For cqueues: darksidesync's wake-up fd.
-- @return the fd
function Reader:pollfd()
  return self.fd
end

--- For cqueues: "r", readable.
-- @return "r"
function Reader:events()
  return "r"
end

--- For cqueues: no timeout.
-- @return nil
function Reader:timeout()
  return nil
end

--- Ends the attached coroutine (at once if it is waiting; after its batch
-- if it is dispatching). Items stay queued. Calling it again, or on a reader
-- from `new`, does nothing but mark it stopped.
function Reader:stop()
  self.stopped = true
  if self.cond then self.cond:signal() end
end

return M
