--- darksidesync.reader -- what the event-loop helpers share: a reader of
-- darksidesync's wake-up fd that drains the queue a bounded batch at a time.
--
-- The loop helpers (darksidesync.luv, .cqueues, .copas, .select) are built on
-- it; use it directly for a loop of your own (an epoll or poll binding, a
-- fiber scheduler):
--
--     local reader = require("darksidesync.reader").new { max = 500 }
--     -- when reader.fd is readable:
--     reader:dispatch()
--
-- How a reader works:
--
-- * `darksidesync.getfd()` is readable exactly while the queue is non-empty
--   (level-triggered; darksidesync resets it when poll or dispatch empties
--   the queue, never the reader). The reader never reads or closes it.
-- * `reader:dispatch()` runs at most `max` items (`darksidesync.dispatch(max)`)
--   and returns. When items remain, the fd is still readable, so the loop
--   comes back at its next turn, after its other work (timers, sockets): a
--   flood cannot starve the loop.
-- * Errors (a callback's, or a client decoder's): when a handler is set
--   with `darksidesync.seterrorhandler`, it gets them, as `dispatch` does
--   it. With none set, the reader's `onerror` option gets them instead
--   (default: a line on stderr with a traceback), the same way: called at the
--   point of the error (so `debug.traceback` in it shows where), and the
--   items after it still run. The reader sets `onerror` as darksidesync's
--   handler only for the time of its `dispatch` call. If the handler in
--   effect raises an error of its own: darksidesync's handler's error goes
--   to `onerror` and the batch ends (the rest stay queued, the fd readable,
--   the next wake-up runs them); `onerror`'s own error is raised into the
--   loop, as an error of the loop's own callbacks would be.
-- * Callbacks run inside `darksidesync.dispatch` (a C function): they must
--   not yield.
--
-- Works on Lua 5.1-5.4 and LuaJIT.
local darksidesync = require "darksidesync"

local reader = {}

--- The batch bound when the `max` option is not given: at most this many
-- items run per wake-up.
reader.DEFAULT_MAX = 1000

local Reader = {}
Reader.__index = Reader

--- The readers' methods (the metatable of every reader, its own __index):
-- a helper's object type can inherit them.
reader.methods = Reader

-- The default onerror: the message and a traceback on stderr, naming the
-- helper.
local function default_onerror(name)
  return function(msg)
    io.stderr:write(debug.traceback(name .. ": error in a darksidesync callback: " ..
                                    tostring(msg), 2), "\n")
  end
end

-- Raises "bad argument #1 to '<who>' (<reason>)" (with no position: the
-- options pass through a helper's function first).
local function argerror(who, reason)
  error(("bad argument #1 to '%s' (%s)"):format(who, reason), 0)
end

--- Checks the options every helper takes; returns max and onerror (nil when
-- not given). Raises "bad argument #1 to '<who>' (...)" for a bad one.
-- @param opts nil, or a table: `max` (a positive integer), `onerror` (a function)
-- @param who the function name for error messages
-- @return max, onerror
function reader.options(opts, who)
  if opts == nil then return reader.DEFAULT_MAX, nil end
  if type(opts) ~= "table" then
    argerror(who, "table or nil expected, got " .. type(opts))
  end
  local max = opts.max
  if max == nil then
    max = reader.DEFAULT_MAX
  elseif type(max) ~= "number" or max ~= max or max < 1 or max == math.huge
      or max ~= math.floor(max) then
    argerror(who, "option 'max' must be a positive integer, got " .. tostring(max))
  end
  if opts.onerror ~= nil and type(opts.onerror) ~= "function" then
    argerror(who, "option 'onerror' must be a function, got " .. type(opts.onerror))
  end
  return max, opts.onerror
end

--- Runs `darksidesync.dispatch(k, h)` protected, h being darksidesync's
-- error handler (seterrorhandler) if one is set, else `handler`. The
-- readers and the `dss` helper's dispatch handler use it.
-- @param handler the error handler to use when darksidesync has none
-- @param k the most items to run
-- @return whether darksidesync had a handler of its own, then pcall's
--   results (true and the number of items run, or false and the error)
function reader.dispatchwith(handler, k)
  local own = darksidesync.geterrorhandler()
  local okay, n = pcall(darksidesync.dispatch, k, own or handler)
  return own ~= nil, okay, n
end

--- A new reader.
-- @param opts nil or a table: `max`, the most items one `dispatch` runs
--   (a positive integer, default 1000); `onerror`, a function receiving a
--   callback's error when no darksidesync error handler is set (default:
--   prints it on stderr with a traceback)
-- @param name the helper's name, for error messages (default "darksidesync.reader")
-- @param who the function name for a bad argument (default "new")
-- @return the reader: fields `fd` (darksidesync's wake-up fd), `max`,
--   `wakes` (dispatch calls so far), `ran` (items they ran), `errors`
--   (errors handed to onerror); methods `dispatch`, `getfd`, `dirty`
function reader.new(opts, name, who)
  name = name or "darksidesync.reader"
  local max, onerror = reader.options(opts, who or "new")
  local self = setmetatable({
    name = name,
    fd = darksidesync.getfd(),
    max = max,
    onerror = onerror or default_onerror(name),
    wakes = 0,
    ran = 0,
    errors = 0,
  }, Reader)
  -- darksidesync's error handler while dispatch runs, when none is set.
  self.handler = function(msg)
    self.errors = self.errors + 1
    return self.onerror(msg)
  end
  return self
end

--- Runs at most `max` queued items (`darksidesync.dispatch(max)`).
-- A callback's error goes to darksidesync's error handler if one is set,
-- else to `onerror`, at the point of the error; the items after it still
-- run. If darksidesync's handler raises, its error goes to `onerror` and the
-- batch ends (the rest stay queued, the fd readable); if `onerror` raises
-- (as darksidesync's handler), its error is raised from here.
-- @return the number of items run, or nil and the error of darksidesync's
--   handler
function Reader:dispatch()
  self.wakes = self.wakes + 1
  local had, okay, n = reader.dispatchwith(self.handler, self.max)
  if okay then
    self.ran = self.ran + n
    return n
  end
  if not had then error(n, 0) end -- onerror raised
  self.errors = self.errors + 1
  self.onerror(n)
  return nil, n
end

--- darksidesync's wake-up fd (for LuaSocket's `socket.select`, which calls
-- `getfd` on the objects in its sets).
-- @return the fd, an integer
function Reader:getfd()
  return self.fd
end

--- For LuaSocket's `socket.select`: always false (nothing is buffered in
-- Lua; the fd tells when there is work).
-- @return false
function Reader:dirty()
  return false
end

return reader
