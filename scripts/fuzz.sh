#!/usr/bin/env bash
# Runs every libFuzzer target in BUILD (default build-fuzz) for SECONDS each
# (default 20) or, when RUNS is given (make fuzz-long), for RUNS executions
# each, seeded from make_seeds; corpora grow in BUILD/corpus. FUZZ_TARGETS
# ("safetensors ckpt", ...) limits the run to those targets.
# Prints executions, coverage and crashes per target; exits non-zero, naming
# the log and the crashing input, if any target finds a crash, leak,
# sanitizer report or timeout. Built by `make fuzz` (mk/fuzz.mk).
# Usage: fuzz.sh [BUILD] [SECONDS] [RUNS]
set -u
build=${1:-build-fuzz}
secs=${2:-20}
runs=${3:-0}
cd "$(dirname "$0")/.." || exit 2
export OMP_NUM_THREADS=1
"$build/make_seeds" "$build/seeds" || { echo "fuzz: could not write seed corpora"; exit 1; }
found=0
for t in "$build"/fuzz_*; do
  case "$t" in *.d|*.o|*.log) continue;; esac
  [ -x "$t" ] || continue
  name=${t##*/fuzz_}
  if [ -n "${FUZZ_TARGETS:-}" ]; then
    case " $FUZZ_TARGETS " in *" $name "*) ;; *) continue;; esac
  fi
  mkdir -p "$build/corpus/$name" "$build/artifacts/$name" "$build/seeds/$name"
  log="$build/fuzz_$name.log"
  if [ "$runs" -gt 0 ]; then limit=(-runs="$runs"); what="$runs runs"; else limit=(-max_total_time="$secs"); what="${secs}s"; fi
  printf 'fuzz %-12s %12s ... ' "$name" "$what"
  t0=$(date +%s)
  if "$t" "${limit[@]}" -timeout=10 -rss_limit_mb=2048 -max_len=65536 -print_final_stats=1 \
       -artifact_prefix="$build/artifacts/$name/" "$build/corpus/$name" "$build/seeds/$name" >"$log" 2>&1; then
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log")
    cov=$(grep -o 'cov: [0-9]*' "$log" | tail -1)
    echo "ok: ${execs:-?} executions in $(( $(date +%s) - t0 )) s, ${cov:-cov: ?}, 0 crashes"
  else
    echo "FAILED: see $log"
    grep -m1 -E 'ERROR|SUMMARY|runtime error|deadly signal|timeout' "$log"
    ls "$build/artifacts/$name"/* 2>/dev/null | sed 's/^/  input: /'
    found=1
  fi
done
exit $found
