# Mask R-CNN with CAE's ViT-L detection backbone (lxtGH/CAE downstream_tasks/detection,
# vit_large_giou_4conv1f_coco_maskrcnn_1x_cae_sincos_init0.1_lr00002_lrdr0.85_dp0.2.py) and
# AiluRus: the deltas over the ViT-B config (same head, schedule and notes).
_base_ = ['./mask-rcnn_cae-b_fpn_1x_coco.py']

model = dict(
    backbone=dict(
        embed_dim=1024,
        depth=24,
        num_heads=16,
        init_values=1e-5,
        out_indices=(7, 11, 15, 23),
        ailurus=dict(cluster_after=2, keep_ratio=0.5),
    ),
    neck=dict(in_channels=[1024, 1024, 1024, 1024]),
)
# CAE ViT-L: lr 2e-4 (its layer decay 0.85 is not reproduced, see the ViT-B config)
optim_wrapper = dict(optimizer=dict(lr=2e-4))
