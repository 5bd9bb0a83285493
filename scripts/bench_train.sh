#!/usr/bin/env bash
# `make bench-train`: SegFormer-B0 training step and batch-1 inference, segc (bench/bench_train.c)
# beside the PyTorch twin (bench/torch_train.py) and, for f32 inference, ONNX Runtime, in the same run,
# same threads. One process per case so peak RSS is per case. Not a test.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-${BUILD:-build}/bench/bench_train}
THREADS=${SEGC_BENCH_THREADS:-2}
STEPS=${SEGC_BENCH_STEPS:-3}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=1
bash scripts/deps.sh --bench || echo "bench-train: could not install PyTorch; segc figures only" >&2
python3 -c "import onnxruntime" 2>/dev/null || python3 -m pip install -q onnxruntime onnx >/dev/null 2>&1 || true
have_torch=0; python3 -c "import torch" 2>/dev/null && have_torch=1
join() {  # merge two JSON objects and add ratios
  python3 - "$1" "$2" <<'PY'
import json, sys
s = json.loads(sys.argv[1]) if sys.argv[1].strip() else {}
t = json.loads(sys.argv[2]) if sys.argv[2].strip() else {}
r = {**s, **t}
if "segc_img_s" in s and "torch_img_s" in t:
    r["speedup"] = round(s["segc_img_s"] / t["torch_img_s"], 3)
if "segc_ms" in s and "torch_ms" in t:
    r["speedup"] = round(t["torch_ms"] / s["segc_ms"], 3)
if "segc_ms" in s and "ort_ms" in t:
    r["speedup_vs_ort"] = round(t["ort_ms"] / s["segc_ms"], 3)
if "segc_peak_rss_mib" in s and "torch_peak_rss_mib" in t:
    r["rss_ratio"] = round(s["segc_peak_rss_mib"] / t["torch_peak_rss_mib"], 3)
print(json.dumps(r))
PY
}
for shape in "512 512" "360 480"; do
  for dt in f32 bf16; do
    s=$("$BIN" train $shape 2 $dt "$STEPS" 2>/dev/null | tail -1)
    t=""; [ $have_torch = 1 ] && t=$(python3 bench/torch_train.py train $shape 2 $dt "$STEPS" 2>/dev/null | tail -1)
    join "$s" "$t"
  done
done
for dt in f32 bf16; do
  s=$("$BIN" infer 512 512 $dt 5 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$(python3 bench/torch_train.py infer 512 512 $dt 5 --ort 2>/dev/null | tail -1)
  join "$s" "$t"
done
