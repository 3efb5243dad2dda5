-- darksidesync.fibers.go -- go(fn [, args]): spawns fn(unpack(args)).
-- See docs/fibers.md.

local fiber = require "darksidesync.fibers.fiber"

local unpack = unpack or table.unpack

return setmetatable({}, {
  __call = function(_, fn, args)
    if args == nil then
      fiber.spawn(fn)
    else
      fiber.spawn(fn, unpack(args, 1, args.n or #args))
    end
  end,
})
