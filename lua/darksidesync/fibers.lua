-- darksidesync.fibers -- pure-Lua Concurrent ML fibers, API-compatible with
-- lua-fibers (require "darksidesync.fibers.channel" where lua-fibers has
-- "fibers.channel"). This module is the short entry point. See
-- docs/fibers.md.

local fiber = require "darksidesync.fibers.fiber"
local op = require "darksidesync.fibers.op"

local M = {
  current_scheduler = fiber.current_scheduler,
  spawn = fiber.spawn,
  stop = fiber.stop,
  now = fiber.now,
  yield = fiber.yield,
  perform = op.perform,
  choice = op.choice,
  guard = op.guard,
  with_nack = op.with_nack,
  always = op.always,
  never = op.never,
  set_error_handler = fiber.set_error_handler,
  set_stop_on_error = fiber.set_stop_on_error,
}

-- main(f, ...): spawns f(...) and runs the scheduler until stop() is called
-- (f returning does not stop it). With set_stop_on_error(true), raises the
-- error that stopped it.
function M.main(f, ...)
  if f ~= nil then fiber.spawn(f, ...) end
  fiber.main()
end

return M
