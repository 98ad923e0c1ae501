"""Training through AiluRus: gradients, drop-path/dropout on the merged
sequence, constant assignment and size bias, mixed precision (bf16 on CPU)."""

import copy

import pytest
import torch
from mmengine.config import Config
from mmengine.optim import build_optim_wrapper
from mmengine.registry import MODELS
from mmengine.structures import PixelData
from mmseg.structures import SegDataSample
from mmseg.utils import register_all_modules

import ailurus_mm  # noqa: F401
from ailurus_mm.apis import CPUAutocastOptimWrapper, amp_overrides
from ailurus_mm.ops import size_attn_bias

register_all_modules(init_default_scope=True)

TINY = dict(
    type='AiluRusVisionTransformer',
    img_size=(64, 96),
    patch_size=8,
    embed_dims=48,
    num_layers=4,
    num_heads=3,
    final_norm=True,
    out_indices=(3,),
    norm_cfg=dict(type='LN', eps=1e-6),
    ailurus=dict(cluster_after=2, keep_ratio=0.4),
)


def backbone(**overrides):
    torch.manual_seed(0)
    bb = MODELS.build(dict(TINY, **overrides))
    bb.init_weights()
    return bb


def test_every_parameter_before_and_after_clustering_gets_a_gradient():
    bb = backbone(drop_path_rate=0.2, drop_rate=0.1, attn_drop_rate=0.1).train()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    (out,) = bb(x)
    assert bb.last_assignment is not None and bb.last_assignment.num_clusters < 96
    out.square().mean().backward()
    missing = [n for n, p in bb.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0]
    assert not missing, f'no gradient: {missing}'
    names = [n for n, _ in bb.named_parameters()]
    assert any(n.startswith('layers.0.') for n in names)  # before clustering (after 2)
    assert any(n.startswith('layers.3.') for n in names)  # after clustering


def test_assignment_and_size_bias_are_constants():
    bb = backbone().train()
    x = torch.randn(1, 3, 64, 96, requires_grad=True)
    state = bb.forward_prefix(x)
    assert state.x.requires_grad
    res = bb.forward_from_prefix(state)
    a = res.assignment
    for t in (a.labels, a.sizes, a.anchors):
        assert not t.requires_grad and t.grad_fn is None
    assert not size_attn_bias(a.sizes, 1, dtype=torch.float32).requires_grad
    # merge/unfold are differentiable: the gradient reaches the input
    res.outs[-1].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0


def test_drop_path_and_dropout_act_on_the_merged_sequence_in_training_only():
    bb = backbone(drop_path_rate=0.5, drop_rate=0.2, attn_drop_rate=0.2)
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        bb.eval()
        state = bb.forward_prefix(x)
        ref = bb.forward_from_prefix(state)
        again = bb.forward_from_prefix(state)
        assert torch.equal(ref.outs[-1], again.outs[-1])  # eval: deterministic
        assert ref.assignment.num_clusters < ref.assignment.num_tokens
        bb.train()  # only the layers after clustering run from the cached state
        torch.manual_seed(1)
        a = bb.forward_from_prefix(state)
        torch.manual_seed(2)
        b = bb.forward_from_prefix(state)
        torch.manual_seed(1)
        a2 = bb.forward_from_prefix(state)
    assert torch.equal(a.assignment.labels, b.assignment.labels)  # same clusters
    assert not torch.allclose(a.outs[-1], b.outs[-1])  # random masks on the merged tokens
    assert torch.equal(a.outs[-1], a2.outs[-1])  # and seeded
    assert not torch.allclose(a.outs[-1], ref.outs[-1])


def tiny_segmentor_cfg():
    cfg = Config.fromfile(
        'configs/ailurus/segmenter-ailurus_vit-t_mask_8xb1-160k_ade20k-512x512.py'
    )
    model = copy.deepcopy(cfg.model)
    model.backbone.update(img_size=(64, 96), num_layers=4, out_indices=(3,))
    model.decode_head.update(num_layers=1)
    model.data_preprocessor.size = (64, 96)
    return cfg, model


def batch(n=2):
    g = torch.Generator().manual_seed(0)
    samples = []
    for _ in range(n):
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, 150, (1, 64, 96), generator=g))
        s.set_metainfo(dict(img_shape=(64, 96), ori_shape=(64, 96), pad_shape=(64, 96)))
        samples.append(s)
    imgs = [torch.randint(0, 256, (3, 64, 96), generator=g, dtype=torch.uint8) for _ in range(n)]
    return dict(inputs=imgs, data_samples=samples)


def test_amp_on_cpu_is_bf16_autocast_and_trains():
    cfg, model_cfg = tiny_segmentor_cfg()
    assert amp_overrides('OptimWrapper', cuda=False) == {
        'optim_wrapper.type': 'CPUAutocastOptimWrapper',
        'optim_wrapper.dtype': 'bfloat16',
    }
    assert amp_overrides('OptimWrapper', cuda=True)['optim_wrapper.type'] == 'AmpOptimWrapper'
    with pytest.raises(ValueError, match="--amp needs optim_wrapper.type=OptimWrapper, got 'X'"):
        amp_overrides('X')
    cfg.merge_from_dict(amp_overrides('OptimWrapper', cuda=False))
    torch.manual_seed(0)
    model = MODELS.build(model_cfg)
    model.init_weights()
    model.train()
    wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    assert isinstance(wrapper, CPUAutocastOptimWrapper)
    out_dtypes = []  # second linear of the FFN of a layer after clustering (cluster_after=2)
    model.backbone.layers[3].ffn.layers[1].register_forward_hook(
        lambda m, i, o: out_dtypes.append(o.dtype)
    )
    before = {k: v.clone() for k, v in model.state_dict().items()}
    for _ in range(2):
        losses = model.train_step(batch(), wrapper)
    assert all(torch.isfinite(v).all() for v in losses.values())
    assert model.backbone.last_assignment is not None  # the merged path ran
    assert out_dtypes == [torch.bfloat16] * 2  # the merged layers computed in bf16
    after = model.state_dict()
    assert after['backbone.layers.3.ffn.layers.1.weight'].dtype == torch.float32
    assert not torch.equal(
        before['backbone.layers.3.ffn.layers.1.weight'],
        after['backbone.layers.3.ffn.layers.1.weight'],
    )
    assert not torch.equal(
        before['backbone.layers.0.ffn.layers.1.weight'],
        after['backbone.layers.0.ffn.layers.1.weight'],
    )
    with pytest.raises(ValueError, match="dtype='float16'"):
        CPUAutocastOptimWrapper(dtype='float16', optimizer=wrapper.optimizer)
