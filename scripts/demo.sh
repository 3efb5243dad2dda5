#!/usr/bin/env bash
# `make demo`: builds darksidesync and the example client libraries, then runs
# examples/demo.lua: a Copas loop resolving names through dss_resolver, with
# Ctrl-C / SIGTERM handled through dss_signal. Debian packages Copas for Lua
# 5.1 and 5.2 (LuaJIT uses 5.1's), so the demo runs on 5.1 unless LUA says
# otherwise. DEMO=ticker runs the smaller examples/demo_ticker.lua instead.
set -euo pipefail
cd "$(dirname "$0")/.."
LUA=${LUA:-5.1}
dir="build/demo-$LUA"
cmake -S . -B "$dir" -DDSS_LUA="$LUA" -DDSS_EXAMPLES=ON -DDSS_TESTS=OFF >/dev/null
cmake --build "$dir" -j"${JOBS:-2}" >/dev/null
interp=lua$LUA; [ "$LUA" = luajit ] && interp=luajit
cpath="$PWD/$dir/?.so;$PWD/$dir/examples/?.so;;"
lpath="$PWD/lua/?.lua;;"
script=examples/demo.lua
[ "${DEMO:-}" = ticker ] && script=examples/demo_ticker.lua
export LUA_CPATH="$cpath" LUA_CPATH_5_2="$cpath" LUA_CPATH_5_3="$cpath" LUA_CPATH_5_4="$cpath"
export LUA_PATH="$lpath" LUA_PATH_5_2="$lpath" LUA_PATH_5_3="$lpath" LUA_PATH_5_4="$lpath"
exec "$interp" "$script"
