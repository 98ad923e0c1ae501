"""Class-agnostic COCO for MMDetection: every instance is one class, ``object``.

The real detector of ``configs/coco/`` is trained from scratch on 208 COCO
images (heads only; the ViT is frozen). Person-only training there learned
objectness but not "person vs other object" (it scored chairs and cars 0.8;
docs/results.md, "Detection on real images"), so the task is class-agnostic:
all 80 categories merged into one, as the data README allows. Both the
training labels and the evaluation use the merged category:

* :class:`CocoAgnosticDataset`: mmdet's ``CocoDataset`` whose COCO api
  relabels every annotation (``COCOAPI`` is the hook ``CocoDataset`` offers);
* :class:`CocoAgnosticMetric`: mmdet's ``CocoMetric`` on the relabelled
  ground truth, so box and mask AP are COCO's AP of the single class.

Crowd annotations stay crowd (ignored by training and by COCO's evaluation).
"""

from __future__ import annotations

from mmdet.datasets import CocoDataset
from mmdet.datasets.api_wrappers import COCO
from mmdet.evaluation import CocoMetric
from mmdet.registry import DATASETS, METRICS

__all__ = ['AGNOSTIC_CLASSES', 'CocoAgnosticDataset', 'CocoAgnosticMetric', 'make_class_agnostic']

AGNOSTIC_CLASSES = ('object',)


def make_class_agnostic(coco: COCO) -> COCO:
    """Relabel every annotation of a loaded COCO api as category 1, ``object``.

    Args:
        coco (COCO): a loaded api (mmdet's wrapper or pycocotools'); changed in place.

    Returns:
        COCO: ``coco``, re-indexed.
    """
    for ann in coco.dataset.get('annotations', []):
        ann['category_id'] = 1
    coco.dataset['categories'] = [dict(id=1, name=AGNOSTIC_CLASSES[0], supercategory='object')]
    coco.createIndex()
    if hasattr(coco, 'img_ann_map'):  # mmdet's wrapper aliases the indexes built in __init__
        coco.img_ann_map, coco.cat_img_map = coco.imgToAnns, coco.catToImgs
    return coco


class _AgnosticCOCO(COCO):
    """mmdet's COCO api, relabelled on load."""

    def __init__(self, annotation_file=None):
        super().__init__(annotation_file)
        make_class_agnostic(self)


@DATASETS.register_module()
class CocoAgnosticDataset(CocoDataset):
    """``CocoDataset`` with every instance labelled ``object`` (label 0)."""

    METAINFO = dict(classes=AGNOSTIC_CLASSES, palette=[(220, 20, 60)])
    COCOAPI = _AgnosticCOCO


@METRICS.register_module()
class CocoAgnosticMetric(CocoMetric):
    """``CocoMetric`` against the relabelled ground truth (one class, ``object``).

    Args:
        *args, **kwargs: as ``CocoMetric``; ``ann_file`` is needed (without it
            the metric would build its ground truth from the dataset's
            samples, already single-class).
    """

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        if self._coco_api is None:
            raise ValueError('CocoAgnosticMetric needs ann_file (the COCO json to relabel)')
        make_class_agnostic(self._coco_api)
