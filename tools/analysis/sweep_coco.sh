#!/usr/bin/env bash
# The detection sweep behind docs/results.md ("Detection on real images"): all 80 COCO_Tiny
# val2017 images, the frozen DINOv2-S/14 Mask R-CNN (class-agnostic), every row with the same weights in
# one process: AiluRus and the ToMe-style / random / pooling baselines at the same budgets (after
# block 4, keep 0.5 and 0.25: the CamVid frontier's settings, so the two tasks compare row for
# row), soft-residual reconstruction, ToMe's own schedule (to 40% / 20%); box and mask AP
# (CocoMetric), per-output cosine to the stock maps, backbone speed-up vs stock and vs the control.
#   HEADS=path/to/heads.pth bash tools/analysis/sweep_coco.sh [extra sweep.py options]
# (HEADS: the trained parts from tools/coco/train_heads_cached.py; default the shipped file)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PY:-.venv/bin/python}
CK=$("$PY" tools/coco/assemble_checkpoint.py ${HEADS:+--heads "$HEADS"})
V=()
for k in 0.5 0.25; do
  V+=(--variant "adjacent softres L4 k$k:cluster_after=4,keep_ratio=$k,reconstruct=soft_residual,soft_temperature=0.1")
  V+=(--variant "random softres L4 k$k:cluster_after=4,keep_ratio=$k,method=random,reconstruct=soft_residual,soft_temperature=0.1")
done
# 2x2 pooling's budget is its block grid: keep 0.25 only (keep 0.5 would round to 1x1 blocks)
V+=(--variant "pool L4 k0.25:cluster_after=4,keep_ratio=0.25,method=pool")
for k in 0.4 0.2; do
  V+=(--variant "tome_layers L0 k$k:cluster_after=0,keep_ratio=$k,method=tome_layers")
done
"$PY" tools/analysis/sweep.py configs/ailurus/mask-rcnn_dinov2-s14_coco-tiny-agnostic.py "$CK" \
  --cluster-after 4 --keep 0.5 0.25 --methods adjacent random tome "${V[@]}" \
  --time-images 4 --repeats 5 --out-dir work_dirs/sweep_coco "$@"
