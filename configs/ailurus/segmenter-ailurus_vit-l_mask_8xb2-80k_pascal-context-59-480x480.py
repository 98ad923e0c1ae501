# Segmenter ViT-L/16 mask head on Pascal Context (59 classes) 480x480 with
# AiluRus, composed from the stock mmseg dataset, runtime and schedule files.
_base_ = [
    '../_base_/models/segmenter-ailurus_vit-l16_mask.py',
    'mmseg::_base_/datasets/pascal_context_59.py',
    'mmseg::_base_/default_runtime.py',
    'mmseg::_base_/schedules/schedule_80k.py',
]
crop_size = (480, 480)
model = dict(
    # mmseg's EncoderDecoder + ailurus.reconstruct_level='logits' (same checkpoints)
    type='AiluRusEncoderDecoder',
    data_preprocessor=dict(size=crop_size),
    backbone=dict(img_size=crop_size),
    decode_head=dict(num_classes=59),
    test_cfg=dict(mode='slide', crop_size=crop_size, stride=(320, 320)),
)
train_dataloader = dict(batch_size=2)
val_dataloader = dict(batch_size=1)
# the stock Segmenter ViT-L recipe
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(lr=0.001, weight_decay=0.0))
