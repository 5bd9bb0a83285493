#!/usr/bin/env bash
# `make bench-data`: data pipeline throughput, segc (bench/bench_data.c, the
# threaded loader) against PyTorch (bench/torch_data.py: PIL + torchvision +
# DataLoader with the same worker count). Prints one joined JSON line per case:
#   {"pipeline", "threads", "segc_samples_per_s", "torch_samples_per_s", "speedup"}
# Usage: scripts/bench_data.sh [path/to/bench_data] [seconds per case]
# Data: $SEGC_DATA_ROOT (default ../shared/data relative to the repo). Not a test.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-${BUILD:-build}/bench/bench_data}
SECS=${2:-3}
export SEGC_DATA_ROOT=${SEGC_DATA_ROOT:-../shared/data}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [ -x "$BIN" ]; then
  "$BIN" "$SECS" >"$tmp/segc.jsonl" || echo "bench-data: $BIN failed" >&2
else
  echo "bench-data: $BIN not built" >&2
fi
if python3 -c "import torch, torchvision, PIL" 2>/dev/null; then
  python3 bench/torch_data.py "$SECS" >"$tmp/torch.jsonl" || echo "bench-data: torch_data.py failed" >&2
else
  echo "bench-data: torch/torchvision/PIL not importable (pip install torchvision pillow); segc figures only" >&2
fi
python3 - "$tmp/segc.jsonl" "$tmp/torch.jsonl" <<'EOF'
import json, sys

def read(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip().startswith("{")]
    except FileNotFoundError:
        return []

segc, torch_rows = read(sys.argv[1]), read(sys.argv[2])
by_key = {(r["pipeline"], r["threads"]): r["torch_samples_per_s"] for r in torch_rows}
for r in segc:
    t = by_key.get((r["pipeline"], r["threads"]))
    out = {"pipeline": r["pipeline"], "threads": r["threads"], "segc_samples_per_s": r["segc_samples_per_s"],
           "torch_samples_per_s": t, "speedup": round(r["segc_samples_per_s"] / t, 2) if t else None}
    print(json.dumps(out))
EOF
