#!/usr/bin/env bash
# bench/run.sh -- the `make bench` driver (issue 7). Builds dss_bench for
# every Lua version (Release, -DDSS_BENCH=ON, in build/bench-<lua>), then in
# one invocation:
#   1. runs the luv rows (bench/luv.lua, Debian lua-luv) with the interpreter
#      of BENCH_LUA,
#   2. runs the full suite on BENCH_LUA (ceilings, ours, round trips, UDP,
#      memory, with the luv figures handed in for the ratios, and at its end
#      the targets of issue 18, each a ratio of two of its rows),
#   3. runs the short suite on every other Lua version,
#   4. draws the plots with gnuplot,
# and writes everything to bench/results/latest.md (and stdout).
#
# Environment: LUAS (default "5.1 5.2 5.3 5.4 luajit"), BENCH_LUA (the full
# suite's Lua, default 5.1), BENCH_REPS (repetitions per figure, median
# taken; default 5), BENCH_SCALE (multiplies item counts; default 1),
# BENCH_BUILD (prefix of the build directories; default build/bench-),
# JOBS (build parallelism; default 2).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

LUAS=${LUAS:-"5.1 5.2 5.3 5.4 luajit"}
BENCH_LUA=${BENCH_LUA:-5.1}
REPS=${BENCH_REPS:-5}
SCALE=${BENCH_SCALE:-1}
JOBS=${JOBS:-2}
BUILD=${BENCH_BUILD:-build/bench-}
RES=$ROOT/bench/results
mkdir -p "$RES" "$(dirname "${BUILD}x")"  # build/ for the logs, on a fresh clone too
case " $LUAS " in *" $BENCH_LUA "*) ;; *) LUAS="$BENCH_LUA $LUAS" ;; esac

interp() { [ "$1" = luajit ] && echo luajit || echo "lua$1"; }
label() { [ "$1" = luajit ] && echo LuaJIT || echo "Lua $1"; }

# --- build -------------------------------------------------------------------
for v in $LUAS; do
  dir=$BUILD$v
  log=$dir.log
  echo "bench: building Lua $v (Release) in $dir" >&2
  # DSS_TESTS=ON (unit and Lua tests off) for the test client, which the
  # fiber row FB5 drives (built, not run).
  if ! { cmake -S . -B "$dir" -DDSS_LUA="$v" -DDSS_BENCH=ON -DDSS_TESTS=ON \
           -DDSS_UNIT_TESTS=OFF -DDSS_LUA_TESTS=OFF \
           -DDSS_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Release &&
         cmake --build "$dir" --target dss_bench testclient -j"$JOBS"; } >"$log" 2>&1; then
    cat "$log" >&2
    echo "bench: build for Lua $v failed" >&2
    exit 1
  fi
done

out=$(mktemp)
trap 'rm -f "$out"' EXIT
say() { printf '%s\n' "$*" | tee -a "$out"; }

commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
if [ -n "$(git status --porcelain -- src include lua CMakeLists.txt 2>/dev/null)" ]; then
  commit="$commit + uncommitted changes in src/include/lua"
fi
say "# darksidesync benchmark"
say ""
say "$(date -u '+%Y-%m-%d %H:%M UTC'), commit $commit, $(nproc) CPUs ($(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //')), load average at start: $(cut -d' ' -f1-3 /proc/loadavg)."
say "Medians of $REPS repetitions (3 for round trips and UDP), item counts x$SCALE."
say "Ratios: ours / reference, measured in this same run (throughput: higher is better; latency and bytes: lower is better)."

# --- luv -----------------------------------------------------------------------
luv_raw=$RES/luv-raw.txt
: >"$luv_raw"
luv_lua=$(interp "$BENCH_LUA")
if ! $luv_lua -e 'require "luv"' 2>/dev/null; then luv_lua=lua5.1; fi
if $luv_lua -e 'require "luv"' 2>/dev/null; then
  echo "bench: luv rows ($luv_lua, lua-luv)" >&2
  if ! $luv_lua bench/luv.lua "$SCALE" >"$luv_raw"; then
    echo "bench: luv.lua failed: luv rows left out" >&2
    : >"$luv_raw"
  fi
else
  echo "bench: lua-luv not installed: luv rows left out" >&2
fi

# --- full suite ------------------------------------------------------------------
echo "bench: full suite on Lua $BENCH_LUA (about a minute and a half)" >&2
# A row whose figure is a must (e.g. no item stranded) makes dss_bench exit
# non-zero after the whole table: the results are still written, then this
# script fails.
failed=0
"$BUILD$BENCH_LUA"/bench/dss_bench --reps "$REPS" --scale "$SCALE" \
  --label "$(label "$BENCH_LUA")" \
  --out-dir "$RES" --luv "$luv_raw" | tee -a "$out" || failed=1

# --- short suite per Lua version -------------------------------------------------
say ""
say "### Every Lua version (1 producer; ratio to the ceiling of the same binary)"
say ""
say "| Lua | ceiling: swap drain | ceiling + args table | ours: poll() + cb(unpack(args)) | ours: dispatch() | ours: round trips/s (busy) | round trip p50 |"
say "|---|---|---|---|---|---|---|"
for v in $LUAS; do
  echo "bench: short suite on Lua $v" >&2
  "$BUILD$v"/bench/dss_bench --quick --reps 3 --scale "$SCALE" --label "$(label "$v")" | tee -a "$out"
done

# --- fibers (issue 16) -------------------------------------------------------------
say ""
say "### Fibers (darksidesync.fibers; ratio to a ceiling measured in the same process)"
say ""
say "| row | Lua | what | ours | reference | ratio | target |"
say "|---|---|---|---|---|---|---|"
for v in $LUAS; do
  echo "bench: fiber rows on Lua $v" >&2
  case $BUILD in /*) mod=$BUILD$v ;; *) mod=$ROOT/$BUILD$v ;; esac
  LUA_PATH="$ROOT/lua/?.lua;;" LUA_CPATH="$mod/?.so;$mod/tests/?.so;;" \
    $(interp "$v") bench/fibers.lua "$(label "$v")" "$SCALE" 3 | tee -a "$out" || failed=1
done
say ""
say "Load average at the end: $(cut -d' ' -f1-3 /proc/loadavg)."

# --- plots ------------------------------------------------------------------------
if command -v gnuplot >/dev/null; then
  echo "bench: plots" >&2
  gnuplot -e "resdir='$RES'" bench/plots.gp
  say ""
  say "Plots: bench/results/throughput.png, bench/results/latency.png, bench/results/loops.png."
else
  echo "bench: gnuplot not installed: no plots" >&2
fi

cp "$out" "$RES/latest.md"
echo "bench: wrote bench/results/latest.md" >&2
if [ "$failed" != 0 ]; then
  echo "bench: a must row failed (bench: FAILED lines above)" >&2
  exit 1
fi
