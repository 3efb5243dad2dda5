-- test_context.lua -- the client-context API (2v1: regc, deliverc) through
-- the aux helper (DSS_initializec, DSS_deliverc, DSS_deliver2, DSS_queued),
-- with the ctxclient test library: every callback gets its context back;
-- error messages name the client; the callback types must match the
-- registration's. And the labels on errors of unnamed clients (testclient).

local dss = require "darksidesync"
local ctx = require "ctxclient"
local tc = require "testclient"

local SUCCESS, INVALID_ARGUMENT, CANCELLED = -100, -113, -111

local reg = debug.getregistry()["DSS.DarkSideSync"]

test("the registry offers 2v1 and 2v2 beside 1v0 and 2v0; Version is 2.2.0", function()
  eq(type(reg["DSS API 1v0"]), "userdata")
  eq(type(reg["DSS API 2v0"]), "userdata")
  eq(type(reg["DSS API 2v1"]), "userdata")
  eq(type(reg["DSS API 2v2"]), "userdata")
  eq(dss._VERSION, "2.2.0")
end)

test("fire-and-forget items through deliverc: each decoder gets the context", function()
  ctx.init("mqtt")
  local seen = {}
  ctx.setcallback(function(i) seen[#seen + 1] = i end)
  ctx.start(5)
  local c = ctx.join()
  eq(c.last_rc, SUCCESS)
  eq(ctx.queued(), 5, "DSS_queued")
  eq(dss.dispatch(), 5)
  eq(table.concat(seen, " "), "1 2 3 4 5")
  c = ctx.join()
  eq(c.decoded, 5)
  eq(c.badctx, 0, "every callback got its context")
end)

test("blocking items: the return callback gets the context and the answer", function()
  ctx.init("mqtt")
  ctx.setcallback(function(wt, i) wt(42) end)
  ctx.start(3, { blocking = true })
  local done = 0
  waitfor(function() done = done + dss.dispatch(); return done == 3 end, "3 answered")
  local c = ctx.join()
  eq(c.last_rc, SUCCESS)
  eq(c.returned, 3)
  eq(c.answers, 3)
  eq(c.badctx, 0)
end)

test("1v0-typed callbacks on a regc utilid: DSS_ERR_INVALID_ARGUMENT, nothing queued", function()
  ctx.init("mqtt")
  eq(ctx.deliver1v0(), INVALID_ARGUMENT)
  eq(dss.queuesize(), 0)
end)

test("a decoder's error names the client: poll, dispatch, and the error handler", function()
  ctx.init("mqtt")
  ctx.setcallback(function() end)
  ctx.start(3, { raise = true })
  ctx.join()
  raises(dss.poll, "ctxclient: decoder failed (raised by the decoder of darksidesync client 'mqtt')")
  raises(dss.dispatch, "ctxclient: decoder failed (raised by the decoder of darksidesync client 'mqtt')")
  local got
  dss.seterrorhandler(function(msg) got = msg end)
  eq(dss.dispatch(), 1)
  dss.seterrorhandler(nil)
  eq(got, "ctxclient: decoder failed (raised by the decoder of darksidesync client 'mqtt')")
  eq(ctx.join().badctx, 0)
end)

test("unreg with items queued and a producer blocked: cancellations get the context", function()
  ctx.init("mqtt")
  ctx.setcallback(function() end)
  ctx.start(1, { blocking = true })
  queued(1)
  ctx.unreg()
  local c = ctx.join()
  eq(c.last_rc, CANCELLED, "the blocked producer was released, cancelled")
  eq(c.cancelled_items, 1, "ended by cancellation (decoder with L == NULL)")
  eq(c.badctx, 0)
end)

test("closing the state calls cancel with the context", function()
  local state, r = child([[
    local ctx = require "ctxclient"
    ctx.init("closing")
    return true
  ]])
  eq(r, true)
  eq(ctx.join().cancels, 0, "not before the close")
  tc.close(state)
  local c = ctx.join()
  eq(c.cancels, 1, "cancel called once, by the close")
  eq(c.badctx, 0)
end)

test("an unnamed client's errors carry its utilid", function()
  fresh()
  tc.start { items = 1, decoder = "error" }
  ok(tc.join(), "join")
  local msg = raises(dss.poll, labeled("testclient: decoder failed"))
  local hex = msg:match("client 0x(%x+)%)$")
  eq(tostring(tc.utilid(1)):match("0x(%x+)$"), hex, "the utilid in " .. msg)
end)

test("a return callback's error names the client too", function()
  fresh()
  tc.setcallback(function(wt) local okay, err = pcall(wt, 1); ok(not okay); error(err, 0) end)
  tc.start { blocking = true, ret = "error" }
  local msg
  waitfor(function()
    local okay, err = pcall(dss.dispatch)
    if not okay then msg = err end
    return msg ~= nil
  end, "the return callback raised")
  ok(tc.join(), "join")
  ok(msg:match("^testclient: return callback failed %(raised by the return callback of darksidesync client 0x%x+%)$"), msg)
end)
