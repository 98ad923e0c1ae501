# Frozen DINOv2-S/14 on CamVid 504x672 with AiluRus: only the delta over the
# unaccelerated reference. The reference is the Segmenter-Linear head
# (configs/camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py): it
# measured better on val than the mask-transformer head within the CPU
# training budget (see tools/camvid/train_head_cached.py); its weights are
# checkpoints/segmenter_dinov2-s14_camvid_head.pth (full checkpoint:
# python tools/camvid/assemble_checkpoint.py). The ailurus values are the
# measured choice of docs/results.md (val mIoU 48.29 vs 49.45, 1.67x fewer
# backbone FLOPs); override them with --cfg-options model.backbone.ailurus.keep_ratio=0.6 etc.
_base_ = ['../camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py']

model = dict(backbone=dict(ailurus=dict(enabled=True, cluster_after=4, keep_ratio=0.5)))

# `tools/test.py CONFIG CKPT --show-dir DIR` writes, for every image, the
# clusters (borders; one-token clusters tinted) | ground truth | prediction,
# through the visualizer's backends (ailurus_mm.visualization.hooks).
default_hooks = dict(visualization=dict(type='AiluRusSegVisualizationHook', interval=1))
visualizer = dict(type='AiluRusSegLocalVisualizer')
