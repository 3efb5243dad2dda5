-- demo_ticker.lua -- a background thread feeding Lua through darksidesync.
-- Run with `make demo`.
local dss = require "darksidesync"
local ticker = require "ticker"

local clock = os.clock
print(("darksidesync %s on %s"):format(dss._VERSION, rawget(_G, "jit") and jit.version or _VERSION))
print("A C thread delivers 5 ticks (fire and forget), then asks Lua a question")
print("and blocks until Lua answers. Lua polls the queue in its own loop.\n")

local unpack = unpack or table.unpack
local done = false
ticker.start(5, 100,
  function(n, ms)
    print(("  tick %d   sent by the thread at %6.1f ms, handled by Lua"):format(n, ms))
  end,
  function(wt, n, ms)
    print(("  the thread asks at %6.1f ms: 'may I stop after %d ticks?'"):format(ms, n))
    wt("yes, thank you")   -- hands the answer back; the thread is released
    done = true
  end)

-- A simple Lua-side loop: poll, run what arrived, otherwise do other work.
local polls, idle = 0, 0
while not done do
  local n, cb, args = dss.poll()
  polls = polls + 1
  if n == -1 then
    idle = idle + 1          -- nothing queued: Lua is free to do other work
    local t = clock() + 0.001
    while clock() < t do end
  elseif cb then
    cb(unpack(args))
  end
end
print(("\nthe thread got its answer: %q"):format(ticker.join()))
print(("Lua polled %d times, %d of them found the queue empty."):format(polls, idle))
