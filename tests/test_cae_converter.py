"""CAE checkpoints -> AiluRusCAEViT: state dicts built here in CAE's own layouts.

No CAE checkpoint can be downloaded here, so the tests write state dicts with
the key names and shapes of CAE's code (lxtGH/CAE: the pre-training
``encoder.*`` model and the mmdet 2.x Mask R-CNN detection model) and check
that they convert and load strictly.
"""

import os.path as osp
import subprocess
import sys
from collections import OrderedDict

import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import Config

import ailurus_mm  # noqa: F401
from ailurus_mm.zoo.cae import (
    CheckpointLayoutError,
    convert_cae_detection,
    convert_cae_pretrain,
    detect_kind,
    unwrap,
)

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CONFIGS = {
    'B': (osp.join(ROOT, 'configs/ailurus/mask-rcnn_cae-b_fpn_1x_coco.py'), 768, 12),
    'L': (osp.join(ROOT, 'configs/ailurus/mask-rcnn_cae-l_fpn_1x_coco.py'), 1024, 24),
}
pytestmark = pytest.mark.usefixtures('mmdet_scope')


def cae_backbone_state(dim, depth, grid, prefix='', fpn=True, device='cpu', final_norm=False):
    """The backbone keys and shapes of CAE's code (not derived from our class)."""
    mk = lambda *shape: torch.randn(*shape, device=device)  # noqa: E731
    sd = OrderedDict()
    sd['cls_token'] = mk(1, 1, dim)
    sd['pos_embed'] = mk(1, 1 + grid[0] * grid[1], dim)
    sd['patch_embed.proj.weight'] = mk(dim, 3, 16, 16)
    sd['patch_embed.proj.bias'] = mk(dim)
    for i in range(depth):
        b = f'blocks.{i}.'
        sd[b + 'gamma_1'], sd[b + 'gamma_2'] = mk(dim), mk(dim)
        sd[b + 'norm1.weight'], sd[b + 'norm1.bias'] = mk(dim), mk(dim)
        sd[b + 'attn.q_bias'], sd[b + 'attn.v_bias'] = mk(dim), mk(dim)
        sd[b + 'attn.qkv.weight'] = mk(3 * dim, dim)
        sd[b + 'attn.proj.weight'], sd[b + 'attn.proj.bias'] = mk(dim, dim), mk(dim)
        sd[b + 'norm2.weight'], sd[b + 'norm2.bias'] = mk(dim), mk(dim)
        sd[b + 'mlp.fc1.weight'], sd[b + 'mlp.fc1.bias'] = mk(4 * dim, dim), mk(4 * dim)
        sd[b + 'mlp.fc2.weight'], sd[b + 'mlp.fc2.bias'] = mk(dim, 4 * dim), mk(dim)
    if final_norm:
        sd['norm.weight'], sd['norm.bias'] = mk(dim), mk(dim)
    if fpn:
        # ConvTranspose2d weights are [in, out, k, k]; fpn1.1 is CAE's SyncBN
        sd['fpn1.0.weight'], sd['fpn1.0.bias'] = mk(dim, dim, 2, 2), mk(dim)
        sd['fpn1.1.weight'], sd['fpn1.1.bias'] = mk(dim), mk(dim)
        sd['fpn1.1.running_mean'], sd['fpn1.1.running_var'] = mk(dim), mk(dim).abs()
        sd['fpn1.1.num_batches_tracked'] = torch.tensor(7, device=device)
        sd['fpn1.3.weight'], sd['fpn1.3.bias'] = mk(dim, dim, 2, 2), mk(dim)
        sd['fpn2.0.weight'], sd['fpn2.0.bias'] = mk(dim, dim, 2, 2), mk(dim)
    return OrderedDict((prefix + k, v) for k, v in sd.items())


def cae_detection_checkpoint(size, device='meta'):
    """An official-layout CAE Mask R-CNN checkpoint: the CAE backbone above plus
    mmdet's Mask R-CNN neck/heads (mmdet 2.x and 3.x share those key names)."""
    config, dim, depth = CONFIGS[size]
    cfg = Config.fromfile(config)
    with torch.device('meta'):
        det = MODELS.build(cfg.model)
    heads = {
        k: torch.empty(v.shape, dtype=v.dtype, device=device)
        for k, v in det.state_dict().items()
        if not k.startswith('backbone.')
    }
    state = cae_backbone_state(dim, depth, (42, 68), 'backbone.', device=device)
    state.update(heads)
    return dict(meta=dict(mmdet_version='2.11.0', CLASSES=('person',)), state_dict=state)


@pytest.mark.parametrize('size', ['B', 'L'])
def test_official_detection_layout_loads_strictly(size):
    config, _, _ = CONFIGS[size]
    ckpt = cae_detection_checkpoint(size)
    state = convert_cae_detection(ckpt)
    assert list(state) == list(ckpt['state_dict'])  # keys unchanged
    with torch.device('meta'):
        model = MODELS.build(Config.fromfile(config).model)
    model.load_state_dict(state, strict=True)  # raises on any missing/unexpected key or shape
    bb = {k[9:] for k in state if k.startswith('backbone.')}
    assert bb == set(model.backbone.state_dict())


def test_detection_checkpoint_with_data_loads_strictly_and_runs():
    """Real tensors (a small CAE-layout model): strict load, values arrive, forward runs."""
    cfg = Config.fromfile(CONFIGS['B'][0])
    cfg.merge_from_dict(
        {
            'model.backbone.embed_dim': 32,
            'model.backbone.depth': 4,
            'model.backbone.num_heads': 2,
            'model.backbone.out_indices': (0, 1, 2, 3),
            'model.neck.in_channels': [32] * 4,
        }
    )
    model = MODELS.build(cfg.model)
    heads = {k: v for k, v in model.state_dict().items() if not k.startswith('backbone.')}
    state = cae_backbone_state(32, 4, (42, 68), 'backbone.')
    state.update(heads)
    model.load_state_dict(convert_cae_detection({'state_dict': state}), strict=True)
    assert torch.equal(model.backbone.blocks[2].attn.q_bias, state['backbone.blocks.2.attn.q_bias'])
    assert torch.equal(model.backbone.pos_embed, state['backbone.pos_embed'])
    model.eval()
    with torch.no_grad():
        feats = model.extract_feat(torch.randn(1, 3, 128, 192))
    assert len(feats) == 5


def test_cae_pretrain_checkpoint_converts_and_loads():
    enc = cae_backbone_state(32, 4, (14, 14), 'encoder.', fpn=False, final_norm=True)
    extra = OrderedDict(
        [
            ('encoder.mask_token', torch.randn(1, 1, 32)),
            ('decoder.blocks.0.norm1.weight', torch.randn(32)),
            ('regressor_and_decoder.x', torch.randn(3)),
            ('teacher_network.blocks.0.norm1.weight', torch.randn(32)),
            ('encoder_to_decoder.weight', torch.randn(32, 32)),
        ]
    )
    ckpt = {'model': OrderedDict(list(enc.items()) + list(extra.items()))}
    state = convert_cae_pretrain(ckpt, pos_grid=(4, 6))
    assert not any(k.startswith(('encoder.', 'decoder', 'teacher', 'norm.')) for k in state)
    assert 'mask_token' not in state
    # CAE's loader: the square table resized bicubically to the detection grid
    src = enc['encoder.pos_embed']
    grid = src[:, 1:].reshape(1, 14, 14, 32).permute(0, 3, 1, 2)
    grid = F.interpolate(grid, size=(4, 6), mode='bicubic', align_corners=False)
    expect = torch.cat([src[:, :1], grid.permute(0, 2, 3, 1).flatten(1, 2)], 1)
    assert torch.equal(state['pos_embed'], expect)
    model = MODELS.build(
        dict(
            type='AiluRusCAEViT',
            img_size=(64, 96),
            embed_dim=32,
            depth=4,
            num_heads=2,
            out_indices=(0, 1, 2, 3),
        )
    )
    missing, unexpected = model.load_state_dict(state, strict=False)
    assert unexpected == []
    # the adapters are new (BN's num_batches_tracked is filled in by BN itself)
    fpn = [k for k in model.state_dict() if k.startswith('fpn') and 'num_batches' not in k]
    assert sorted(missing) == sorted(fpn)


def test_pretrain_converter_through_init_cfg(tmp_path):
    """The converted pre-training file as the backbone's ``Pretrained`` init."""
    enc = cae_backbone_state(32, 4, (14, 14), 'encoder.', fpn=False)
    path = str(tmp_path / 'cae_pretrain_backbone.pth')
    torch.save({'state_dict': convert_cae_pretrain({'model': enc}, pos_grid=(4, 6))}, path)
    model = MODELS.build(
        dict(
            type='AiluRusCAEViT',
            img_size=(64, 96),
            embed_dim=32,
            depth=4,
            num_heads=2,
            out_indices=(0, 1, 2, 3),
            init_cfg=dict(type='Pretrained', checkpoint=path),
        )
    )
    model.init_weights()
    assert torch.equal(model.blocks[3].mlp.fc2.weight, enc['encoder.blocks.3.mlp.fc2.weight'])


def test_converter_cli(tmp_path):
    enc = cae_backbone_state(32, 2, (4, 4), 'encoder.', fpn=False)
    src, dst = str(tmp_path / 'pretrain.pth'), str(tmp_path / 'out.pth')
    torch.save({'model': enc}, src)
    proc = subprocess.run(
        [
            sys.executable,
            osp.join(ROOT, 'tools/model_converters/cae_to_ailurus.py'),
            src,
            dst,
            '--pos-grid',
            '2',
            '3',
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert 'pretrain:' in proc.stdout
    out = torch.load(dst, map_location='cpu')['state_dict']
    assert out['pos_embed'].shape == (1, 1 + 2 * 3, 32)


@pytest.mark.parametrize(
    'mutate, match',
    [
        (lambda s: s.pop('backbone.blocks.1.attn.v_bias'), r"missing backbone keys \['blocks.1"),
        (lambda s: s.pop('backbone.fpn2.0.weight'), r"missing backbone keys \['fpn2.0.weight'\]"),
        (
            lambda s: s.__setitem__(
                'backbone.blocks.0.attn.relative_position_bias_table', torch.zeros(3)
            ),
            'relative position bias',
        ),
        (lambda s: [s.pop(k) for k in list(s) if k.startswith('neck.')], r'no neck\.\* keys'),
    ],
)
def test_bad_detection_checkpoints_are_named(mutate, match):
    ckpt = cae_detection_checkpoint('B')
    state = ckpt['state_dict']
    mutate(state)
    with pytest.raises(CheckpointLayoutError, match=match):
        convert_cae_detection(ckpt)


def test_layout_detection_and_unwrap():
    enc = cae_backbone_state(8, 1, (2, 2), 'encoder.', fpn=False)
    assert detect_kind(enc) == 'pretrain'
    wrapped = {'model': OrderedDict(('module.' + k, v) for k, v in enc.items())}
    assert list(unwrap(wrapped)) == list(enc)
    with pytest.raises(CheckpointLayoutError, match='not a CAE pre-training'):
        detect_kind({'foo.weight': torch.zeros(1)})
    with pytest.raises(CheckpointLayoutError, match='expected a CAE detection checkpoint'):
        convert_cae_detection({'model': enc})
    with pytest.raises(CheckpointLayoutError, match='no tensor state dict'):
        unwrap({'state_dict': {}})
