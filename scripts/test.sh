#!/usr/bin/env bash
# Builds and tests darksidesync against every Lua version, then the whole
# suite again under ASan+UBSan (5.1, 5.4 with the unit tests, LuaJIT), the
# Lua suite under valgrind, the unit tests and stress run under TSan, 60 s of
# fuzzing, then a luarocks install. Prints a count line per
# configuration and a total. Used by `make test`.
set -uo pipefail
cd "$(dirname "$0")/.."

LUAS=${LUAS-"5.1 5.2 5.3 5.4 luajit"}
JOBS=${JOBS:-2}
SANITIZE_LUAS=${SANITIZE_LUAS-"5.1 5.4 luajit"}
total_pass=0
total_fail=0
summary=()

# run_config NAME CMAKE_ARGS...: configure, build, run ctest; tally.
run_config() {
  local name=$1; shift
  local dir=build/$name log
  log=$(mktemp)
  echo "=== $name: configure and build"
  if ! cmake -S . -B "$dir" -DDSS_WERROR=ON "$@" >"$log" 2>&1 ||
     ! cmake --build "$dir" -j"$JOBS" >>"$log" 2>&1; then
    cat "$log"; rm -f "$log"
    summary+=("$name: build FAILED")
    total_fail=$((total_fail + 1))
    return
  fi
  echo "=== $name: test"
  (cd "$dir" && ctest --output-on-failure -j"$JOBS") >"$log" 2>&1
  local rc=$?
  # Every test's full output, passed ones included, is in LastTest.log.
  local full=$dir/Testing/Temporary/LastTest.log
  grep -E 'tests passed|tests failed' "$log" || true
  grep -E '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed$' "$full" | sed 's/^/    /' || true
  # Lua files print "<file>: N passed, N failed"; Catch2 prints either
  # "All tests passed (A assertions in N test cases)" or
  # "test cases: N | P passed | F failed".
  local p f
  p=$(grep -Eo '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed$' "$full" | awk '{s+=$2} END {print s+0}')
  f=$(grep -Eo '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed$' "$full" | awk '{s+=$4} END {print s+0}')
  local cp cf
  cp=$(grep -Eo 'All tests passed \([0-9]+ assertions? in [0-9]+ test cases?\)' "$full" |
       sed -E 's/.* in ([0-9]+) test.*/\1/' | awk '{s+=$1} END {print s+0}')
  cp=$((cp + $(grep -Eo 'test cases: *[0-9]+ \| *[0-9]+ passed' "$full" | awk '{s+=$5} END {print s+0}')))
  cf=$(grep -Eo 'test cases: *[0-9]+ \| *[0-9]+ passed \| *[0-9]+ failed' "$full" | awk '{s+=$8} END {print s+0}')
  [ "$cp$cf" != 00 ] && echo "    unit: $cp passed, $cf failed"
  p=$((p + cp)); f=$((f + cf))
  if [ $rc -ne 0 ]; then
    cat "$log"
    [ "$f" -eq 0 ] && f=1
  fi
  rm -f "$log"
  summary+=("$name: $p passed, $f failed")
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
}

# The unit tests and the stress run (20 s) go with 5.4 only: they do not
# depend on the Lua version (the stress run embeds it, though: 5.1 too).
for v in $LUAS; do
  unit=OFF; [ "$v" = 5.4 ] && unit=ON
  stress=OFF; [ "$v" = 5.4 ] || [ "$v" = 5.1 ] && stress=ON
  # A 5-second smoke run of the bench with 5.4, so it cannot rot.
  run_config "$v" -DDSS_LUA="$v" -DDSS_UNIT_TESTS=$unit -DDSS_STRESS=$stress -DDSS_BENCH=$unit \
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
done
for v in $SANITIZE_LUAS; do
  unit=OFF; [ "$v" = 5.4 ] && unit=ON
  run_config "asan-$v" -DDSS_LUA="$v" -DDSS_SANITIZE=ON -DDSS_UNIT_TESTS=$unit -DDSS_STRESS=$unit \
    -DCMAKE_BUILD_TYPE=Debug
done

# valgrind memcheck over the Lua-level suite, on one Lua version.
if [ -z "${SKIP_VALGRIND:-}" ]; then
  run_config "valgrind-5.4" -DDSS_LUA=5.4 -DDSS_VALGRIND=ON -DDSS_UNIT_TESTS=OFF \
    -DDSS_STRESS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi

# ThreadSanitizer: the unit tests and the stress run (the Lua-level tests
# go through uninstrumented interpreters and shells, which TSan cannot
# follow).
if [ -z "${SKIP_TSAN:-}" ]; then
  run_config "tsan-5.4" -DDSS_LUA=5.4 -DDSS_TSAN=ON -DDSS_UNIT_TESTS=ON -DDSS_STRESS=ON \
    -DDSS_LUA_TESTS=OFF -DDSS_EXAMPLES=OFF -DCMAKE_BUILD_TYPE=Debug
fi

# 60 s of fuzzing (libFuzzer, clang) plus the crash regressions.
if [ -z "${SKIP_FUZZ:-}" ]; then
  CC=clang CXX=clang++ run_config "fuzz" -DDSS_LUA=5.4 -DDSS_FUZZ=ON -DDSS_UNIT_TESTS=OFF \
    -DDSS_LUA_TESTS=OFF -DDSS_EXAMPLES=OFF -DDSS_STRESS=OFF -DCMAKE_BUILD_TYPE=RelWithDebInfo
fi

if [ -z "${SKIP_ROCKS:-}" ]; then
  echo "=== luarocks make into a local tree"
  if bash scripts/check-rockspec.sh; then
    summary+=("luarocks: 1 passed, 0 failed"); total_pass=$((total_pass + 1))
  else
    summary+=("luarocks: 0 passed, 1 failed"); total_fail=$((total_fail + 1))
  fi
fi

echo
echo "=== summary"
printf '%s\n' "${summary[@]}"
echo "total: $total_pass passed, $total_fail failed"
[ "$total_fail" -eq 0 ]
