# CamVid, SegNet 11-class split (ailurus_mm.datasets.CamVidDataset).
#
# data_root is relative to the current directory, which for tools/*.py is the
# checkout root: '../shared/data/CamVid' is the shared copy next to the
# checkout. Top-level variables are substituted when this file is read, so
# `--cfg-options data_root=...` does NOT reach the dataloaders; override each:
#   --cfg-options train_dataloader.dataset.data_root=/path/CamVid \
#                 val_dataloader.dataset.data_root=/path/CamVid \
#                 test_dataloader.dataset.data_root=/path/CamVid
# and likewise `*.dataset.data_prefix.img_path=test` +
# `*.dataset.data_prefix.seg_map_path=testannot` for another split.
#
# Label 11 is void. mmseg does not forward a dataset's ignore_index, so every
# consumer is told here or must be told by the model config:
#   - IoUMetric(ignore_index=11) and RandomCrop(ignore_index=11): set below;
#   - model config: decode_head.ignore_index=11 (and auxiliary_head), which
#     the head passes to its loss, and data_preprocessor.seg_pad_val=11
#     (default 255: padded pixels would get a label that is neither a class
#     nor ignored; RandomResize below 1.0 makes images smaller than the crop,
#     so the preprocessor pads them).
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)

dataset_type = 'CamVidDataset'
data_root = '../shared/data/CamVid'
ignore_index = 11
# The 480x360 frames are resized by exactly 1.4 to 672x504 (W x H): 48x36
# tokens for a patch-14 ViT. mmseg scales are (w, h), crop sizes (h, w).
img_scale = (672, 504)
crop_size = (504, 672)

train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=img_scale, ratio_range=(0.5, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75, ignore_index=ignore_index),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PhotoMetricDistortion'),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    # Annotations are loaded after Resize (mmseg convention): predictions are
    # resized back and the metric is computed at the original 480x360.
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]

train_dataloader = dict(
    batch_size=2,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='train', seg_map_path='trainannot'),
        pipeline=train_pipeline,
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='val', seg_map_path='valannot'),
        pipeline=test_pipeline,
    ),
)
# The test split is held back: testing runs on val. With a test/ + testannot/
# copy, override test_dataloader.dataset.data_prefix (see the top).
test_dataloader = val_dataloader

val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'], ignore_index=ignore_index)
test_evaluator = val_evaluator
