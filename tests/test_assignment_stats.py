"""Assignment statistics (the paper's Fig. A-1): exact values on hand-built
assignments, the tool end to end on two real CamVid val images, and every
bad argument rejected before any image is read."""

import csv
import json
import os.path as osp
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from ailurus_mm.analysis import (
    boundary_counts,
    class_cluster_counts,
    pixel_token_index,
    size_distribution,
    size_histogram,
    size_summary,
    token_label_histogram,
)
from ailurus_mm.ops import assignment_from_labels

REPO = Path(__file__).resolve().parents[1]
CAMVID = (REPO / '..' / 'shared' / 'data' / 'CamVid').resolve()  # as tests/conftest.py

TOOL = str(REPO / 'tools' / 'analysis' / 'assignment_stats.py')
CONFIG = str(REPO / 'configs' / 'ailurus' / 'segmenter_dinov2-s14_camvid.py')


# ----------------------------------------------------------------------------
# y1 / y2 on hand-built assignments


def two_images():
    """A 2x4 grid, two images of M=4 clusters with sizes (1, 1, 2, 4) and (1, 3, 3, 1)."""
    labels = torch.tensor([[0, 1, 2, 2, 3, 3, 3, 3], [0, 1, 1, 1, 2, 2, 2, 3]])
    anchors = torch.tensor([[0, 1, 2, 4], [0, 1, 4, 7]])
    return assignment_from_labels(labels, anchors, (2, 4))


def test_size_histogram_exact():
    a = two_images()
    assert a.sizes.tolist() == [[1, 1, 2, 4], [1, 3, 3, 1]]
    hist = size_histogram(a)
    assert hist.tolist() == [[0, 2, 1, 0, 1], [0, 2, 0, 2, 0]]
    # every image's tokens add up to N
    assert (hist * torch.arange(5)).sum(1).tolist() == [8, 8]
    assert size_histogram(a, max_size=6).tolist() == [[0, 2, 1, 0, 1, 0, 0], [0, 2, 0, 2, 0, 0, 0]]
    # integer sizes work as well as the float sizes of an assignment
    assert torch.equal(size_histogram(torch.tensor([[1, 1, 2, 4]])), hist[:1])


def test_y1_y2_exact():
    hist = size_histogram(two_images())
    total = size_distribution(hist.sum(0))  # summed over the dataset
    assert total['x'].tolist() == [1, 2, 3, 4]
    assert total['y2'].tolist() == [4, 1, 2, 1]  # centres holding x tokens
    assert total['y1'].tolist() == [50.0, 12.5, 25.0, 12.5]  # percent of all 8 centres
    per_image = size_distribution(hist)
    assert per_image['y2'].tolist() == [[2, 1, 0, 1], [2, 0, 2, 0]]
    assert per_image['y1'].tolist() == [[50.0, 25.0, 0.0, 25.0], [50.0, 0.0, 50.0, 0.0]]


def test_size_summary_exact():
    s = size_summary(size_histogram(two_images()), large=(3, 4))
    assert s == dict(
        images=2,
        clusters_per_image=4.0,
        single_share=50.0,
        single_per_image=2.0,
        largest=4,
        largest_per_image=3.5,
        mode_size=1,
        ge3_per_image=1.5,  # (4) and (3, 3)
        ge3_token_share=62.5,  # 10 of 16 tokens
        ge4_per_image=0.5,
        ge4_token_share=25.0,
    )


@pytest.mark.parametrize(
    'sizes, kw, match',
    [
        (torch.tensor([[1.5, 2.5]]), {}, 'positive whole numbers'),
        (torch.tensor([[0.0, 4.0]]), {}, 'positive whole numbers'),
        (torch.tensor([1.0, 2.0]), {}, r'\[B, M\]'),
        (torch.tensor([[1.0, 5.0]]), dict(max_size=4), 'more than max_size=4'),
    ],
)
def test_size_histogram_rejects(sizes, kw, match):
    with pytest.raises(ValueError, match=match):
        size_histogram(sizes, **kw)


# ----------------------------------------------------------------------------
# where the single-token clusters are


def test_pixel_token_index_maps_through_resize_and_padding():
    # a 3x4 image resized to 6x8 inside an 8x8 input of 4x4-pixel tokens (2x2 grid)
    idx = pixel_token_index((3, 4), (2, 2), patch_size=4, input_size=(6, 8))
    assert idx.tolist() == [[0, 0, 1, 1], [0, 0, 1, 1], [2, 2, 3, 3]]
    # without patch size / input size the grid is stretched over the image
    assert pixel_token_index((4, 2), (2, 2)).tolist() == [[0, 1], [0, 1], [2, 3], [2, 3]]
    with pytest.raises(ValueError, match='both patch_size and input_size'):
        pixel_token_index((4, 4), (2, 2), patch_size=2)


def test_boundary_and_class_counts_exact():
    # 1x4 grid, 2x2-pixel tokens; classes 0 road, 1 sky, 2 pole; 9 = ignore
    seg = torch.tensor([[0, 0, 0, 1, 1, 1, 2, 9], [0, 0, 0, 1, 1, 1, 9, 9]])
    pix = pixel_token_index(seg.shape, (1, 4))
    hist = token_label_histogram(seg, pix, 4, 3, ignore_index=9)
    assert hist.tolist() == [[4, 0, 0], [2, 2, 0], [0, 4, 0], [0, 0, 1]]
    # clusters: {0, 1} (size 2), {2} (size 1), {3} (size 1)
    a = assignment_from_labels(torch.tensor([[0, 0, 1, 2]]), torch.tensor([[0, 2, 3]]), (1, 4))
    # labelled: 4 tokens; boundary: token 1; single: tokens 2, 3, neither on a boundary
    assert boundary_counts(a, hist) == dict(labelled=4, boundary=1, single=2, single_boundary=0)
    a2 = assignment_from_labels(torch.tensor([[0, 1, 2, 2]]), torch.tensor([[0, 1, 2]]), (1, 4))
    assert boundary_counts(a2, hist) == dict(labelled=4, boundary=1, single=2, single_boundary=1)
    cc = {k: v.tolist() for k, v in class_cluster_counts(a, hist).items()}
    # cluster {0, 1}: 6 road + 2 sky pixels -> road; {2}: sky; {3}: pole
    assert cc == dict(
        clusters=[1, 1, 1],
        cluster_tokens=[2, 1, 1],
        tokens=[2, 1, 1],  # token 1 has a 2-2 tie: argmax takes road
        token_cluster_size=[4, 1, 1],
    )
    with pytest.raises(ValueError, match='differ in shape'):
        token_label_histogram(seg[:1], pix, 4, 3)


# ----------------------------------------------------------------------------
# the tool


def run_tool(args, tmp_path):
    return subprocess.run(
        [sys.executable, TOOL] + args,
        cwd=str(REPO),
        capture_output=True,
        text=True,
        timeout=600,
        env={**__import__('os').environ, 'PYTHONWARNINGS': 'ignore'},
    )


def test_tool_on_two_camvid_images(tmp_path, camvid_checkpoint, skip_or_fail):
    if not (CAMVID / 'val').is_dir():
        skip_or_fail(f'CamVid not found at {CAMVID}')
    out = tmp_path / 'stats'
    proc = run_tool(
        [
            CONFIG,
            str(camvid_checkpoint),
            '--cluster-after',
            '2',
            '--keep-ratio',
            '0.1',
            '0.6',
            '--methods',
            'adjacent',
            'tome',
            '--num-images',
            '2',
            '--threads',
            '2',
            '--out-dir',
            str(out),
            '--cfg-options',
            f'test_dataloader.dataset.data_root={CAMVID}',
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    for f in ('summary.csv', 'summary.md', 'sizes.csv', 'classes.csv', 'classes.md'):
        assert (out / f).is_file(), f
    for f in ('fig_a1.png', 'fig_a1_L2_adjacent.png', 'fig_a1_L2_tome.png'):
        assert (out / f).stat().st_size > 1000, f
    res = json.load(open(out / 'assignment_stats.json'))
    n = res['info']['num_tokens']
    assert n == 36 * 48 and res['info']['images'] == 2
    settings = res['settings']
    assert [(s['method'], s['M']) for s in settings] == [
        (m, k) for m in ('adjacent', 'tome') for k in (173, 1037)
    ]
    for s in settings:
        assert len(s['per_image']) == 2
        for hist in s['per_image'].values():
            hist = {int(x): c for x, c in hist.items()}
            assert sum(x * c for x, c in hist.items()) == n  # every token in one cluster
            assert sum(hist.values()) == s['M']  # exactly M centres
        assert s['backbone_gflops'] > 0 and s['tokens_per_layer'] == f'2x1729 + 10x{s["M"] + 1}'
        b = s['boundary_counts']
        assert 0 < b['single_boundary'] <= b['single'] <= b['labelled']
    # adjacent keeps the N - M cheapest links of one fixed ranking: the
    # clusterings are nested in M, so single-token clusters can only grow and
    # the largest cluster only shrink as M grows (every image)
    adj = [s for s in settings if s['method'] == 'adjacent']
    for img in adj[0]['per_image']:
        singles = [s['per_image'][img].get('1', 0) for s in adj]
        largest = [max(int(x) for x in s['per_image'][img]) for s in adj]
        assert singles == sorted(singles) and largest == sorted(largest, reverse=True)
    with open(out / 'sizes.csv') as f:
        rows = list(csv.DictReader(f))
    for s in settings:
        mine = [r for r in rows if r['method'] == s['method'] and int(r['M']) == s['M']]
        assert sum(int(r['clusters_total']) for r in mine) == 2 * s['M']
        assert abs(sum(float(r['y1_percent']) for r in mine) - 100) < 1e-2
    with open(out / 'summary.csv') as f:
        summary = list(csv.DictReader(f))
    assert len(summary) == 4 and float(summary[0]['single_share_percent']) > 0


BAD = [
    (['--cluster-after', '12'], '--cluster-after=12 is outside the allowed range [0, 11]'),
    (['--cluster-after', '-1'], '--cluster-after=-1 is outside the allowed range [0, 11]'),
    (['--num-clusters', '1729'], '--num-clusters=1729 is outside the allowed range [1, N=1728'),
    (['--num-clusters', '0'], '--num-clusters=0 is outside the allowed range [1, N=1728'),
    (['--keep-ratio', '1.5'], '--keep-ratio=1.5 is outside the allowed range (0, 1]'),
    (['--keep-ratio', '0'], '--keep-ratio=0.0 is outside the allowed range (0, 1]'),
    (['--methods', 'adjacent', 'kmeans'], "--methods: 'kmeans' is not one of"),
    (['--num-images', '0'], '--num-images=0 is outside the allowed range: an int >= 1'),
    (['--threads', '0'], '--threads=0 is outside the allowed range: an int >= 1'),
    (['--num-clusters', '10', '--keep-ratio', '0.5'], 'not allowed with argument'),
]


@pytest.mark.parametrize('extra, message', BAD, ids=[' '.join(b[0]) for b in BAD])
def test_tool_rejects_bad_arguments_before_reading_images(extra, message, tmp_path, capsys):
    """Neither the checkpoint nor the data exist: the argument check comes first."""
    import runpy

    main = runpy.run_path(TOOL, run_name='assignment_stats_tool')['main']  # the CLI in-process
    missing = str(tmp_path / 'nowhere')
    argv = [CONFIG, osp.join(missing, 'ckpt.pth')] + extra
    argv += ['--out-dir', str(tmp_path / 'o'), '--cfg-options']
    argv += [f'test_dataloader.dataset.data_root={missing}']
    with pytest.raises(SystemExit) as e:
        main(argv)
    assert e.value.code == 2
    err = capsys.readouterr().err
    assert message in err, err[-2000:]
    assert not (tmp_path / 'o').exists()
