#!/usr/bin/env bash
# Runs examples/demo.lua non-interactively, twice:
#   1. as `make demo` does: it must finish by itself and exit 0;
#   2. with DEMO_STAY=1: once all lookups are done, the test sends SIGTERM;
#      the demo must handle it through dss_signal and exit 0.
# Checks the output lines a person would read. Waits are bounded.
# usage: test_demo.sh INTERPRETER DEMO_SCRIPT
set -u
interp=$1 script=$2
out=$(mktemp) passed=0 failed=0
trap 'rm -f "$out"' EXIT

check() {  # check DESCRIPTION PATTERN
  if grep -qE -- "$2" "$out"; then passed=$((passed + 1)); echo "ok     $1"
  else failed=$((failed + 1)); echo "FAILED $1: no line matching '$2'"; fi
}
expect_status() {  # expect_status DESCRIPTION WANTED GOT
  if [ "$2" = "$3" ]; then passed=$((passed + 1)); echo "ok     $1"
  else failed=$((failed + 1)); echo "FAILED $1: exit status $3, wanted $2"; fi
}

# 1. Runs to the end by itself.
timeout 60 "$interp" "$script" >"$out" 2>&1
expect_status "the demo exits 0 by itself" 0 $?
check "localhost resolves" '^ +[0-9.]+ ms  resolved localhost +-> .*127\.0\.0\.1'
check "the failing name asks Lua whether to retry, Lua says yes" \
      "the resolver thread asks: 'no-such-host.invalid' failed \(.*\) on attempt 1; retry\?  Lua says yes"
check "the second attempt is answered no" "on attempt 2; retry\?  Lua says no"
check "the failure is reported after 2 attempts" 'failed   no-such-host\.invalid +-> .* after 2 attempts'
check "a summary line" 'all [0-9]+ lookups done: [0-9]+ resolved, 1 failed'
check "a clean exit" 'clean exit \(done\)'
echo "----- output of run 1"; cat "$out"; echo "-----"

# 2. Stays up until SIGTERM.
DEMO_STAY=1 "$interp" "$script" >"$out" 2>&1 &
pid=$!
for _ in $(seq 300); do   # up to 30 s for the lookups to finish
  grep -q 'lookups done' "$out" && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
kill -TERM "$pid" 2>/dev/null
status=124
for _ in $(seq 300); do   # up to 30 s to exit after the signal
  if ! kill -0 "$pid" 2>/dev/null; then wait "$pid"; status=$?; break; fi
  sleep 0.1
done
[ $status = 124 ] && kill -KILL "$pid" 2>/dev/null
expect_status "after SIGTERM the demo exits 0" 0 $status
check "the signal reaches Lua through dss_signal" 'received SIGTERM: stopping'
check "the loop ticked while waiting" 'tick [0-9]+ \(the loop is alive'
check "a clean exit on SIGTERM" 'clean exit \(SIGTERM\)'
echo "----- output of run 2"; cat "$out"; echo "-----"

echo "test_demo: $passed passed, $failed failed"
[ $failed -eq 0 ]
