#!/usr/bin/env bash
# The CamVid sweep behind docs/results.md: 20 val images (every 5th of 101), the
# frozen DINOv2-S/14 + linear head, every row with the same weights in one process.
#   bash tools/analysis/sweep_camvid.sh [extra sweep.py options]
# (needs ~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth: python tools/camvid/assemble_checkpoint.py)
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PY=${PY:-.venv/bin/python}
V=()
for L in 4 6; do for k in 0.25 0.4 0.5 0.6; do
  V+=(--variant "tome L$L k$k:cluster_after=$L,keep_ratio=$k,method=tome"); done; done
for L in 4 6; do V+=(--variant "random L$L k0.4:cluster_after=$L,keep_ratio=0.4,method=random"); done
for L in 4 6; do V+=(--variant "pool2x2 L$L:cluster_after=$L,keep_ratio=0.25,method=pool"); done
V+=(--variant "dpc L4 k0.4:cluster_after=4,keep_ratio=0.4,method=dpc")
V+=(--variant "dpc_global L4 k0.4:cluster_after=4,keep_ratio=0.4,method=dpc_global")
V+=(--variant "adjacent L4 k0.4 no-size-attn:cluster_after=4,keep_ratio=0.4,size_aware=False")
V+=(--variant "adjacent L4 k0.4 anchor-merge:cluster_after=4,keep_ratio=0.4,merge=anchor")
V+=(--variant "adjacent L4 k0.4 windows 5x5:cluster_after=4,keep_ratio=0.4,link_radius=2,assign_radius=2")
V+=(--variant "adjacent L4 k0.4 link_to=parent:cluster_after=4,keep_ratio=0.4,link_to=parent")
"$PY" tools/analysis/sweep.py configs/ailurus/segmenter_dinov2-s14_camvid.py \
  ~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth \
  --cluster-after 2 4 6 --keep 0.25 0.4 0.5 0.6 --methods adjacent "${V[@]}" \
  --num-images 20 --every 5 --time-images 4 --out-dir work_dirs/sweep_camvid "$@"
