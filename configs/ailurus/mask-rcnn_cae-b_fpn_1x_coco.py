# Mask R-CNN with CAE's ViT-B detection backbone (lxtGH/CAE downstream_tasks/detection,
# vit_base_giou_4conv1f_coco_maskrcnn_1x_cae_sincos_init0.1_lr00003.py) and AiluRus: only the
# deltas over the stock mmdet config. Official CAE Mask R-CNN checkpoints load unchanged (check
# one with tools/model_converters/cae_to_ailurus.py); for training from a CAE pre-training
# checkpoint convert it with the same tool and set model.backbone.init_cfg=dict(
# type='Pretrained', checkpoint=PATH). Nothing is downloaded at run time.
# ailurus: a speed setting without an accuracy measurement here (docs/results.md, Detection);
# override with --cfg-options model.backbone.ailurus.keep_ratio=0.7 etc., or
# model.backbone.ailurus.enabled=False for the stock CAE model.
_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)

model = dict(
    backbone=dict(
        _delete_=True,
        type='AiluRusCAEViT',
        img_size=(672, 1092),  # CAE's table grid: 42 x 68 (resized to every input)
        patch_size=16,
        embed_dim=768,
        depth=12,
        num_heads=12,
        mlp_ratio=4.0,
        qkv_bias=True,
        init_values=0.1,
        drop_path_rate=0.2,
        pos_embed_type='sincos',
        out_indices=(3, 5, 7, 11),
        fpn_norm_cfg=dict(type='BN'),  # CAE: SyncBN (use it for multi-GPU training)
        ailurus=dict(cluster_after=2, keep_ratio=0.5),
        init_cfg=None,
    ),
    neck=dict(in_channels=[768, 768, 768, 768]),
    roi_head=dict(
        bbox_head=dict(
            type='ConvFCBBoxHead',  # CAE's 4conv1fc box head with GIoU loss
            num_shared_convs=4,
            num_shared_fcs=1,
            conv_out_channels=256,
            reg_decoded_bbox=True,
            norm_cfg=dict(type='BN', requires_grad=True),  # CAE: SyncBN
            loss_bbox=dict(type='GIoULoss', loss_weight=10.0),
        )
    ),
)

# CAE's optimiser without its layer-wise lr decay (0.75), which mmdet 3.3 does not provide
# for ViTs; no weight decay on norms, biases, the class token and the position table.
optim_wrapper = dict(
    _delete_=True,
    type='OptimWrapper',
    optimizer=dict(type='AdamW', lr=3e-4, betas=(0.9, 0.999), weight_decay=0.05),
    paramwise_cfg=dict(
        norm_decay_mult=0.0,
        bias_decay_mult=0.0,
        custom_keys={'backbone.cls_token': dict(decay_mult=0.0)},
    ),
)
param_scheduler = [
    dict(type='LinearLR', start_factor=0.001, by_epoch=False, begin=0, end=500),
    dict(type='MultiStepLR', begin=0, end=12, by_epoch=True, milestones=[9, 11], gamma=0.1),
]
