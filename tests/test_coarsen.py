"""Later stages that merge the clusters of the stage before (``ops.coarsen``)."""

import math

import pytest
import torch

from ailurus_mm.ops import (
    AiluRusOptions,
    ClusterAssignment,
    ReductionEngine,
    assignment_from_groups,
    coarsen_assignment,
    merge_tokens,
    reduce_tokens,
)


def _singletons(b: int, hw) -> ClusterAssignment:
    n = hw[0] * hw[1]
    return assignment_from_groups(torch.arange(n).expand(b, n), hw)


def _smooth_tokens(b, hw, c=16, seed=0):
    """Piecewise-smooth features: a coarse random field upsampled, plus noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(b, c, max(1, hw[0] // 3), max(1, hw[1] // 3), generator=g)
    x = torch.nn.functional.interpolate(base, size=hw, mode='nearest')
    x = x.flatten(2).transpose(1, 2)
    return x + 0.1 * torch.randn(b, hw[0] * hw[1], c, generator=g)


def _assert_nested(fine: ClusterAssignment, coarse: ClusterAssignment):
    """Every fine cluster lies inside one coarse cluster."""
    b, m = fine.anchors.shape
    owner = torch.full((b, m), -1, dtype=torch.long)
    owner.scatter_(1, fine.labels, coarse.labels)  # any member's coarse id
    assert torch.equal(owner.gather(1, fine.labels), coarse.labels)


def test_the_rule_on_a_strip_written_out():
    """1x4 strip, one token per cluster, features 0, 0.1, 5, 5.05: densities
    from the mean boundary distance make tokens 0 and 3 the peaks, token 1
    links to 0 (cost 0.01) and token 2 to 3 (cost 0.0025); the cheapest
    links are kept first, and a second round merges the two pairs."""
    y = torch.tensor([0.0, 0.1, 5.0, 5.05])[None, :, None]
    a = _singletons(1, (1, 4))
    assert coarsen_assignment(y, a, 4) is a
    assert coarsen_assignment(y, a, 3).labels.tolist() == [[0, 1, 2, 2]]
    assert coarsen_assignment(y, a, 2).labels.tolist() == [[0, 0, 1, 1]]
    assert coarsen_assignment(y, a, 1).labels.tolist() == [[0, 0, 0, 0]]


def test_merges_only_adjacent_clusters():
    """Two equal features far apart on the grid never merge with each other
    before their neighbours do: adjacency comes from the grid, not features."""
    hw = (1, 5)
    y = torch.tensor([1.0, 9.0, 8.0, 9.5, 1.0])[None, :, None]
    out = coarsen_assignment(y, _singletons(1, hw), 4).labels[0].tolist()
    assert out[0] != out[4]
    assert out[1:4].count(out[2]) == 2  # 8.0 joined one of its neighbours


@pytest.mark.parametrize('hw', [(6, 6), (5, 11), (1, 9), (9, 1)])
@pytest.mark.parametrize('randomize', [False, True])
@pytest.mark.parametrize('ratio', [0.6, 0.3, 0.05])
def test_exact_budget_nested_and_batch_independent(hw, randomize, ratio):
    x = _smooth_tokens(3, hw)
    fine = reduce_tokens(x, hw, 0.8, method='adjacent')
    y = merge_tokens(x, fine)
    m2 = max(1, math.floor(ratio * hw[0] * hw[1]))
    coarse = coarsen_assignment(y, fine, m2, randomize=randomize)
    assert coarse.num_clusters == m2
    assert bool((coarse.sizes.sum(1) == hw[0] * hw[1]).all())
    _assert_nested(fine, coarse)
    # an image's result does not depend on the rest of its batch
    for i in range(3):
        one = ClusterAssignment(
            fine.labels[i : i + 1], fine.anchors[i : i + 1], fine.sizes[i : i + 1], fine.hw
        )
        alone = coarsen_assignment(y[i : i + 1], one, m2, randomize=randomize)
        assert torch.equal(alone.labels, coarse.labels[i : i + 1])
    again = coarsen_assignment(y, fine, m2, randomize=randomize)
    assert torch.equal(again.labels, coarse.labels)


def test_clusters_outgrow_one_window_in_flat_regions():
    """A flat half of the grid ends up as one cluster, which a 3x3 star of the
    grid re-clustering can never be; the detailed half keeps its tokens."""
    hw = (6, 12)
    g = torch.Generator().manual_seed(3)
    x = torch.zeros(1, 72, 8)
    detail = torch.randn(1, 6, 6, 8, generator=g) * 5
    x.view(1, 6, 12, 8)[:, :, 6:] = detail
    fine = _singletons(1, hw)
    coarse = coarsen_assignment(x, fine, 37)  # 36 detailed tokens + 1
    flat = coarse.labels.view(6, 12)[:, :6]
    assert bool((flat == flat[0, 0]).all())
    assert coarse.sizes.max() == 36


def test_random_twin_is_seeded_and_differs():
    hw = (8, 8)
    x = _smooth_tokens(1, hw, seed=4)
    fine = reduce_tokens(x, hw, 0.7, method='adjacent')
    y = merge_tokens(x, fine)
    r0 = coarsen_assignment(y, fine, 16, randomize=True, seed=0)
    r0b = coarsen_assignment(y, fine, 16, randomize=True, seed=0)
    r1 = coarsen_assignment(y, fine, 16, randomize=True, seed=1)
    ail = coarsen_assignment(y, fine, 16)
    assert torch.equal(r0.labels, r0b.labels)
    assert not torch.equal(r0.labels, r1.labels)
    assert not torch.equal(r0.labels, ail.labels)


def test_coarsen_rejects_bad_arguments():
    a = _singletons(2, (3, 4))
    y = torch.randn(2, 12, 4)
    with pytest.raises(ValueError, match=r'num_clusters=0 .*an int \[1, 12\]'):
        coarsen_assignment(y, a, 0)
    with pytest.raises(ValueError, match=r'num_clusters=13 .*\[1, 12\]'):
        coarsen_assignment(y, a, 13)
    with pytest.raises(ValueError, match=r'y must be \[B=2, M=12, C\]'):
        coarsen_assignment(y[:, :11], a, 5)
    with pytest.raises(ValueError, match='assignment must be a ClusterAssignment'):
        coarsen_assignment(y, a.labels, 5)


# ----------------------------------------------------------------------------
# in the engine


def _toy_layer(i, x, bias, fused):
    w = torch.linspace(-1, 1, x.shape[-1])
    att = x @ x.transpose(1, 2) / x.shape[-1] ** 0.5
    if bias is not None:
        att = att + bias[:, 0]
    return x + 0.5 * torch.tanh(att.softmax(-1) @ x * w + i)


@pytest.mark.parametrize('hw', [(8, 12), (9, 9)])
@pytest.mark.parametrize('method', ['adjacent', 'random'])
def test_engine_stages_nest_and_count(hw, method):
    n = hw[0] * hw[1]
    seen = []

    def layer(i, x, bias, fused):
        seen.append(x.shape[1])
        return _toy_layer(i, x, bias, fused)

    x = torch.randn(2, 1 + n, 16, generator=torch.Generator().manual_seed(5))
    eng = ReductionEngine(layer, num_layers=6, num_prefix_tokens=1, out_indices=(2, 5))
    base = dict(cluster_after=1, keep_ratio=0.7, method=method, reconstruct='soft_residual')
    nested = AiluRusOptions.from_dict(
        dict(base, second_after=[3, 4], second_keep_ratio=[0.35, 0.15],
             stage_clustering='clusters'), 6,
    )  # fmt: skip
    res = eng(x, hw, nested)
    assert seen == nested.token_counts(hw, 1)
    m3 = nested.later_stage_plan(hw)[-1][1]
    assert res.assignment.num_clusters == m3
    one = eng(x, hw, AiluRusOptions.from_dict(base, 6))
    _assert_nested(one.assignment, res.assignment)
    grid = eng(x, hw, nested.replace(stage_clustering='grid'))
    assert torch.equal(res.outs[0], grid.outs[0])  # the first stage is shared
    assert not torch.equal(res.assignment.labels, grid.assignment.labels)
    again = eng(x, hw, nested)
    assert all(torch.equal(u, v) for u, v in zip(res.outs, again.outs))


@pytest.mark.parametrize(
    'over, match',
    [
        (dict(stage_clustering='tree'),
         r"ailurus.stage_clustering='tree' .*\('grid', 'clusters'\)"),
        (dict(stage_clustering='clusters'), 'give them with second_after'),
        (dict(stage_clustering='clusters', method='dpc', second_after=3, second_keep_ratio=0.1),
         "'adjacent' or its random twin 'random', got method='dpc'"),
        (dict(stage_clustering='clusters', method='pool', second_after=3, second_keep_ratio=0.1),
         "got method='pool'"),
        (dict(stage_clustering='clusters', method='tome', second_after=3, second_keep_ratio=0.1),
         "got method='tome'"),
    ],
)  # fmt: skip
def test_invalid_stage_clustering(over, match):
    with pytest.raises(ValueError, match=match):
        AiluRusOptions.from_dict(dict(cluster_after=1, **over), 4)


def test_backbone_runs_traces_and_caches_with_nested_stages():
    """In the mmseg backbone: the prefix cache gives the direct numbers, and
    mmengine's FLOP counter (a jit trace) runs through the nested stages and
    counts what the grid mode with the same token counts counts."""
    from mmseg.registry import MODELS

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import count_flops

    ail = dict(cluster_after=1, keep_ratio=0.6, second_after=[2, 3],
               second_keep_ratio=[0.3, 0.15], method='adjacent',
               reconstruct='soft_residual', stage_clustering='clusters')  # fmt: skip
    torch.manual_seed(0)
    m = MODELS.build(
        dict(type='AiluRusVisionTransformer', img_size=(64, 96), patch_size=8, embed_dims=48,
             num_layers=4, num_heads=3, final_norm=True, out_indices=(0, 1, 3),
             norm_cfg=dict(type='LN', eps=1e-6), ailurus=ail)  # fmt: skip
    ).eval()
    x = torch.randn(2, 3, 64, 96, generator=torch.Generator().manual_seed(9))
    with torch.no_grad():
        direct = m.forward_tokens(x)
        cached = m.forward_from_prefix(m.forward_prefix(x), m.options)
    assert all(torch.equal(a, b) for a, b in zip(direct.outs, cached.outs))
    nested = count_flops(m, x[:1], m)
    with m.options_override(stage_clustering='grid'):
        grid = count_flops(m, x[:1], m)
    with m.options_override(enabled=False):
        stock = count_flops(m, x[:1], m)
    assert nested < stock and abs(nested - grid) / grid < 0.05
