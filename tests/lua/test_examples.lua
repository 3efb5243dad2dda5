-- The example client libraries, run as a user would. ticker compiles the
-- client helper into its own file (#include "darksidesync_aux.c"), where the
-- test client compiles it as a file of its own: both ways must work.

local dss = require "darksidesync"

test("ticker: 3 ticks in order, then the blocking question gets Lua's answer", function()
  local ticker = require "ticker"
  local ticks, asked = {}, nil
  ticker.start(3, 0,
    function(n, ms) ticks[#ticks + 1] = n; ok(type(ms) == "number", "ms is a number") end,
    function(wt, n) asked = n; wt("yes") end)
  waitfor(function()
    local n, cb, args = dss.poll()
    if n ~= -1 and cb then cb(unpack(args)) end
    return asked ~= nil
  end, "the ticker's question")
  eq(ticker.join(), "yes", "the thread's answer")
  eq(#ticks, 3, "ticks")
  for i = 1, 3 do eq(ticks[i], i, "tick " .. i) end
  eq(asked, 3, "the question carries the tick count")
  eq(dss.queuesize(), 0, "queue drained")
end)

test("ticker: a question nobody answers is answered by the collector", function()
  local ticker = require "ticker"
  ticker.start(0, 0, function() end, function(wt) end)  -- drops wt uncalled
  waitfor(function()
    local n, cb, args = dss.poll()
    if n ~= -1 and cb then cb(unpack(args)) return true end
  end, "the ticker's question")
  collectgarbage(); collectgarbage()
  eq(ticker.join(), "(not answered)")
end)
