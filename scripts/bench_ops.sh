#!/usr/bin/env bash
# `make bench-ops`: runs every bench/bench_<group> binary (segc) and its
# bench/torch_<group>.py twin (PyTorch, same threads, same run), and prints
# one joined JSON line per case with the speedup. Not a test.
set -u
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
THREADS=${SEGC_BENCH_THREADS:-2}
bash scripts/deps.sh --bench || echo "bench: could not install PyTorch; printing segc timings only" >&2
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for b in "$BUILD"/bench/bench_*; do
  [ -x "$b" ] && [ -f "$b" ] || continue
  g=$(basename "$b"); g=${g#bench_}
  case "$g" in *.o|*.d|data|train) continue;; esac
  OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=1 "$b" >>"$tmp/segc.jsonl" || echo "bench: $b failed" >&2
  if [ -f "bench/torch_$g.py" ] && python3 -c "import torch" 2>/dev/null; then
    OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=1 python3 "bench/torch_$g.py" >>"$tmp/torch.jsonl" || echo "bench: torch_$g.py failed" >&2
  fi
done
python3 scripts/bench_join.py "$tmp/segc.jsonl" "$tmp/torch.jsonl" "$THREADS"
