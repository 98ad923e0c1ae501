"""Class-agnostic COCO (``ailurus_mm.datasets.coco_agnostic``): every instance
is ``object``, in the training labels and in the evaluation."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
SHARED = (REPO / '..' / 'shared' / 'data').resolve()
pytestmark = pytest.mark.usefixtures('mmdet_scope')


def _tiny_coco(path: Path) -> Path:
    """Two 40x60 images, instances of categories 3, 7 and 7 (one crowd)."""
    images = [dict(id=i, file_name=f'{i}.jpg', height=40, width=60) for i in (1, 2)]
    boxes = [(1, 3, [2, 4, 20, 10]), (1, 7, [30, 10, 25, 20]), (2, 7, [5, 5, 30, 30])]
    anns = [
        dict(id=k + 1, image_id=i, category_id=c, bbox=b, area=b[2] * b[3], iscrowd=0,
             segmentation=[[b[0], b[1], b[0] + b[2], b[1], b[0] + b[2], b[1] + b[3], b[0], b[1] + b[3]]])
        for k, (i, c, b) in enumerate(boxes)
    ]  # fmt: skip
    anns.append(dict(anns[-1], id=9, iscrowd=1))
    cats = [dict(id=3, name='car', supercategory='x'), dict(id=7, name='dog', supercategory='y')]
    path.write_text(json.dumps(dict(images=images, annotations=anns, categories=cats)))
    return path


def test_make_class_agnostic_relabels_and_reindexes(tmp_path):
    from mmdet.datasets.api_wrappers import COCO

    from ailurus_mm.datasets.coco_agnostic import make_class_agnostic

    coco = make_class_agnostic(COCO(str(_tiny_coco(tmp_path / 'a.json'))))
    assert coco.get_cat_ids(cat_names=['object']) == [1]
    assert sorted(coco.cats) == [1]
    assert {a['category_id'] for a in coco.anns.values()} == {1}
    assert len(coco.get_ann_ids(img_ids=[1], cat_ids=[1])) == 2
    assert coco.img_ann_map is coco.imgToAnns and coco.cat_img_map is coco.catToImgs
    assert [a['iscrowd'] for a in coco.imgToAnns[2]] == [0, 1]  # crowd stays crowd


def test_metric_needs_an_ann_file():
    from ailurus_mm.datasets import CocoAgnosticMetric

    with pytest.raises(ValueError, match='needs ann_file'):
        CocoAgnosticMetric(metric='bbox')


def _pred(img_id, boxes, scores):
    from mmdet.structures.mask import PolygonMasks

    masks = PolygonMasks(
        [[np.array([x1, y1, x2, y1, x2, y2, x1, y2], float)] for x1, y1, x2, y2 in boxes], 40, 60
    ).to_ndarray()
    return dict(
        img_id=img_id,
        ori_shape=(40, 60),
        pred_instances=dict(
            bboxes=torch.tensor(boxes, dtype=torch.float32),
            scores=torch.tensor(scores),
            labels=torch.zeros(len(boxes), dtype=torch.long),
            masks=torch.from_numpy(masks).bool(),
        ),
    )


def test_metric_scores_the_merged_category(tmp_path):
    """Predictions labelled 0 on every non-crowd instance of any category:
    box and mask AP 100 for the merged class; missing one lowers both."""
    from ailurus_mm.datasets import CocoAgnosticMetric

    ann = _tiny_coco(tmp_path / 'a.json')
    metric = CocoAgnosticMetric(ann_file=str(ann), metric=['bbox', 'segm'])
    metric.dataset_meta = dict(classes=('object',))
    exact = {1: [[2, 4, 22, 14], [30, 10, 55, 30]], 2: [[5, 5, 35, 35]]}
    for i, boxes in exact.items():
        metric.process({}, [_pred(i, boxes, [0.9] * len(boxes))])
    res = metric.evaluate(size=2)
    assert res['coco/bbox_mAP'] == pytest.approx(1.0)
    assert res['coco/segm_mAP'] == pytest.approx(1.0, abs=0.02)

    metric = CocoAgnosticMetric(ann_file=str(ann), metric=['bbox'])
    metric.dataset_meta = dict(classes=('object',))
    metric.process({}, [_pred(1, exact[1][:1], [0.9])])
    metric.process({}, [_pred(2, exact[2], [0.9])])
    assert metric.evaluate(size=2)['coco/bbox_mAP'] < 0.8


def test_dataset_labels_every_instance_object(skip_or_fail):
    from mmdet.registry import DATASETS
    from mmengine.config import Config

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import quiet_logs

    if not (SHARED / 'COCO_Tiny' / 'val2017').is_dir():
        skip_or_fail(f'COCO_Tiny not found under {SHARED}')
    cfg = Config.fromfile(str(REPO / 'configs' / '_base_' / 'datasets' / 'coco_tiny_agnostic.py'))
    ds_cfg = dict(cfg.test_dataloader.dataset, data_root=str(SHARED / 'COCO_Tiny') + '/')
    with quiet_logs():
        ds = DATASETS.build(ds_cfg)
    assert ds.metainfo['classes'] == ('object',) and len(ds) == 80
    raw = json.loads((SHARED / 'COCO_Tiny' / 'annotations' / 'instances_val2017.json').read_text())
    crowd_free = sum(not a['iscrowd'] for a in raw['annotations'])
    labels = torch.cat([ds[i]['data_samples'].gt_instances.labels for i in range(len(ds))])
    # every non-crowd instance of every category, all labelled 0 (crowds: ignored_instances)
    assert len(labels) == crowd_free and set(labels.tolist()) == {0}
    assert len({a['category_id'] for a in raw['annotations']}) > 10
