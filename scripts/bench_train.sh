#!/usr/bin/env bash
# `make bench-train`: SegFormer-B0 (bench/bench_train.c beside bench/torch_train.py and, for f32
# inference, ONNX Runtime) and the nnU-Net 2-D U-Net (bench/bench_unet2d.c beside MONAI's DynUNet,
# bench/torch_unet2d.py): training steps and batch-1 inference in the same run, same threads.
# One process per case so peak RSS is per case. Every row names the pinned
# reference's versions; exits 1 when the reference cannot be set up or a
# figure is missing. Not a test.
set -u
cd "$(dirname "$0")/.."
BIN=${1:-${BUILD:-build}/bench/bench_train}
UBIN=${2:-$(dirname "$BIN")/bench_unet2d}
SBIN=${3:-$(dirname "$BIN")/bench_segmenter}
DBIN=${4:-$(dirname "$BIN")/bench_deeplab}
SSDBIN=${5:-$(dirname "$BIN")/bench_ssd}
THREADS=${SEGC_BENCH_THREADS:-2}
STEPS=${SEGC_BENCH_STEPS:-3}
export OMP_NUM_THREADS=$THREADS OPENBLAS_NUM_THREADS=1
grep -m1 "model name" /proc/cpuinfo >&2
# the pinned reference, or stop: rows without it would not be comparable
PY=$(bash scripts/bench_env.sh torch monai onnxruntime transformers timm) || { echo "bench-train: no PyTorch reference (see above); nothing measured" >&2; exit 1; }
REF=$(bash scripts/bench_env.sh --versions "$PY") || { echo "bench-train: cannot read the reference's versions" >&2; exit 1; }
have_torch=1
bad=0
# SEGC_BENCH_CASES="segformer-train" (etc.) limits the cases: segformer-train,
# segformer-infer, unet2d-train, unet2d-infer, segmenter-train, segmenter-infer,
# deeplab-train, ssd-train, ssd-infer; SEGC_BENCH_SHAPES="360 480" one SegFormer shape
want() { [ -z "${SEGC_BENCH_CASES:-}" ] || case " $SEGC_BENCH_CASES " in *" $1 "*) true;; *) false;; esac; }
join() {  # merge two JSON objects, add ratios and the reference's versions; a side missing is an error
  python3 - "$1" "$2" "$REF" <<'PY' || bad=1
import json, sys
s = json.loads(sys.argv[1]) if sys.argv[1].strip() else {}
t = json.loads(sys.argv[2]) if sys.argv[2].strip() else {}
if not s or not t:
    print("bench-train: %s figure missing (segc %r, reference %r)" % ("segc" if not s else "reference", sys.argv[1], sys.argv[2]),
          file=sys.stderr)
    sys.exit(1)
r = {**s, **t}
if "segc_img_s" in s and "torch_img_s" in t:
    r["speedup"] = round(s["segc_img_s"] / t["torch_img_s"], 3)
if "segc_ms" in s and "torch_ms" in t:
    r["speedup"] = round(t["torch_ms"] / s["segc_ms"], 3)
if "segc_ms" in s and "ort_ms" in t:
    r["speedup_vs_ort"] = round(t["ort_ms"] / s["segc_ms"], 3)
# the reference's fraction of the GEMM peak on segc's FLOP count: what a target ratio R needs
# of segc is R times this (both sides do the same network's work)
if s.get("gflop_step") and s.get("peak_gflop_s"):
    for side, key, unit in (("torch", "torch_step_s", 1.0), ("torch", "torch_ms", 1e-3), ("ort", "ort_ms", 1e-3)):
        if t.get(key):
            r[side + "_peak_frac"] = round(s["gflop_step"] / (t[key] * unit) / s["peak_gflop_s"], 3)
if "segc_peak_rss_mib" in s and "torch_peak_rss_mib" in t:
    r["rss_ratio"] = round(s["segc_peak_rss_mib"] / t["torch_peak_rss_mib"], 3)
r.update(json.loads(sys.argv[3]))
print(json.dumps(r))
PY
}
SHAPES=${SEGC_BENCH_SHAPES:-"512 512|360 480"}
IFS='|' read -r -a shapes <<<"$SHAPES"
for shape in "${shapes[@]}"; do
  want segformer-train || continue
  for dt in f32 bf16; do
    s=$("$BIN" train $shape 2 $dt "$STEPS" 2>/dev/null | tail -1)
    t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_train.py train $shape 2 $dt "$STEPS" 2>/dev/null | tail -1)
    join "$s" "$t"
  done
done
for dt in f32 bf16; do
  want segformer-infer || continue
  s=$("$BIN" infer 512 512 $dt 5 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_train.py infer 512 512 $dt 5 --ort 2>/dev/null | tail -1)
  join "$s" "$t"
done
# nnU-Net 2-D U-Net (filters 32..512, 4 input channels, deep supervision): 192x160, batch 16
for dt in f32 bf16; do
  want unet2d-train || continue
  s=$("$UBIN" train 192 160 16 $dt "$STEPS" 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_unet2d.py train 192 160 16 $dt "$STEPS" 2>/dev/null | tail -1)
  join "$s" "$t"
done
for dt in f32 bf16; do
  want unet2d-infer || continue
  s=$("$UBIN" infer 192 160 $dt 5 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_unet2d.py infer 192 160 $dt 5 2>/dev/null | tail -1)
  join "$s" "$t"
done
# Segmenter: ViT-S/16 mask decoder at 512x512 batch 2, ViT-B/16 linear batch 1; batch-1 inference
for dt in f32 bf16; do
  want segmenter-train || continue
  s=$("$SBIN" train vit-s mask 512 512 2 $dt "$STEPS" 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_segmenter.py train vit-s mask 512 512 2 $dt "$STEPS" 2>/dev/null | tail -1)
  join "$s" "$t"
  s=$("$SBIN" train vit-b linear 512 512 1 $dt "$STEPS" 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_segmenter.py train vit-b linear 512 512 1 $dt "$STEPS" 2>/dev/null | tail -1)
  join "$s" "$t"
done
for dt in f32 bf16; do
  want segmenter-infer || continue
  s=$("$SBIN" infer vit-s mask 512 512 $dt 5 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_segmenter.py infer vit-s mask 512 512 $dt 5 --ort 2>/dev/null | tail -1)
  join "$s" "$t"
done
# DeepLabV3+ R50 OS16 at 512x512 batch 2, and the ResNet-50 trunk at 224x224 batch 8, NCHW and
# channels-last (channels_last=1: segc's backbone on NHWC activations, PyTorch's torch.channels_last)
for dt in f32 bf16; do
  for cl in 0 1; do
    want deeplab-train || continue
    s=$(channels_last=$cl "$DBIN" train 512 512 2 $dt "$STEPS" 2>/dev/null | tail -1)
    t=""; [ $have_torch = 1 ] && t=$(channels_last=$cl "$PY" bench/torch_deeplab.py train 512 512 2 $dt "$STEPS" 2>/dev/null | tail -1)
    join "$s" "$t"
    s=$(channels_last=$cl "$DBIN" trunk 224 224 8 $dt "$STEPS" 2>/dev/null | tail -1)
    t=""; [ $have_torch = 1 ] && t=$(channels_last=$cl "$PY" bench/torch_deeplab.py trunk 224 224 8 $dt "$STEPS" 2>/dev/null | tail -1)
    join "$s" "$t"
  done
done
# SSD300-ResNet34 (MLPerf, 80 classes): training at batch 4, batch-1 inference with decode + NMS
for dt in f32 bf16; do
  want ssd-train || continue
  s=$("$SSDBIN" train 4 $dt "$STEPS" 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_ssd.py train 4 $dt "$STEPS" 2>/dev/null | tail -1)
  join "$s" "$t"
done
for dt in f32 bf16; do
  want ssd-infer || continue
  s=$("$SSDBIN" infer $dt 5 2>/dev/null | tail -1)
  t=""; [ $have_torch = 1 ] && t=$("$PY" bench/torch_ssd.py infer $dt 5 2>/dev/null | tail -1)
  join "$s" "$t"
done
exit $bad
