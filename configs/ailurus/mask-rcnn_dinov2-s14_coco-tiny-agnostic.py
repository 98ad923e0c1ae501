# AiluRus on the real DINOv2-S/14 Mask R-CNN (class-agnostic COCO) of
# ../coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py: same
# weights, no fine-tuning; only the reduction switched on. The setting is a
# placeholder until the detection sweep has a trained detector to choose on
# (docs/results.md, "Detection on real images").
_base_ = ['../coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py']

model = dict(backbone=dict(ailurus=dict(_delete_=True, cluster_after=4, keep_ratio=0.5)))
