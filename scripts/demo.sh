#!/usr/bin/env bash
# `make demo`: builds the module and the ticker example for Lua 5.4 and runs
# examples/demo_ticker.lua.
set -euo pipefail
cd "$(dirname "$0")/.."
LUA=${LUA:-5.4}
cmake -S . -B "build/demo-$LUA" -DDSS_LUA="$LUA" -DDSS_EXAMPLES=ON -DDSS_TESTS=OFF >/dev/null
cmake --build "build/demo-$LUA" -j"${JOBS:-2}" >/dev/null
interp=lua$LUA; [ "$LUA" = luajit ] && interp=luajit
cpath="$PWD/build/demo-$LUA/?.so;$PWD/build/demo-$LUA/examples/?.so;;"
LUA_CPATH="$cpath" LUA_CPATH_5_2="$cpath" LUA_CPATH_5_3="$cpath" LUA_CPATH_5_4="$cpath" \
  "$interp" examples/demo_ticker.lua
