# AiluRus on the real DINOv2-S/14 Mask R-CNN (class-agnostic COCO) of
# ../coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py: same
# weights, no fine-tuning; only the reduction switched on. The setting is the
# detection sweep's best agreement with the reference detector at >= 1.5x
# backbone FLOPs (docs/results.md, "Detection on real images"; all 80 val
# images): ToMe's own schedule to 20% (agreement 45 box / 42 mask AP, 1.66x
# FLOPs). The best AiluRus clustering row there, two stages:
#   --cfg-options model.backbone.ailurus.method=adjacent model.backbone.ailurus.cluster_after=2 \
#     model.backbone.ailurus.keep_ratio=0.7 model.backbone.ailurus.second_after=6 \
#     model.backbone.ailurus.second_keep_ratio=0.25 model.backbone.ailurus.reconstruct=soft_residual \
#     model.backbone.ailurus.soft_temperature=0.1
_base_ = ['../coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py']

model = dict(
    backbone=dict(
        ailurus=dict(_delete_=True, method='tome_layers', cluster_after=0, keep_ratio=0.2)
    )
)
