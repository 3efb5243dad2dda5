-- test_channel.lua -- darksidesync.channel in one state: buffered and
-- unbounded channels, values copied (not shared), close, handles sent over
-- channels, bad arguments and uncopyable values. (Waiting across threads
-- is covered by the core's unit tests, tests/unit/test_channel.cpp.)

local channel = require "darksidesync.channel"

test("a buffered channel is FIFO and counts what it holds", function()
  local ch = channel.new(3)
  eq(ch:len(), 0)
  eq(ch:put(1), true)
  eq(ch:put("two"), true)
  eq(ch:put(3.5), true)
  eq(ch:len(), 3)
  eq(ch:get(), 1)
  eq(ch:get(), "two")
  eq(ch:get(), 3.5)
  eq(ch:len(), 0)
end)

test("values are copied: a table got is a new table with the same contents", function()
  local ch = channel.new(1)
  local t = { a = 1, list = { 1, 2, 3 } }
  t.self = t
  ch:put(t)
  t.a = 2
  local u = ch:get()
  ok(u ~= t, "a copy")
  eq(u.a, 1)
  eq(#u.list, 3)
  ok(u.self == u, "a cycle stays a cycle")
end)

test("an unbounded channel takes any number", function()
  local ch = channel.new(math.huge)
  for i = 1, 1000 do ch:put(i) end
  eq(ch:len(), 1000)
  local sum = 0
  for _ = 1, 1000 do sum = sum + ch:get() end
  eq(sum, 500500)
end)

test("close: gets drain what is buffered, then nil, 'closed'; puts fail", function()
  local ch = channel.new(2)
  ch:put("x")
  ch:close()
  ok(ch:closed(), "closed")
  local r, e = ch:put("y")
  eq(r, nil)
  eq(e, "closed")
  eq(ch:get(), "x")
  r, e = ch:get()
  eq(r, nil)
  eq(e, "closed")
end)

test("a channel handle travels over a channel and stays the same channel", function()
  local a = channel.new(1)
  local b = channel.new(1)
  a:put(b)
  local b2 = a:get()
  ok(b2 ~= nil and b2 == b, "equal handles")
  b2:put("via the copy")
  eq(b:get(), "via the copy")
end)

test("uncopyable values are an error at put, and nothing is queued", function()
  local ch = channel.new(1)
  raises(function() ch:put(coroutine.create(function() end)) end,
         "darksidesync: cannot copy a thread (value 1)")
  eq(ch:len(), 0)
  raises(function() ch:put({ io.stdout }) end,
         "darksidesync: cannot copy a userdata (value 1, at [1])")
  eq(ch:len(), 0)
  raises(function() ch:put(function() return ch end) end,
         "darksidesync: cannot copy function with upvalue 'ch' (value 1)")
  eq(ch:len(), 0)
end)

-- The function's name in an argument error differs between Lua versions.
local function argerr(msg)
  return { pattern = "^bad argument #1 to '[%w%.%?]*' %(" .. msg:gsub("[%(%)%.%+%-%*%?%[%]%^%$%%]", "%%%0") .. "%)$" }
end

test("bad capacities and bad handles", function()
  local cap = "a capacity (an integer >= 0, or math.huge) expected"
  raises(function() channel.new(-1) end, argerr(cap))
  raises(function() channel.new(1.5) end, argerr(cap))
  raises(function() channel.new("x") end, argerr("number expected, got string"))
  local ch = channel.new(1)
  raises(function() ch.put({}, 1) end, argerr("darksidesync.channel expected, got table"))
end)

test("register_metatable: a table with a registered metatable arrives with it", function()
  local mt = { __index = { hello = function(self) return "hello " .. self.name end } }
  channel.register_metatable("test_channel.Named", mt)
  local ch = channel.new(3)
  ch:put(setmetatable({ name = "a" }, mt))
  ch:put(setmetatable({ name = "b" }, { __index = mt.__index })) -- not registered
  ch:put({ inner = setmetatable({ name = "c" }, mt) })
  local a = ch:get()
  ok(rawequal(getmetatable(a), mt), "the registered metatable")
  eq(a:hello(), "hello a")
  local b = ch:get()
  eq(getmetatable(b), nil)
  eq(b.name, "b")
  eq(ch:get().inner:hello(), "hello c")
  -- Registered again under the name: later copies get the new one.
  local mt2 = { __index = { hello = function() return "hi" end } }
  channel.register_metatable("test_channel.Named", mt2)
  ch:put(setmetatable({}, mt2))
  eq(ch:get():hello(), "hi")
  raises(function() channel.register_metatable(1, mt) end,
    { pattern = "^bad argument #1 to '[%w%.%?_]*' %(string expected, got number%)$" })
  raises(function() channel.register_metatable("x", "y") end,
    { pattern = "^bad argument #2 to '[%w%.%?_]*' %(table expected, got string%)$" })
end)

test("bad handles: put and get name themselves", function()
  local ch = channel.new(1)
  raises(function() ch.put({}, 1) end, "bad argument #1 to 'put' (darksidesync.channel expected, got table)")
  raises(function() ch.get({}) end, "bad argument #1 to 'get' (darksidesync.channel expected, got table)")
end)
