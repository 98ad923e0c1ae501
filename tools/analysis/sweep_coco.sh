#!/usr/bin/env bash
# The detection sweep behind docs/results.md ("Detection on real images"): all 80 COCO_Tiny
# val2017 images, the frozen DINOv2-S/14 Mask R-CNN (class-agnostic), every row with the same weights in
# one process: AiluRus and the ToMe-style / random / pooling baselines at the same budgets (after
# block 4, keep 0.5 and 0.25: the CamVid frontier's settings, so the two tasks compare row for
# row; soft-residual reconstruction for every one-shot row as there), ToMe's own schedule (to 40% / 20%), the two-stage AiluRus
# and random rows; box and mask AP (CocoMetric), agreement AP with the reference's detections,
# per-output cosine to the stock maps, backbone speed-up vs stock and vs the control.
#   HEADS=path/to/heads.pth bash tools/analysis/sweep_coco.sh [extra sweep.py options]
# (HEADS: the trained parts from tools/coco/train_heads_cached.py; default the shipped file)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PY:-.venv/bin/python}
CK=$("$PY" tools/coco/assemble_checkpoint.py ${HEADS:+--heads "$HEADS"})
V=()
SR=reconstruct=soft_residual,soft_temperature=0.1
for k in 0.5 0.25; do
  for m in adjacent random tome; do
    V+=(--variant "$m softres L4 k$k:cluster_after=4,keep_ratio=$k,method=$m,$SR")
  done
done
# 2x2 pooling's budget is its block grid: keep 0.25 only (keep 0.5 would round to 1x1 blocks)
V+=(--variant "pool softres L4 k0.25:cluster_after=4,keep_ratio=0.25,method=pool,$SR")
for k in 0.4 0.2; do
  V+=(--variant "tome_layers L0 k$k:cluster_after=0,keep_ratio=$k,method=tome_layers")
done
# the second clustering stage (docs/results.md section 5): after block 2 to 70%, after block 6 to 25%
for m in adjacent random; do
  V+=(--variant "$m 2-stage L2 k0.7 L6 k0.25:cluster_after=2,keep_ratio=0.7,second_after=6,second_keep_ratio=0.25,method=$m,$SR")
done
"$PY" tools/analysis/sweep.py configs/ailurus/mask-rcnn_dinov2-s14_coco-tiny-agnostic.py "$CK" "${V[@]}" \
  --time-images 4 --repeats 5 --out-dir work_dirs/sweep_coco "$@"
