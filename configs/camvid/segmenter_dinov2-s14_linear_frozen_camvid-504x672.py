# Segmenter-Linear on a FROZEN DINOv2 ViT-S/14, CamVid 11 classes at 504x672:
# the mask-head reference with the decode head replaced by a 1x1 convolution
# (FCNHead with num_convs=0, as mmseg's segmenter_vit-*_fcn_* configs).
# Everything else (backbone, preprocessing, data, schedule) is inherited.
_base_ = ['./segmenter_dinov2-s14_mask_frozen_camvid-504x672.py']

model = dict(
    decode_head=dict(
        _delete_=True,
        type='FCNHead',
        in_channels=384,
        channels=384,
        num_convs=0,
        concat_input=False,
        dropout_ratio=0.0,
        num_classes=11,
        norm_cfg=None,
        align_corners=False,
        ignore_index=11,
        loss_decode=dict(type='CrossEntropyLoss', use_sigmoid=False, loss_weight=1.0),
    )
)
