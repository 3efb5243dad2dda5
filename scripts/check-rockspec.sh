#!/usr/bin/env bash
# Proves that `luarocks make` builds and installs darksidesync into a fresh
# local tree as a NON-root user (as root, e.g. on CI: as nobody), writing
# nothing outside the tree, and that `require "darksidesync"` works from that
# tree; then that a client library finds the installed C headers the
# documented ways (docs/install.md: pkg-config darksidesync.pc in the rock's
# directory, and `luarocks show --rock-dir`), builds against them alone (no
# liblua, no darksidesync) and delivers an item from a pthread that Lua polls.
# For each Lua version given (default: 5.1 and 5.4).
set -euo pipefail
cd "$(dirname "$0")/.."
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# A copy of the sources the user can write (luarocks builds in build.luarocks).
mkdir -p "$work/src" "$work/home"
tar -cf - --exclude=./build --exclude=./.git --exclude=./build.luarocks . | tar -xf - -C "$work/src"
if [ "$(id -u)" = 0 ]; then
  chmod 755 "$work"
  chown -R nobody "$work/src" "$work/home"
  mkdir -p "$work/trees" && chown nobody "$work/trees"
  as_user() { runuser -u nobody -- env HOME="$work/home" "$@"; }
else
  mkdir -p "$work/trees"
  as_user() { env HOME="$work/home" "$@"; }
fi
for v in ${ROCK_LUAS:-5.1 5.4}; do
  tree=$work/trees/$v
  echo "--- luarocks make, Lua $v, tree $tree, as $(as_user id -un)"
  if ! (cd "$work/src" && as_user luarocks --lua-version "$v" --tree "$tree" \
          make rockspec/darksidesync-scm-1.rockspec) >"$work/log" 2>&1; then
    cat "$work/log"; exit 1
  fi
  grep 'darksidesync: ' "$work/log" | sed 's/^-- /    /'
  # Everything CMake installed is in the tree.
  if grep -v "^$tree/" "$work/src/build.luarocks/install_manifest.txt"; then
    echo "installed outside the tree $tree (above)"; exit 1
  fi
  interp=lua$v
  cpath="$tree/lib/lua/$v/?.so;;"
  lpath="$tree/share/lua/$v/?.lua;;"
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
                         "darksidesync.fibers.go", "darksidesync.fibers.items",
                         "darksidesync.fibers.pollio", "darksidesync.fibers.epoll",
                         "darksidesync.fibers.socket" } do
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

  # A client library, built as docs/install.md says: the headers through
  # pkg-config (PKG_CONFIG_PATH into the rock's directory) or through
  # `luarocks show --rock-dir`, Lua's Cflags, the installed helper; no -llua.
  rockdir=$(as_user luarocks --lua-version "$v" --tree "$tree" show --rock-dir darksidesync)
  [ "$rockdir" = "$tree/lib/luarocks/rocks-$v/darksidesync/scm-1" ] ||
    { echo "luarocks show --rock-dir: $rockdir"; exit 1; }
  export PKG_CONFIG_PATH="$tree/lib/luarocks/rocks-$v/darksidesync/scm-1/share/pkgconfig"
  pc_cflags=$(pkg-config --cflags darksidesync)
  pc_aux=$(pkg-config --variable=auxsource darksidesync)
  unset PKG_CONFIG_PATH
  echo "    pkg-config --cflags darksidesync: $pc_cflags"
  echo "    luarocks show --rock-dir darksidesync: $rockdir"
  pc_inc=${pc_cflags#-I}; pc_inc=${pc_inc%% *}
  [ "$(realpath "$pc_inc")" = "$rockdir/include/darksidesync" ] ||
    { echo "pkg-config and luarocks show disagree"; exit 1; }
  lua_cflags=$(pkg-config --cflags "lua$v")
  mkdir -p "$work/client-pc-$v" "$work/client-rd-$v"
  # shellcheck disable=SC2086
  cc -shared -fPIC -pthread $pc_cflags $lua_cflags tests/clients/tree_client.c "$pc_aux" \
     -o "$work/client-pc-$v/tree_client.so"
  # shellcheck disable=SC2086
  cc -shared -fPIC -pthread "-I$rockdir/include/darksidesync" $lua_cflags \
     tests/clients/tree_client.c "$rockdir/include/darksidesync/darksidesync_aux.c" \
     -o "$work/client-rd-$v/tree_client.so"
  for route in pc rd; do
    so=$work/client-$route-$v/tree_client.so
    if readelf -d "$so" | grep -E 'NEEDED.*(lua|darksidesync)'; then
      echo "$so links Lua or darksidesync"; exit 1
    fi
    ccpath="$tree/lib/lua/$v/?.so;$work/client-$route-$v/?.so"
    out=$(env -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4 \
          LUA_CPATH="$ccpath" "LUA_CPATH_${v/./_}=$ccpath" "$interp" -e '
      local d = require "darksidesync"
      local client = require "tree_client"
      local got
      client.start(function(s, n) got = s .. " " .. n end)
      local ok, rc = client.join()
      assert(ok, "deliver returned " .. rc)
      local remaining, callback, args = d.poll()
      assert(remaining == 0 and callback, "one item queued")
      callback((unpack or table.unpack)(args))
      assert(d.poll() == -1, "queue empty")
      io.write(got)')
    [ "$out" = "hello from a thread 42" ] || { echo "client ($route): $out"; exit 1; }
  done
  echo "    client built against the tree (pkg-config and luarocks show): polled \"$out\""
done

# A plain CMake install (the headers component of the last build): headers in
# <prefix>/include/darksidesync, darksidesync.pc in <prefix>/share/pkgconfig.
cmake --install "$work/src/build.luarocks" --component dev --prefix "$work/plain" >/dev/null
PKG_CONFIG_PATH="$work/plain/share/pkgconfig" pkg-config --cflags darksidesync |
  grep -q . && [ -f "$work/plain/include/darksidesync/darksidesync_aux.h" ] &&
  [ "$(realpath "$(PKG_CONFIG_PATH="$work/plain/share/pkgconfig" \
                   pkg-config --variable=includedir darksidesync)")" = "$work/plain/include/darksidesync" ] ||
  { echo "cmake --install --prefix: headers or darksidesync.pc misplaced"; exit 1; }
echo "--- cmake --install --component dev --prefix P: P/include/darksidesync, P/share/pkgconfig/darksidesync.pc"
