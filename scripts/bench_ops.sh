#!/usr/bin/env bash
# `make bench-ops`: runs every bench/bench_<group> binary (segc) and its
# bench/torch_<group>.py twin (the pinned PyTorch of scripts/bench_env.sh, same
# threads, same run), and prints one joined JSON line per case with the
# speedup and the reference's versions. Fails (exit 1, with the reason) when
# the reference cannot be set up or a twin fails: no segc-only rows.
# SEGC_BENCH_GROUPS="matmul norm" limits the groups (a quick check). Not a test.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${SEGC_BENCH_THREADS:-2}
PY=$(bash scripts/bench_env.sh torch numpy) || { echo "bench-ops: no PyTorch reference (see above); nothing measured" >&2; exit 1; }
REF=$(bash scripts/bench_env.sh --versions "$PY") || { echo "bench-ops: cannot read the reference's versions" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
bad=0
for b in "$BUILD"/bench/bench_*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  g=$(basename "$b"); g=${g#bench_}
  # model benchmarks are bench-train's, data bench-data's, dist bench-dist's; tune times segc's own
  # scheduler overhead (no PyTorch counterpart; README "segc tune")
  case "$g" in *.o|*.d|data|train|unet2d|segmenter|deeplab|ssd|dist|tune) continue;; esac
  if [ -n "${SEGC_BENCH_GROUPS:-}" ]; then case " $SEGC_BENCH_GROUPS " in *" $g "*) ;; *) continue;; esac; fi
  [ -f "bench/torch_$g.py" ] || { echo "bench-ops: bench/torch_$g.py missing: no reference for $g" >&2; bad=1; continue; }
  OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=1 "$b" >>"$tmp/segc.jsonl" || { echo "bench-ops: $b failed" >&2; bad=1; }
  OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=1 "$PY" "bench/torch_$g.py" >>"$tmp/torch.jsonl" || { echo "bench-ops: torch_$g.py failed" >&2; bad=1; }
done
"$PY" scripts/bench_join.py "$tmp/segc.jsonl" "$tmp/torch.jsonl" "$THREADS" "$REF" || bad=1
exit $bad
