# Frozen DINOv2-S/14 on CamVid 504x672 with AiluRus: only the delta over the
# unaccelerated reference. The reference is the Segmenter-Linear head
# (configs/camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py): it
# measured better on val than the mask-transformer head within the CPU
# training budget (see tools/camvid/train_head_cached.py); its weights are
# checkpoints/segmenter_dinov2-s14_camvid_head.pth (full checkpoint:
# python tools/camvid/assemble_checkpoint.py). The ailurus values are the best
# measured point of docs/results.md section 5 (all 101 val images): ToMe's own
# schedule (method='tome_layers': merge before every layer down to 20% of the
# tokens, unmerge at the output) keeps the reference's accuracy (49.87 vs 49.45
# mIoU) at 1.85x fewer backbone FLOPs and 1.79x measured over the fused-kernel
# control. The best AiluRus clustering setting (cluster after layer 4, keep 0.5,
# reconstruct='soft_residual', soft_temperature=0.1) loses 0.58 (48.87) at 1.58x:
#   --cfg-options model.backbone.ailurus.method=adjacent model.backbone.ailurus.cluster_after=4 \
#     model.backbone.ailurus.keep_ratio=0.5 model.backbone.ailurus.reconstruct=soft_residual \
#     model.backbone.ailurus.soft_temperature=0.1
_base_ = ['../camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py']

model = dict(
    # mmseg's EncoderDecoder + ailurus.reconstruct_level='logits' (same checkpoints)
    type='AiluRusEncoderDecoder',
    backbone=dict(
        ailurus=dict(enabled=True, method='tome_layers', cluster_after=0, keep_ratio=0.2)
    ),
)

# `tools/test.py CONFIG CKPT --show-dir DIR` writes, for every image, the
# clusters (borders; one-token clusters tinted) | ground truth | prediction,
# through the visualizer's backends (ailurus_mm.visualization.hooks).
default_hooks = dict(visualization=dict(type='AiluRusSegVisualizationHook', interval=1))
visualizer = dict(type='AiluRusSegLocalVisualizer')
