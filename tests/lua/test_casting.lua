-- test_casting.lua -- darksidesync.casting, casting's API over sessions
-- and channels: Session (create, wait, close, set_threads, threads),
-- tasks (status, wait, result), Channel (new, write, read, close, status,
-- len, #), Message (new, decode); values travelling between states; the
-- defects of casting's alpha, each fixed.

local casting = require "darksidesync.casting"
local Session, Channel, Message = casting.Session, casting.Channel, casting.Message

local HAS_LEN = LUA_VERSION ~= "5.1" and LUA_VERSION ~= "luajit"

test("the module: Session, Channel, Message", function()
  local names = {}
  for k in pairs(casting) do
    if k:sub(1, 1) ~= "_" then names[#names + 1] = k end
  end
  table.sort(names)
  eq(table.concat(names, " "), "Channel Message Session")
  eq(type(Session.new), "function")
  eq(type(Session.set_threads), "function")
  eq(type(Session.threads), "function")
  eq(type(Channel.new), "function")
  eq(type(Message.new), "function")
end)

-- --- Channel in one state -------------------------------------------------

test("write(...) is one message: read returns every value, nils and all", function()
  local ch = Channel.new(4)
  eq(ch:write(1, nil, "x", nil), true)
  eq(ch:write(), true)
  eq(ch:write({ a = { 1, 2 } }), true)
  eq(ch:len(), 3)
  local r = pack(ch:read())
  eq(r.n, 4)
  eq(r[1], 1)
  eq(r[2], nil)
  eq(r[3], "x")
  eq(select("#", ch:read()), 0)
  local t = ch:read()
  eq(t.a[2], 2)
  eq(ch:len(), 0)
end)

test("values are copied at write", function()
  local ch = Channel.new(1)
  local t = { v = 1 }
  ch:write(t)
  t.v = 2
  local u = ch:read()
  ok(u ~= t, "a copy")
  eq(u.v, 1)
end)

test("integers and floats keep their type (5.3+)", function()
  if not math.type then return end
  local ch = Channel.new(1)
  ch:write(3, 3.0)
  local a, b = ch:read()
  eq(math.type(a), "integer")
  eq(math.type(b), "float")
end)

test("a buffered channel holds n messages, in order", function()
  local ch = Channel.new(3)
  for i = 1, 3 do eq(ch:write(i, -i), true) end
  eq(ch:len(), 3)
  if HAS_LEN then eq(#ch, 3) end
  for i = 1, 3 do
    local a, b = ch:read()
    eq(a, i)
    eq(b, -i)
  end
  eq(ch:len(), 0)
  if HAS_LEN then eq(#ch, 0) end
end)

test("a negative size (or math.huge) is unbounded", function()
  for _, size in ipairs({ -1, -1000, math.huge }) do
    local ch = Channel.new(size)
    for i = 1, 5000 do ch:write(i) end
    eq(ch:len(), 5000)
    if HAS_LEN then eq(#ch, 5000) end
    local sum = 0
    for _ = 1, 5000 do sum = sum + ch:read() end
    eq(sum, 5000 * 5001 / 2)
  end
end)

test("new(): nil and 0 are unbuffered; bad sizes raise", function()
  eq(Channel.new():len(), 0)
  eq(Channel.new(0):status(), "open")
  for _, bad in ipairs({ 1.5, "3", {}, 0 / 0 }) do
    raises(function() Channel.new(bad) end, "bad argument #1 to 'new' (an integer size expected)")
  end
end)

test("close, status: buffered messages are still read, then nil, 'closed'", function()
  local ch = Channel.new(2)
  eq(ch:status(), "open")
  ch:write("a", 1)
  ch:close()
  eq(ch:status(), "closed")
  local r1, r2 = ch:write("b")
  eq(r1, nil)
  eq(r2, "closed")
  local a, n = ch:read()
  eq(a, "a")
  eq(n, 1)
  local x, e = ch:read()
  eq(x, nil)
  eq(e, "closed")
  ch:close() -- again: nothing
  eq(ch:status(), "closed")
end)

test("uncopyable values raise at write, with the copy routine's message, and send nothing", function()
  local ch = Channel.new(4)
  raises(function() ch:write(1, io.stdout) end, "darksidesync: cannot copy a userdata (value 2)")
  raises(function() ch:write({ a = { print } }) end,
    "darksidesync: cannot copy a C function (value 1, at .a[1])")
  raises(function() ch:write(coroutine.create(function() end)) end,
    "darksidesync: cannot copy a thread (value 1)")
  local up = 1
  raises(function() ch:write("x", "y", function() return up end) end,
    "darksidesync: cannot copy function with upvalue 'up' (value 3)")
  eq(ch:len(), 0)
end)

test("methods check their object", function()
  local ch = Channel.new(1)
  raises(function() ch.read({}) end,
    "bad argument #1 to 'read' (darksidesync.casting.Channel expected)")
  raises(function() ch.write(Message.new(1), 1) end,
    "bad argument #1 to 'write' (darksidesync.casting.Channel expected)")
  raises(function() Message.new().decode(ch) end,
    "bad argument #1 to 'decode' (darksidesync.casting.Message expected)")
  local s = Session.new()
  raises(function() s.create(ch, print) end,
    "bad argument #1 to 'create' (darksidesync.casting.Session expected)")
  raises(function() s:create(42) end, "bad argument #1 to 'create' (function expected, got number)")
  s:close()
end)

test("tostring and equality: a channel read back is the same channel", function()
  local ch, carrier = Channel.new(1), Channel.new(1)
  ok(tostring(ch):find("^darksidesync%.casting%.Channel: "), tostring(ch))
  carrier:write(ch)
  local back = carrier:read()
  ok(rawequal(getmetatable(back), getmetatable(ch)), "a casting Channel")
  ok(back == ch, "the same channel")
  ok(back ~= carrier, "not another")
  back:write("through the copy")
  eq(ch:read(), "through the copy")
end)

-- --- Message --------------------------------------------------------------

test("Message: new copies the values now; decode gives a fresh copy each time", function()
  local t = { 1, { 2 } }
  local m = Message.new(t, nil, "s", nil)
  t[1] = "changed"
  local r = pack(m:decode())
  eq(r.n, 4)
  eq(r[1][1], 1)
  eq(r[1][2][1], 2)
  eq(r[2], nil)
  eq(r[3], "s")
  local again = m:decode()
  ok(again ~= r[1], "a fresh copy")
  eq(again[1], 1)
  eq(select("#", Message.new():decode()), 0)
  ok(tostring(m):find("^darksidesync%.casting%.Message: "), tostring(m))
end)

test("Message: uncopyable values raise at new", function()
  raises(function() Message.new(1, print) end, "darksidesync: cannot copy a C function (value 2)")
  raises(function() Message.new({ f = io.stderr }) end,
    "darksidesync: cannot copy a userdata (value 1, at .f)")
end)

test("Message: written to a channel, read back as a Message", function()
  local ch = Channel.new(1)
  local m = Message.new("hello", 42)
  ch:write(m, "tag")
  local back, tag = ch:read()
  eq(tag, "tag")
  ok(rawequal(getmetatable(back), getmetatable(m)), "a Message")
  ok(back == m, "the same message")
  local a, b = back:decode()
  eq(a, "hello")
  eq(b, 42)
end)

-- --- Sessions and tasks -----------------------------------------------------

test("create runs a task: result, status, wait", function()
  local s = Session.new()
  local t = s:create(function(a, b) return a + b, { sum = a + b }, nil end, 2, 3)
  local r = pack(t:result())
  eq(r.n, 3)
  eq(r[1], 5)
  eq(r[2].sum, 5)
  eq(t:status(), "done")
  eq(t:wait(), "done")
  eq(s:wait(), true)
  eq(s:close(), true)
end)

test("a task has the standard libraries", function()
  local s = Session.new()
  local t = s:create(function()
    return string.rep("ab", 2), table.concat({ 1, 2 }, ","), math.floor(2.5),
      type(os.time()), type(io.write), type(coroutine.wrap), type(debug.traceback),
      type(package.path)
  end)
  local r = pack(t:result())
  eq(table.concat(r, " ", 1, r.n), "abab 1,2 2 number function function function string")
  s:close()
end)

test("s:wait() raises a task's error with its traceback; its status returns it", function()
  local s = Session.new()
  local good = s:create(function() return 1 end)
  local bad = s:create(function() error("task failed") end)
  local err = raises(function() s:wait() end, { pattern = "task failed" })
  ok(err:find("stack traceback:", 1, true), "a traceback: " .. err)
  local st, e = bad:status()
  eq(st, "error")
  ok(e:find("task failed", 1, true) and e:find("stack traceback:", 1, true), e)
  eq(bad:wait(), "error")
  eq(select(2, bad:wait()), e)
  eq(good:status(), "done")
  -- Raised once: the next wait has nothing to raise.
  eq(s:wait(), true)
  s:close()
end)

test("several task errors: each wait raises the next one, in creation order", function()
  local s = Session.new()
  local gate = Channel.new(-1)
  local t1 = s:create(function(g) g:read() error("first") end, gate)
  local t2 = s:create(function(g) g:read() error("second") end, gate)
  gate:write()
  gate:write()
  raises(function() s:wait() end, { pattern = "^[^\n]*first\nstack traceback:" })
  raises(function() s:wait() end, { pattern = "^[^\n]*second\nstack traceback:" })
  eq(s:wait(), true)
  eq(t1:status(), "error")
  eq(t2:status(), "error")
  s:close()
end)

test("result() raises the task's error; wait() does not raise it again", function()
  local s = Session.new()
  local t = s:create(function() error({ code = 7 }) end)
  local err = raises(function() t:result() end, { pattern = "^table: " })
  ok(err:find("stack traceback:", 1, true), err)
  eq(s:wait(), true)
  -- result raises it each time; it is the task's result.
  raises(function() t:result() end, { pattern = "^table: " })
  s:close()
end)

test("a task's results that cannot be copied are its error", function()
  local s = Session.new()
  local t = s:create(function() return 1, io.stdout end)
  local st, e = t:wait()
  eq(st, "error")
  eq(e, "darksidesync.casting: cannot return the results: darksidesync: cannot copy a userdata (value 2)")
  raises(function() s:wait() end, e)
  s:close()
end)

test("create: uncopyable fn or arguments raise, with the copy routine's message", function()
  local s = Session.new()
  local up = 0
  raises(function() s:create(function() return up end) end,
    "darksidesync: cannot copy function with upvalue 'up' (value 1)")
  raises(function() s:create(function() end, 1, io.stdout) end,
    "darksidesync: cannot copy a userdata (value 3)")
  raises(function() s:create(function() end, { deep = { print } }) end,
    "darksidesync: cannot copy a C function (value 2, at .deep[1])")
  eq(s:wait(), true) -- nothing was created
  s:close()
end)

test("read from the main state waits until a task writes", function()
  local s = Session.new()
  local go, out = Channel.new(0), Channel.new(0)
  local t = s:create(function(g, o)
    local n = g:read()
    for i = 1, n do o:write(i, i * i) end
    o:close()
    return "wrote " .. n
  end, go, out)
  eq(go:write(3), true) -- unbuffered: the task has read it once this returns
  for i = 1, 3 do
    local a, b = out:read()
    eq(a, i)
    eq(b, i * i)
  end
  local x, e = out:read()
  eq(x, nil)
  eq(e, "closed")
  eq(t:result(), "wrote 3")
  s:close()
end)

test("an unbuffered write waits for a read: the writer counts in len", function()
  local s = Session.new()
  local ch = Channel.new(0)
  local t = s:create(function(c) return c:write("rendezvous") end, ch)
  waitfor(function() return ch:len() == 1 end, "the task's write waiting")
  eq(t:status(), "running")
  eq(ch:read(), "rendezvous")
  eq(t:result(), true)
  eq(ch:len(), 0)
  s:close()
end)

test("tasks exchanging over channels: a ring of 5 tasks, 100 rounds", function()
  local s = Session.new()
  local n, rounds = 5, 100
  local links = {}
  for i = 1, n + 1 do links[i] = Channel.new(0) end
  local tasks = {}
  for i = 1, n do
    tasks[i] = s:create(function(inp, out, add)
      local count = 0
      while true do
        local v = inp:read()
        if v == nil then break end
        out:write(v + add)
        count = count + 1
      end
      out:close()
      return count
    end, links[i], links[i + 1], i)
  end
  local total = 0
  for r = 1, rounds do
    links[1]:write(r)
    total = total + links[n + 1]:read()
  end
  links[1]:close()
  eq(select(2, links[n + 1]:read()), "closed")
  eq(total, rounds * (rounds + 1) / 2 + rounds * 15)
  for i = 1, n do eq(tasks[i]:result(), rounds) end
  eq(s:wait(), true)
  s:close()
end)

test("two sessions: tasks in one write, tasks in the other read, exact sum", function()
  local a, b = Session.new(), Session.new()
  local ch, results = Channel.new(8), Channel.new(-1)
  for w = 1, 4 do
    a:create(function(c, w)
      for i = 1, 250 do c:write(w, i) end
    end, ch, w)
  end
  for _ = 1, 2 do
    b:create(function(c, res)
      local sum, count = 0, 0
      while true do
        local w, i = c:read()
        if w == nil then break end
        sum, count = sum + w * 1000 + i, count + 1
      end
      res:write(sum, count)
    end, ch, results)
  end
  eq(a:wait(), true)
  ch:close()
  eq(b:wait(), true)
  local sum, count = 0, 0
  for _ = 1, 2 do
    local s1, c1 = results:read()
    sum, count = sum + s1, count + c1
  end
  eq(count, 1000)
  eq(sum, (1 + 2 + 3 + 4) * 1000 * 250 + 4 * (250 * 251 / 2))
  a:close()
  b:close()
end)

test("channels and messages travel as arguments and results", function()
  local s = Session.new()
  local ch = Channel.new(1)
  local m = Message.new("payload", { 1, 2, 3 })
  local t = s:create(function(c, msg)
    local casting = require "darksidesync.casting"
    local text, list = msg:decode()
    c:write(text, #list)
    local fresh = casting.Channel.new(2)
    fresh:write("from the task")
    return fresh, casting.Message.new("made in the task"), getmetatable(c) ~= nil
  end, ch, m)
  local fresh, m2, had_mt = t:result()
  eq(had_mt, true)
  local text, n = ch:read()
  eq(text, "payload")
  eq(n, 3)
  eq(fresh:read(), "from the task")
  eq(m2:decode(), "made in the task")
  s:close()
end)

test("sessions and tasks do not travel", function()
  local s = Session.new()
  local t = s:create(function() return 1 end)
  local ch = Channel.new(1)
  raises(function() ch:write(s) end, { pattern = "^darksidesync: cannot copy a userdata %(value 1, at " })
  raises(function() ch:write(1, t) end, { pattern = "^darksidesync: cannot copy a userdata %(value 2, at " })
  eq(t:result(), 1)
  s:close()
end)

test("a message decoded in several states at once: every decode gets the values", function()
  local s1, s2 = Session.new(), Session.new()
  local m = Message.new({ x = 1 }, "m")
  local tasks = {}
  for i = 1, 10 do
    local s = i % 2 == 0 and s1 or s2
    tasks[i] = s:create(function(msg)
      local sum = 0
      for _ = 1, 100 do
        local t, tag = msg:decode()
        if tag == "m" then sum = sum + t.x end
      end
      return sum
    end, m)
  end
  for _ = 1, 100 do eq(m:decode().x, 1) end
  for i = 1, 10 do eq(tasks[i]:result(), 100) end
  s1:close()
  s2:close()
end)

test("close resumes tasks waiting on a channel: nil, 'closed'", function()
  local s = Session.new()
  local ch, ready = Channel.new(0), Channel.new(-1)
  local readers, writers = {}, {}
  for i = 1, 3 do
    readers[i] = s:create(function(c, r)
      r:write()
      return c:read()
    end, ch, ready)
  end
  for i = 1, 2 do
    writers[i] = s:create(function(c, r)
      r:write()
      return c:write("never read")
    end, ch, ready)
  end
  -- The two writers wait on the channel; the readers may take their values.
  for _ = 1, 5 do ready:read() end
  ch:close()
  local got, closed = 0, 0
  for i = 1, 3 do
    local r = pack(readers[i]:result())
    if r[1] == "never read" then
      got = got + 1
    else
      eq(r.n, 2)
      eq(r[1], nil)
      eq(r[2], "closed")
      closed = closed + 1
    end
  end
  local wrote = 0
  for i = 1, 2 do
    local r = pack(writers[i]:result())
    if r[1] == true then
      wrote = wrote + 1
    else
      eq(r[2], "closed")
    end
  end
  eq(got, wrote)
  eq(got + closed, 3)
  s:close()
end)

test("close resumes the main state waiting on a read", function()
  local s = Session.new()
  local ch, go = Channel.new(0), Channel.new(0)
  s:create(function(c, g)
    g:read()
    c:close()
  end, ch, go)
  go:write(true)
  local x, e = ch:read()
  eq(x, nil)
  eq(e, "closed")
  eq(s:wait(), true)
  s:close()
end)

test("s:close(): tasks still waiting end cancelled; create raises after", function()
  local s = Session.new()
  local ch = Channel.new(0)
  local done = s:create(function() return "finished" end)
  eq(done:result(), "finished")
  local stuck = s:create(function(c) return c:read() end, ch)
  local stuck2 = s:create(function(c) return c:read() end, ch)
  eq(stuck:status(), "running")
  eq(s:close(), true)
  eq(stuck:status(), "cancelled")
  eq(stuck2:wait(), "cancelled")
  raises(function() stuck:result() end, "darksidesync.casting: the task was cancelled")
  eq(done:status(), "done")
  eq(s:close(), true) -- again: nothing
  eq(s:wait(), true)
  raises(function() s:create(function() end) end, "darksidesync.casting: the session is closed")
end)

test("tasks create sessions of their own; waiting there suspends the task only", function()
  local s = Session.new()
  local ch = Channel.new(0)
  local t = s:create(function(c)
    local casting = require "darksidesync.casting"
    local inner = casting.Session.new()
    local sq = {}
    for i = 1, 4 do sq[i] = inner:create(function(x) return x * x end, i) end
    local bad = inner:create(function() error("inner boom") end)
    local sum = 0
    for i = 1, 4 do sum = sum + sq[i]:result() end
    local st = bad:wait()
    -- Every task ended: this wait does not suspend (on 5.1 a pcall around
    -- a call that suspends the fiber cannot work).
    local okw, err = pcall(inner.wait, inner)
    inner:close()
    c:write(sum)
    return okw, err:match("inner boom") ~= nil, st
  end, ch)
  -- Meanwhile the session's other tasks run: this one answers at once.
  local echo = s:create(function(x) return x end, "echo")
  eq(echo:result(), "echo")
  eq(ch:read(), 30)
  local okw, matched, st = t:result()
  eq(okw, false)
  eq(matched, true)
  eq(st, "error")
  s:close()
end)

test("fibers of the main state: two wait on one task, both see its end", function()
  local fiber = require "darksidesync.fibers.fiber"
  local s = Session.new()
  local gate = Channel.new(0)
  local t = s:create(function(g) return g:read() end, gate)
  local seen, ended = {}, 0
  for i = 1, 2 do
    fiber.spawn(function()
      seen[i] = pack(t:wait()) -- suspends this fiber only
      ended = ended + 1
      if ended == 3 then fiber.stop() end
    end)
  end
  fiber.spawn(function()
    eq(gate:write("late"), true) -- suspends until the task reads
    eq(t:result(), "late")
    eq(s:wait(), true)
    ended = ended + 1
    if ended == 3 then fiber.stop() end
  end)
  fiber.main()
  eq(ended, 3)
  for i = 1, 2 do
    eq(seen[i].n, 1)
    eq(seen[i][1], "done")
  end
  s:close()
end)

test("many short tasks: every result, in order", function()
  local s = Session.new()
  local tasks = {}
  for i = 1, 500 do tasks[i] = s:create(function(x) return x * 2 end, i) end
  eq(s:wait(), true)
  local sum = 0
  for i = 1, 500 do
    eq(tasks[i]:status(), "done")
    sum = sum + tasks[i]:result()
  end
  eq(sum, 500 * 501)
  s:close()
end)

test("set_threads / threads: the pool's limits", function()
  local min0, max0 = Session.threads()
  local mn, mx, alive = Session.set_threads(2, 3)
  eq(mn, 2)
  eq(mx, 3)
  ok(alive >= 2, "threads alive: " .. tostring(alive))
  local a, b = Session.threads()
  eq(a, 2)
  eq(b, 3)
  raises(function() Session.set_threads(0, 2) end,
    "bad argument #1 to 'set_threads' (an integer >= 1 expected)")
  raises(function() Session.set_threads(2, 1) end,
    "bad argument #2 to 'set_threads' (an integer >= min expected)")
  raises(function() Session.set_threads(1.5, 2) end,
    "bad argument #1 to 'set_threads' (an integer >= 1 expected)")
  raises(function() Session.set_threads(1) end,
    "bad argument #2 to 'set_threads' (an integer >= min expected)")
  Session.set_threads(min0, max0)
  eq(select(2, Session.threads()), max0)
end)

test("closing the state joins everything: sessions with waiting tasks, exit 0", function()
  local script = os.tmpname()
  writefile(script, [[
    local casting = require "darksidesync.casting"
    local never_written, never_read = casting.Channel.new(0), casting.Channel.new(0)
    local sessions = {}
    for i = 1, 3 do
      local s = casting.Session.new()
      sessions[i] = s
      s:create(function(c) return c:read() end, never_written)
      s:create(function(c) return c:write("never") end, never_read)
      s:create(function(i) return i end, i)
    end
    for i = 1, 3 do
      local t = sessions[i]:create(function(i) return i * 10 end, i)
      io.write(t:result(), " ")
    end
    print("end")
  ]])
  local out, status = sh(shq(INTERP) .. " " .. shq(script))
  os.remove(script)
  eq(out, "10 20 30 end\n")
  eq(status, 0)
end)

test("a Session nobody holds runs its tasks to their end, then ends", function()
  local session = require "darksidesync.session"
  local dss = require "darksidesync"
  local before = session.pool().sessions
  local gate, out = Channel.new(0), Channel.new(1)
  do
    local s = Session.new()
    s:create(function(g, o) o:write(g:read() * 2) end, gate, out)
    s:create(function(g, o) o:write(g:read() * 3) end, gate, out)
  end
  eq(session.pool().sessions, before + 1)
  collectgarbage()
  collectgarbage()
  -- The inbox is closed now, but both tasks still wait for the gate.
  eq(gate:write(7), true)
  local first = out:read()
  eq(gate:write(7), true)
  local second = out:read()
  eq(first + second, 35)
  waitfor(function()
    dss.wait(0.001)
    return session.pool().sessions == before
  end, "the session's end")
end)
