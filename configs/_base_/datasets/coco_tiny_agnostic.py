# Class-agnostic COCO instances on the small real COCO subsets next to the
# checkout (../shared/data, README there): every one of the 80 categories is
# relabelled "object" (ailurus_mm.datasets.coco_agnostic), for training and
# for evaluation. train = COCO128 train2017 + COCO_Tiny train2017 (208 images,
# 1,644 instances), val/test = COCO_Tiny val2017 (80 COCO val2017 images, never
# trained on). Person-only (./coco_tiny_person.py) had 101 training images
# and its heads learned objectness, not "person" (docs/results.md, "Detection
# on real images").
_base_ = ['./coco_tiny_person.py']

dataset_type = 'CocoAgnosticDataset'
metainfo = dict(classes=('object',), palette=[(220, 20, 60)])
data_root = '../shared/data/'  # as ./coco_tiny_person.py (override both there)

train_subset = dict(
    type=dataset_type,
    metainfo=metainfo,
    ann_file='annotations/instances_train2017.json',
    data_prefix=dict(img='train2017/'),
    filter_cfg=dict(filter_empty_gt=True, min_size=32),
    pipeline={{_base_.train_pipeline}},
    backend_args=None,
)
train_dataloader = dict(
    dataset=dict(
        _delete_=True,
        type='ConcatDataset',
        datasets=[
            dict(train_subset, data_root=data_root + 'COCO128'),
            dict(train_subset, data_root=data_root + 'COCO_Tiny'),
        ],
    )
)
val_dataloader = dict(dataset=dict(type=dataset_type, metainfo=metainfo))
test_dataloader = val_dataloader
val_evaluator = dict(type='CocoAgnosticMetric')
test_evaluator = val_evaluator
