"""Logits-level reconstruction: the decode head on the M merged tokens.

``ailurus.reconstruct_level='logits'`` leaves the backbone's last output
merged; ``AiluRusEncoderDecoder`` runs the head on it and reconstructs the
logits. For a 1x1-conv head with hard reconstruction this is the
feature-level result (the head commutes with copying); the mask transformer
head sees M tokens; everything that cannot run it is rejected with a clear
error.
"""

import pytest
import torch
from mmengine.config import ConfigDict
from mmengine.registry import DefaultScope
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

import ailurus_mm  # noqa: F401
from ailurus_mm.ops import AiluRusOptions

BACKBONE = dict(
    type='AiluRusVisionTransformer',
    img_size=(64, 96),
    patch_size=8,
    embed_dims=48,
    num_layers=4,
    num_heads=3,
    final_norm=True,
    out_indices=3,
    norm_cfg=dict(type='LN', eps=1e-6),
)
LINEAR = dict(
    type='FCNHead',
    in_channels=48,
    channels=48,
    num_convs=0,
    concat_input=False,
    num_classes=5,
    norm_cfg=None,
    dropout_ratio=0.0,
)
MASK = dict(
    type='SegmenterMaskTransformerHead',
    in_channels=48,
    channels=48,
    num_classes=5,
    num_layers=1,
    num_heads=3,
    embed_dims=48,
    dropout_ratio=0.0,
)


@pytest.fixture(autouse=True)
def mmseg_scope():
    with DefaultScope.overwrite_default_scope('mmseg'):
        yield


def build(head=LINEAR, ailurus=None, seg_type='AiluRusEncoderDecoder', **bb):
    torch.manual_seed(0)
    model = MODELS.build(
        dict(
            type=seg_type,
            data_preprocessor=dict(type='SegDataPreProcessor', mean=[0.0] * 3, std=[1.0] * 3),
            backbone=dict(BACKBONE, ailurus=ailurus, **bb),
            decode_head=head,
            test_cfg=ConfigDict(mode='whole'),
        )
    )
    model.init_weights()
    return model.eval()


def predict_logits(model, x):
    metas = [dict(img_shape=x.shape[-2:], pad_shape=x.shape[-2:], ori_shape=x.shape[-2:])]
    with torch.no_grad():
        return model.encode_decode(x, metas * x.shape[0])


X = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(3))
X_ODD = torch.randn(1, 3, 40, 104, generator=torch.Generator().manual_seed(4))


@pytest.mark.parametrize('x', [X, X_ODD], ids=['square-ish', 'unbalanced'])
@pytest.mark.parametrize(
    'over',
    [
        dict(cluster_after=2, keep_ratio=0.4),
        dict(cluster_after=1, keep_ratio=0.3, method='random'),
        dict(cluster_after=0, keep_ratio=0.25, method='tome_layers'),
    ],
)
def test_linear_head_logits_equal_features_level(x, over):
    model = build(ailurus=over)
    feat = predict_logits(model, x)
    with model.backbone.options_override(reconstruct_level='logits'):
        logit = predict_logits(model, x)
    assert logit.shape == feat.shape == (x.shape[0], 5, *x.shape[-2:])
    assert torch.allclose(logit, feat, atol=1e-5)


def test_engine_leaves_the_last_output_merged_and_unfolds_anything():
    model = build(ailurus=dict(cluster_after=2, keep_ratio=0.4), out_indices=(1, 3))
    bb = model.backbone
    with torch.no_grad():
        full = bb.forward_tokens(X)
        with bb.options_override(reconstruct_level='logits') as o:
            res = bb.forward_tokens(X)
    m = o.num_kept(res.hw)
    assert res.num_merged == 1 and full.num_merged == 0 and full.unfold is None
    assert res.outs[0].shape == full.outs[0].shape  # before clustering: full
    assert res.outs[1].shape == (2, 1 + m, 48)
    # hard unfold of the merged tokens is the feature-level output, bit for bit
    assert torch.equal(res.unfold(res.outs[1][:, 1:]), full.outs[1][:, 1:])
    maps = bb.tokens_to_maps(res)
    assert maps[0][0].shape == (2, 48, 8, 12) and maps[1][0].shape == (2, 48, 1, m)


def test_mask_head_runs_on_m_tokens():
    model = build(MASK, ailurus=dict(cluster_after=2, keep_ratio=0.4))
    seen = []
    # the head's first projection sees the tokens it runs on
    model.decode_head.dec_proj.register_forward_hook(
        lambda mod, inp, out: seen.append(inp[0].shape)
    )
    feat = predict_logits(model, X)
    with model.backbone.options_override(reconstruct_level='logits', reconstruct='soft') as o:
        logit = predict_logits(model, X)
    m = o.num_kept((8, 12))
    assert seen == [(2, 96, 48), (2, m, 48)]
    assert logit.shape == feat.shape and torch.isfinite(logit).all()
    assert not torch.allclose(logit, feat)  # the head attends over other tokens


def test_keep_all_and_disabled_are_the_stock_path():
    model = build(ailurus=dict(enabled=False, reconstruct_level='logits'))
    stock = build(ailurus=dict(enabled=False), seg_type='EncoderDecoder')
    assert torch.equal(predict_logits(model, X), predict_logits(stock, X))
    with model.backbone.options_override(enabled=True, keep_ratio=1.0):
        assert torch.equal(predict_logits(model, X), predict_logits(stock, X))


def test_prefix_cached_sweep_evaluation_equals_test_step():
    from mmengine.structures import PixelData

    from ailurus_mm.analysis.segmentation import PrefixCache, evaluate, evaluate_options

    model = build(ailurus=dict(cluster_after=2, keep_ratio=0.4, reconstruct_level='logits'))
    batches = []
    for i in range(2):
        g = torch.Generator().manual_seed(i)
        s = SegDataSample(metainfo=dict(img_shape=(64, 96), ori_shape=(64, 96)))
        s.gt_sem_seg = PixelData(data=torch.randint(0, 5, (1, 64, 96), generator=g))
        img = (torch.rand(3, 64, 96, generator=g) * 255).byte()
        batches.append(dict(inputs=[img], data_samples=[s]))
    from mmseg.evaluation import IoUMetric

    metric = IoUMetric()
    metric.dataset_meta = dict(classes=[str(i) for i in range(5)])
    direct = evaluate(model, batches, metric)
    cached = evaluate_options(model, PrefixCache(model, batches), metric, model.backbone.options)
    assert direct[1] == cached[1] and direct[0] == cached[0]
    assert any(0 < v < 1 for v in direct[1])  # a non-trivial prediction


@pytest.mark.parametrize(
    'over, match',
    [
        (dict(reconstruct_level='tokens'), "ailurus.reconstruct_level='tokens' is not one of"),
        (
            dict(reconstruct_level='logits', reconstruct='residual'),
            "reconstruct must be one of \\('hard', 'soft'\\).*reconstruct='residual'",
        ),
        (
            dict(reconstruct_level='logits', reconstruct='soft_residual'),
            "reconstruct='soft_residual'",
        ),
        (dict(reconstruct_level='logits', refine_layers=1), 'refine_layers=1'),
    ],
)
def test_invalid_logits_level_options(over, match):
    with pytest.raises(ValueError, match=match):
        AiluRusOptions.from_dict(over, 4)


@pytest.mark.parametrize(
    'kw, match',
    [
        (
            dict(head=dict(LINEAR, num_convs=1, kernel_size=3)),
            'decode_head FCNHead mixes neighbouring tokens',
        ),
        (dict(out_indices=(1, 3)), '2 backbone outputs'),
    ],
)
def test_models_that_cannot_run_it_are_rejected_at_build(kw, match):
    with pytest.raises(ValueError, match=match):
        build(ailurus=dict(reconstruct_level='logits'), **kw)


def test_outside_the_segmentor_merged_outputs_are_a_clear_error():
    plain = build(ailurus=dict(cluster_after=2, keep_ratio=0.4), seg_type='EncoderDecoder')
    with plain.backbone.options_override(reconstruct_level='logits'):
        with pytest.raises(ValueError, match="type 'AiluRusEncoderDecoder'"):
            predict_logits(plain, X)
    # switched on after build, on a model that cannot run it: refused at the first forward
    conv = build(dict(LINEAR, num_convs=1, kernel_size=3), ailurus=dict(keep_ratio=0.4))
    with conv.backbone.options_override(reconstruct_level='logits'):
        with pytest.raises(ValueError, match='mixes neighbouring tokens'):
            predict_logits(conv, X)
