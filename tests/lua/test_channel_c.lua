-- test_channel_c.lua -- channels fed from C threads (the 2v2 C API:
-- channel_retain / channel_put / channel_close / channel_release), through
-- the test client tests/clients/chanclient.c: exact counts, values and
-- order of what a C thread puts; several values per message; the no-wait,
-- timeout and blocking forms; close releasing a blocked C put; a channel
-- outliving its Lua state while C holds it; bad arguments' exact codes.

local channel = require "darksidesync.channel"
local cc = require "chanclient"

local SUCCESS, TIMEOUT, QUEUE_FULL, INVALID_ARGUMENT, CLOSED = -100, -109, -110, -113, -114
local NOWAIT = 1
local has_int = math.type ~= nil

-- The values of message i of feeder f (chanclient.c's comment), packed.
local function expected(f, i)
  local b = f * 1000000 + i
  local r = i % 4
  if r == 0 then return { n = 1, b } end
  if r == 1 then return { n = 1, "m\0" .. b .. "\0" } end
  if r == 2 then return { n = 3, b, b + 0.5, i % 8 == 2 } end
  return { n = 3, nil, "s" .. b, false }
end

local function pack(...) return { n = select("#", ...), ... } end

-- Checks a got message against message i of feeder f.
local function check(got, f, i)
  local want = expected(f, i)
  eq(got.n, want.n, "values in message " .. i)
  for k = 1, want.n do eq(got[k], want[k], "message " .. i .. " value " .. k) end
  if has_int and i % 4 == 0 then eq(math.type(got[1]), "integer", "an integer stays one") end
  if has_int and i % 4 == 2 then
    eq(math.type(got[1]), "integer")
    eq(math.type(got[2]), "float")
  end
end

-- Waits (bounded) until ch holds n (buffered, plus puts waiting).
local function len_reaches(ch, n)
  local t0 = os.clock()
  while ch:len() ~= n do
    if os.clock() - t0 > 20 then return false end
  end
  return true
end

test("the registry's 2v2 struct; DSS_ERR_CLOSED has its text", function()
  local reg = debug.getregistry()["DSS.DarkSideSync"]
  eq(type(reg["DSS API 2v2"]), "userdata")
  eq(cc.strerror(CLOSED), "channel closed")
end)

for _, cap in ipairs { 0, 1, 4, math.huge } do
  test("a C thread's 1000 blocking puts, capacity " .. tostring(cap) ..
       ": every message, its values, in order", function()
    local ch = channel.new(cap)
    local ref = cc.retain(ch)
    local id = cc.feed(ref, 1000, "block")
    for i = 1, 1000 do check(pack(ch:get()), 0, i) end
    local r = cc.join(id)
    eq(r.ok, 1000, "ok")
    eq(r.other + r.full + r.timeout + r.closed, 0, "no other code")
    eq(ch:len(), 0)
    cc.release(ref)
  end)
end

test("in a fiber and in a session: a C thread's messages arrive whole", function()
  -- A fiber's get (its try and its wait) and a session's: all values.
  local fibers = require "darksidesync.fibers"
  for _, cap in ipairs { 0, 4 } do
    local ch = channel.new(cap)
    local ref = cc.retain(ch)
    local id = cc.feed(ref, 200, "block")
    local got = {}
    fibers.spawn(function()
      for i = 1, 200 do got[i] = pack(ch:get()) end
      fibers.stop()
    end)
    fibers.main()
    for i = 1, 200 do check(got[i], 0, i) end
    eq(cc.join(id).ok, 200)
    cc.release(ref)
  end
  local session = require "darksidesync.session"
  local ch = channel.new(2)
  local ref = cc.retain(ch)
  local id = cc.feed(ref, 100, "block")
  local s = session.spawn(function(c)
    local function pack(...) return { n = select("#", ...), ... } end
    local out = {}
    for i = 1, 100 do out[i] = pack(c:get()) end
    return out
  end, ch)
  local out = s:join()
  for i = 1, 100 do check(out[i], 0, i) end
  eq(cc.join(id).ok, 100)
  cc.release(ref)
end)

test("two C threads with timeouts into one channel: each one's messages in its order", function()
  local ch = channel.new(3)
  local ref = cc.retain(ch)
  local a = cc.feed(ref, 500, "timeout", 20000, 1)
  local b = cc.feed(ref, 500, "timeout", 20000, 2)
  local next_i = { 1, 1 }
  for _ = 1, 1000 do
    local got = pack(ch:get())
    local v = got[1] or tonumber(got[2]:sub(2))
    if type(v) == "string" then v = tonumber(v:sub(3, -2)) end
    local f = math.floor(v / 1000000)
    check(got, f, next_i[f])
    next_i[f] = next_i[f] + 1
  end
  eq(cc.join(a).ok, 500)
  eq(cc.join(b).ok, 500)
  cc.release(ref)
end)

test("no-wait puts on a full channel: exactly the room is sent, the rest QUEUE_FULL", function()
  local ch = channel.new(3)
  local ref = cc.retain(ch)
  local r = cc.join(cc.feed(ref, 10, "nowait"))
  eq(r.ok, 3, "ok")
  eq(r.full, 7, "full")
  eq(r.last, QUEUE_FULL)
  for i = 1, 3 do check(pack(ch:get()), 0, i) end
  eq(ch:len(), 0)
  -- timeout 0 is no-wait too; a rendezvous without a getter is full
  local rv = channel.new(0)
  local rref = cc.retain(rv)
  eq((cc.put(rref, 0, 0, "i", 1)), QUEUE_FULL)
  eq((cc.put(rref, NOWAIT, -1, "i", 1)), QUEUE_FULL)
  eq(rv:len(), 0)
  cc.release(rref)
  cc.release(ref)
end)

test("a timed put on a full channel: TIMEOUT after at least the timeout, nothing sent", function()
  local ch = channel.new(1)
  local ref = cc.retain(ch)
  eq((cc.put(ref, 0, 0, "s", "first")), SUCCESS)
  local rc, ms = cc.put(ref, 0, 80, "s", "late")
  eq(rc, TIMEOUT)
  ok(ms >= 80, "waited " .. ms .. " ms")
  eq(ch:len(), 1)
  eq(ch:get(), "first")
  eq(ch:len(), 0)
  -- a rendezvous: the timed put is withdrawn, a later get finds nothing
  local rv = channel.new(0)
  local rref = cc.retain(rv)
  rc, ms = cc.put(rref, 0, 50, "i", 5)
  eq(rc, TIMEOUT)
  ok(ms >= 50, "waited " .. ms .. " ms")
  eq(rv:len(), 0)
  cc.release(rref)
  cc.release(ref)
end)

test("closing the channel releases a blocked C put with DSS_ERR_CLOSED", function()
  local ch = channel.new(2)
  local ref = cc.retain(ch)
  local id = cc.feed(ref, 5, "block")
  ok(len_reaches(ch, 3), "two buffered, one put waiting")
  ch:close()
  local r = cc.join(id)
  eq(r.ok, 2, "ok")
  eq(r.closed, 3, "closed: the waiting put and the two after it")
  eq(r.last, CLOSED)
  check(pack(ch:get()), 0, 1)
  check(pack(ch:get()), 0, 2)
  eq(select(2, ch:get()), "closed")
  eq((cc.put(ref, 0, 0, "z")), CLOSED)
  cc.release(ref)
end)

test("close from C: Lua's waiting get returns nil, 'closed'", function()
  local ch = channel.new(1)
  local ref = cc.retain(ch)
  eq(cc.close(ref), SUCCESS)
  ok(ch:closed(), "closed")
  local v, e = ch:get()
  eq(v, nil)
  eq(e, "closed")
  eq((cc.put(ref, 0, -1, "i", 1)), CLOSED)
  cc.release(ref)
end)

test("a reference outlives every Lua handle, and the Lua state itself; the channel is closed then", function()
  local ch = channel.new(math.huge)
  local ref = cc.retain(ch)
  local carrier = channel.new(1)
  carrier:put(ch) -- a message carrying a handle keeps it open
  ch = nil
  collectgarbage()
  collectgarbage()
  eq((cc.put(ref, 0, -1, "s", "somebody may read this")), SUCCESS)
  ch = carrier:get()
  eq(ch:get(), "somebody may read this")
  ch = nil
  collectgarbage()
  collectgarbage()
  -- No Lua state can reach it now: closed, and the reference still valid.
  eq((cc.put(ref, 0, -1, "s", "nobody could read this")), CLOSED)
  eq(cc.close(ref), SUCCESS)
  cc.release(ref)
  -- a channel made in a state of its own, a C put waiting on it while the
  -- state closes: lua_close releases it
  local okn, closed, late, released = cc.outlive()
  eq(okn, 1, "the first put")
  eq(closed, 2, "the waiting put and the next")
  eq(late, CLOSED, "a put after the state closed")
  eq(released, true, "released by lua_close itself")
end)

test("values: every type; nil alone is one value; a Lua put still gives one value", function()
  local ch = channel.new(math.huge)
  local ref = cc.retain(ch)
  eq((cc.put(ref, 0, -1, "zbbinsE", nil, true, false, -42, 2.5, "a\0b")), SUCCESS)
  local got = pack(ch:get())
  eq(got.n, 7)
  eq(got[1], nil); eq(got[2], true); eq(got[3], false); eq(got[4], -42)
  eq(got[5], 2.5); eq(got[6], "a\0b"); eq(got[7], "")
  eq((cc.put(ref, 0, -1, "z")), SUCCESS)
  eq(select("#", ch:get()), 1)
  ch:put(nil)
  eq(select("#", ch:get()), 1)
  ch:put({ 1, 2 })
  eq(select("#", ch:get()), 1)
  if has_int then
    eq((cc.put(ref, 0, -1, "in", math.maxinteger, 3)), SUCCESS)
    local i, n = ch:get()
    eq(i, math.maxinteger); eq(math.type(i), "integer"); eq(math.type(n), "float")
  end
  -- the most values one message may have
  local types = string.rep("i", 64)
  local args = {}
  for i = 1, 64 do args[i] = i end
  eq((cc.put(ref, 0, -1, types, unpack(args))), SUCCESS)
  got = pack(ch:get())
  eq(got.n, 64)
  eq(got[64], 64)
  cc.release(ref)
end)

test("bad arguments: exact codes, nothing sent", function()
  local ch = channel.new(math.huge)
  local ref = cc.retain(ch)
  eq((cc.put(nil, 0, -1, "i", 1)), INVALID_ARGUMENT, "NULL channel")
  eq((cc.put(ref, 0, -1, "")), INVALID_ARGUMENT, "n == 0")
  eq((cc.put(ref, 0, -1, string.rep("z", 65))), INVALID_ARGUMENT, "n == 65")
  eq((cc.put(ref, 0, -1, "iX", 1)), INVALID_ARGUMENT, "unknown type")
  eq((cc.put(ref, 0, -1, "sN", "x")), INVALID_ARGUMENT, "NULL string with a length")
  eq((cc.put(ref, 2, -1, "i", 1)), INVALID_ARGUMENT, "unknown flag bits")
  eq((cc.put(ref, 0xffffffff, -1, "i", 1)), INVALID_ARGUMENT, "every flag bit")
  eq(cc.putnull(ref, 1), INVALID_ARGUMENT, "values NULL")
  eq(cc.close(nil), INVALID_ARGUMENT, "close(NULL)")
  cc.release(nil) -- nothing
  eq(ch:len(), 0, "nothing sent")
  -- retain: a value that is not a channel handle
  local r, err = cc.retain_raw(1, {})
  eq(r, nil); eq(err, INVALID_ARGUMENT)
  r, err = cc.retain_raw(-1, io.stdout)
  eq(r, nil); eq(err, INVALID_ARGUMENT)
  r, err = cc.retain_raw(3, ch) -- past the top
  eq(r, nil); eq(err, INVALID_ARGUMENT)
  r, err = cc.retain_raw(-1, ch)
  ok(r ~= nil, "a handle at -1"); eq(err, SUCCESS)
  eq((cc.put(r, 0, 0, "i", 9)), SUCCESS)
  eq(ch:get(), 9)
  cc.release(r)
  raises(function() cc.retain({}) end,
         { pattern = "^bad argument #1 to '%a+' %(darksidesync%.channel expected, got table%)$" })
  cc.release(ref)
end)

test("the C++ helper's channel_ref: put, try_put, put_for from a std::thread", function()
  local pp = require "chanclientpp"
  local ch = channel.new(4)
  pp.feed(ch, 100)
  for i = 1, 96 do
    local n, s, x, b = ch:get()
    eq(n, i); eq(s, "v" .. i); eq(x, i + 0.25); eq(b, i % 2 == 0)
    if has_int then eq(math.type(n), "integer") end
  end
  ok(len_reaches(ch, 4), "the last four buffered")
  local okn, try, timed = pp.join()
  eq(okn, 100)
  eq(try, QUEUE_FULL)
  eq(timed, TIMEOUT)
  for i = 97, 100 do eq((ch:get()), i) end
  eq(ch:len(), 0)
  local r, err = pp.retain({})
  eq(r, false); eq(err, INVALID_ARGUMENT)
  r, err = pp.retain(ch)
  eq(r, true); eq(err, SUCCESS)
end)
