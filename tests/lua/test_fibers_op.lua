-- test_fibers_op.lua -- darksidesync.fibers.op and .channel: base ops,
-- choice, wrap, perform_alt, default, guard, with_nack, multi-value ops;
-- channels (rendezvous turn order, FIFO, buffered, close).

local fiber = require "darksidesync.fibers.fiber"
local op = require "darksidesync.fibers.op"
local channel = require "darksidesync.fibers.channel"
local S = fiber.current_scheduler

local function turns(n) for _ = 1, n or 1 do S:run() end end
local function ready(v) return op.always(v) end
local function spawn_log(log, fn) fiber.spawn(function() fn(function(x) log[#log + 1] = x end) end) end

test("base op: perform returns the try values, through wrap; several values", function()
  eq(op.new_base_op(nil, function() return true, 7 end, nil):perform(), 7)
  local r = pack(op.new_primitive(function(a, b) return b, a end, function() return true, 1, 2 end):perform())
  eq(r.n, 2); eq(r[1], 2); eq(r[2], 1)
  local w = op.always(3, nil, 5):wrap(function(a, b, c) return a + c, b end)
  r = pack(w:perform())
  eq(r.n, 2); eq(r[1], 8); eq(r[2], nil)
  eq(op.perform(op.always("m")), "m", "op.perform")
end)

test("choice: of ready ops returns one of them; over many runs each is chosen", function()
  local seen = {}
  for _ = 1, 300 do
    local v = op.choice(ready(1), ready(2), ready(3)):perform()
    ok(v == 1 or v == 2 or v == 3, "one of 1..3")
    seen[v] = true
  end
  ok(seen[1] and seen[2] and seen[3], "each chosen sometimes")
  local single = ready(9)
  ok(op.choice(single) == single, "a choice of one op is that op")
end)

test("choice: picks the ready op without blocking and commits exactly one", function()
  local ch1, ch2 = channel.new(1), channel.new(1)
  ch2:put("x")
  local tried = 0
  local counting = op.new_base_op(nil, function() tried = tried + 1; return false end, function() end)
  -- run outside a fiber: it must not block
  local v = op.choice(ch1:get_op():wrap(function(x) return "ch1", x end), counting,
                      ch2:get_op():wrap(function(x) return "ch2", x end)):perform()
  eq(v, "ch2")
  -- two ready channels: exactly one value taken
  ch1:put("a"); ch2:put("b")
  local who = op.choice(ch1:get_op(), ch2:get_op()):perform()
  local left = op.choice(ch1:get_op(), ch2:get_op()):perform()
  ok((who == "a" and left == "b") or (who == "b" and left == "a"), "one each time")
  eq(op.choice(ch1:get_op(), ch2:get_op()):poll(), false, "both empty now")
end)

test("choice: blocks on every arm; the first to complete wins, the other arms drop out", function()
  local a, b = channel.new(), channel.new()
  local got
  fiber.spawn(function()
    got = pack(op.choice(a:get_op():wrap(function(x) return "a", x end),
                         b:get_op():wrap(function(x) return "b", x end)):perform())
  end)
  turns()
  eq(got, nil, "blocked")
  fiber.spawn(function() b:put(5) end)
  turns()
  eq(got, nil, "resumes next turn")
  turns()
  eq(got[1], "b"); eq(got[2], 5)
  -- a's stale getter does not take a later put
  local res = op.choice(a:put_op(1):wrap(function() return "put" end)):perform_alt(function() return "no" end)
  eq(res, "no", "no live getter on a")
end)

test("perform_alt: the op's value when ready; the default only when none is ready", function()
  local calls = 0
  local function alt() calls = calls + 1; return "alt" end
  eq(ready(1):perform_alt(alt), 1)
  eq(op.choice(op.never(), ready(2)):perform_alt(alt), 2)
  eq(calls, 0, "default not called")
  eq(op.choice(op.never(), op.never()):perform_alt(alt), "alt")
  eq(calls, 1)
  -- era A: an op as the alternative
  eq(op.never():perform_alt(ready("op-alt")), "op-alt")
  -- :default(f) (older code)
  eq(op.choice(op.never(), op.never()):default(function() return "d" end):perform(), "d")
  eq(op.choice(op.never(), ready("r")):default(function() return "d" end):perform(), "r")
  eq(op.never():default(function() return 1 end):wrap(function(x) return x + 1 end):perform(), 2)
  eq(op.never():perform_alt(op.default_op():wrap(function() return "dflt" end)), "dflt")
  eq(select("#", op.default_op():perform()), 0, "default_op has no value")
end)

test("poll: true and the values when an arm commits, false otherwise", function()
  local r = pack(ready(4):poll())
  eq(r.n, 2); eq(r[1], true); eq(r[2], 4)
  eq(op.never():poll(), false)
end)

test("guard: the function runs at each synchronisation", function()
  local n = 0
  local g = op.guard(function() n = n + 1; return ready(n) end)
  eq(n, 0, "not at construction")
  eq(g:perform(), 1)
  eq(g:perform(), 2)
  eq(op.choice(g, op.never()):perform(), 3)
  eq(g:wrap(function(x) return -x end):perform(), -4)
end)

test("with_nack: the nack fires for the losing branch only (try path)", function()
  for _ = 1, 50 do
    local fired = {}
    local function arm(name, o)
      return op.with_nack(function(nack)
        fiber.spawn(function() nack:perform(); fired[#fired + 1] = name end)
        return o
      end)
    end
    local v = op.choice(arm("never", op.never()), arm("ready", ready("R"))):perform()
    eq(v, "R")
    turns(2)
    eq(table.concat(fired, ","), "never", "only the loser's nack")
  end
end)

test("with_nack: block path; nested nacks fire only for the subtree that lost; none when it wins", function()
  local fired = {}
  local function nacked(name, o)
    return op.with_nack(function(nack)
      fiber.spawn(function() nack:perform(); fired[#fired + 1] = name end)
      return o
    end)
  end
  local a, b, c = channel.new(), channel.new(), channel.new()
  local got
  fiber.spawn(function()
    got = op.choice(nacked("outer", op.choice(nacked("inner-a", a:get_op()), b:get_op())),
                    nacked("c", c:get_op())):perform()
  end)
  turns(2)
  eq(#fired, 0, "nothing while blocked")
  fiber.spawn(function() b:put("B") end)
  turns(3)
  eq(got, "B")
  table.sort(fired)
  eq(table.concat(fired, ","), "c,inner-a", "losers only: c and inner-a, not outer")
  -- perform_alt falling to its default: every nack fires
  fired = {}
  local r = op.choice(nacked("x", op.never()), nacked("y", op.never())):perform_alt(function() return "d" end)
  eq(r, "d")
  turns(2)
  table.sort(fired)
  eq(table.concat(fired, ","), "x,y")
  -- a lone with_nack that wins: no nack
  fired = {}
  eq(nacked("solo", ready(1)):perform(), 1)
  turns(2)
  eq(#fired, 0)
end)

test("wrap: runs in the performing fiber; its error propagates to perform", function()
  local errs = {}
  fiber.set_error_handler(function(e) errs[#errs + 1] = tostring(e) end)
  local ch = channel.new()
  local where, caught
  fiber.spawn(function()
    where = ch:get_op():wrap(function(v) return fiber.current_fiber() ~= nil and v end):perform()
    caught = pcall(function() ready(1):wrap(function() error("in wrap") end):perform() end)
  end)
  turns()
  ch:put_op("v"):perform() -- outside a fiber: the getter is waiting, so it does not block
  turns()
  fiber.set_error_handler(nil)
  eq(where, "v")
  eq(caught, false)
  eq(#errs, 0)
end)

test("channel: getter then putter: turn 1 a,b,d; turn 2 c (the lua-fibers order)", function()
  local log, ch = {}, channel.new()
  spawn_log(log, function(l) l("a"); eq(ch:get(), 42); l("c") end)
  spawn_log(log, function(l) l("b"); ch:put(42); l("d") end)
  turns()
  eq(table.concat(log, ","), "a,b,d", "turn 1")
  turns()
  eq(table.concat(log, ","), "a,b,d,c", "turn 2")
end)

test("channel: putter then getter: turn 1 b,a,c; turn 2 d", function()
  local log, ch = {}, channel.new()
  spawn_log(log, function(l) l("b"); ch:put(42); l("d") end)
  spawn_log(log, function(l) l("a"); eq(ch:get(), 42); l("c") end)
  turns()
  eq(table.concat(log, ","), "b,a,c", "turn 1")
  turns()
  eq(table.concat(log, ","), "b,a,c,d", "turn 2")
end)

test("channel: rendezvous is FIFO on both sides", function()
  local ch = channel.new()
  local got = {}
  for i = 1, 5 do fiber.spawn(function() local v = ch:get(); got[#got + 1] = i .. ":" .. v end) end
  turns()
  for i = 1, 5 do fiber.spawn(function() ch:put("v" .. i) end) end
  turns(2)
  eq(table.concat(got, " "), "1:v1 2:v2 3:v3 4:v4 5:v5", "getters served in order")
  local done = {}
  for i = 1, 5 do fiber.spawn(function() ch:put(i); done[#done + 1] = i end) end
  turns()
  local vals = {}
  for _ = 1, 5 do vals[#vals + 1] = ch:get() end -- outside a fiber: each put is waiting
  eq(table.concat(vals, ","), "1,2,3,4,5", "putters served in order")
  turns()
  eq(table.concat(done, ","), "1,2,3,4,5")
  -- nil goes through a channel
  local gotnil = "unset"
  fiber.spawn(function() gotnil = ch:get() end)
  turns()
  ch:put(nil)
  turns()
  eq(gotnil, nil)
end)

test("channel: buffered: puts do not block until full; FIFO; a blocked putter moves into the buffer", function()
  local ch = channel.new(2)
  ch:put(1); ch:put(2)
  eq(ch:put_op(3):poll(), false, "full")
  local put3 = false
  fiber.spawn(function() ch:put(3); put3 = true end)
  turns()
  eq(put3, false, "blocked while full")
  eq(ch:get(), 1)
  turns()
  eq(put3, true, "its value moved into the buffer")
  eq(ch:get(), 2); eq(ch:get(), 3)
  eq(ch:get_op():poll(), false, "empty")
  argreason(1, channel.new, -1)
  argreason(1, channel.new, 1.5)
end)

test("channel: close wakes every blocked fiber: getters get nil, putters raise 'channel closed'", function()
  local ch = channel.new()
  local results = {}
  for i = 1, 3 do fiber.spawn(function() local v = ch:get(); results[#results + 1] = "g" .. i .. "=" .. tostring(v) end) end
  turns()
  ch:close()
  turns()
  eq(table.concat(results, ","), "g1=nil,g2=nil,g3=nil")
  -- (the error ends each putter's fiber: no pcall around a blocking op,
  -- which Lua 5.1 cannot yield across)
  local ch2 = channel.new()
  results = {}
  fiber.set_error_handler(function(e) results[#results + 1] = tostring(e) end)
  for i = 1, 3 do fiber.spawn(function() ch2:put(i); results[#results + 1] = "put" end) end
  turns()
  ch2:close()
  ch2:close() -- again: nothing
  turns()
  fiber.set_error_handler(nil)
  eq(table.concat(results, ","), "channel closed,channel closed,channel closed")
  raises(function() ch2:put(1) end, "channel closed")
  eq(ch2:get(), nil, "get on a closed channel: nil at once")
  eq(ch2:is_closed(), true)
end)

test("channel: close of a buffered channel: buffered values first, then nil", function()
  local ch = channel.new(3)
  ch:put("x"); ch:put("y")
  ch:close()
  eq(ch:get(), "x"); eq(ch:get(), "y"); eq(ch:get(), nil); eq(ch:get(), nil)
  eq(channel.new().put_operation, channel.new().put_op, "era-A alias")
  eq(channel.new().get_operation, channel.new().get_op, "era-A alias")
end)

test("choice between a channel get and a put on another: exactly one commits", function()
  for _ = 1, 50 do
    local a, b = channel.new(1), channel.new(1)
    a:put("in a")
    local r = op.choice(a:get_op():wrap(function(v) return "got " .. v end),
                        b:put_op("p"):wrap(function() return "put" end)):perform()
    if r == "put" then
      eq(b:get(), "p"); eq(a:get(), "in a")
    else
      eq(r, "got in a"); eq(b:get_op():poll(), false, "no put happened")
    end
  end
end)
