"""The measuring tools run end to end on tiny inputs (no timing is asserted)."""

import json
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import save_checkpoint
from mmseg.registry import MODELS

import ailurus_mm  # noqa: F401
from ailurus_mm.analysis import build_twins, count_flops, parse_variant, token_counts

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VIT_T = osp.join(ROOT, 'configs/ailurus/segmenter-ailurus_vit-t_mask_8xb1-160k_ade20k-512x512.py')


def run(args, cwd):
    proc = subprocess.run(
        [sys.executable] + args,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=900,
        env={**__import__('os').environ, 'PYTHONWARNINGS': 'ignore'},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout


def test_twins_share_weights_and_flops_drop():
    cfg = Config.fromfile(VIT_T)
    models = build_twins(cfg, variants={'ailurus': {}, 'half': dict(keep_ratio=0.5)})
    assert list(models) == ['stock', 'ailurus', 'half']
    ref = models['stock'].state_dict()
    for m in models.values():
        assert all(torch.equal(ref[k], v) for k, v in m.state_dict().items())
    x = torch.randn(1, 3, 128, 192)
    f_stock = count_flops(models['stock'].backbone, x, models['stock'].backbone)
    f_ail = count_flops(models['ailurus'].backbone, x, models['ailurus'].backbone)
    assert 1.5 < f_stock / f_ail < 3.0  # keep 0.4 after 2 of 12 layers
    assert (
        token_counts(models['ailurus'].backbone, (8, 12)) == [97, 97] + [38 + 1] * 10
    )  # floor(0.4 * 96 + 0.5) = 38


def test_sdpa_flops_counted_like_stock_attention():
    """Fused attention must not be counted as free (it would inflate the FLOPs ratio)."""
    cfg = Config.fromfile(VIT_T)
    models = build_twins(cfg, variants={'sdpa': dict(keep_ratio=1.0, fast_attn=True)})
    x = torch.randn(1, 3, 128, 128)
    a = count_flops(models['stock'].backbone, x, models['stock'].backbone)
    b = count_flops(models['sdpa'].backbone, x, models['sdpa'].backbone)
    assert abs(a - b) / a < 1e-3


def test_benchmark_tool(tmp_path):
    out = run(
        [
            osp.join(ROOT, 'tools/benchmark.py'),
            VIT_T,
            '--size',
            '128',
            '160',
            '--batch-sizes',
            '1',
            '2',
            '--warmup',
            '0',
            '--iters',
            '1',
            '--sdpa-control',
            '--images',
            osp.join(ROOT, '..', 'shared', 'data', 'CamVid', 'val'),
            '--json',
            str(tmp_path / 'b.json'),
        ],
        cwd=str(tmp_path),
    )
    assert '| ailurus | 2 |' in out and 'network GFLOPs' in out and 'Initialized by' not in out
    res = json.load(open(tmp_path / 'b.json'))
    assert {r['model'] for r in res['rows']} == {'stock', 'ailurus', 'stock+sdpa'}
    assert res['info']['threads'] >= 1 and res['info']['warmup'] == 0
    assert res['gflops']['stock']['backbone'] > res['gflops']['ailurus']['backbone']


def test_benchmark_tool_at_the_logits_level(tmp_path):
    """Logits-level reconstruction (the decode head on the merged tokens): the
    backbone column is timed at the feature level (the backbone alone cannot
    leave its outputs merged), the end-to-end column runs the segmentor's path."""
    out = run(
        [
            osp.join(ROOT, 'tools/benchmark.py'), VIT_T, '--size', '128', '160',
            '--batch-sizes', '1', '--warmup', '0', '--iters', '1', '--no-flops',
            '--json', str(tmp_path / 'b.json'),
            '--cfg-options', 'model.type=AiluRusEncoderDecoder',
            'model.backbone.ailurus.reconstruct_level=logits',
        ],
        cwd=str(tmp_path),
    )  # fmt: skip
    assert '| ailurus | 1 |' in out
    res = json.load(open(tmp_path / 'b.json'))
    assert res['info']['ailurus']['reconstruct_level'] == 'logits'
    assert all(r['e2e_s'] > 0 and r['backbone_s'] > 0 for r in res['rows'])


def test_benchmark_tool_rejects_bad_arguments(tmp_path):
    proc = subprocess.run(
        [sys.executable, osp.join(ROOT, 'tools/benchmark.py'), VIT_T, '--iters', '0'],
        capture_output=True,
        text=True,
    )
    assert proc.returncode != 0 and '--iters=0' in proc.stderr


def test_benchmark_ops_tool(tmp_path):
    out = run(
        [
            osp.join(ROOT, 'tools/benchmark_ops.py'),
            '--sizes',
            '64',
            '144',
            '--channels',
            '32',
            '--iters',
            '1',
            '--warmup',
            '0',
            '--json',
            str(tmp_path / 'o.json'),
        ],
        cwd=str(tmp_path),
    )
    rows = json.load(open(tmp_path / 'o.json'))['rows']
    assert {(r['N'], r['method']) for r in rows} == {
        (n, m) for n in (64, 144) for m in ('adjacent', 'dpc', 'dpc_global')
    }
    assert all(r['peak_mib'] > 0 for r in rows)
    assert '| 144 | 12x12 | adjacent |' in out


def test_sweep_tool(tmp_path, make_ade):
    ade = make_ade(str(tmp_path / 'ade'))
    cfg = Config.fromfile(VIT_T)
    cfg.model.pretrained = None
    model = MODELS.build(cfg.model)
    model.init_weights()
    ckpt = str(tmp_path / 'm.pth')
    save_checkpoint(dict(state_dict=model.state_dict()), ckpt)
    out = run(
        [
            osp.join(ROOT, 'tools/analysis/sweep.py'),
            VIT_T,
            ckpt,
            '--cluster-after',
            '2',
            '--keep',
            '0.5',
            '--methods',
            'tome',
            '--variant',
            'nosize:size_aware=False,keep_ratio=0.5',
            '--variant',
            'logits:reconstruct_level=logits,keep_ratio=0.5',
            '--variant',
            'features:keep_ratio=0.5',
            '--num-images',
            '1',
            '--time-images',
            '1',
            '--out-dir',
            str(tmp_path / 'sw'),
            '--cfg-options',
            f'test_dataloader.dataset.data_root={ade}',
        ],
        cwd=str(tmp_path),
    )
    assert '| reference |' in out and '| tome L2 k0.5 |' in out and '| nosize |' in out
    res = json.load(open(tmp_path / 'sw' / 'sweep.json'))
    names = [r['name'] for r in res['rows']]
    assert names == ['reference', 'tome L2 k0.5', 'nosize', 'logits', 'features']
    assert res['rows'][0]['delta_mIoU'] == 0 and res['rows'][0]['options']['enabled'] is False
    assert res['rows'][2]['options']['size_aware'] is False
    # the mask head on merged tokens (AiluRusEncoderDecoder); its backbone is counted and
    # timed at the feature level, the same work
    logits, feats = res['rows'][3], res['rows'][4]
    assert logits['options']['reconstruct_level'] == 'logits'
    assert logits['backbone_gflops'] == feats['backbone_gflops'] and 'speedup_vs_control' in logits
    assert all(osp.isfile(tmp_path / 'sw' / f) for f in ('sweep.md', 'sweep.csv', 'sweep.png'))


@pytest.mark.parametrize(
    'bad, match', [('nosize', 'expected name:key=value'), ('x:size_aware', 'is not key=value')]
)
def test_sweep_variant_parsing(bad, match):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match=match):
        parse_variant(bad)
    assert parse_variant('a:keep_ratio=0.5,size_aware=False,method=tome') == (
        'a',
        dict(keep_ratio=0.5, size_aware=False, method='tome'),
    )


def test_sweep_rows_are_over_the_library_defaults():
    """A row does not inherit a config's later stages or reconstruction: the
    one-shot ToMe row of old docs stays valid under the nested CamVid default."""
    from ailurus_mm.analysis import row_options
    from ailurus_mm.ops import AiluRusOptions

    cfg = Config.fromfile(osp.join(ROOT, 'configs/ailurus/segmenter_dinov2-s14_camvid.py'))
    config_opts = AiluRusOptions.from_dict(cfg.model.backbone.ailurus, 12)
    assert config_opts.second_after == (5, 7, 9)  # the config's default has later stages
    row = row_options(dict(enabled=True, cluster_after=4, keep_ratio=0.25, method='tome'))
    opts = AiluRusOptions.from_dict(row, 12)
    assert opts.second_after is None and opts.reconstruct == 'hard'
    assert opts.replace(method='adjacent').link_to == 'peak'
    with pytest.raises(ValueError, match="got method='tome'"):
        config_opts.replace(cluster_after=4, keep_ratio=0.25, method='tome')
