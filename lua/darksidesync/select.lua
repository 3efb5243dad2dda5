--- darksidesync.select -- darksidesync in a plain LuaSocket `socket.select`
-- loop.
--
-- `new()` returns an object `socket.select` accepts in its read set (it has
-- `getfd` and `dirty`, returning darksidesync's wake-up fd and false). When
-- select reports it readable, call its `dispatch` method: it runs at most
-- `max` queued items (default 1000) and returns, so the loop gets back to
-- its other sockets and timers; if items remain, the fd is still readable
-- and the next select returns at once.
--
--     local socket = require "socket"
--     local reader = require("darksidesync.select").new()
--     while true do
--       local readable = socket.select({ reader, server }, nil, 1.0)
--       for _, s in ipairs(readable) do
--         if s == reader then reader:dispatch() else serve(s) end
--       end
--     end
--
-- Errors: a callback's error goes to darksidesync's error handler
-- (`darksidesync.seterrorhandler`) if one is set, else to the `onerror`
-- option (default: stderr, with a traceback), called at the point of the
-- error; the items after it still run (see darksidesync.reader).
-- `dispatch` raises only an error `onerror` itself raised.
--
-- LuaSocket's select handles fds below FD_SETSIZE (1024) only: a process
-- with more open files may get darksidesync's fd above it ("descriptor too
-- large for set size"); use another poller there (darksidesync.luv,
-- darksidesync.cqueues).
--
-- Works on Lua 5.1-5.4 and LuaJIT.
local reader = require "darksidesync.reader"

local M = {}

--- A new reader for `socket.select`.
-- @param opts nil or a table: `max` (items per dispatch call, a positive
--   integer, default 1000), `onerror` (receives a callback's error when no
--   darksidesync error handler is set; default: prints it on stderr)
-- @return the reader: methods `getfd()`, `dirty()` (for select) and
--   `dispatch()` (runs at most max items; returns how many ran, or nil and
--   the error); fields `fd`, `max`, `wakes`, `ran`, `errors`
function M.new(opts)
  return reader.new(opts, "darksidesync.select", "new")
end

return M
