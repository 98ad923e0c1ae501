"""CamVidDataset and configs/_base_/datasets/camvid.py, real and tiny data."""

import os
from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.evaluator import Evaluator
from mmengine.runner import Runner
from mmengine.structures import PixelData
from PIL import Image

import ailurus_mm.datasets  # noqa: F401  (registers CamVidDataset)
from ailurus_mm.datasets import CamVidDataset

REPO = Path(__file__).resolve().parents[1]
CONFIG = REPO / 'configs' / '_base_' / 'datasets' / 'camvid.py'
# The config's data_root '../shared/data/CamVid' is relative to the checkout.
REAL_ROOT = (REPO / '..' / 'shared' / 'data' / 'CamVid').resolve()
CLASSES = (
    'Sky',
    'Building',
    'Pole',
    'Road',
    'Pavement',
    'Tree',
    'SignSymbol',
    'Fence',
    'Car',
    'Pedestrian',
    'Bicyclist',
)

needs_real_data = pytest.mark.skipif(
    not REAL_ROOT.is_dir(),
    reason=f'CamVid not found at {REAL_ROOT} (../shared/data/CamVid from the checkout root)',
)


@pytest.fixture(autouse=True)
def mmseg_scope():
    """Build transforms/metrics from mmseg's registries."""
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)


def _cfg(data_root=None) -> Config:
    cfg = Config.fromfile(str(CONFIG))
    if data_root is not None:
        # Exactly what `--cfg-options` does.
        cfg.merge_from_dict(
            {
                f'{split}_dataloader.dataset.data_root': str(data_root)
                for split in ('train', 'val', 'test')
            }
        )
    return cfg


def _build(dataset_cfg) -> CamVidDataset:
    from mmseg.registry import DATASETS

    return DATASETS.build(dataset_cfg)


@needs_real_data
def test_real_splits_from_unmodified_config(monkeypatch):
    """The config's relative data_root works from the checkout root."""
    monkeypatch.chdir(REPO)
    cfg = _cfg()
    assert cfg.train_dataloader.dataset.data_root == '../shared/data/CamVid'
    train = _build(cfg.train_dataloader.dataset)
    val = _build(cfg.val_dataloader.dataset)
    assert isinstance(train, CamVidDataset)
    assert len(train) == 367
    assert len(val) == 101
    for ds in (train, val):
        assert ds.metainfo['classes'] == CLASSES
        assert len(ds.metainfo['palette']) == 11
        assert ds.metainfo['reduce_zero_label'] is False
        assert ds.metainfo['label_map'] is None
        assert ds.ignore_index == 11
    info = val.get_data_info(0)
    assert Path(info['img_path']).parent.name == 'val'
    assert Path(info['seg_map_path']).parent.name == 'valannot'
    assert Path(info['img_path']).name == Path(info['seg_map_path']).name


@needs_real_data
def test_real_samples_and_void_is_ignored_by_metric():
    cfg = _cfg(REAL_ROOT)
    val = _build(cfg.val_dataloader.dataset)
    sample = val[0]
    # Test pipeline: 480x360 -> 672x504 input, labels at original size.
    assert tuple(sample['inputs'].shape) == (3, 504, 672)
    gt = sample['data_samples'].gt_sem_seg.data
    assert tuple(gt.shape) == (1, 360, 480)
    values = set(torch.unique(gt).tolist())
    assert values <= set(range(12)), values
    assert 11 in values  # this frame has void pixels, the check below needs it

    train = _build(cfg.train_dataloader.dataset)
    train_sample = train[0]
    train_gt = train_sample['data_samples'].gt_sem_seg.data
    assert set(torch.unique(train_gt).tolist()) <= set(range(12))
    assert train_sample['inputs'].shape[1:] == train_gt.shape[1:]
    assert train_gt.shape[1] <= 504 and train_gt.shape[2] <= 672

    # Prediction right everywhere except on void, where it says Sky.
    pred = gt.clone()
    pred[gt == 11] = 0
    data_sample = sample['data_samples'].clone()
    data_sample.pred_sem_seg = PixelData(data=pred)

    def miou(evaluator_cfg) -> float:
        evaluator = Evaluator(evaluator_cfg)
        evaluator.dataset_meta = val.metainfo
        evaluator.process(data_samples=[data_sample])
        return evaluator.evaluate(1)['mIoU']

    assert cfg.val_evaluator.ignore_index == 11
    assert miou(cfg.val_evaluator) == 100.0
    # mmseg's default (255) would count void as errors: the config matters.
    assert miou(dict(type='IoUMetric', iou_metrics=['mIoU'])) < 100.0


def _write_tiny_camvid(root: Path, counts=(('train', 3), ('val', 2))) -> None:
    """A CamVid-shaped copy: 48x36 RGB PNGs and uint8 labels in 0..11."""
    rng = np.random.default_rng(0)
    for split, n in counts:
        (root / split).mkdir(parents=True)
        (root / f'{split}annot').mkdir()
        for i in range(n):
            name = f'0001TP_{i:06d}.png'
            img = rng.integers(0, 256, (36, 48, 3), dtype=np.uint8)
            label = rng.integers(0, 12, (36, 48), dtype=np.uint8)
            Image.fromarray(img).save(root / split / name)
            Image.fromarray(label).save(root / f'{split}annot' / name)


def test_tiny_copy_via_data_root_override(tmp_path):
    _write_tiny_camvid(tmp_path / 'CamVid')
    # A stray non-PNG file must not become a sample.
    (tmp_path / 'CamVid' / 'train' / 'notes.txt').write_text('x')
    cfg = _cfg(tmp_path / 'CamVid')
    train = _build(cfg.train_dataloader.dataset)
    val = _build(cfg.val_dataloader.dataset)
    assert len(train) == 3 and len(val) == 2
    assert train.metainfo['classes'] == CLASSES
    sample = val[1]
    assert tuple(sample['inputs'].shape) == (3, 504, 672)  # 48x36 * 14
    gt = sample['data_samples'].gt_sem_seg.data
    expected = np.array(Image.open(tmp_path / 'CamVid' / 'valannot' / '0001TP_000001.png'))
    assert np.array_equal(gt[0].numpy(), expected)
    # The dataloader section builds and yields a batch.
    loader = Runner.build_dataloader(cfg.val_dataloader)
    batch = next(iter(loader))
    assert len(batch['inputs']) == 1


def test_missing_data_root_names_the_path(tmp_path):
    missing = tmp_path / 'nowhere' / 'CamVid'
    cfg = _cfg(missing)
    with pytest.raises(FileNotFoundError) as info:
        _build(cfg.train_dataloader.dataset)
    assert str(missing) in str(info.value)
    assert 'data_root' in str(info.value)


def test_bad_layouts_name_the_problem(tmp_path):
    root = tmp_path / 'CamVid'
    _write_tiny_camvid(root)
    os.remove(root / 'trainannot' / '0001TP_000002.png')
    cfg = _cfg(root)
    with pytest.raises(FileNotFoundError, match='0001TP_000002.png'):
        _build(cfg.train_dataloader.dataset)
    cfg.train_dataloader.dataset.data_prefix.img_path = 'test'
    with pytest.raises(FileNotFoundError, match=r"'img_path'.*test"):
        _build(cfg.train_dataloader.dataset)
    with pytest.raises(ValueError, match='reduce_zero_label'):
        CamVidDataset(data_root=str(root), reduce_zero_label=True)
