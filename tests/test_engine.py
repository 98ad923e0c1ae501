"""The options object, the reduction engine and the backbone mixin."""

import pytest
import torch
import torch.nn.functional as F
from mmseg.registry import MODELS

import ailurus_mm  # noqa: F401
from ailurus_mm.analysis import markdown_table, time_interleaved, write_table
from ailurus_mm.ops import AiluRusOptions, ReductionEngine, pool_assignment, reduce_tokens

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


def build(ailurus=None, **kw):
    torch.manual_seed(0)
    m = MODELS.build(dict(type='AiluRusVisionTransformer', ailurus=ailurus, **dict(TINY, **kw)))
    m.init_weights()
    return m.eval()


# ----------------------------------------------------------------------------
# options


def test_defaults_and_round_trip():
    o = AiluRusOptions.from_dict(None, 12)
    assert o.to_dict() == AiluRusOptions().to_dict()
    assert AiluRusOptions.from_dict(o.to_dict(), 12) == o
    assert set(o.to_dict()) == set(AiluRusOptions.keys())
    with pytest.raises(AttributeError):
        o.keep_ratio = 0.3  # frozen


def test_replace_validates_and_swaps_budget_kind():
    o = AiluRusOptions.from_dict(dict(keep_ratio=0.5), 12)
    m = o.replace(num_clusters=100)
    assert m.num_clusters == 100 and m.keep_ratio is None
    assert m.replace(keep_ratio=0.25).num_clusters is None
    with pytest.raises(ValueError, match=r'ailurus.cluster_after=12 .*\[0, 11\]'):
        o.replace(cluster_after=12)
    with pytest.raises(ValueError, match=r"unknown option\(s\) \['keep'\]"):
        o.replace(keep=0.5)
    with pytest.raises(ValueError, match='exactly one of keep_ratio and num_clusters'):
        o.replace(keep_ratio=None)


@pytest.mark.parametrize('hw', [(8, 12), (7, 13), (5, 1)])
@pytest.mark.parametrize('keep', [0.1, 0.25, 0.5, 0.9])
@pytest.mark.parametrize('method', ['adjacent', 'dpc', 'tome', 'random', 'pool'])
def test_num_kept_is_what_every_method_leaves(hw, keep, method):
    o = AiluRusOptions.from_dict(dict(keep_ratio=keep, method=method), 4)
    x = torch.randn(1, hw[0] * hw[1], 8, generator=torch.Generator().manual_seed(0))
    a = reduce_tokens(x, hw, o.budget, **o.cluster_kwargs())
    assert o.num_kept(hw) == a.num_clusters


def test_pool_count_is_the_block_grid():
    o = AiluRusOptions.from_dict(dict(keep_ratio=0.25, method='pool'), 4)
    # 7 x 13 at stride 2: ceil(7 / 2) * ceil(13 / 2) = 4 * 7 = 28, not round(0.25 * 91) = 23
    assert (
        o.num_kept((7, 13)) == 28 == pool_assignment(torch.zeros(1, 91, 1), (7, 13), 2).num_clusters
    )
    assert o.token_counts((7, 13), num_prefix_tokens=1) == [92, 92, 29, 29]


def test_disabled_and_keep_all_do_not_reduce():
    assert not AiluRusOptions.from_dict(dict(enabled=False), 4).reduces((8, 8))
    assert not AiluRusOptions.from_dict(dict(keep_ratio=1.0), 4).reduces((8, 8))
    assert not AiluRusOptions.from_dict(dict(keep_ratio=0.9, method='pool'), 4).reduces((8, 12))
    assert AiluRusOptions.from_dict(dict(keep_ratio=0.9), 4).reduces((8, 12))


# ----------------------------------------------------------------------------
# the backbone's public option interface


def test_set_options_and_override_revalidate_and_restore():
    m = build(dict(cluster_after=1, keep_ratio=0.5))
    assert m.set_options(keep_ratio=0.3).keep_ratio == 0.3 == m.ailurus['keep_ratio']
    with pytest.raises(ValueError, match=r'ailurus.cluster_after=4 .*\[0, 3\]'):
        m.set_options(cluster_after=4)
    assert m.options.cluster_after == 1  # a refused change leaves the options alone
    with m.options_override(method='tome', keep_ratio=0.25) as o:
        assert m.options is o and o.method == 'tome'
    assert m.options.method == 'adjacent' and m.options.keep_ratio == 0.3
    with pytest.raises(RuntimeError), m.options_override(enabled=False):
        raise RuntimeError('restored even after an error')
    assert m.options.enabled


def test_ailurus_dict_is_read_only():
    m = build()
    with pytest.raises(AttributeError, match='set_options'):
        m.ailurus = dict(keep_ratio=0.5)
    d = m.ailurus
    d['keep_ratio'] = 0.1
    assert m.options.keep_ratio == 0.4


def test_train_returns_the_module():
    m = build()
    assert m.train() is m and m.training
    assert m.eval() is m and not m.training


# ----------------------------------------------------------------------------
# the engine


@pytest.mark.parametrize(
    'over',
    [
        dict(keep_ratio=0.3),
        dict(keep_ratio=0.5, method='tome'),
        dict(keep_ratio=0.25, method='pool'),
        dict(keep_ratio=1.0),
        dict(num_clusters=20, size_aware=False),
    ],
)
def test_prefix_cache_gives_the_uncached_numbers(over):
    m = build(dict(cluster_after=2))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        with m.options_override(**over) as o:
            state = m.forward_prefix(x)
            direct = m.forward_tokens(x)
            cached = m.forward_from_prefix(state, o)
            maps = m(x)
    assert len(direct.outs) == len(cached.outs) == 3
    for a, b in zip(direct.outs, cached.outs):
        assert torch.equal(a, b)
    for (patches, _), out in zip(m.tokens_to_maps(direct), maps):
        assert torch.equal(patches, out)


def test_prefix_state_refuses_another_cluster_layer():
    m = build(dict(cluster_after=2))
    x = torch.randn(1, 3, 64, 96)
    with torch.no_grad():
        state = m.forward_prefix(x)
        with pytest.raises(ValueError, match='prefix state ran 2 layers'):
            m.forward_from_prefix(state, m.options.replace(cluster_after=1))
        # keep-all runs the stock (unfused) path: a fused prefix does not serve it
        with pytest.raises(ValueError, match='fused kernel: False'):
            m.forward_from_prefix(state, m.options.replace(keep_ratio=1.0))


def test_one_prefix_serves_every_reducing_setting():
    m = build(dict(cluster_after=2))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        state = m.forward_prefix(x)
        for over in (dict(keep_ratio=0.2), dict(method='random'), dict(reconstruct='soft')):
            o = m.options.replace(**over)
            ref = m.forward_tokens(x, o)
            got = m.forward_from_prefix(state, o)
            assert all(torch.equal(a, b) for a, b in zip(ref.outs, got.outs))


def test_assignment_is_returned_and_can_be_passed_in():
    m = build(dict(cluster_after=1, keep_ratio=0.3))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        res = m.forward_tokens(x)
        assert res.assignment is not None and res.assignment.num_clusters == m.num_kept((8, 12))
        again = m.forward_tokens(x, assignment=res.assignment)
        # a different assignment (pooling) changes the outputs after clustering only
        pooled = pool_assignment(torch.zeros(2, 96, 1), (8, 12), 2)
        other = m.forward_tokens(x, assignment=pooled)
        with pytest.raises(ValueError, match='does not fit'):
            m.forward_tokens(x[:1], assignment=res.assignment)
    assert all(torch.equal(a, b) for a, b in zip(res.outs, again.outs))
    assert torch.equal(res.outs[0], other.outs[0]) and not torch.equal(res.outs[2], other.outs[2])


def _toy_layer(i, x, bias, fused):
    """A parameter-free attention layer: softmax(x x^T / sqrt(C) + bias) x."""
    logits = x @ x.transpose(1, 2) / x.shape[-1] ** 0.5
    if bias is not None:
        logits = logits + bias[:, 0]
    return x + F.softmax(logits, -1) @ x


@pytest.mark.parametrize('prefix', [0, 1, 5])
def test_prefix_tokens_are_counted_once_and_never_merged(prefix):
    hw, c = (6, 7), 16
    x = torch.randn(2, prefix + 42, c, generator=torch.Generator().manual_seed(3))
    eng = ReductionEngine(_toy_layer, num_layers=3, num_prefix_tokens=prefix, out_indices=(0, 2))
    opts = AiluRusOptions.from_dict(dict(cluster_after=1, keep_ratio=0.5), 3)
    res = eng(x, hw, opts)
    a = res.assignment
    assert a.num_tokens == 42 and a.num_clusters == 21
    assert [tuple(o.shape) for o in res.outs] == [(2, prefix + 42, c)] * 2
    # reference: merge by hand, run the two later layers with the log-size bias, unfold
    x1 = _toy_layer(0, x, None, False)
    patches = x1[:, prefix:]
    merged = torch.zeros(2, 21, c).scatter_add(1, a.labels[..., None].expand(-1, -1, c), patches)
    merged = merged / a.sizes[..., None]
    y = torch.cat([x1[:, :prefix], merged], 1)
    bias = torch.cat([torch.zeros(2, prefix), a.sizes.log()], 1)[:, None, None]
    for i in (1, 2):
        y = _toy_layer(i, y, bias, True)
    full = torch.cat(
        [y[:, :prefix], y[:, prefix:].gather(1, a.labels[..., None].expand(-1, -1, c))], 1
    )
    assert torch.allclose(res.outs[1], full, atol=1e-5)
    assert torch.equal(res.outs[0], x1)


def test_engine_rejects_bad_shapes():
    eng = ReductionEngine(_toy_layer, num_layers=2, num_prefix_tokens=1, out_indices=(1,))
    opts = AiluRusOptions.from_dict(dict(cluster_after=1), 2)
    with pytest.raises(ValueError, match=r'tokens must be \[B, 1 \+ 6x7, C\]'):
        eng(torch.randn(1, 42, 8), (6, 7), opts)
    with pytest.raises(ValueError, match='num_prefix_tokens=-1'):
        ReductionEngine(_toy_layer, num_layers=2, num_prefix_tokens=-1, out_indices=(1,))
    with pytest.raises(ValueError, match='num_layers=0'):
        ReductionEngine(_toy_layer, num_layers=0, num_prefix_tokens=0, out_indices=())


# ----------------------------------------------------------------------------
# measurement toolkit


def test_timer_interleaves_and_validates():
    calls = []
    t = time_interleaved({'a': lambda: calls.append('a'), 'b': lambda: calls.append('b')}, 1, 3)
    assert calls == ['a', 'b'] * 4  # warm-up round, then 3 interleaved repetitions
    assert len(t['a'].times) == 3 and t['a'].min <= t['a'].median <= t['a'].max
    r = t['a'].ratio_to(t['b'])
    assert r['min'] <= r['max']
    with pytest.raises(ValueError, match='repeats=0'):
        time_interleaved({'a': lambda: None}, 1, 0)


def test_one_table_writer(tmp_path):
    rows = [dict(name='x', v=1.2345), dict(name='y', v=None)]
    cols = [('name', 'model'), ('v', 'speed-up', '.2f}x')]
    assert markdown_table(rows, cols) == '| model | speed-up |\n|---|---|\n| x | 1.23x |\n| y |  |'
    md = write_table(rows, cols, md_path=str(tmp_path / 't.md'), csv_path=str(tmp_path / 't.csv'))
    assert (tmp_path / 't.md').read_text() == md
    assert (tmp_path / 't.csv').read_text().splitlines() == ['model,speed-up', 'x,1.23x', 'y,']


# ----------------------------------------------------------------------------
# ToMe as its users run it: merging before every layer


def test_tome_layers_schedule_reaches_m_at_the_last_layer():
    o = AiluRusOptions.from_dict(dict(method='tome_layers', cluster_after=0, keep_ratio=0.25), 4)
    assert o.layer_merges((8, 12)) == [18, 18, 18, 18]
    assert o.token_counts((8, 12), num_prefix_tokens=1) == [79, 61, 43, 25]
    assert o.num_kept((8, 12)) == 24
    with pytest.raises(ValueError, match="reconstruct='hard'"):
        o.replace(reconstruct='residual')


def test_tome_layers_one_step_equals_one_shot_tome():
    hw, c = (6, 7), 16
    x = torch.randn(2, 1 + 42, c, generator=torch.Generator().manual_seed(5))
    eng = ReductionEngine(_toy_layer, num_layers=3, num_prefix_tokens=1, out_indices=(2,))
    base = dict(cluster_after=2, keep_ratio=0.6)
    once = eng(x, hw, AiluRusOptions.from_dict(dict(base, method='tome'), 3))
    layered = eng(x, hw, AiluRusOptions.from_dict(dict(base, method='tome_layers'), 3))
    assert torch.equal(once.assignment.labels, layered.assignment.labels)
    assert torch.allclose(once.outs[0], layered.outs[0], atol=1e-5)


def test_tome_layers_in_the_backbone():
    m = build(dict(method='tome_layers', cluster_after=0, keep_ratio=0.25))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        res = m.forward_tokens(x)
        outs = m(x)
    a = res.assignment
    assert a.num_clusters == 24 and bool((a.sizes.sum(1) == 96).all())
    assert [tuple(o.shape) for o in outs] == [(2, 48, 8, 12)] * 3
    # every group is constant over its cells at every output (unmerged by copying)
    o = outs[2].flatten(2).transpose(1, 2)
    same = o.gather(1, a.anchors[..., None].expand(-1, -1, 48)).gather(
        1, a.labels[..., None].expand(-1, -1, 48)
    )
    assert torch.equal(o, same)


# ----------------------------------------------------------------------------
# reconstruction


def _blocks(seed=7):
    from ailurus_mm.ops import cluster_tokens

    x = torch.randn(2, 42, 16, generator=torch.Generator().manual_seed(seed))
    a = cluster_tokens(x, (6, 7), 0.5)
    return x, a


def test_residual_reconstruction_keeps_detail_and_unchanged_is_identity():
    from ailurus_mm.ops import merge_tokens
    from ailurus_mm.ops.reconstruct import reconstruct_tokens

    x, a = _blocks()
    m = merge_tokens(x, a)
    # no change since the merge: every token gets exactly its own input back
    assert torch.allclose(reconstruct_tokens(m, a, 'residual', x, m), x, atol=1e-6)
    shift = torch.randn(2, 1, 16)
    out = reconstruct_tokens(m + shift, a, 'residual', x, m)
    assert torch.allclose(out, x + shift, atol=1e-5)
    with pytest.raises(ValueError, match="mode='residual' needs x and merged"):
        reconstruct_tokens(m, a, 'residual')
    with pytest.raises(ValueError, match="mode='blend'"):
        reconstruct_tokens(m, a, 'blend')


def test_soft_weights_are_windowed_normalised_and_sharpen_to_hard():
    from ailurus_mm.ops import merge_tokens, unfold_tokens
    from ailurus_mm.ops.reconstruct import reconstruct_tokens, soft_weights

    x, a = _blocks()
    m = merge_tokens(x, a)
    w = soft_weights(m.gather(1, a.labels[..., None].expand(-1, -1, 16)), m, a, topk=3)
    assert w.clusters.shape == w.weights.shape == (2, 42, 3)
    assert torch.allclose(w.weights.sum(-1), torch.ones(2, 42))
    # candidates come from the 3x3 window: each is the cluster of a grid neighbour
    from ailurus_mm.ops.window import neighbour_index, window_offsets

    idx, valid = neighbour_index(6, 7, window_offsets(1, 'cpu'))
    near = a.labels[:, idx].masked_fill(~valid[None], -1)
    assert bool((w.clusters[..., :, None] == near[..., None, :]).any(-1).all())
    # a token equal to its cluster's merged input, at a tiny temperature: hard unfold
    sharp = soft_weights(unfold_tokens(m, a), m, a, topk=1, temperature=1e-3)
    assert torch.equal(sharp.clusters[..., 0], a.labels)
    y = torch.randn(2, a.num_clusters, 16)
    assert torch.allclose(reconstruct_tokens(y, a, 'soft', weights=sharp), unfold_tokens(y, a))
    with pytest.raises(ValueError, match=r'topk=10 .*\[1, 9\]'):
        soft_weights(x, m, a, topk=10)
    with pytest.raises(ValueError, match='temperature=0'):
        soft_weights(x, m, a, temperature=0)


@pytest.mark.parametrize('hw', [(6, 7), (9, 9), (5, 1), (1, 6)])
@pytest.mark.parametrize('topk', [1, 3, 9])
def test_soft_weights_match_their_definition(hw, topk):
    """Each token's top-k distinct clusters of its 3x3 window by cosine
    similarity to the clusters' merged inputs, softmax of cos / T: written
    per token (a test may loop), the vectorised numbers."""
    from ailurus_mm.ops import merge_tokens
    from ailurus_mm.ops.reconstruct import soft_weights

    h, w = hw
    x = torch.randn(2, h * w, 16, generator=torch.Generator().manual_seed(31))
    a = reduce_tokens(x, hw, 0.5, method='random')
    m = merge_tokens(x, a)
    got = soft_weights(x, m, a, topk=topk, temperature=0.1)
    for bi in range(2):
        for i in range(h * w):
            y, xx = divmod(i, w)
            cands = []
            for dy, dx in [(0, 0)] + [(u, v) for u in (-1, 0, 1) for v in (-1, 0, 1) if (u, v) != (0, 0)]:
                if 0 <= y + dy < h and 0 <= xx + dx < w:
                    c = int(a.labels[bi, (y + dy) * w + xx + dx])
                    if c not in cands:
                        cands.append(c)
            cos = torch.stack([F.cosine_similarity(x[bi, i], m[bi, c], dim=0) for c in cands])
            k = min(topk, len(cands))
            top, order = cos.topk(k)
            want = dict(zip([cands[j] for j in order.tolist()], torch.softmax(top / 0.1, 0).tolist()))
            pairs = zip(got.clusters[bi, i].tolist(), got.weights[bi, i].tolist())
            have = {c: v for c, v in pairs if v > 0}  # unused slots: weight 0
            assert set(have) == set(want)
            assert all(abs(have[c] - want[c]) < 1e-5 for c in want)


@pytest.mark.parametrize(
    'over, match',
    [
        (dict(reconstruct='blend'), "ailurus.reconstruct='blend'"),
        (dict(soft_topk=0), r'ailurus.soft_topk=0 .*\[1, 9\]'),
        (dict(soft_temperature=0.0), r'ailurus.soft_temperature=0.0 .*> 0'),
        (dict(refine_layers=3, cluster_after=1), r'ailurus.refine_layers=3 .*\[0, 2\]'),
        (dict(distance='cosine'), "ailurus.distance='cosine'"),
        (dict(fast_attn='yes'), "ailurus.fast_attn='yes'"),
        (dict(method='tome_layers', refine_layers=1), 'refine_layers=1'),
    ],
)
def test_invalid_reconstruction_options(over, match):
    with pytest.raises(ValueError, match=match):
        AiluRusOptions.from_dict(over, 4)


def test_refine_with_hard_unfold_is_the_merged_run():
    # duplicated tokens attend like one token with the log-size bias: running the
    # last layer at full resolution on hard-unfolded tokens changes nothing
    m = build(dict(cluster_after=1, keep_ratio=0.4))
    x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(8))
    with torch.no_grad():
        a = m.forward_tokens(x)
        b = m.forward_tokens(x, m.options.replace(refine_layers=1))
        c = m.forward_tokens(x, m.options.replace(refine_layers=1, reconstruct='soft_residual'))
    assert torch.allclose(a.outs[-1], b.outs[-1], atol=1e-4)
    assert not torch.allclose(a.outs[-1], c.outs[-1], atol=1e-3)


# ----------------------------------------------------------------------------
# the second clustering stage


def _block_mean(t: torch.Tensor, hw, s: int) -> torch.Tensor:
    """``[B, H*W, C]`` -> ``[B, (H/s)*(W/s), C]``: means of ``s x s`` blocks."""
    b, _, c = t.shape
    g = t.transpose(1, 2).reshape(b, c, hw[0], hw[1])
    return F.avg_pool2d(g, s).flatten(2).transpose(1, 2)


def _block_copy(t: torch.Tensor, hw, s: int) -> torch.Tensor:
    """The inverse layout: every cell copies its ``s x s`` block's token."""
    b, _, c = t.shape
    g = t.transpose(1, 2).reshape(b, c, hw[0] // s, hw[1] // s)
    return g.repeat_interleave(s, 2).repeat_interleave(s, 3).flatten(2).transpose(1, 2)


def test_second_stage_of_nested_pooling_is_the_manual_composition():
    """2x2 pooling after layer 1, then 4x4 blocks of the reconstructed grid
    after layer 2: written out by hand (block means, log-size bias, block
    copies), the engine's numbers."""
    hw, c, p = (8, 12), 16, 1
    x = torch.randn(2, p + 96, c, generator=torch.Generator().manual_seed(11))
    eng = ReductionEngine(_toy_layer, num_layers=4, num_prefix_tokens=p, out_indices=(1, 3))
    opts = AiluRusOptions.from_dict(
        dict(cluster_after=1, keep_ratio=0.25, method='pool', second_after=2,
             second_keep_ratio=1 / 16), 4,
    )  # fmt: skip
    res = eng(x, hw, opts)

    def bias(size, m):
        return torch.cat([torch.zeros(2, p), torch.full((2, m), float(size)).log()], 1)[:, None, None]

    y = _toy_layer(0, x, None, True)
    y = torch.cat([y[:, :p], _block_mean(y[:, p:], hw, 2)], 1)
    y = _toy_layer(1, y, bias(4, 24), True)
    out1 = torch.cat([y[:, :p], _block_copy(y[:, p:], hw, 2)], 1)
    y = torch.cat([y[:, :p], _block_mean(out1[:, p:], hw, 4)], 1)
    for i in (2, 3):
        y = _toy_layer(i, y, bias(16, 6), True)
    out3 = torch.cat([y[:, :p], _block_copy(y[:, p:], hw, 4)], 1)
    assert torch.allclose(res.outs[0], out1, atol=1e-5)
    assert torch.allclose(res.outs[1], out3, atol=1e-5)
    assert res.assignment.num_clusters == 6  # the second stage's grouping


def _counting_layer(seen: list):
    """:func:`_toy_layer` that records each call's sequence length in ``seen``."""

    def layer(i, x, bias, fused):
        seen.append(x.shape[1])
        return _toy_layer(i, x, bias, fused)

    return layer


@pytest.mark.parametrize('hw', [(8, 12), (9, 9)])
@pytest.mark.parametrize('method', ['adjacent', 'random'])
@pytest.mark.parametrize('reconstruct', ['hard', 'soft_residual'])
def test_second_stage_token_counts_and_outputs(hw, method, reconstruct):
    seen = []
    layer = _counting_layer(seen)
    n = hw[0] * hw[1]
    x = torch.randn(2, 1 + n, 16, generator=torch.Generator().manual_seed(12))
    eng = ReductionEngine(layer, num_layers=6, num_prefix_tokens=1, out_indices=(2, 5))
    opts = AiluRusOptions.from_dict(
        dict(cluster_after=1, keep_ratio=0.6, second_after=3, second_keep_ratio=0.3,
             method=method, reconstruct=reconstruct), 6,
    )  # fmt: skip
    res = eng(x, hw, opts)
    m1, ((_, m2),) = opts.num_kept(hw), opts.later_stage_plan(hw)
    assert m2 < m1 < n
    assert seen == opts.token_counts(hw, 1) == [1 + n] + [1 + m1] * 2 + [1 + m2] * 3
    assert [tuple(o.shape) for o in res.outs] == [(2, 1 + n, 16)] * 2
    assert res.assignment.num_clusters == m2
    assert bool((res.assignment.sizes.sum(1) == n).all())
    # the first stage's output (layer 2) is the one-stage run's; the last is not
    one = eng(x, hw, opts.replace(second_after=None, second_keep_ratio=None))
    assert torch.equal(res.outs[0], one.outs[0])
    assert not torch.allclose(res.outs[1], one.outs[1])
    again = eng(x, hw, opts)
    assert all(torch.equal(a, b) for a, b in zip(res.outs, again.outs))


def test_second_stage_in_the_backbone_prefix_cache_and_logits_level():
    m = build(dict(cluster_after=1, keep_ratio=0.5, second_after=2, second_keep_ratio=0.25))
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(13))
    with torch.no_grad():
        direct = m.forward_tokens(x)
        cached = m.forward_from_prefix(m.forward_prefix(x), m.options)
        merged = m.forward_tokens(x, m.options.replace(reconstruct_level='logits'))
    assert all(torch.equal(a, b) for a, b in zip(direct.outs, cached.outs))
    assert m.token_counts((8, 12)) == [1 + 96, 1 + 48, 1 + 24, 1 + 24]
    # logits level: the last output stays as the second stage's 24 tokens; the
    # first stage's (layer 1) is reconstructed, as one unfold serves the merged ones
    assert merged.num_merged == 1 and merged.outs[-1].shape[1] == 1 + 24
    assert merged.outs[1].shape[1] == 1 + 96 and torch.equal(merged.outs[1], direct.outs[1])
    assert merged.unfold(merged.outs[-1][:, 1:]).shape == (2, 96, 48)


@pytest.mark.parametrize(
    'over, match',
    [
        (dict(second_after=3), 'second_after and second_keep_ratio go together'),
        (dict(second_keep_ratio=0.1), 'second_after and second_keep_ratio go together'),
        (dict(cluster_after=1, second_after=1, second_keep_ratio=0.1),
         r'ailurus.second_after=1 .*\[2, 3\]'),
        (dict(second_after=4, second_keep_ratio=0.1), r'ailurus.second_after=4 .*\[3, 3\]'),
        (dict(cluster_after=1, second_after=3, second_keep_ratio=0.1, refine_layers=1),
         r'ailurus.second_after=3 .*\[2, 2\]'),
        (dict(second_after=3, second_keep_ratio=0.0), r'second_keep_ratio=0.0 .*\(0, 1\]'),
        (dict(keep_ratio=0.4, second_after=3, second_keep_ratio=0.4),
         r'second_keep_ratio=0.4 .*\(0, keep_ratio=0.4\)'),
        (dict(second_after=3.0, second_keep_ratio=0.1), 'ailurus.second_after=3.0'),
        (dict(cluster_after=0, method='tome_layers', second_after=3, second_keep_ratio=0.1),
         "method='tome_layers' merges before every layer"),
    ],
)  # fmt: skip
def test_invalid_second_stage_options(over, match):
    with pytest.raises(ValueError, match=match):
        AiluRusOptions.from_dict(over, 4)


def test_second_stage_must_be_coarser_on_the_grid():
    # with a fixed num_clusters the comparison needs the grid
    o = AiluRusOptions.from_dict(
        dict(keep_ratio=None, num_clusters=10, second_after=3, second_keep_ratio=0.7), 4
    )
    with pytest.raises(ValueError, match=r'second_keep_ratio=0.7 keeps 11 of the 16 .*first stage\'s 10'):
        o.later_stage_plan((4, 4))
    assert AiluRusOptions.from_dict({}, 4).later_stage_plan((4, 4)) == []


def test_third_stage_of_nested_pooling_is_the_manual_composition():
    """Three pooling stages (2x2 after layer 0, 4x4 after layer 1, 8x8 after
    layer 3) written out by hand: the engine's numbers, on an unbalanced grid."""
    hw, c, p = (8, 16), 16, 1
    x = torch.randn(2, p + 128, c, generator=torch.Generator().manual_seed(21))
    eng = ReductionEngine(_toy_layer, num_layers=5, num_prefix_tokens=p, out_indices=(0, 2, 4))
    opts = AiluRusOptions.from_dict(
        dict(cluster_after=0, keep_ratio=0.25, method='pool', second_after=[1, 3],
             second_keep_ratio=[1 / 16, 1 / 64]), 5,
    )  # fmt: skip
    assert opts.second_after == (1, 3) and opts.second_keep_ratio == (1 / 16, 1 / 64)
    assert opts.later_stage_plan(hw) == [(1, 8), (3, 2)]
    res = eng(x, hw, opts)

    def bias(size, m):
        return torch.cat([torch.zeros(2, p), torch.full((2, m), float(size)).log()], 1)[:, None, None]

    y = torch.cat([x[:, :p], _block_mean(x[:, p:], hw, 2)], 1)
    y = _toy_layer(0, y, bias(4, 32), True)
    out0 = torch.cat([y[:, :p], _block_copy(y[:, p:], hw, 2)], 1)
    y = torch.cat([y[:, :p], _block_mean(out0[:, p:], hw, 4)], 1)
    for i in (1, 2):
        y = _toy_layer(i, y, bias(16, 8), True)
    out2 = torch.cat([y[:, :p], _block_copy(y[:, p:], hw, 4)], 1)
    y = torch.cat([y[:, :p], _block_mean(out2[:, p:], hw, 8)], 1)
    for i in (3, 4):
        y = _toy_layer(i, y, bias(64, 2), True)
    out4 = torch.cat([y[:, :p], _block_copy(y[:, p:], hw, 8)], 1)
    for got, want in zip(res.outs, (out0, out2, out4)):
        assert torch.allclose(got, want, atol=1e-5)
    assert res.assignment.num_clusters == 2  # the last stage's grouping


@pytest.mark.parametrize('hw', [(8, 12), (9, 9)])
@pytest.mark.parametrize('method', ['adjacent', 'random'])
def test_later_stages_as_a_sequence(hw, method):
    """One stage given as a sequence is the scalar form bit for bit; three
    stages run the counts the options state, and the prefix of a
    three-stage run is the two-stage run's."""
    seen = []
    layer = _counting_layer(seen)
    n = hw[0] * hw[1]
    x = torch.randn(2, 1 + n, 16, generator=torch.Generator().manual_seed(22))
    eng = ReductionEngine(layer, num_layers=6, num_prefix_tokens=1, out_indices=(2, 3, 5))
    base = dict(cluster_after=1, keep_ratio=0.7, method=method, reconstruct='soft_residual')
    scalar = AiluRusOptions.from_dict(dict(base, second_after=3, second_keep_ratio=0.4), 6)
    single = AiluRusOptions.from_dict(dict(base, second_after=(3,), second_keep_ratio=[0.4]), 6)
    three = AiluRusOptions.from_dict(
        dict(base, second_after=[3, 4], second_keep_ratio=[0.4, 0.2]), 6
    )
    a, b = eng(x, hw, scalar), eng(x, hw, single)
    assert all(torch.equal(u, v) for u, v in zip(a.outs, b.outs))
    assert single.token_counts(hw) == scalar.token_counts(hw)
    seen.clear()
    res = eng(x, hw, three)
    m1, (_, m2), (_, m3) = three.num_kept(hw), *three.later_stage_plan(hw)
    assert m3 < m2 < m1 < n
    assert seen == three.token_counts(hw, 1) == [1 + n] + [1 + m1] * 2 + [1 + m2] + [1 + m3] * 2
    assert res.assignment.num_clusters == m3
    assert bool((res.assignment.sizes.sum(1) == n).all())
    assert torch.equal(res.outs[0], a.outs[0]) and torch.equal(res.outs[1], a.outs[1])
    assert not torch.allclose(res.outs[2], a.outs[2])
    merged = eng(x, hw, three.replace(reconstruct='soft', reconstruct_level='logits'))
    assert merged.num_merged == 1 and merged.outs[-1].shape[1] == 1 + m3
    assert [o.shape[1] for o in merged.outs[:2]] == [1 + n] * 2


@pytest.mark.parametrize(
    'over, match',
    [
        (dict(second_after=[2, 3], second_keep_ratio=0.1), 'both numbers .* or both non-empty'),
        (dict(second_after=[2, 3], second_keep_ratio=[0.2]), 'same length'),
        (dict(second_after=[], second_keep_ratio=[]), 'non-empty'),
        (dict(second_after=[3, 3], second_keep_ratio=[0.2, 0.1]),
         r'ailurus.second_after\[1\]=3 .*\[4, 3\]'),
        (dict(second_after=[3, 2], second_keep_ratio=[0.2, 0.1]),
         r'ailurus.second_after\[1\]=2 .*\[4, 3\]'),
        (dict(keep_ratio=0.4, second_after=[2, 3], second_keep_ratio=[0.2, 0.3]),
         r'second_keep_ratio\[1\]=0.3 .*\(0, second_keep_ratio\[0\]=0.2\)'),
        (dict(keep_ratio=0.4, second_after=[2, 3], second_keep_ratio=[0.5, 0.3]),
         r'second_keep_ratio\[0\]=0.5 .*\(0, keep_ratio=0.4\)'),
        (dict(second_after=[2, 3], second_keep_ratio=[0.2, 0.0]),
         r'second_keep_ratio\[1\]=0.0 .*\(0, 1\]'),
        (dict(second_after=[2, 3.5], second_keep_ratio=[0.2, 0.1]), r'second_after\[1\]=3.5'),
    ],
)  # fmt: skip
def test_invalid_later_stages(over, match):
    with pytest.raises(ValueError, match=match):
        AiluRusOptions.from_dict(dict(cluster_after=1, **over), 4)


def test_later_stages_must_be_coarser_on_the_grid():
    o = AiluRusOptions.from_dict(
        dict(cluster_after=0, keep_ratio=None, num_clusters=12, second_after=[1, 2],
             second_keep_ratio=[0.5, 0.49]), 4,
    )  # fmt: skip
    with pytest.raises(ValueError, match=r"second_keep_ratio\[1\]=0.49 keeps 8 of the 16 .*stage before it's 8"):
        o.later_stage_plan((4, 4))
