-- test_api.lua -- the registry layout and the 1v0 C API (reg, getutilid,
-- deliver, unreg, their codes) and the client helper, as a client library
-- (tests/clients/testclient.c) sees them. Contract sections 2 and 3.

local dss = require "darksidesync"
local tc = require "testclient"

local SUCCESS, INVALID_UTILID = -100, -101
local NO_CANCEL_PROVIDED, NO_DECODE_PROVIDED = -103, -105
local UNKNOWN_LIB, ALREADY_REGISTERED = -107, -108

-- Ids no registration can have.
local GARBAGE = { 0, 1, 12345, 2 ^ 53, "0xffffffffffffffff" }

test("registry: DSS.DarkSideSync holds Version (a string) and 'DSS API 1v0' (a light userdata)", function()
  local t = debug.getregistry()["DSS.DarkSideSync"]
  eq(type(t), "table", "registry['DSS.DarkSideSync']")
  eq(type(t.Version), "string", "Version")
  local api = t["DSS API 1v0"]
  ok(tc.islight(api), "'DSS API 1v0' is a light userdata")
  eq(api, tc.api(), "the struct the client helper found")
  eq(tc.apiversion(), "DSS API 1v0", "the struct's first member, version")
end)

test("require returns the module (poll, queuesize, setport, getport); on 5.1 and LuaJIT it sets the global darksidesync", function()
  for _, f in ipairs { "poll", "queuesize", "setport", "getport" } do
    eq(type(dss[f]), "function", f)
  end
  eq(require "darksidesync", dss, "a second require")
  eq(debug.getregistry()["DSS.DarkSideSync"]["DSS API 1v0"], tc.api(), "API after a second require")
  if LUA_VERSION == "5.1" or LUA_VERSION == "luajit" then
    eq(rawget(_G, "darksidesync"), dss, "global darksidesync")
  end
end)

test("require again after package.loaded was cleared: a module table over the same queue and API", function()
  fresh()
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "deliver")
  local global = rawget(_G, "darksidesync")
  package.loaded.darksidesync = nil
  local again = require "darksidesync"
  package.loaded.darksidesync = dss
  rawset(_G, "darksidesync", global)
  eq(again.queuesize(), 1, "queuesize through the new table")
  eq(debug.getregistry()["DSS.DarkSideSync"]["DSS API 1v0"], tc.api(), "API")
  eq(again.poll(), 0, "poll through the new table")
  eq(dss.queuesize(), 0, "queuesize through the first table")
end)

test("reg without a cancel callback: nil, NO_CANCEL_PROVIDED (-103), nothing registered", function()
  fresh()
  local u, rc = tc.reg(2, false)
  eq(u, nil, "utilid")
  eq(rc, NO_CANCEL_PROVIDED, "code")
  u, rc = tc.getutilid(2)
  eq(u, nil, "getutilid")
  eq(rc, UNKNOWN_LIB, "getutilid code")
end)

test("reg of a registered lib: the same utilid, ALREADY_REGISTERED (-108), nothing changed", function()
  fresh()
  local u1 = tc.utilid(1)
  local u, rc = tc.reg(1)
  eq(u, u1, "utilid")
  eq(rc, ALREADY_REGISTERED, "code")
  u, rc = tc.getutilid(1)
  eq(u, u1, "getutilid")
  eq(rc, SUCCESS, "getutilid code")
  eq(tc.deliver(u1), SUCCESS, "deliver still works")
  eq(dss.queuesize(), 1, "queuesize")
end)

test("reg of a second lib: SUCCESS (-100) and its own utilid, found by getutilid", function()
  fresh()
  local u2, rc = tc.reg(2)
  eq(rc, SUCCESS, "code")
  ok(tc.islight(u2), "a utilid")
  ok(u2 ~= tc.utilid(1), "distinct from lib 1's")
  local g, grc = tc.getutilid(2)
  eq(g, u2, "getutilid")
  eq(grc, SUCCESS, "getutilid code")
end)

test("getutilid of a lib not registered: nil, UNKNOWN_LIB (-107)", function()
  fresh()
  local u, rc = tc.getutilid(2)
  eq(u, nil, "utilid")
  eq(rc, UNKNOWN_LIB, "code")
end)

test("reg and getutilid accept a NULL errcode", function()
  fresh()
  local u2, rc = tc.reg(2, true, true)
  ok(tc.islight(u2), "reg: a utilid")
  eq(rc, nil, "no code")
  eq(tc.reg(2, true, true), u2, "reg again: the same utilid")
  eq(tc.reg(2, false, true), nil, "reg without cancel: NULL")
  eq(tc.getutilid(2, true), u2, "getutilid")
  eq(tc.unreg(u2), SUCCESS, "unreg")
  eq(tc.getutilid(2, true), nil, "getutilid after unreg: NULL")
end)

test("unreg: SUCCESS once, then INVALID_UTILID (-101); getutilid then UNKNOWN_LIB", function()
  fresh()
  local u = tc.utilid(1)
  eq(tc.unreg(u), SUCCESS, "first unreg")
  eq(tc.unreg(u), INVALID_UTILID, "second unreg")
  local g, rc = tc.getutilid(1)
  eq(g, nil, "getutilid")
  eq(rc, UNKNOWN_LIB, "getutilid code")
end)

test("unreg of garbage utilids: INVALID_UTILID, no crash, registrations unharmed", function()
  fresh()
  for _, id in ipairs(GARBAGE) do
    eq(tc.unreg(id), INVALID_UTILID, "unreg(" .. tostring(id) .. ")")
  end
  eq(tc.getutilid(1), tc.utilid(1), "lib 1 still registered")
end)

test("deliver to garbage utilids: INVALID_UTILID, nothing queued, no crash", function()
  fresh()
  for _, id in ipairs(GARBAGE) do
    eq(tc.deliver(id), INVALID_UTILID, "deliver(" .. tostring(id) .. ")")
  end
  eq(dss.queuesize(), 0, "queuesize")
  tc.check { attempts = 5, allocated = 5, freed = 5, errors = { [INVALID_UTILID] = 5 } }
end)

test("deliver with a stale utilid (unregistered): INVALID_UTILID; registering again gives a new id", function()
  fresh()
  local old = tc.utilid(1)
  eq(tc.unreg(old), SUCCESS, "unreg")
  eq(tc.deliver(old), INVALID_UTILID, "stale as light userdata")
  eq(tc.deliver(tc.tonumber(old)), INVALID_UTILID, "stale as a number")
  local new = tc.init()
  ok(new ~= old, "a new utilid")
  eq(tc.deliver(old), INVALID_UTILID, "the old one stays invalid")
  eq(tc.deliver(new), SUCCESS, "the new one works")
  eq(dss.queuesize(), 1, "queuesize")
  tc.check { attempts = 4, delivered = 1, allocated = 4, freed = 3, live = 1,
             errors = { [INVALID_UTILID] = 3 } }
end)

test("deliver without a decoder: NO_DECODE_PROVIDED (-105), nothing queued", function()
  fresh()
  eq(tc.deliver(tc.utilid(1), { decoder = false }), NO_DECODE_PROVIDED, "code")
  eq(dss.queuesize(), 0, "queuesize")
  tc.check { attempts = 1, allocated = 1, freed = 1, errors = { [NO_DECODE_PROVIDED] = 1 } }
end)

test("deliver fire-and-forget: SUCCESS, returns at once, queued; poll decodes it", function()
  fresh()
  local seen
  tc.setcallback(function(...) seen = pack(...) end)
  eq(tc.deliver(tc.utilid(1)), SUCCESS, "code")
  eq(dss.queuesize(), 1, "queuesize")
  local n, cb, args = dss.poll()
  eq(n, 0, "remaining")
  cb(unpack(args))
  eq(seen.n, 3, "callback arguments")
  eq(seen[1], 1, "lib")
  eq(seen[2], 0, "producer id (0: delivered from Lua)")
  eq(seen[3], 1, "seq")
  tc.check { attempts = 1, delivered = 1, decoded = 1, ended = 1, allocated = 1, freed = 1 }
end)

test("a blocking deliver to an invalid utilid returns at once with INVALID_UTILID", function()
  fresh()
  local stale = tc.utilid(1)
  eq(tc.unreg(stale), SUCCESS, "unreg")
  tc.start { blocking = true, items = 3, utilid = stale }
  ok(tc.join(), "the producer returned")
  tc.check { threads = 1, attempts = 1, stopped = 1, errors = { [INVALID_UTILID] = 1 } }
end)

test("helper: DSS_initialize again keeps the utilid; DSS_shutdown(L) unregisters; DSS_getutilid then raises", function()
  fresh()
  local u = tc.utilid(1)
  eq(tc.init(), u, "DSS_initialize again")
  eq(tc.auxutilid(), u, "DSS_getutilid")
  tc.shutdown()
  local g, rc = tc.getutilid(1)
  eq(g, nil, "getutilid after DSS_shutdown")
  eq(rc, UNKNOWN_LIB, "code")
  raises(tc.auxutilid, "this library is not registered with darksidesync in this Lua state")
  eq(tc.deliver(u), INVALID_UTILID, "deliver after DSS_shutdown")
  tc.shutdown() -- again: never raises
  local new = tc.init()
  ok(new ~= u, "registered again with a new utilid")
end)

test("helper: a client required without darksidesync raises 'require darksidesync first'", function()
  local child, okay, msg = tc.newstate [[
    return pcall(require, "testclient")
  ]]
  tc.close(child)
  eq(okay, false, "require succeeded")
  eq(msg, "DarkSideSync API not found: require 'darksidesync' before loading this library")
end)

test("helper: a DSS.DarkSideSync table without 'DSS API 1v0' raises naming its version", function()
  local child, okay, msg = tc.newstate [[
    debug.getregistry()["DSS.DarkSideSync"] = { Version = "9.9" }
    return pcall(require, "testclient")
  ]]
  tc.close(child)
  eq(okay, false, "require succeeded")
  eq(msg, "the loaded darksidesync (version '9.9') does not offer 'DSS API 1v0'")
end)
