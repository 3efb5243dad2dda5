#!/usr/bin/env bash
# Proves that `luarocks make` builds and installs darksidesync into a fresh
# local tree as a NON-root user (as root, e.g. on CI: as nobody), writing
# nothing outside the tree, and that `require "darksidesync"` works from that
# tree; then, as that user, that docs/client-guide.md's minimal client
# (mylib.c, taken from the guide's text) builds against the installed
# headers with the guide's own lines (PKG_CONFIG_PATH from `luarocks show
# --rock-dir`, then the `cc` line; only the Lua pkg-config name follows the
# version) and without pkg-config (docs/install.md: the rock's
# include/darksidesync), links neither liblua nor darksidesync, and runs the
# guide's run.lua with only the tree's paths, printing what the guide says.
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
# guide_block KIND PREFIX: the one ```KIND block of docs/client-guide.md
# whose text starts with PREFIX (as tests/lua/test_guide.lua finds them);
# fails loudly unless there is exactly one.
guide_block() {
  KIND=$1 PREFIX=$2 awk '
    /^[ \t]*```/ {
      f = $0; sub(/^[ \t]*```/, "", f); gsub(/[ \t]/, "", f)
      if (!inb) { inb = 1; kind = f; buf = ""; next }
      if (f == "") {
        inb = 0
        if (kind == ENVIRON["KIND"] && index(buf, ENVIRON["PREFIX"]) == 1) { n++; out = buf }
        next
      }
    }
    inb { buf = buf $0 "\n" }
    END {
      if (inb) { print "docs/client-guide.md: a block never closes" > "/dev/stderr"; exit 1 }
      if (n != 1) {
        printf "docs/client-guide.md: %d ```%s blocks start with \"%s\" (want 1)\n",
               n, ENVIRON["KIND"], ENVIRON["PREFIX"] > "/dev/stderr"
        exit 1
      }
      printf "%s", out
    }' docs/client-guide.md
}
guide_c=$(guide_block c '/* guide: mylib.c ')
guide_run=$(guide_block lua $'-- guide: run.lua\n')
guide_pc=$(guide_block sh 'export PKG_CONFIG_PATH=')
guide_cc=$(guide_block sh 'cc ')
# run.lua's output, as the guide states it (the sentence after run.lua,
# "It prints, one per line (tab-separated), `item 1`, ...").
run_out=$'item\t1\nitem\t2\nitem\t3\nasked after\t3\nthanks\nyes'
# shellcheck disable=SC2016
tr -s ' \n' '  ' <docs/client-guide.md |
  grep -qF 'It prints, one per line (tab-separated), `item 1`, `item 2`, `item 3`, `asked after 3`, `thanks`, `yes`.' ||
  { echo "docs/client-guide.md no longer states run.lua's output as this script expects it"; exit 1; }
if [ "$(id -u)" = 0 ]; then
  mkdir -p "$work/clients" && chown nobody "$work/clients"
else
  mkdir -p "$work/clients"
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
                         "darksidesync.fibers.socket", "darksidesync.session",
                         "darksidesync.channel", "darksidesync.casting" } do
      assert(not package.searchpath or
             (package.searchpath(m, package.path) or ""):find(os.getenv("TREE"), 1, true),
             m .. " from the tree")
    end
    -- A session boots from the tree too: its state inherits these paths.
    local session, channel = require "darksidesync.session", require "darksidesync.channel"
    local ch = channel.new(1)
    local s = session.spawn(function(c, x) c:put(x * 2) return "done" end, ch, 21)
    assert(s:join(10) == "done" and ch:get(0) == 42, "a session from the tree")
    session.close()
    if package.searchpath then
      assert(package.searchpath("dss", package.path):find(os.getenv("TREE"), 1, true),
             "dss from the tree")
    end
    io.write(package.searchpath and package.searchpath("darksidesync", package.cpath) or "ok")')
  case "$out" in
    "$tree"/*|ok) echo "required from $out" ;;
    *) echo "darksidesync was not loaded from the tree: $out"; exit 1 ;;
  esac

  # The guide's client, built and run by the unprivileged user: the guide's
  # PKG_CONFIG_PATH line, with `luarocks` given this tree and Lua version
  # (as the guide says to), then its cc line (lua5.4 -> this version's
  # pkg-config name), both run by sh as written.
  rockdir=$(as_user luarocks --lua-version "$v" --tree "$tree" show --rock-dir darksidesync)
  [ "$rockdir" = "$tree/lib/luarocks/rocks-$v/darksidesync/scm-1" ] ||
    { echo "luarocks show --rock-dir: $rockdir"; exit 1; }
  pc=$work/clients/pc-$v rd=$work/clients/rd-$v
  as_user mkdir "$pc" "$rd"
  printf '%s\n' "$guide_c" | as_user tee "$pc/mylib.c" "$rd/mylib.c" >/dev/null
  printf '%s\n' "$guide_run" | as_user tee "$pc/run.lua" "$rd/run.lua" >/dev/null
  {
    printf 'set -e\nluarocks() { command luarocks --lua-version %s --tree %s "$@"; }\n' "$v" "$tree"
    printf '%s\n' "$guide_pc"
    # shellcheck disable=SC2016
    printf 'echo "    pkg-config --cflags darksidesync: $(pkg-config --cflags darksidesync)"\n'
    printf '%s\n' "${guide_cc//lua5.4/lua$v}"
  } | as_user tee "$pc/build.sh" >/dev/null
  if ! (cd "$pc" && as_user sh build.sh) >"$work/log" 2>&1; then
    echo "the guide's build lines failed, Lua $v:"; cat "$pc/build.sh" "$work/log"; exit 1
  fi
  cat "$work/log"
  pc_inc=$(grep -o -- '-I[^ ]*' "$work/log" | head -n1); pc_inc=${pc_inc#-I}
  [ "$(realpath "$pc_inc")" = "$rockdir/include/darksidesync" ] ||
    { echo "pkg-config and luarocks show --rock-dir ($rockdir) disagree"; exit 1; }
  # Without pkg-config (docs/install.md): the rock's include/darksidesync.
  # shellcheck disable=SC2046
  (cd "$rd" && as_user cc -shared -fPIC -pthread "-I$rockdir/include/darksidesync" \
     $(pkg-config --cflags "lua$v") mylib.c "$rockdir/include/darksidesync/darksidesync_aux.c" \
     -o mylib.so)
  echo "    luarocks show --rock-dir darksidesync: $rockdir"
  for dir in "$pc" "$rd"; do
    if readelf -d "$dir/mylib.so" | grep -E 'NEEDED.*(lua|darksidesync)'; then
      echo "$dir/mylib.so links Lua or darksidesync"; exit 1
    fi
    # Only the tree's paths (and mylib.so's directory): darksidesync from the tree.
    ccpath="$tree/lib/lua/$v/?.so;$dir/?.so"
    lpath="$tree/share/lua/$v/?.lua"
    out=$(cd "$dir" && as_user env -u LUA_CPATH_5_2 -u LUA_CPATH_5_3 -u LUA_CPATH_5_4 \
          -u LUA_PATH_5_2 -u LUA_PATH_5_3 -u LUA_PATH_5_4 \
          LUA_CPATH="$ccpath" "LUA_CPATH_${v/./_}=$ccpath" \
          LUA_PATH="$lpath" "LUA_PATH_${v/./_}=$lpath" timeout -k 5 60 "$interp" run.lua 2>&1) ||
      { echo "run.lua ($dir) failed: $out"; exit 1; }
    [ "$out" = "$run_out" ] || { printf 'run.lua (%s) printed:\n%s\n' "$dir" "$out"; exit 1; }
  done
  echo "    the guide's mylib.c, built against the tree (the guide's pkg-config lines; luarocks show), ran run.lua: $(printf '%s' "$out" | tr '\t\n' ' |')"
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
