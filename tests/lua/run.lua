-- run.lua -- a small test runner for the Lua-level tests, the same on Lua
-- 5.1-5.4 and LuaJIT.
--
--   lua run.lua tests/lua/test_x.lua
--
-- A test file calls test(name, fn) for each test; fn uses the assertions
-- below. The runner runs them in order, each protected, and ends with one
-- line "<file>: N passed, N failed"; it exits non-zero if any failed.

local file = assert(arg and arg[1], "usage: run.lua TESTFILE")
local name = file:match("([^/]+)%.lua$") or file
local tests = {}

local function fmt(v)
  if type(v) == "string" then return string.format("%q", v) end
  return tostring(v)
end

function test(title, fn)
  tests[#tests + 1] = { title = title, fn = fn }
end

-- eq(actual, expected[, what]): raw equality.
function eq(actual, expected, what)
  if actual ~= expected then
    error((what and what .. ": " or "") .. "expected " .. fmt(expected) ..
          ", got " .. fmt(actual), 2)
  end
end

-- ok(value[, what]): value is truthy.
function ok(value, what)
  if not value then error((what or "expected a true value") .. ", got " .. fmt(value), 2) end
  return value
end

-- raises(fn, expected): fn must raise an error whose message, with any
-- "file:line: " position stripped, equals expected (a string), or matches
-- it when expected is {pattern = "..."}. Returns the message.
function raises(fn, expected)
  local okay, err = pcall(fn)
  if okay then error("expected an error " .. fmt(expected) .. ", none raised", 2) end
  local msg = tostring(err):gsub("^[^:\n]+:%d+: ", "")
  if type(expected) == "table" then
    if not msg:match(expected.pattern) then
      error("error " .. fmt(msg) .. " does not match " .. fmt(expected.pattern), 2)
    end
  elseif expected ~= nil and msg ~= expected then
    error("expected error " .. fmt(expected) .. ", got " .. fmt(msg), 2)
  end
  return msg
end

-- INTERP: the interpreter running the tests (arg's lowest index), for
-- tests that start child interpreters.
do
  local i = -1
  while arg[i - 1] ~= nil do i = i - 1 end
  INTERP = arg[i]
end

-- shq(s): s quoted for sh.
function shq(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

function readfile(path)
  local f = assert(io.open(path, "r"))
  local text = f:read("*a")
  f:close()
  return text
end

function writefile(path, text)
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
end

-- sh(cmd): runs cmd with sh; its output (stdout and stderr) and exit status.
function sh(cmd)
  -- Under the sanitizer build the ASan runtime is preloaded into every
  -- child (tests/CMakeLists.txt): tools such as cc1 and mktemp would fail on
  -- their own leaks, so leak checking is off in what this shell starts.
  if (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true) then
    cmd = "ASAN_OPTIONS=detect_leaks=0:detect_odr_violation=0; export ASAN_OPTIONS; " .. cmd
  end
  local p = assert(io.popen("(" .. cmd .. ") 2>&1; echo \"exit:$?\""))
  local out = p:read("*a")
  p:close()
  local body, status = out:match("^(.-)exit:(%d+)%s*$")
  return body, tonumber(status)
end

-- labeled(msg[, what]): a `raises` pattern for msg as darksidesync labels
-- an error raised by a client's callback (what: "decoder", the default, or
-- "return callback"): "<msg> (raised by the <what> of darksidesync client
-- 0x...)". unlabel(msg) strips the label.
function labeled(msg, what)
  return { pattern = "^" .. msg:gsub("%p", "%%%0") .. " %(raised by the " ..
                     (what or "decoder") .. " of darksidesync client 0x%x+%)$" }
end

function unlabel(msg)
  return (tostring(msg):gsub(" %(raised by the [%w ]+ of darksidesync client [^)]*%)$", ""))
end

-- waitfor(pred[, what[, seconds]]): calls pred() until it returns a true
-- value, and returns that value. A bounded wait for something another thread
-- brings about (no sleeping): fails after about `seconds` (default 10).
function waitfor(pred, what, seconds)
  -- DSS_TEST_TIMESCALE stretches every bound, for slow runs (valgrind).
  local scale = tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1
  local deadline = os.time() + (seconds or 10) * scale + 1
  local n = 0
  while true do
    local v = pred()
    if v then return v end
    n = n + 1
    if n % 256 == 0 and os.time() > deadline then
      error("timed out waiting for " .. (what or "a condition"), 2)
    end
  end
end

-- pump(pred[, what]): polls darksidesync, calling each callback polled,
-- until pred() returns a true value (a bounded wait, as waitfor).
function pump(pred, what)
  local dss = require "darksidesync"
  return waitfor(function()
    local n, cb, args = dss.poll()
    if n ~= -1 and cb then cb(unpack(args)) end
    return pred()
  end, what)
end

-- The Lua version under test, as "5.1" .. "5.4" or "luajit".
LUA_VERSION = rawget(_G, "jit") and "luajit" or _VERSION:match("%d%.%d")
unpack = unpack or table.unpack
-- pack(...): the values in a table, with their number in n.
pack = table.pack or function(...) return { n = select("#", ...), ... } end

-- Helpers for the tests of darksidesync through the test client library
-- (tests/clients/testclient.c); they load both modules when first called.

-- fresh(): ends whatever an earlier test left (unregistering cancels its
-- items and stops its producers), registers lib 1 again, zeroes the
-- counters, clears the callback and turns UDP notification off.
function fresh()
  local dss, tc = require "darksidesync", require "testclient"
  for lib = 1, 2 do
    local u = tc.utilid(lib)
    if u then tc.unreg(u) end
  end
  ok(tc.join(), "producers of an earlier test still running")
  tc.init()
  tc.reset()
  tc.setcallback(nil)
  dss.setport(0)
  if dss.setmaxqueue then -- beyond 1.0
    dss.setmaxqueue(0)
    dss.seterrorhandler(nil)
  end
end

-- scaled(ms): ms stretched by DSS_TEST_TIMESCALE (see waitfor), for the
-- timeouts tests hand to deliver2 and wait.
function scaled(ms)
  return ms * (tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1)
end

-- argreason(n, f, ...): calls f(...), which must raise luaL_argerror's
-- "bad argument #n to '<name>' (<reason>)" (the name differs between Lua
-- versions); returns the reason.
function argreason(n, f, ...)
  local args = pack(...)
  local msg = raises(function()
    local r = f(unpack(args, 1, args.n)) -- not a tail call: keep the name
    return r
  end, { pattern = "^bad argument #" .. n .. " to '[^']*' %(.*%)$" })
  return msg:match("%((.*)%)$")
end

-- queued(n): waits until exactly n items are queued.
function queued(n)
  local dss = require "darksidesync"
  waitfor(function() return dss.queuesize() == n end, n .. " item(s) queued")
end

-- child(code): a new Lua state with darksidesync and the test client loaded
-- as the globals dss and tc, running code; returns the state and code's
-- results.
function child(code)
  return require("testclient").newstate([[
    dss = require "darksidesync"
    tc = require "testclient"
  ]] .. code)
end

local chunk = assert(loadfile(file))
chunk()

local passed, failed = 0, 0
for _, t in ipairs(tests) do
  local okay, err = xpcall(t.fn, debug.traceback)
  if okay then
    passed = passed + 1
    print("ok     " .. t.title)
  else
    failed = failed + 1
    print("FAILED " .. t.title .. "\n       " .. tostring(err):gsub("\n", "\n       "))
  end
  collectgarbage()
  collectgarbage()
end
print(string.format("%s: %d passed, %d failed", name, passed, failed))
if failed > 0 or passed == 0 then os.exit(1) end
