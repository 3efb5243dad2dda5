#!/usr/bin/env bash
# Builds and tests darksidesync against every Lua version, then the whole
# suite again under ASan+UBSan, then a luarocks install. Prints a count line
# per configuration and a total. Used by `make test`.
set -uo pipefail
cd "$(dirname "$0")/.."

LUAS=${LUAS:-"5.1 5.2 5.3 5.4 luajit"}
JOBS=${JOBS:-2}
SANITIZE_LUAS=${SANITIZE_LUAS:-"5.4"}
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
  (cd "$dir" && ctest --output-on-failure -j"$JOBS" -T Test --no-compress-output) >"$log" 2>&1
  local rc=$?
  grep -E '^(ok|FAILED) |passed, [0-9]+ failed|^ *[0-9]+/[0-9]+ Test|tests passed|All tests passed|test cases' "$log" | grep -v '^ok ' || true
  # Count assertions-level results: Lua test lines and Catch2's test cases.
  local p f
  p=$(grep -Eo '^[A-Za-z0-9_.-]+: [0-9]+ passed' "$log" | awk '{s+=$2} END {print s+0}')
  f=$(grep -Eo '^[A-Za-z0-9_.-]+: [0-9]+ passed, [0-9]+ failed' "$log" | awk '{s+=$4} END {print s+0}')
  local cp cf
  cp=$(grep -Eo 'All tests passed \([0-9]+ assertions? in [0-9]+ test cases?\)' "$log" | grep -Eo 'in [0-9]+' | awk '{s+=$2} END {print s+0}')
  cf=$(grep -Eo 'test cases: *[0-9]+ \| *[0-9]+ passed \| *[0-9]+ failed' "$log" | awk -F'|' '{gsub(/[^0-9]/,"",$3); s+=$3} END {print s+0}')
  p=$((p + cp)); f=$((f + cf))
  if [ $rc -ne 0 ]; then
    cat "$log"
    [ "$f" -eq 0 ] && f=1
  fi
  rm -f "$log"
  summary+=("$name: $p passed, $f failed")
  total_pass=$((total_pass + p)); total_fail=$((total_fail + f))
}

for v in $LUAS; do
  unit=OFF; [ "$v" = 5.4 ] && unit=ON
  run_config "$v" -DDSS_LUA="$v" -DDSS_UNIT_TESTS=$unit -DCMAKE_BUILD_TYPE=RelWithDebInfo
done
for v in $SANITIZE_LUAS; do
  run_config "asan-$v" -DDSS_LUA="$v" -DDSS_SANITIZE=ON -DDSS_UNIT_TESTS=ON -DCMAKE_BUILD_TYPE=Debug
done

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
