#!/usr/bin/env bash
# Proves that `luarocks make` builds and installs darksidesync into a local
# tree and that `require "darksidesync"` works from that tree, for each Lua
# version given (default: 5.1 and 5.4).
set -euo pipefail
cd "$(dirname "$0")/.."
tree=$(mktemp -d)
trap 'rm -rf "$tree" build.luarocks' EXIT
for v in ${ROCK_LUAS:-5.1 5.4}; do
  echo "--- luarocks make, Lua $v, tree $tree/$v"
  if ! luarocks --lua-version "$v" --tree "$tree/$v" make rockspec/darksidesync-scm-1.rockspec \
       >"$tree/log" 2>&1; then
    cat "$tree/log"; exit 1
  fi
  interp=lua$v
  cpath="$tree/$v/lib/lua/$v/?.so;;"
  lpath="$tree/$v/share/lua/$v/?.lua;;"
  out=$(env -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4 \
        -u LUA_PATH_5_2 -u LUA_PATH_5_3 -u LUA_PATH_5_4 \
        LUA_CPATH="$cpath" "LUA_CPATH_${v/./_}=$cpath" \
        LUA_PATH="$lpath" "LUA_PATH_${v/./_}=$lpath" TREE="$tree" "$interp" -e '
    local d = require "darksidesync"
    local reg = debug.getregistry()["DSS.DarkSideSync"]
    assert(d.poll() == -1, "poll on an empty queue")
    assert(type(reg["DSS API 1v0"]) == "userdata", "API 1v0 missing")
    local dss = require "dss"
    assert(type(dss.gethandler) == "function", "dss helper")
    local sel = require "darksidesync.select"
    local fibers = require "darksidesync.fibers"
    assert(type(fibers.spawn) == "function" and type(d.monotime) == "function", "fibers")
    assert(type(sel.new) == "function", "darksidesync.select helper")
    for _, m in ipairs { "darksidesync.reader", "darksidesync.luv", "darksidesync.cqueues",
                         "darksidesync.copas", "darksidesync.fibers", "darksidesync.fibers.sched",
                         "darksidesync.fibers.fiber", "darksidesync.fibers.op",
                         "darksidesync.fibers.channel", "darksidesync.fibers.sleep",
                         "darksidesync.fibers.cond", "darksidesync.fibers.waitgroup",
                         "darksidesync.fibers.queue", "darksidesync.fibers.mutex",
                         "darksidesync.fibers.go", "darksidesync.fibers.items" } do
      assert(not package.searchpath or
             (package.searchpath(m, package.path) or ""):find(os.getenv("TREE"), 1, true),
             m .. " from the tree")
    end
    if package.searchpath then
      assert(package.searchpath("dss", package.path):find(os.getenv("TREE"), 1, true),
             "dss from the tree")
    end
    io.write(package.searchpath and package.searchpath("darksidesync", package.cpath) or "ok")')
  case "$out" in
    "$tree"/*|ok) echo "required from $out" ;;
    *) echo "darksidesync was not loaded from the tree: $out"; exit 1 ;;
  esac
done
