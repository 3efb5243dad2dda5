#!/bin/bash
# run_fuzz.sh -- runs the libFuzzer target for ctest / make fuzz.
#   run_fuzz.sh fuzz BINARY SEED_DIR WORK_DIR SECONDS
#     fuzzes for SECONDS from a copy of SEED_DIR (read only) in WORK_DIR;
#     a crash input is left in WORK_DIR/artifacts/.
#   run_fuzz.sh regressions BINARY REGRESSION_DIR
#     runs every file of REGRESSION_DIR once (no fuzzing).
# Ends with "<name>: 1 passed, 0 failed" (or "0 passed, 1 failed").
set -u
mode=$1 bin=$2
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:detect_odr_violation=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
opts=(-timeout=10 -rss_limit_mb=2048 -max_len=512)
case $mode in
  fuzz)
    seed=$3 work=$4 secs=$5
    mkdir -p "$work/corpus" "$work/artifacts"
    cp -n "$seed"/* "$work/corpus/" 2>/dev/null || true
    "$bin" "${opts[@]}" -max_total_time="$secs" -print_final_stats=1 \
      -artifact_prefix="$work/artifacts/" "$work/corpus"
    rc=$?
    name=fuzz
    if [ $rc -ne 0 ]; then
      echo "fuzz: crash input(s) in $work/artifacts/ (copy them to tests/fuzz/regressions/):"
      ls -l "$work/artifacts/"
    fi
    ;;
  regressions)
    dir=$3
    files=()
    for f in "$dir"/*; do
      [ -f "$f" ] && [ "$(basename "$f")" != README.md ] && files+=("$f")
    done
    rc=0
    if [ ${#files[@]} -gt 0 ]; then
      "$bin" "${opts[@]}" "${files[@]}"
      rc=$?
    else
      echo "no regression inputs"
    fi
    name=fuzz-regressions
    ;;
  *) echo "usage: $0 fuzz|regressions ..." >&2; exit 2 ;;
esac
if [ $rc -eq 0 ]; then
  echo "$name: 1 passed, 0 failed"
else
  echo "$name: 0 passed, 1 failed"
fi
exit $rc
