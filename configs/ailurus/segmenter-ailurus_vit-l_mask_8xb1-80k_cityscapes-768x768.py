# Segmenter ViT-L/16 mask head on Cityscapes 768x768 with AiluRus (no stock
# Segmenter Cityscapes config ships with mmseg, so it is composed from the stock
# dataset, runtime and schedule files, as in the Segmenter paper).
_base_ = [
    '../_base_/models/segmenter-ailurus_vit-l16_mask.py',
    'mmseg::_base_/datasets/cityscapes_768x768.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (768, 768)
model = dict(
    # mmseg's EncoderDecoder + ailurus.reconstruct_level='logits' (same checkpoints)
    type='AiluRusEncoderDecoder',
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=19),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(512, 512)),
)
train_dataloader = dict(batch_size=1)
val_dataloader = dict(batch_size=1)
# the stock Segmenter ViT-L recipe
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=0.001, weight_decay=0.0))
