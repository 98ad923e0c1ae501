# Segmenter ViT-L/16 mask head on Cityscapes 768x768 with AiluRus (no stock
# Segmenter Cityscapes config ships with mmseg, so it is composed from the stock
# model, dataset, runtime and schedule files, as in the Segmenter paper).
_base_ = [
    'mmseg::_base_/models/segmenter_vit-b16_mask.py',
    'mmseg::_base_/datasets/cityscapes_768x768.py',
    'mmseg::_base_/default_runtime.py', 'mmseg::_base_/schedules/schedule_80k.py'
]
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)
crop_size = (768, 768)
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
        in_channels=1024, channels=1024, num_heads=16, embed_dims=1024, num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)))
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=0.001, weight_decay=0.0))
train_dataloader = dict(batch_size=1)
val_dataloader = dict(batch_size=1)
