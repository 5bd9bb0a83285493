#!/usr/bin/env bash
# `make bench-data`: data pipeline throughput, segc (bench/bench_data.c, the
# threaded loader) against PyTorch (bench/torch_data.py: PIL + torchvision +
# DataLoader with the same worker count). Prints one joined JSON line per case:
#   {"pipeline", "threads", "segc_samples_per_s", "torch_samples_per_s", "speedup"}
# Usage: scripts/bench_data.sh [path/to/bench_data] [seconds per case]
# Data: $SEGC_DATA_ROOT (default ../shared/data relative to the repo). Every row
# names the pinned reference's versions (scripts/bench_env.sh); exits 1 when the
# reference cannot be set up or a figure is missing. Not a test.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-${BUILD:-build}/bench/bench_data}
SECS=${2:-3}
export SEGC_DATA_ROOT=${SEGC_DATA_ROOT:-../shared/data}
export OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
# the pinned reference (torchvision + PIL + DataLoader), or stop
PY=$(bash scripts/bench_env.sh torch torchvision PIL) || { echo "bench-data: no PyTorch reference (see above); nothing measured" >&2; exit 1; }
REF=$(bash scripts/bench_env.sh --versions "$PY") || { echo "bench-data: cannot read the reference's versions" >&2; exit 1; }
bad=0
if [ -x "$BIN" ]; then
  "$BIN" "$SECS" >"$tmp/segc.jsonl" || { echo "bench-data: $BIN failed" >&2; bad=1; }
else
  echo "bench-data: $BIN not built" >&2; exit 1
fi
"$PY" bench/torch_data.py "$SECS" >"$tmp/torch.jsonl" || { echo "bench-data: torch_data.py failed" >&2; bad=1; }
python3 - "$tmp/segc.jsonl" "$tmp/torch.jsonl" "$REF" <<'EOF' || bad=1
import json, sys

def read(path):
    try:
        with open(path) as f:
            return [json.loads(l) for l in f if l.strip().startswith("{")]
    except FileNotFoundError:
        return []

segc, torch_rows, ref = read(sys.argv[1]), read(sys.argv[2]), json.loads(sys.argv[3])
by_key = {(r["pipeline"], r["threads"]): r["torch_samples_per_s"] for r in torch_rows}
missing = 0
for r in segc:
    t = by_key.get((r["pipeline"], r["threads"]))
    if not t:
        missing += 1
        print(f"bench-data: no reference figure for {r['pipeline']} x{r['threads']}", file=sys.stderr)
    out = {"pipeline": r["pipeline"], "threads": r["threads"], "segc_samples_per_s": r["segc_samples_per_s"],
           "torch_samples_per_s": t, "speedup": round(r["segc_samples_per_s"] / t, 2) if t else None}
    out.update(ref)
    print(json.dumps(out))
sys.exit(1 if missing or not segc else 0)
EOF
exit $bad
