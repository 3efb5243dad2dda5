-- test_docs.lua -- every code block of the README, docs/*.md and
-- examples/*/README.md runs, compiles or is checked, on this Lua version;
-- none is skipped silently.
--
-- * The table EXPECTED says how many blocks of each kind every file has:
--   adding a block (or a file) without a fixture here fails.
-- * ```lua: each block runs in a child interpreter (this one) under
--   `timeout`, after a preamble (FIXTURES[...].pre: what the surrounding
--   text says is given, producers from the test client library) and
--   before a postamble (.post), and its output must be exactly .out (or
--   satisfy .match). A block that is an endless loop is stopped by a
--   fixture: FX.stop_when sets a count hook that ends the process once the
--   items the fixture delivered have run. A block whose loop library is
--   missing for this Lua version (Debian has no Copas for 5.3/5.4, nobody
--   packages lua-fibers) prints a "skipped: <reason>" line and is counted;
--   any other missing module fails. Blocks that are not programs (a call
--   signature) are listed in COMPILE_ONLY with the reason, and compiled.
-- * ```c / ```cpp: compiled (-fsyntax-only -Werror) with this version's
--   Lua headers and include/, after a preamble declaring what the text
--   leaves to the reader (CPREAMBLE).
-- * ```sh: `sh -n`, every command known (make targets exist in the
--   Makefile), every repository path named exists; the ticker README's
--   build lines are run. ```cmake: every command is one CMake knows.
-- * Unlabelled blocks are diagrams and layouts: counted, not run.

local here = (arg and arg[1] or ""):match("^(.*/)") or "./"
local root = here .. "../../"
local fenced_blocks = dofile(here .. "docblocks.lua")
local compile = loadstring or load
local scale = tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1

local interp = INTERP


-- Every file with code blocks, and how many of each kind it has.
local EXPECTED = {
  ["README.md"] = { lua = 4, c = 1, sh = 1 },
  ["docs/lua-api.md"] = { lua = 6, c = 1 },
  ["docs/c-api.md"] = { c = 3, text = 1 },
  ["docs/client-guide.md"] = { c = 1, cpp = 1, lua = 3, sh = 4 },
  ["docs/cpp-api.md"] = { cpp = 2 },
  ["docs/design.md"] = { text = 1 },
  ["docs/fibers.md"] = { lua = 4 },
  ["docs/install.md"] = { sh = 5, cmake = 1, text = 1 },
  ["docs/integrations.md"] = { lua = 7 },
  ["docs/migration.md"] = {},
  ["docs/performance.md"] = { sh = 1 },
  ["docs/robustness.md"] = {},
  ["docs/sessions.md"] = { lua = 5, text = 2 },
  ["examples/fibers/README.md"] = { sh = 1 },
  ["examples/resolver/README.md"] = { lua = 3 },
  ["examples/resolver_cpp/README.md"] = { lua = 1 },
  ["examples/signal/README.md"] = { lua = 1, text = 1 },
  ["examples/ticker/README.md"] = { lua = 1, sh = 2 },
}
local FILES = {}
for name in pairs(EXPECTED) do FILES[#FILES + 1] = name end
table.sort(FILES)

-- blocks(name) -> the fenced code blocks of a file under root (run.lua's
-- fenced_blocks).
local function blocks(name) return fenced_blocks(root .. name, name) end

-- ---------------------------------------------------------------------
-- Lua blocks.

-- Prepended to every Lua block run in a child: FX, the fixtures' helpers.
local PRELUDE = [[
FX = { ran = 0 }
-- FX.items(n[, quiet]): one test-client thread delivers n fire-and-forget
-- items; each item's callback prints "item <seq>" unless quiet, counts
-- itself in FX.ran, then calls FX.after() if set.
function FX.items(n, quiet)
  require "darksidesync"
  local tc = require "testclient"
  tc.init()
  tc.setcallback(function(lib, pid, seq)
    if not quiet then print("item " .. seq) end
    FX.ran = FX.ran + 1 -- last: on LuaJIT the stop hook also fires in here
    if FX.after then FX.after() end
  end)
  tc.start { items = n }
end
-- FX.stop_when(pred, report): a hook on every instruction of the main
-- coroutine; once pred() holds, calls report() and ends the process
-- (status 0). For blocks that are endless loops.
function FX.stop_when(pred, report)
  debug.sethook(function()
    if pred() then
      debug.sethook()
      if report then report() end
      io.stdout:flush()
      os.exit(0)
    end
  end, "", 1)
end
]]

local function ran(n)
  return "FX.stop_when(function() return FX.ran >= " .. n ..
         " end, function() print('items ' .. FX.ran) end)\n"
end
local RESOLVED = "printer.invalid\tnil\tName or service not known\t3\n"

-- Lua blocks that are not programs: compiled only.
local COMPILE_ONLY = {
  ["examples/resolver/README.md lua 2"] = "a call signature (the result callback's arguments), not a program",
  ["examples/resolver/README.md lua 3"] = "a call signature (the retry function's), not a program",
  -- The guide's programs need the guide's own client: tests/lua/test_guide.lua
  -- builds it from the text and runs them (exact output), and the rockspec.
  ["docs/client-guide.md lua 1"] = "run.lua, run by test_guide.lua against the guide's mylib",
  ["docs/client-guide.md lua 2"] = "stop.lua, run by test_guide.lua against the guide's mylib",
  ["docs/client-guide.md lua 3"] = "the rockspec template, built by test_guide.lua with luarocks make",
}

-- The fixture of every other Lua block: needs (modules), pre, post, and
-- out (exact output) or match(out) -> true | false, why.
local FIXTURES = {
  ["README.md lua 1"] = { -- the quick start: the ticker, drained with poll and wait
    out = "tick\t1\ntick\t2\ntick\t3\ntick\t4\ntick\t5\nyes\n" },
  ["README.md lua 2"] = { -- the dss helper in a Copas loop (never returns)
    needs = { "copas", "socket" },
    pre = "FX.items(3)\n" .. ran(3),
    out = "item 1\nitem 2\nitem 3\nitems 3\n" },
  ["README.md lua 3"] = { -- beyond 1.0: running() and port are the program's own
    pre = "FX.items(3)\nlocal function running() return FX.ran < 3 end\nlocal port = 65001\n",
    post = "print(dss.getport(), dss.getmaxqueue())\n",
    match = function(out)
      return out:match("^item 1\nitem 2\nitem 3\n3\t[123]\n65001\t10000\n$") ~= nil
    end },
  ["README.md lua 4"] = { -- one reader per loop; cq given
    needs = { "luv", "cqueues", "copas", "socket" },
    pre = "local cq = require('cqueues').new()\nFX.items(1)\n",
    post = "assert(#require('socket').select({ r }, nil, 10) == 1)\nr:dispatch()\n" ..
           "w:close(); c:stop(); p:stop()\n" ..
           -- luv (Debian's) crashes at exit when a closed handle's close
           -- never ran: let the loop run it, as the program's uv.run() would.
           "require('luv').run()\nprint('items ' .. FX.ran)\n",
    out = "item 1\nitems 1\n" },
  ["docs/lua-api.md lua 1"] = { out = "" },
  ["docs/lua-api.md lua 2"] = { -- monotime(), with the module as at the top
    pre = "local darksidesync = require 'darksidesync'\n",
    match = function(out) return out:match("^waited 0%.%d%d%d s\n$") ~= nil end },
  ["docs/lua-api.md lua 3"] = { -- the poller, with an item queued
    pre = "local darksidesync = require 'darksidesync'\nFX.items(1)\n" ..
          "while darksidesync.queuesize() == 0 do darksidesync.wait(5) end\n",
    match = function(out)
      return out:match("^fd %d+ ready, events (%d+)\n$") == tostring(require("darksidesync").POLL.IN)
    end },
  ["docs/lua-api.md lua 4"] = { out = "stop\n" },           -- stopping: drain, then join
  ["docs/lua-api.md lua 5"] = { out = "0\n" },              -- stopping: resolver.shutdown()
  ["docs/lua-api.md lua 6"] = { needs = { "socket" }, out = "" },
  ["docs/fibers.md lua 1"] = { out = "got\t1\ngot\t2\ngot\t3\n" },
  ["docs/sessions.md lua 1"] = { out = "" },  -- asserts only
  ["docs/sessions.md lua 2"] = { out = "12\tclosed\n" },
  ["docs/sessions.md lua 3"] = { out = "hello from a session\n" },  -- a loop of the main state
  ["docs/sessions.md lua 4"] = { out = "" },  -- asserts only
  ["docs/sessions.md lua 5"] = { out = "HELLO\t2\nechoed\nfalse\toops\terror\nlist\t3\n" },
  ["docs/fibers.md lua 2"] = { needs = { "socket" }, out = "nothing within 50 ms\n" },
  ["docs/fibers.md lua 3"] = { -- the draining fiber: main() runs it, items stop it
    pre = "FX.items(2)\nFX.after = function() if FX.ran == 2 then require('darksidesync.fibers').stop() end end\n",
    post = "fibers.main(function() end)\nprint('items ' .. FX.ran)\n",
    out = "item 1\nitem 2\nitems 2\n" },
  ["docs/fibers.md lua 4"] = { -- a function definition
    post = "assert(type(line_or_timeout) == 'function')\n", out = "" },
  ["docs/integrations.md lua 1"] = { needs = { "luv" }, pre = "FX.items(2, true)\n",
    post = "print('ticks ' .. ticks .. ', items ' .. FX.ran)\n", out = "ticks 10, items 2\n" },
  ["docs/integrations.md lua 2"] = { needs = { "cqueues" }, pre = "FX.items(2, true)\n",
    post = "print('items ' .. FX.ran)\n", out = ("tick\n"):rep(10) .. "items 2\n" },
  ["docs/integrations.md lua 3"] = { -- drive the pollable yourself, in cq
    needs = { "cqueues" },
    pre = "local cqueues = require 'cqueues'\nlocal cq = cqueues.new()\nFX.items(2, true)\n",
    post = "while FX.ran < 2 do assert(cq:step(5)) end\nprint('items ' .. FX.ran)\n",
    out = "items 2\n" },
  ["docs/integrations.md lua 4"] = { needs = { "copas" },   -- copas.loop() never returns
    pre = "FX.items(2, true)\n" .. ran(2), out = "items 2\n" },
  ["docs/integrations.md lua 5"] = { needs = { "socket" },  -- serve is the program's own
    pre = "local function serve(client) client:close() end\nFX.items(2, true)\n" .. ran(2),
    out = "items 2\n" },
  ["docs/integrations.md lua 6"] = { needs = { "fibers.fiber", "fibers.pollio" }, -- lua-fibers
    pre = "FX.items(2, true)\n" .. ran(2), out = "items 2\n" },
  ["docs/integrations.md lua 7"] = { -- no loop: running is the program's own
    pre = "running = true\nFX.items(2, true)\nFX.after = function() running = FX.ran < 2 end\n",
    post = "print('items ' .. FX.ran)\n", out = "items 2\n" },
  ["examples/resolver/README.md lua 1"] = {
    match = function(out)
      local lines = {}
      for l in out:gmatch("[^\n]*\n") do lines[#lines + 1] = l end
      table.sort(lines)
      return #lines == 2 and lines[1]:match("^localhost\t[%x:.]") ~= nil and lines[2] == RESOLVED
    end },
  ["examples/resolver_cpp/README.md lua 1"] = { out = RESOLVED },
  ["examples/signal/README.md lua 1"] = { -- SIGTERM raised once the three watches are set
    pre = "debug.sethook(function()\n" ..
          "  local s = package.loaded.dss_signal\n" ..
          "  if s and not FX.raised and #s.watching() == 3 then FX.raised = true; s.raise('SIGTERM') end\n" ..
          "end, '', 1)\n",
    post = "debug.sethook()\n",
    out = "got SIGTERM\n" },
  ["examples/ticker/README.md lua 1"] = { out = "tick 1\ntick 2\ntick 3\nthanks\n" },
}

-- Modules this Lua may lack, and why (anything else missing fails).
local MAY_LACK = {
  copas = (LUA_VERSION == "5.3" or LUA_VERSION == "5.4") and "Debian packages Copas for 5.1, 5.2 and LuaJIT only",
  ["fibers.fiber"] = "lua-fibers is not packaged by Debian",
  ["fibers.pollio"] = "lua-fibers is not packaged by Debian",
}

local tally = { run = 0, compiled = 0, checked = 0, counted = 0, skipped = 0 }
local skipped = {}

local function run_lua(key, block, fx)
  for _, m in ipairs(fx.needs or {}) do
    if not pcall(require, m) then
      ok(MAY_LACK[m], "module " .. m .. " missing for Lua " .. LUA_VERSION .. " (needed by " .. key .. ")")
      local line = "skipped: " .. key .. ": no " .. m .. " for Lua " .. LUA_VERSION .. " (" .. MAY_LACK[m] .. ")"
      skipped[#skipped + 1] = line
      print(line)
      tally.skipped = tally.skipped + 1
      return
    end
  end
  local file = os.tmpname()
  writefile(file, PRELUDE .. (fx.pre or "") .. block .. (fx.post or ""))
  local out, status = sh("timeout -k 5 " .. 60 * scale .. " " .. shq(interp) .. " " .. shq(file))
  os.remove(file)
  eq(status, 0, key .. ": exit status (output: " .. out .. ")")
  if fx.match then
    ok(fx.match(out), key .. ": output " .. string.format("%q", out))
  else
    eq(out, fx.out, key .. ": output")
  end
  tally.run = tally.run + 1
end

-- ---------------------------------------------------------------------
-- C and C++ blocks.

local CPREAMBLE = {
  ["README.md c 1"] = "#include <stdlib.h>\n" ..
    "struct event { int callback_ref; const char *text; };\n" ..
    "struct event *make_event(const char *text);  /* the reader's own */\n" ..
    "void stop_the_library(void);\n",
  ["docs/lua-api.md c 1"] = "#include <pthread.h>\n#include <stdatomic.h>\n#include \"darksidesync_aux.h\"\n" ..
    "static atomic_int stopping;\nstatic pthread_t threads[4];\nstatic int nthreads;\n",
  ["docs/c-api.md c 1"] = "#include \"darksidesync_api.h\"\n",
  ["docs/c-api.md c 2"] = "#include \"darksidesync_api.h\"\n", -- the 2v1 callbacks' prototypes
  ["docs/c-api.md c 3"] = "#include <pthread.h>\n#include <lauxlib.h>\n#include \"darksidesync_api.h\"\n" ..
    "int read_line(char *buf, int size);  /* the reader's own */\n",
  -- Complete programs (test_guide.lua builds and runs them).
  ["docs/client-guide.md c 1"] = "",
  ["docs/client-guide.md cpp 1"] = "",
  ["docs/cpp-api.md cpp 1"] = "#include \"darksidesync.hpp\"\nstruct my_lib;\nmy_lib* new_my_lib(lua_State* L);  // the reader's own\n",
  ["docs/cpp-api.md cpp 2"] = "double read_sensor();  // the reader's own\n",
}

local function lua_cflags()
  local pc = LUA_VERSION == "luajit" and "luajit" or "lua" .. LUA_VERSION
  local out, status = sh("pkg-config --cflags " .. pc)
  eq(status, 0, "pkg-config --cflags " .. pc .. ": " .. out)
  return (out:gsub("%s+$", ""))
end

local function compile_c(key, kind, block)
  local pre = ok(CPREAMBLE[key], key .. ": no preamble in CPREAMBLE")
  local file = os.tmpname()
  local src = file .. (kind == "c" and ".c" or ".cpp")
  writefile(src, pre .. block)
  local cc = kind == "c" and (os.getenv("CC") or "cc") .. " -std=gnu11"
                          or (os.getenv("CXX") or "c++") .. " -std=c++17"
  local out, status = sh(cc .. " -fsyntax-only -Wall -Wno-unused-function -Werror -I" ..
                         shq(root .. "include") .. " " .. lua_cflags() .. " " .. shq(src))
  os.remove(src)
  os.remove(file)
  eq(status, 0, key .. ": does not compile:\n" .. out)
  tally.compiled = tally.compiled + 1
end

-- ---------------------------------------------------------------------
-- sh and cmake blocks.

local KNOWN = { make = true, luarocks = true, cmake = true, cc = true, ["c++"] = true, ["pkg-config"] = true,
                export = true, eval = true, cd = true, lua = true, ["lua5.1"] = true,
                ["lua5.2"] = true, ["lua5.3"] = true, ["lua5.4"] = true, luajit = true }
-- Files the text names as the reader's own.
local PLACEHOLDERS = { ["mylib.c"] = true, ["mylib.cpp"] = true, ["mylib-scm-1.rockspec"] = true }

local function check_sh(key, name, block)
  local file = os.tmpname()
  writefile(file, block)
  local out, status = sh("sh -n " .. shq(file))
  os.remove(file)
  eq(status, 0, key .. ": sh -n: " .. out)
  local makefile = readfile(root .. "Makefile")
  local dir = name:match("^(.*/)") or ""
  for cmd in (block:gsub("\\\n", " ") .. "\n"):gmatch("([^\n]*)\n") do
    cmd = cmd:gsub("#.*$", "")
    repeat -- leading assignments, quoted values included: VAR="$(...)/x"
      local before = cmd
      cmd = cmd:gsub('^%s*[%w_]+="[^"]*"', ""):gsub("^%s*[%w_]+=%S*", "")
    until cmd == before
    local words = {}
    for w in cmd:gmatch("%S+") do words[#words + 1] = w end
    local i = 1
    local first = words[i]
    if first then
      ok(KNOWN[first], key .. ": unknown command " .. first)
      if first == "make" then
        ok(words[i + 1] and makefile:match("\n" .. words[i + 1]:gsub("%-", "%%-") .. ":"),
           key .. ": no make target " .. tostring(words[i + 1]))
      end
      for j = i + 1, #words do
        local w = words[j]:gsub("^[\"']", ""):gsub("[\"']$", "")
        if w:match("^[%w_./-]+%.[%a]+$") and w:match("%.[%a]+$") ~= ".so" and not PLACEHOLDERS[w]
           and not w:match("^%-") then
          local f = io.open(root .. w, "r") or io.open(root .. dir .. w, "r")
          ok(f, key .. ": names " .. w .. ", which does not exist")
          f:close()
        end
      end
    end
  end
  tally.checked = tally.checked + 1
end

-- The ticker README's build lines, run: against a darksidesync.pc that
-- points at include/ (as an installed one points at the installed headers),
-- and with DSS_INC = include/.
local RUN_SH = {
  ["examples/ticker/README.md sh 1"] = true,
}
local function run_sh(key, name, block)
  local out, status = sh("pkg-config --exists lua5.4")
  if status ~= 0 then error("pkg-config knows no lua5.4: " .. out) end
  local dir = os.tmpname()
  os.remove(dir)
  assert(os.execute("mkdir " .. shq(dir)))
  local inc = sh("cd " .. shq(root .. "include") .. " && pwd"):gsub("%s+$", "")
  writefile(dir .. "/darksidesync.pc", "Name: darksidesync\nDescription: test\nVersion: 0\nCflags: -I" .. inc .. "\n")
  writefile(dir .. "/ticker.c", readfile(root .. name:match("^(.*/)") .. "ticker.c"))
  writefile(dir .. "/build.sh", "set -e\n" .. block)
  out, status = sh("cd " .. shq(dir) .. " && PKG_CONFIG_PATH=" .. shq(dir) .. " DSS_INC=" .. shq(inc) ..
                   " sh build.sh && test -s ticker.so")
  sh("rm -rf " .. shq(dir))
  eq(status, 0, key .. ": the build lines failed:\n" .. out)
end

local function check_cmake(key, block)
  local out, status = sh("cmake --help-command-list")
  eq(status, 0, "cmake --help-command-list")
  local known = {}
  for c in out:gmatch("[%w_]+") do known[c:lower()] = true end
  -- Commands of the modules the block loads (find_package(PkgConfig)).
  if block:match("find_package%(PkgConfig") then
    local doc = sh("cmake --help-module FindPkgConfig")
    for c in doc:gmatch("(pkg_[%w_]+)") do known[c:lower()] = true end
  end
  local n = 0
  for c in block:gmatch("\n?%s*([%a_][%w_]*)%s*%(") do
    n = n + 1
    ok(known[c:lower()], key .. ": unknown CMake command " .. c)
  end
  ok(n > 0, key .. ": no command found")
  tally.checked = tally.checked + 1
end

-- ---------------------------------------------------------------------
-- The tests.

test("the files with code blocks are exactly those of EXPECTED", function()
  local out = sh("cd " .. shq(root) .. " && ls README.md docs/*.md examples/*/README.md")
  local found = {}
  for f in out:gmatch("%S+") do found[#found + 1] = f end
  table.sort(found)
  eq(table.concat(found, " "), table.concat(FILES, " "))
end)

for _, name in ipairs(FILES) do
  test(name .. ": the blocks of each kind number exactly as EXPECTED", function()
    local got = {}
    for _, b in ipairs(blocks(name)) do got[b.kind] = (got[b.kind] or 0) + 1 end
    local function show(t)
      local keys = {}
      for k, v in pairs(t) do keys[#keys + 1] = k .. "=" .. v end
      table.sort(keys)
      return table.concat(keys, " ")
    end
    eq(show(got), show(EXPECTED[name]))
  end)
  for _, b in ipairs(blocks(name)) do
    local key = name .. " " .. b.kind .. " " .. b.n
    local where = " (line " .. b.line .. ")"
    if b.kind == "lua" then
      if COMPILE_ONLY[key] then
        test(key .. where .. ": compiles (compile-only: " .. COMPILE_ONLY[key] .. ")", function()
          local fn, err = compile(b.text, "=" .. key)
          ok(fn, err)
          tally.compiled = tally.compiled + 1
        end)
      else
        test(key .. where .. ": runs", function()
          local fn, err = compile(b.text, "=" .. key)
          ok(fn, err)
          run_lua(key, b.text, ok(FIXTURES[key], key .. ": no fixture in FIXTURES"))
        end)
      end
    elseif b.kind == "c" or b.kind == "cpp" then
      test(key .. where .. ": compiles", function() compile_c(key, b.kind, b.text) end)
    elseif b.kind == "sh" then
      test(key .. where .. (RUN_SH[key] and ": runs" or ": is known"), function()
        check_sh(key, name, b.text)
        if RUN_SH[key] then run_sh(key, name, b.text) end
      end)
    elseif b.kind == "cmake" then
      test(key .. where .. ": every command is known", function() check_cmake(key, b.text) end)
    elseif b.kind == "text" then
      tally.counted = tally.counted + 1 -- a diagram or a layout
    else
      test(key .. where .. ": a kind of block this test knows", function() error("unknown kind " .. b.kind) end)
    end
  end
end

-- Every fixture and compile-only entry belongs to a block that exists.
test("every fixture names a block that exists; the tally adds up", function()
  local keys = {}
  for _, name in ipairs(FILES) do
    for _, b in ipairs(blocks(name)) do keys[name .. " " .. b.kind .. " " .. b.n] = true end
  end
  for _, t in ipairs({ FIXTURES, COMPILE_ONLY, CPREAMBLE, RUN_SH }) do
    for k in pairs(t) do ok(keys[k], "stale entry " .. k) end
  end
  local total = 0
  for _, name in ipairs(FILES) do total = total + #blocks(name) end
  print(string.format("docs blocks on Lua %s: %d run, %d compiled, %d checked, %d counted (diagrams), %d skipped",
                      LUA_VERSION, tally.run, tally.compiled, tally.checked, tally.counted, tally.skipped))
  for _, line in ipairs(skipped) do print("  " .. line) end
  eq(tally.run + tally.compiled + tally.checked + tally.counted + tally.skipped, total, "blocks accounted for")
end)
