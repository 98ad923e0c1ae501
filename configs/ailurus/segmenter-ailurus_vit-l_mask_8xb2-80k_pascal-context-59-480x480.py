# Segmenter ViT-L/16 mask head on Pascal Context (59 classes) 480x480 with
# AiluRus, composed from the stock mmseg model, dataset, runtime and schedule.
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py',
    'mmseg::_base_/datasets/pascal_context_59.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)
crop_size = (480, 480)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(
        type='AiluRusVisionTransformer',
        img_size=crop_size,
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        ailurus=dict(cluster_after=2, keep_ratio=0.4)),
    decode_head=dict(
        in_channels=1024, channels=1024, num_heads=16, embed_dims=1024, num_classes=59),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=0.001, weight_decay=0.0))
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
