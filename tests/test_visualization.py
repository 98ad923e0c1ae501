"""Adaptive resolution made visible: the overlay function, the mmseg
visualizer, and ``tools/test.py --show-dir`` writing the overlay files."""

import os
import subprocess
import sys
from pathlib import Path

import mmcv
import numpy as np
import pytest
import torch

import ailurus_mm  # noqa: F401  (registers the hook and the visualizer)
from ailurus_mm.ops import assignment_from_labels
from ailurus_mm.visualization import cluster_overlay, make_visualization

REPO = Path(__file__).resolve().parents[1]
CAMVID = (REPO / '..' / 'shared' / 'data' / 'CamVid').resolve()  # as tests/conftest.py
CONFIG = str(REPO / 'configs' / 'ailurus' / 'segmenter_dinov2-s14_camvid.py')
BORDER, SINGLE = (255, 255, 0), (255, 0, 255)


def grid_assignment():
    """2x2 grid: tokens 0 and 1 form one cluster, tokens 2 and 3 are single."""
    return assignment_from_labels(torch.tensor([[0, 0, 1, 2]]), torch.tensor([[0, 2, 3]]), (2, 2))


def test_make_visualization_exact():
    img = np.full((4, 4, 3), 100, np.uint8)
    out = make_visualization(img, grid_assignment(), single_alpha=0.5)
    # every token is 2x2 pixels; borders where the cluster id changes
    # (the lower row and the right half of the lower row start new clusters)
    edge = np.array(
        [[0, 0, 0, 0], [0, 0, 0, 0], [1, 1, 1, 1], [0, 0, 1, 0]],
        bool,
    )
    assert (out[edge] == BORDER).all()
    inside_pair = out[:2].reshape(-1, 3)  # the two-token cluster: untouched
    assert (inside_pair == 100).all()
    # single-token pixels off the border: 0.5 * 100 + 0.5 * colour
    assert out[3, 0].tolist() == [178, 50, 178] and out[3, 3].tolist() == [178, 50, 178]


def test_make_visualization_maps_through_resize_and_padding():
    # a 3x4 image shown in a 6x8 input padded to 8x8, 4x4-pixel tokens (2x2 grid):
    # pixel row 2 lies in token row 1, the padded half of token row 1 is never drawn
    img = np.zeros((3, 4, 3), np.uint8)
    a = assignment_from_labels(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 2]]), (2, 2))
    out = make_visualization(img, a, patch_size=4, input_size=(6, 8), single_alpha=0)
    assert (out[2] == BORDER).all()  # row 2 starts token row 1 (cluster 2)
    assert (out[:2, 2] == BORDER).all() and (out[:2, [0, 1, 3]] == 0).all()


def test_cluster_overlay_is_make_visualization_on_the_grid_extent():
    img = np.random.default_rng(0).integers(0, 255, (28, 28, 3), dtype=np.uint8)
    a = grid_assignment()
    assert np.array_equal(cluster_overlay(img, a), make_visualization(img, a))
    assert np.array_equal(
        make_visualization(img, a, patch_size=14, input_size=(28, 28)), make_visualization(img, a)
    )


@pytest.mark.parametrize(
    'image, kw, match',
    [
        (np.zeros((4, 4), np.uint8), {}, r'\[H, W, 3\]'),
        (np.zeros((4, 4, 3), np.uint8), dict(single_alpha=1.5), r'outside \[0, 1\]'),
        (np.zeros((4, 4, 3), np.uint8), dict(index=1), r'outside the batch \[0, 0\]'),
        (np.zeros((4, 4, 3), np.uint8), dict(patch_size=2), 'both patch_size and input_size'),
    ],
)
def test_make_visualization_rejects(image, kw, match):
    with pytest.raises(ValueError, match=match):
        make_visualization(image, grid_assignment(), **kw)


def test_visualizer_puts_clusters_next_to_gt_and_prediction(tmp_path):
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from ailurus_mm.visualization.hooks import AiluRusSegLocalVisualizer

    vis = AiluRusSegLocalVisualizer(name='t_vis')
    vis.set_dataset_meta(classes=['a', 'b'], palette=[[255, 0, 0], [0, 0, 255]])
    img = np.full((8, 12, 3), 90, np.uint8)
    sample = SegDataSample()
    sample.gt_sem_seg = PixelData(data=torch.zeros(1, 8, 12, dtype=torch.long))
    sample.pred_sem_seg = PixelData(data=torch.ones(1, 8, 12, dtype=torch.long))
    a = assignment_from_labels(
        torch.tensor([[0, 0, 1, 2, 3, 3]]), torch.tensor([[0, 2, 3, 4]]), (2, 3)
    )
    out = str(tmp_path / 'v.png')
    vis.add_datasample('x', img, sample, out_file=out, assignment=a, with_labels=False)
    drawn = mmcv.imread(out, channel_order='rgb')
    assert drawn.shape == (8, 36, 3)  # clusters | ground truth | prediction
    assert np.array_equal(drawn[:, :12], make_visualization(img, a))
    vis.add_datasample('y', img, sample, out_file=out, with_labels=False)  # no assignment
    assert mmcv.imread(out).shape == (8, 24, 3)  # the stock drawing


def test_show_dir_with_the_stock_test_tool(tmp_path, camvid_checkpoint, skip_or_fail):
    if not (CAMVID / 'val').is_dir():
        skip_or_fail(f'CamVid not found at {CAMVID}')
    show = tmp_path / 'show'
    proc = subprocess.run(
        [
            sys.executable,
            str(REPO / 'tools' / 'test.py'),
            CONFIG,
            str(camvid_checkpoint),
            '--show-dir',
            str(show),
            '--work-dir',
            str(tmp_path / 'work'),
            '--cfg-options',
            'test_dataloader.dataset.indices=2',
            f'test_dataloader.dataset.data_root={CAMVID}',
            'test_dataloader.num_workers=0',
        ],
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=600,
        env={**os.environ, 'PYTHONWARNINGS': 'ignore'},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    files = sorted((show / 'vis_data' / 'vis_image').glob('*.png'))
    assert len(files) == 2, files
    names = sorted(p for p in os.listdir(CAMVID / 'val') if p.endswith('.png'))[:2]
    for f, name in zip(files, names):
        assert f.name.startswith(f'test_{name}')
        drawn = mmcv.imread(str(f), channel_order='rgb')
        assert drawn.shape == (360, 3 * 480, 3)  # clusters | ground truth | prediction
        clusters = drawn[:, :480].reshape(-1, 3)
        # borders drawn and single-token clusters tinted (magenta-ish) on the image
        assert (clusters == BORDER).all(1).mean() > 0.05
        tinted = (clusters[:, 1].astype(int) + 40 < clusters[:, [0, 2]].min(1)).mean()
        assert tinted > 0.05
