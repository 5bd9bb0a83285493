#!/usr/bin/env bash
# CamVid loss ablation for configs/segformer/camvid_cpu_best.yaml, selected on a
# held-out part of the training split (never on val):
#   - every variant trains on train minus a contiguous 15 % of its frames
#     (data.holdout=0.15, data.holdout_fold=$FOLD; contiguous because CamVid's
#     frames are video: random frames would leak their neighbours) and is
#     evaluated on that held-out part (data.val_split=holdout);
#   - class_weight: auto is computed from the reduced training split only;
#   - one table row per variant: held-out mIoU, the thin classes' IoU, the
#     held-out loss and the wall time; the winner is then trained on the whole
#     train split with camvid_cpu_best.yaml and reported on val.
#   bash scripts/camvid_ablation.sh                 all variants, ABL_ITERS iterations each
#   ABL_ITERS=7000 bash scripts/camvid_ablation.sh  the full schedule (hours per variant on 2 cores)
#   bash scripts/camvid_ablation.sh base ce_enet    only these variants
# Runs go to runs/ablation/<variant>; the table to runs/ablation/table.md.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
ITERS=${ABL_ITERS:-2000}
FOLD=${ABL_FOLD:-0}
OUT=${ABL_OUT:-runs/ablation}
BASE=configs/segformer/camvid_b0_cpu.yaml
export OPENBLAS_NUM_THREADS=1
make -j2 BUILD="$BUILD" "$BUILD/segc" >/dev/null

# variant -> overrides on top of camvid_b0_cpu.yaml (its loss: HF's CE over labelled pixels)
declare -A V=(
  [base]=""
  [ce_mmseg]="loss.decode.ce.avg_non_ignore=true"
  [ce_enet]="loss.decode.ce.class_weight=auto loss.decode.ce.avg_non_ignore=true loss.decode.ce.loss_weight=0.15"
  [ce_median]="loss.decode.ce.class_weight=auto loss.class_weight_rule=median_freq loss.decode.ce.avg_non_ignore=true"
  [ce_ohem]="loss.decode.ce.avg_non_ignore=true loss.sampler.thresh=0.7 loss.sampler.min_kept=20000"
  [ce_enet_ohem]="loss.decode.ce.class_weight=auto loss.decode.ce.avg_non_ignore=true loss.decode.ce.loss_weight=0.15 loss.sampler.thresh=0.7 loss.sampler.min_kept=20000"
  [ce_lovasz]="loss.decode.ce.avg_non_ignore=true loss.decode.lovasz.loss_weight=0.5"
  [ce_enet_lovasz]="loss.decode.ce.class_weight=auto loss.decode.ce.avg_non_ignore=true loss.decode.ce.loss_weight=0.15 loss.decode.lovasz.loss_weight=0.5"
  [ce_dice]="loss.decode.ce.avg_non_ignore=true loss.decode.ce.loss_weight=0.375 loss.decode.dice.loss_weight=1.125"
)
ORDER=(base ce_mmseg ce_enet ce_median ce_ohem ce_enet_ohem ce_lovasz ce_enet_lovasz ce_dice)
[ $# -gt 0 ] && ORDER=("$@")
mkdir -p "$OUT"
TABLE="$OUT/table.md"
echo "| variant | holdout mIoU | Pole | SignSymbol | Fence | Pedestrian | Bicyclist | holdout loss | minutes |" > "$TABLE"
echo "|---|---|---|---|---|---|---|---|---|" >> "$TABLE"
field() {   # field NAME JSON_LINE: the number after "NAME": (top-level keys: mIoU, val_loss)
  sed -n "s/.*\"$1\":\([-0-9.e]*\).*/\1/p" <<<"$2"
}
iou() {     # iou CLASS JSON_LINE: the class's IoU (not its Acc or Dice)
  field "$1" "$(sed -n 's/.*"IoU":{\([^}]*\)}.*/\1/p' <<<"$2")"
}
for v in "${ORDER[@]}"; do
  [ -n "${V[$v]+x}" ] || { echo "unknown variant $v (valid: ${!V[*]})" >&2; exit 1; }
  RUN="$OUT/$v"
  echo "== $v: ${V[$v]:-(the shipped loss)} -> $RUN"
  T0=$(date +%s)
  # shellcheck disable=SC2086
  "$BUILD/segc" train "$BASE" --force name="abl_$v" train.work_dir="$RUN" \
    data.holdout=0.15 data.holdout_fold="$FOLD" data.val_split=holdout \
    train.max_iters="$ITERS" schedule.warmup_iters=$((ITERS / 20)) train.val_interval=$((ITERS / 4)) \
    train.checkpoint_interval=$((ITERS / 4)) train.best_metric=mIoU ${V[$v]}
  MIN=$(( ($(date +%s) - T0 + 30) / 60 ))
  LAST=$(grep '"eval"' "$RUN/metrics.jsonl" | tail -n 1)
  echo "| $v | $(field mIoU "$LAST") | $(iou Pole "$LAST") | $(iou SignSymbol "$LAST") | $(iou Fence "$LAST") |" \
       "$(iou Pedestrian "$LAST") | $(iou Bicyclist "$LAST") | $(field val_loss "$LAST") | $MIN |" >> "$TABLE"
done
echo
cat "$TABLE"
