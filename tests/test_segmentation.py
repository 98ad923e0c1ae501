"""AiluRus in MMSegmentation: backbone, configs, stock Runner and tools."""

import os
import os.path as osp
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint, save_checkpoint
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from mmseg.utils import register_all_modules

import ailurus_mm  # noqa: F401
from ailurus_mm.apis import stock_tool_path
from ailurus_mm.models import AiluRusVisionTransformer

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VIT_T = osp.join(ROOT, 'configs/ailurus/segmenter-ailurus_vit-t_mask_8xb1-160k_ade20k-512x512.py')
register_all_modules(init_default_scope=True)

TINY = dict(
    img_size=(64, 96),
    patch_size=8,
    embed_dims=48,
    num_layers=4,
    num_heads=3,
    final_norm=True,
    out_indices=(0, 1, 3),
    norm_cfg=dict(type='LN', eps=1e-6),
)


def build_pair(ailurus=None, **overrides):
    cfg = dict(TINY, **overrides)
    torch.manual_seed(0)
    stock = VisionTransformer(**cfg)
    stock.init_weights()
    model = MODELS.build(dict(type='AiluRusVisionTransformer', ailurus=ailurus, **cfg))
    model.load_state_dict(stock.state_dict(), strict=True)
    stock.eval()
    model.eval()
    return stock, model


@pytest.mark.parametrize(
    'ailurus',
    [
        dict(enabled=False),
        dict(keep_ratio=1.0),
        dict(num_clusters=96),
        dict(method='pool', keep_ratio=0.9),
    ],
)
@pytest.mark.parametrize(
    'overrides',
    [
        {},
        dict(with_cls_token=False),
        dict(output_cls_token=True, out_indices=(3,)),
        dict(out_origin=True, pre_norm=True),
    ],
)
def test_keep_all_equals_stock_bit_for_bit(ailurus, overrides):
    stock, model = build_pair(ailurus, **overrides)
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref, out = stock(x), model(x)
    assert len(ref) == len(out)
    for r, o in zip(ref, out):
        r, o = (
            (r, o)
            if isinstance(r, torch.Tensor)
            else (torch.cat([r[0].flatten(1), r[1]], 1), torch.cat([o[0].flatten(1), o[1]], 1))
        )
        assert torch.equal(r, o)
    assert model.last_assignment is None


def test_state_dict_keys_are_stock():
    stock, model = build_pair()
    assert list(stock.state_dict()) == list(model.state_dict())


@pytest.mark.parametrize('hw', [(64, 96), (56, 56), (40, 112)])
@pytest.mark.parametrize('method', ['adjacent', 'dpc', 'tome', 'random', 'pool'])
def test_clustered_outputs_are_full_resolution(hw, method):
    _, model = build_pair(dict(cluster_after=1, keep_ratio=0.3, method=method))
    x = torch.randn(2, 3, *hw)
    with torch.no_grad():
        outs = model(x)
    grid = (hw[0] // 8, hw[1] // 8)
    assert [tuple(o.shape) for o in outs] == [(2, 48) + grid] * 3
    a = model.last_assignment
    assert a is not None and a.hw == grid
    # out index 0 (before clustering) is not unfolded; 1 and 3 are, so every
    # cluster is constant over its cells
    o = outs[2].flatten(2).transpose(1, 2)
    same = o.gather(1, a.anchors[..., None].expand(-1, -1, 48)).gather(
        1, a.labels[..., None].expand(-1, -1, 48)
    )
    assert torch.equal(o, same)
    assert model.num_kept(grid) == a.num_clusters or method == 'pool'


def test_size_aware_attention_changes_only_merged_runs():
    _, plain = build_pair(dict(cluster_after=1, keep_ratio=0.3, size_aware=False))
    _, sized = build_pair(dict(cluster_after=1, keep_ratio=0.3, size_aware=True))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        a, b = plain(x), sized(x)
    assert torch.equal(a[0], b[0])  # before clustering
    assert not torch.allclose(a[2], b[2])


def test_gradients_flow_in_training():
    _, model = build_pair(dict(cluster_after=1, keep_ratio=0.3), drop_path_rate=0.1)
    model.train()
    x = torch.randn(2, 3, 64, 96, requires_grad=True)
    loss = sum(o.square().mean() for o in model(x))
    loss.backward()
    assert x.grad.abs().sum() > 0
    assert model.layers[0].attn.attn.in_proj_weight.grad.abs().sum() > 0
    assert model.layers[3].ffn.layers[1].weight.grad.abs().sum() > 0


def test_deterministic_across_batch_composition():
    _, model = build_pair(dict(cluster_after=1, keep_ratio=0.3))
    x = torch.randn(3, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        full = model(x)[-1]
        parts = [model(x[i : i + 1])[-1] for i in range(3)]
    for i in range(3):
        assert torch.allclose(full[i], parts[i][0], atol=1e-5)


@pytest.mark.parametrize(
    'ailurus, match',
    [
        (dict(cluster_after=4), r'ailurus.cluster_after=4 .*\[0, 3\]'),
        (dict(cluster_after=-1), 'ailurus.cluster_after=-1'),
        (dict(cluster_after=1.5), 'ailurus.cluster_after=1.5'),
        (dict(keep_ratio=0.0), r'ailurus.keep_ratio=0.0 .*\(0, 1\]'),
        (dict(keep_ratio=1.2), 'ailurus.keep_ratio=1.2'),
        (dict(keep_ratio=None, num_clusters=0), 'ailurus.num_clusters=0'),
        (dict(keep_ratio=0.5, num_clusters=10), 'either keep_ratio or num_clusters'),
        (dict(method='kmeans'), "ailurus.method='kmeans'"),
        (dict(merge='max'), "ailurus.merge='max'"),
        (dict(k=0), r'ailurus.k=0'),
        (dict(density_radius=0), 'ailurus.density_radius=0'),
        (dict(link_radius=40), 'ailurus.link_radius=40'),
        (dict(assign_radius='3'), "ailurus.assign_radius='3'"),
        (dict(size_aware='yes'), "ailurus.size_aware='yes'"),
        (dict(enabled=1), 'ailurus.enabled=1'),
        (dict(seed=None), 'ailurus.seed=None'),
        (dict(keep=0.5), r"unknown option\(s\) \['keep'\]"),
    ],
)
def test_invalid_options_rejected_at_build(ailurus, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(type='AiluRusVisionTransformer', ailurus=ailurus, **TINY))


def test_too_many_clusters_for_input_is_a_clear_error():
    _, model = build_pair(dict(keep_ratio=None, num_clusters=500))
    with pytest.raises(
        ValueError, match=r'num_clusters=500 is more than the 96 patch tokens of a 8x12'
    ):
        model(torch.randn(1, 3, 64, 96))


# ----------------------------------------------------------------------------
# the real configs, Runner and tools on a tiny ADE20K-layout dataset


def tiny_cfg(config, data_root, work_dir, **extra):
    cfg = Config.fromfile(config)
    cfg.work_dir = str(work_dir)
    for dl in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[dl].dataset.data_root = str(data_root)
        cfg[dl].num_workers = 0
        cfg[dl].persistent_workers = False
    cfg.merge_from_dict(extra)
    return cfg


@pytest.fixture(scope='module')
def vit_t_ckpt(tmp_path_factory):
    """A checkpoint saved from the stock mmseg Segmenter ViT-T (random init)."""
    import mmseg

    cfg = Config.fromfile(
        osp.join(
            osp.dirname(mmseg.__file__),
            '.mim',
            'configs',
            'segmenter',
            'segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py',
        )
    )
    assert cfg.model.backbone.type == 'VisionTransformer'
    cfg.model.pretrained = None
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('ckpt') / 'stock_vit-t.pth')
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict(note='stock mmseg keys')), path)
    return path


def test_stock_checkpoint_loads_strictly_into_ailurus_config(vit_t_ckpt):
    cfg = Config.fromfile(VIT_T)
    model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, AiluRusVisionTransformer)
    load_checkpoint(model, vit_t_ckpt, map_location='cpu', strict=True)  # raises on any mismatch
    ref = torch.load(vit_t_ckpt, map_location='cpu')['state_dict']
    assert set(ref) == set(model.state_dict())


def test_runner_test_on_tiny_ade(ade, vit_t_ckpt, tmp_path):
    cfg = tiny_cfg(VIT_T, ade, tmp_path, load_from=vit_t_ckpt)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert {'aAcc', 'mIoU', 'mAcc'} <= set(metrics)
    assert 0 <= metrics['mIoU'] <= 100
    bb = runner.model.backbone
    a = bb.last_assignment  # slide inference on a 512 x 683 resize (unbalanced, padded)
    assert a is not None and a.num_clusters == bb.num_kept(a.hw) < a.num_tokens


def test_two_training_iterations_then_test_from_saved_checkpoint(ade, tmp_path):
    cfg = tiny_cfg(
        VIT_T,
        ade,
        tmp_path,
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=2, val_interval=100),
        default_hooks=dict(
            checkpoint=dict(type='CheckpointHook', interval=2),
            logger=dict(type='LoggerHook', interval=1),
        ),
    )
    runner = Runner.from_cfg(cfg)
    before = {k: v.clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    after = runner.model.state_dict()
    assert runner.iter == 2
    changed = [k for k in before if not torch.equal(before[k], after[k])]
    assert any(k.startswith('backbone.layers.11.') for k in changed)  # after clustering
    assert any(k.startswith('backbone.layers.0.') for k in changed)  # before clustering
    ckpt = osp.join(str(tmp_path), 'iter_2.pth')
    assert osp.isfile(ckpt)
    # the saved checkpoint loads back through the safe (weights_only) loader
    cfg2 = tiny_cfg(VIT_T, ade, tmp_path / 'test', load_from=ckpt)
    runner2 = Runner.from_cfg(cfg2)
    runner2.test()
    loaded = runner2.model.state_dict()
    assert all(torch.equal(after[k], loaded[k]) for k in after)


def run_tool(args, cwd):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run(
        [sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


@pytest.mark.parametrize('tool', ['ours', 'mmseg'])
def test_test_tools_as_subprocess(tool, ade, vit_t_ckpt, tmp_path):
    script = osp.join(ROOT, 'tools/test.py') if tool == 'ours' else stock_tool_path('mmseg', 'test')
    assert script is not None and osp.isfile(script)
    out = run_tool(
        [
            script,
            VIT_T,
            vit_t_ckpt,
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            f'test_dataloader.dataset.data_root={ade}',
            'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False',
            'model.backbone.ailurus.keep_ratio=0.5',
        ],
        cwd=str(tmp_path),
    )
    assert 'mIoU' in out and 'keep_ratio=0.5' in out  # the override reached the model
    assert 'Load checkpoint from' in out


def test_train_tool_as_subprocess(ade, tmp_path):
    out = run_tool(
        [
            osp.join(ROOT, 'tools/train.py'),
            VIT_T,
            '--work-dir',
            str(tmp_path),
            '--cfg-options',
            f'train_dataloader.dataset.data_root={ade}',
            'train_dataloader.num_workers=0',
            'train_dataloader.persistent_workers=False',
            f'val_dataloader.dataset.data_root={ade}',
            'val_dataloader.num_workers=0',
            'val_dataloader.persistent_workers=False',
            'train_cfg.max_iters=1',
            'train_cfg.val_interval=100',
            'default_hooks.checkpoint.interval=1',
        ],
        cwd=str(tmp_path),
    )
    assert osp.isfile(osp.join(str(tmp_path), 'iter_1.pth')), out[-2000:]


@pytest.mark.parametrize(
    'config',
    sorted(
        f
        for f in os.listdir(osp.join(ROOT, 'configs/ailurus'))
        if f.endswith('.py') and not f.startswith('mask-rcnn')  # mmdet: tests/test_detection.py
    ),
)
def test_every_config_builds_with_ailurus_backbone(config):
    cfg = Config.fromfile(osp.join(ROOT, 'configs/ailurus', config))
    assert cfg.custom_imports == dict(imports=['ailurus_mm'], allow_failed_imports=False)
    assert cfg.model.pretrained is None  # nothing is downloaded at run time
    assert cfg.model.backbone.type == 'AiluRusVisionTransformer'
    bb = dict(cfg.model.backbone)
    bb.pop('type')
    model = AiluRusVisionTransformer(**bb)
    assert model.ailurus['keep_ratio'] < 1.0


class NotAllowListed:
    """A pickled object the safe loader must refuse."""


def test_test_tool_names_refused_object_and_opt_in(ade, vit_t_ckpt, tmp_path):
    ckpt = torch.load(vit_t_ckpt, map_location='cpu')
    ckpt['meta']['extra'] = NotAllowListed()
    bad = str(tmp_path / 'untrusted.pth')
    torch.save(ckpt, bad)
    env = dict(os.environ, PYTHONWARNINGS='ignore', PYTHONPATH=osp.dirname(osp.abspath(__file__)))
    proc = subprocess.run(
        [
            sys.executable,
            osp.join(ROOT, 'tools/test.py'),
            VIT_T,
            bad,
            '--cfg-options',
            f'test_dataloader.dataset.data_root={ade}',
            'test_dataloader.num_workers=0',
            'test_dataloader.persistent_workers=False',
        ],
        cwd=str(tmp_path),
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode != 0
    assert 'NotAllowListed' in proc.stderr and 'AILURUS_TRUSTED_GLOBALS' in proc.stderr
