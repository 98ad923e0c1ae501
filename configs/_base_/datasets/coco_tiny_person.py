# COCO person instances on the small real COCO subsets next to the checkout
# (../shared/data, README there): train = COCO128 train2017 + COCO_Tiny
# train2017 (208 images, 402 person instances; images without a person are
# dropped by filter_empty_gt), val/test = COCO_Tiny val2017 (80 COCO val2017
# images, 216 persons, never trained on). Person-only because every other
# category has a handful of examples here (the README allows it).
#
# Images are kept at COCO's 640 px long side (Resize scale (640, 640),
# keep_ratio): a 640x480 image gives a 40x30 token grid.
#
# data_root is relative to the current directory (the checkout root for
# tools/*.py). Top-level variables are substituted when this file is read:
# override `*_dataloader.dataset.*.data_root` and `*_evaluator.ann_file`
# to point elsewhere.
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)

dataset_type = 'CocoDataset'
data_root = '../shared/data/'
metainfo = dict(classes=('person',), palette=[(220, 20, 60)])
img_scale = (640, 640)
backend_args = None

train_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackDetInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile', backend_args=backend_args),
    dict(type='Resize', scale=img_scale, keep_ratio=True),
    dict(type='LoadAnnotations', with_bbox=True, with_mask=True),
    dict(
        type='PackDetInputs',
        meta_keys=('img_id', 'img_path', 'ori_shape', 'img_shape', 'scale_factor'),
    ),
]


train_subset = dict(
    type=dataset_type,
    metainfo=metainfo,
    ann_file='annotations/instances_train2017.json',
    data_prefix=dict(img='train2017/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=32),
    pipeline=train_pipeline,
    backend_args=backend_args,
)

train_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=True),
    batch_sampler=dict(type='AspectRatioBatchSampler'),
    dataset=dict(
        type='ConcatDataset',
        datasets=[
            dict(train_subset, data_root=data_root + 'COCO128'),
            dict(train_subset, data_root=data_root + 'COCO_Tiny'),
        ],
    ),
)
val_dataloader = dict(
    batch_size=1,
    num_workers=2,
    persistent_workers=True,
    drop_last=False,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root + 'COCO_Tiny',
        metainfo=metainfo,
        ann_file='annotations/instances_val2017.json',
        data_prefix=dict(img='val2017/'),
        test_mode=True,
        pipeline=test_pipeline,
        backend_args=backend_args,
    ),
)
test_dataloader = val_dataloader

val_evaluator = dict(
    type='CocoMetric',
    ann_file=data_root + 'COCO_Tiny/annotations/instances_val2017.json',
    metric=['bbox', 'segm'],
    format_only=False,
    backend_args=backend_args,
)
test_evaluator = val_evaluator
