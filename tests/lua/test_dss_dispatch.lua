-- test_dss_dispatch.lua -- the `dss` helper's handler with
-- gethandler("dispatch"): every test of test_dss_coalesce.lua (both modes,
-- floods, the 1000-item bound, errors, blocking items, switching) again,
-- items run through darksidesync.dispatch; then what only this flavour has.
DSS_HANDLER_HOW = "dispatch"
local here = (arg and arg[1] or ""):match("^(.*/)") or "./"
dofile(here .. "test_dss_coalesce.lua")
DSS_HANDLER_HOW = nil

local darksidesync = require "darksidesync"
local tc = require "testclient"
local dss = require "dss"

test("gethandler: nil and 'poll' give the default handler, 'dispatch' another; anything else raises", function()
  local default = dss.gethandler()
  eq(dss.gethandler("poll"), default, "'poll' is the default")
  ok(dss.gethandler("dispatch") ~= default, "'dispatch' is another handler")
  eq(dss.gethandler("dispatch"), dss.gethandler("dispatch"), "one dispatch handler")
  raises(function() dss.gethandler("fast") end,
         "bad argument #1 to 'gethandler' (\"poll\" or \"dispatch\" expected, got 'fast')")
  raises(function() dss.gethandler(1) end,
         "bad argument #1 to 'gethandler' (\"poll\" or \"dispatch\" expected, got number)")
end)

test("dispatch handler: darksidesync's own error handler, when set, takes callback errors first", function()
  fresh()
  local skt = assert(dss.getsocket("coalesce"))
  local mine, helpers = {}, {}
  darksidesync.seterrorhandler(function(msg) mine[#mine + 1] = msg end)
  dss.seterrorhandler(function(msg) helpers[#helpers + 1] = msg end)
  local ran = 0
  tc.setcallback(function(lib, pid, seq)
    ran = ran + 1
    if seq == 2 then error("boom", 0) end
  end)
  tc.start { items = 3 }
  ok(tc.join(), "join")
  skt:settimeout(10)
  dss.gethandler("dispatch")(skt)
  eq(ran, 3, "every callback ran")
  eq(table.concat(mine, "|"), "boom", "darksidesync's handler got it")
  eq(#helpers, 0, "the helper's handler got nothing")
  eq(darksidesync.queuesize(), 0, "queue empty")
  darksidesync.seterrorhandler(nil)
  dss.seterrorhandler(nil)
end)
