-- test_guide.lua -- docs/client-guide.md cannot rot: its programs are taken
-- from the text itself, built with its own compile lines and run.
--
-- * The blocks are found by what they are: the C client, the C++ client,
--   the rockspec and the Lua programs by their first line
--   ("/* guide: mylib.c ...", "-- guide: run.lua", ...), the build and
--   install lines by their command (cc, c++, luarocks make). Each must be
--   there exactly once.
-- * The C and C++ clients are built with the guide's cc / c++ line, run by
--   sh as written, with pkg-config finding a darksidesync.pc that points at
--   include/ (as an installed one points at the installed headers) and
--   `lua5.4` replaced by this Lua's pkg-config name. Each is loaded into a
--   child of this interpreter (darksidesync from the build, as ctest's
--   LUA_CPATH has it) that runs the guide's Lua programs: exact output.
-- * The rockspec (Lua 5.4 only: installing darksidesync with LuaRocks takes
--   about a minute): darksidesync is installed into a fresh tree with
--   `luarocks make` as scripts/check-rockspec.sh does it, as the current
--   user; then the guide's `luarocks make` line (with --tree and
--   --lua-version added) builds the guide's rockspec and C file into the
--   same tree, and a child with only that tree's paths runs run.lua. Without
--   luarocks it prints a counted "skipped: <reason>" line.

local here = (arg and arg[1] or ""):match("^(.*/)") or "./"
local root = here .. "../../"
local fenced_blocks = dofile(here .. "docblocks.lua")
local scale = tonumber(os.getenv("DSS_TEST_TIMESCALE")) or 1

local interp = INTERP

local made = {} -- temporary directories, removed by the last test
local function tmpdir()
  local out, status = sh("mktemp -d")
  eq(status, 0, "mktemp -d: " .. out)
  made[#made + 1] = out:gsub("%s+$", "")
  return made[#made]
end
local function abspath(p) return (sh("cd " .. shq(p) .. " && pwd"):gsub("%s+$", "")) end

-- ---------------------------------------------------------------------
-- The guide's blocks.

local GUIDE = "docs/client-guide.md"
local function guide_blocks() return fenced_blocks(root .. GUIDE, GUIDE) end

-- What this test takes from the guide: name -> { kind, how to recognise it }.
local WANTED = {
  ["mylib.c"] = { "c", function(t) return t:match("^/%* guide: mylib%.c ") end },
  ["mylib.cpp"] = { "cpp", function(t) return t:match("^// guide: mylib%.cpp ") end },
  ["run.lua"] = { "lua", function(t) return t:match("^%-%- guide: run%.lua\n") end },
  ["stop.lua"] = { "lua", function(t) return t:match("^%-%- guide: stop%.lua\n") end },
  ["mylib-scm-1.rockspec"] = { "lua", function(t) return t:match("^%-%- guide: mylib%-scm%-1%.rockspec\n") end },
  ["cc line"] = { "sh", function(t) return t:match("^cc ") end },
  ["c++ line"] = { "sh", function(t) return t:match("^c%+%+ ") end },
  ["luarocks make line"] = { "sh", function(t) return t:match("^luarocks make ") end },
}
local B = {}
do
  local found = {}
  for _, b in ipairs(guide_blocks()) do
    for name, w in pairs(WANTED) do
      if b.kind == w[1] and w[2](b.text) then
        found[name] = (found[name] or 0) + 1
        B[name] = b.text
      end
    end
  end
  test(GUIDE .. ": each program and line this test runs is there exactly once", function()
    local names = {}
    for name in pairs(WANTED) do names[#names + 1] = name end
    table.sort(names)
    for _, name in ipairs(names) do eq(found[name], 1, name .. " blocks") end
  end)
end

local tally = { built = 0, ran = 0, skipped = 0 }

-- The Lua headers' pkg-config name of this Lua.
local PC_LUA = LUA_VERSION == "luajit" and "luajit" or "lua" .. LUA_VERSION

-- build(name, line): the guide's build line (lua5.4 -> this Lua's) run by
-- sh in a fresh directory holding the guide's source `name`, with
-- PKG_CONFIG_PATH at a darksidesync.pc over include/. Returns the directory.
local function build(name, line)
  local dir = tmpdir()
  local inc = abspath(root .. "include")
  writefile(dir .. "/darksidesync.pc",
            "includedir=" .. inc .. "\nauxsource=${includedir}/darksidesync_aux.c\n\n" ..
            "Name: darksidesync\nDescription: test\nVersion: 0\nCflags: -I${includedir}\n")
  writefile(dir .. "/" .. name, ok(B[name], name .. " not in the guide"))
  line = ok(line, "no build line in the guide"):gsub("lua5%.4", PC_LUA)
  writefile(dir .. "/build.sh", "set -e\n" .. line)
  local out, status = sh("cd " .. shq(dir) .. " && PKG_CONFIG_PATH=" .. shq(dir) .. " sh build.sh")
  eq(status, 0, name .. ": the guide's build line failed:\n" .. line .. out)
  ok(io.open(dir .. "/mylib.so", "r"), name .. ": no mylib.so"):close()
  -- A client links neither Lua nor darksidesync.
  out, status = sh("readelf -d " .. shq(dir .. "/mylib.so"))
  eq(status, 0, "readelf: " .. out)
  ok(not out:match("NEEDED[^\n]*lua") and not out:match("NEEDED[^\n]*darksidesync"),
     name .. ": mylib.so links Lua or darksidesync:\n" .. out)
  -- And it builds without a warning.
  local cc = name:match("%.c$") and (os.getenv("CC") or "cc") .. " -std=gnu11"
                                 or (os.getenv("CXX") or "c++") .. " -std=c++17"
  out, status = sh(cc .. " -fsyntax-only -Wall -Wextra -Werror -I" .. shq(inc) .. " $(pkg-config --cflags " ..
                   PC_LUA .. ") " .. shq(dir .. "/" .. name))
  eq(status, 0, name .. ": warnings:\n" .. out)
  tally.built = tally.built + 1
  return dir
end

-- run(dir, program[, env]): a child of this interpreter runs the guide's
-- Lua program with mylib from dir (and darksidesync from this
-- interpreter's cpath); its output and exit status.
local function run(dir, program, env)
  local file = dir .. "/" .. program
  writefile(file, ok(B[program], program .. " not in the guide"))
  local cpath = dir .. "/?.so;" .. package.cpath
  env = env or ("LUA_CPATH=" .. shq(cpath) .. " LUA_CPATH_5_2=" .. shq(cpath) ..
                " LUA_CPATH_5_3=" .. shq(cpath) .. " LUA_CPATH_5_4=" .. shq(cpath))
  return sh("cd " .. shq(dir) .. " && " .. env .. " timeout -k 5 " .. 60 * scale .. " " ..
            shq(interp) .. " " .. shq(file))
end

local RUN_OUT = "item\t1\nitem\t2\nitem\t3\nasked after\t3\nthanks\nyes\n"
local STOP_OUT = "(cancelled)\nclosing\n"
local NOT_REQUIRED = "DarkSideSync API not found: require 'darksidesync' before loading this library\n"

for _, c in ipairs { { src = "mylib.c", line = "cc line" }, { src = "mylib.cpp", line = "c++ line" } } do
  local dir
  test(c.src .. ": builds with the guide's " .. c.line .. ", links neither Lua nor darksidesync, no warning",
       function() dir = build(c.src, B[c.line]) end)
  test(c.src .. ": run.lua: three items, the question answered, then joined", function()
    ok(dir, "not built")
    local out, status = run(dir, "run.lua")
    eq(status, 0, "exit status (output: " .. out .. ")")
    eq(out, RUN_OUT, "output")
    tally.ran = tally.ran + 1
  end)
  test(c.src .. ": stop.lua: join with the question queued cancels it; closing the state joins", function()
    ok(dir, "not built")
    local out, status = run(dir, "stop.lua")
    eq(status, 0, "exit status (output: " .. out .. ")")
    eq(out, STOP_OUT, "output")
    tally.ran = tally.ran + 1
  end)
  test(c.src .. ": required before darksidesync, luaopen_mylib raises the helper's error", function()
    ok(dir, "not built")
    B["first.lua"] = "print(select(2, pcall(require, 'mylib')))\n"
    local out, status = run(dir, "first.lua")
    eq(status, 0, "exit status (output: " .. out .. ")")
    eq(out, NOT_REQUIRED, "output")
  end)
end

-- ---------------------------------------------------------------------
-- The rockspec template, against darksidesync installed by LuaRocks.

test("the rockspec: darksidesync and the guide's client installed into a tree by luarocks make", function()
  local _, has = sh("command -v luarocks")
  local why = LUA_VERSION ~= "5.4" and "built on Lua 5.4 only (installing darksidesync takes about a minute)"
              or has ~= 0 and "no luarocks on this machine"
  if why then
    print("skipped: " .. GUIDE .. " rockspec: " .. why)
    tally.skipped = tally.skipped + 1
    return
  end
  local work = tmpdir()
  local tree, home = work .. "/tree", work .. "/home"
  local out, status = sh("mkdir " .. shq(work .. "/src") .. " " .. shq(home) .. " " .. shq(work .. "/client") ..
                         " && cd " .. shq(root) .. " && tar -cf - --exclude=./build --exclude=./.git " ..
                         "--exclude=./build.luarocks . | tar -xf - -C " .. shq(work .. "/src"))
  eq(status, 0, "copying the sources: " .. out)
  local luarocks = "env HOME=" .. shq(home) .. " luarocks --lua-version 5.4 --tree " .. shq(tree) .. " "
  out, status = sh("cd " .. shq(work .. "/src") .. " && " .. luarocks ..
                   "make rockspec/darksidesync-scm-1.rockspec")
  eq(status, 0, "luarocks make darksidesync:\n" .. out)
  -- The client: the guide's C file and rockspec, the guide's install line.
  writefile(work .. "/client/mylib.c", B["mylib.c"])
  writefile(work .. "/client/mylib-scm-1.rockspec", B["mylib-scm-1.rockspec"])
  local line = B["luarocks make line"]:gsub("luarocks ", function() return luarocks end)
  out, status = sh("cd " .. shq(work .. "/client") .. " && " .. line)
  eq(status, 0, "the guide's luarocks make line:\n" .. line .. out)
  ok(out:match("mylib scm%-1 is now installed in "), "luarocks make: " .. out)
  -- A child with only the tree's paths: both modules from the tree.
  local cpath, lpath = tree .. "/lib/lua/5.4/?.so", tree .. "/share/lua/5.4/?.lua"
  local env = "env -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_PATH_5_2 -u LUA_PATH_5_3 " ..
              "LUA_CPATH=" .. shq(cpath) .. " LUA_CPATH_5_4=" .. shq(cpath) ..
              " LUA_PATH=" .. shq(lpath) .. " LUA_PATH_5_4=" .. shq(lpath)
  B["where.lua"] = "print(package.searchpath('darksidesync', package.cpath))\n" ..
                   "print(package.searchpath('mylib', package.cpath))\n"
  out, status = run(work, "where.lua", env)
  eq(status, 0, "where.lua: " .. out)
  eq(out, tree .. "/lib/lua/5.4/darksidesync.so\n" .. tree .. "/lib/lua/5.4/mylib.so\n", "modules found")
  out, status = run(work, "run.lua", env)
  eq(status, 0, "run.lua from the tree: exit status (output: " .. out .. ")")
  eq(out, RUN_OUT, "run.lua from the tree: output")
  tally.built = tally.built + 1
  tally.ran = tally.ran + 1
end)

test("the tally adds up", function()
  for _, d in ipairs(made) do sh("rm -rf " .. shq(d)) end
  print(string.format("guide on Lua %s: %d built, %d programs run, %d skipped",
                      LUA_VERSION, tally.built, tally.ran, tally.skipped))
  -- C and C++: built, then run.lua and stop.lua each; the rockspec: built,
  -- then run.lua, or skipped.
  eq(tally.built + tally.skipped, 3, "builds (C, C++, rockspec) done or skipped")
  eq(tally.ran, 4 + (tally.built - 2), "programs run")
end)
