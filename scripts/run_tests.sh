#!/usr/bin/env bash
# Runs every cmocka test binary in DIR, prints each one's output and a final
# "N passed, N failed" summary; exits non-zero if any test failed or crashed.
set -u
dir=${1:-build/tests}
pass=0; fail=0; crashed=""
export CMOCKA_MESSAGE_OUTPUT=stdout
export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} OPENBLAS_NUM_THREADS=1
for t in "$dir"/test_*; do
  [ -x "$t" ] && [ -f "$t" ] || continue
  case "$t" in *.o|*.d) continue;; esac
  out=$(cd "$(dirname "$0")/.." && "$t" 2>&1); rc=$?
  printf '%s\n' "$out"
  p=$(printf '%s\n' "$out" | sed -n 's/^\[  PASSED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  f=$(printf '%s\n' "$out" | sed -n 's/^\[  FAILED  \] \([0-9]*\) test.*/\1/p' | awk '{s+=$1} END {print s+0}')
  pass=$((pass + p)); fail=$((fail + f))
  if [ $rc -ne 0 ] && [ "$f" = 0 ]; then fail=$((fail + 1)); crashed="$crashed $(basename "$t")(rc=$rc)"; fi
done
[ -n "$crashed" ] && echo "crashed or exited non-zero:$crashed"
echo "tests: $pass passed, $fail failed"
[ $fail -eq 0 ] && [ $pass -gt 0 ]
