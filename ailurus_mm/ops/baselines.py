"""Baseline token reductions at a given token budget, as cluster assignments.

They share :class:`ClusterAssignment` with AiluRus, so merging, size-aware
attention and unfolding are the same code for every method and a comparison
measures only how the tokens were grouped:

* ``pool``: regular ``s x s`` blocks (``s = round(sqrt(N / M))``; the block
  grid sets M, partial blocks at the right/bottom border).
* ``random``: seeded random anchors, each token to the feature-nearest anchor
  in its assignment window (the dpc machinery with random scores).
* ``tome``: ToMe-style bipartite soft matching on cosine similarity of the
  features, repeated until M tokens are left (one ToMe step can at most
  halve the sequence); merged features are size-weighted.

:func:`reduce_tokens` dispatches by method name, AiluRus readings included.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .cluster import (
    CLUSTER_METHODS,
    DEFAULT_OPTIONS,
    ClusterAssignment,
    _check_inputs,
    assignment_from_labels,
    cluster_tokens,
    resolve_num_clusters,
)

__all__ = [
    'BASELINE_METHODS',
    'REDUCTION_METHODS',
    'assignment_from_groups',
    'pool_assignment',
    'random_assignment',
    'tome_assignment',
    'reduce_tokens',
    'pool_stride',
]

BASELINE_METHODS = ('pool', 'random', 'tome')
REDUCTION_METHODS = CLUSTER_METHODS + BASELINE_METHODS


def assignment_from_groups(groups: Tensor, hw: Sequence[int]) -> ClusterAssignment:
    """Canonical assignment from arbitrary group ids.

    Every group's anchor is its lowest token index and clusters are numbered
    in the raster order of their anchors.

    Args:
        groups (Tensor): ``[B, N]`` int64 group ids in ``[0, G)``; every image
            must use exactly the same number M of distinct ids.
        hw (Sequence[int]): the grid ``(H, W)``.
    """
    b, n = groups.shape
    ar = torch.arange(n, device=groups.device)
    g = int(groups.max()) + 1
    first = torch.full((b, g), n, dtype=torch.long, device=groups.device)
    first.scatter_reduce_(1, groups, ar.expand(b, n), reduce='amin')
    used = first < n
    m = int(used.sum(1)[0])
    if not bool((used.sum(1) == m).all()):
        raise ValueError('every image must have the same number of groups')
    anchors = torch.sort(first, dim=1).values[:, :m]
    root = first.gather(1, groups)  # anchor of every token
    is_anchor = torch.zeros(b, n, dtype=torch.long, device=groups.device)
    is_anchor.scatter_(1, anchors, 1)
    cid = torch.cumsum(is_anchor, 1) - 1
    return assignment_from_labels(cid.gather(1, root), anchors, tuple(hw))


def pool_stride(num_clusters: Union[int, float], num_tokens: int) -> int:
    """Block side ``s`` that ``pool`` uses for a requested budget."""
    m = resolve_num_clusters(num_clusters, num_tokens)
    return max(1, int(round(math.sqrt(num_tokens / m))))


def pool_assignment(x: Tensor, hw: Sequence[int], stride: int) -> ClusterAssignment:
    """Regular ``stride x stride`` blocks.

    Args:
        x (Tensor): ``[B, N, C]`` tokens (only the shape is used).
        hw (Sequence[int]): the grid.
        stride (int): block side, >= 1.
    """
    h, w = _check_inputs(x, hw)
    if isinstance(stride, bool) or not isinstance(stride, int) or stride < 1:
        raise ValueError(f'stride={stride!r} must be an int >= 1')
    yy = torch.arange(h, device=x.device).repeat_interleave(w)
    xx = torch.arange(w, device=x.device).repeat(h)
    groups = (yy // stride) * math.ceil(w / stride) + xx // stride
    return assignment_from_groups(groups.expand(x.shape[0], -1), (h, w))


def random_assignment(
    x: Tensor,
    hw: Sequence[int],
    num_clusters: Union[int, float],
    seed: int = 0,
    assign_radius: int = DEFAULT_OPTIONS['assign_radius'],
) -> ClusterAssignment:
    """Seeded random anchors (the same draw for every image of a batch), each
    token to the feature-nearest anchor within ``assign_radius``."""
    h, w = _check_inputs(x, hw)
    gen = torch.Generator().manual_seed(seed)
    score = torch.rand(h * w, generator=gen).to(x.device).expand(x.shape[0], -1)
    return cluster_tokens(
        x, (h, w), num_clusters, method='dpc', score=score, assign_radius=assign_radius
    )


@torch.no_grad()
def tome_assignment(
    x: Tensor, hw: Sequence[int], num_clusters: Union[int, float]
) -> ClusterAssignment:
    """ToMe-style bipartite soft matching, repeated until M groups are left.

    Each round splits the current groups alternately into sets A and B, links
    every A group to its most cosine-similar B group and merges the
    ``min(need, |A|)`` most similar links (ties: lower index first).
    """
    h, w = _check_inputs(x, hw)
    b, n, c = x.shape
    m = resolve_num_clusters(num_clusters, n)
    dev = x.device
    feats = x.detach().float()
    size = torch.ones(b, n, 1, device=dev)
    groups = torch.arange(n, device=dev).expand(b, n).clone()  # token -> current group
    cur = n
    while cur > m:
        a, bb = feats[:, ::2], feats[:, 1::2]
        na, nb = a.shape[1], bb.shape[1]
        r = min(cur - m, na)
        sim = F.normalize(a, dim=-1) @ F.normalize(bb, dim=-1).transpose(1, 2)
        best, dst = sim.max(-1)
        order = torch.sort(best, dim=1, descending=True, stable=True).indices
        merged, kept = order[:, :r], torch.sort(order[:, r:], dim=1).values
        # new group order: unmerged A groups, then B groups
        new_of_a = torch.empty(b, na, dtype=torch.long, device=dev)
        new_of_a.scatter_(1, kept, torch.arange(na - r, device=dev).expand(b, -1))
        new_of_a.scatter_(1, merged, dst.gather(1, merged) + (na - r))
        new_of_b = torch.arange(nb, device=dev).expand(b, nb) + (na - r)
        new_of_cur = (
            torch.stack([new_of_a, new_of_b], 2).reshape(b, -1)
            if na == nb
            else torch.cat(
                [torch.stack([new_of_a[:, :nb], new_of_b], 2).reshape(b, -1), new_of_a[:, nb:]], 1
            )
        )
        groups = new_of_cur.gather(1, groups)
        cur -= r
        wsum = torch.zeros(b, cur, 1, device=dev).scatter_add_(1, new_of_cur[..., None], size)
        fsum = torch.zeros(b, cur, c, device=dev).scatter_add_(
            1, new_of_cur[..., None].expand(-1, -1, c), feats * size
        )
        feats, size = fsum / wsum, wsum
    return assignment_from_groups(groups, (h, w))


def reduce_tokens(
    x: Tensor,
    hw: Sequence[int],
    num_clusters: Union[int, float],
    method: str = 'adjacent',
    seed: int = 0,
    **options,
) -> ClusterAssignment:
    """Any reduction by name: the AiluRus readings or a baseline.

    Args:
        x (Tensor): ``[B, N, C]`` patch tokens.
        hw (Sequence[int]): grid ``(H, W)``.
        num_clusters (int | float): M or keep ratio (``pool`` rounds it to a
            block side, see :func:`pool_stride`).
        method (str): one of :data:`REDUCTION_METHODS`. Default: 'adjacent'.
        seed (int): ``random`` only. Default: 0.
        **options: options of :func:`cluster_tokens`; each method takes the
            ones it uses (``random``: ``assign_radius``; ``pool``/``tome``:
            none), so one option set serves every method.
    """
    if method in CLUSTER_METHODS:
        return cluster_tokens(x, hw, num_clusters, method=method, **options)
    if method == 'random':
        return random_assignment(
            x,
            hw,
            num_clusters,
            seed=seed,
            assign_radius=options.get('assign_radius', DEFAULT_OPTIONS['assign_radius']),
        )
    if method == 'pool':
        return pool_assignment(x, hw, pool_stride(num_clusters, x.shape[1]))
    if method == 'tome':
        return tome_assignment(x, hw, num_clusters)
    raise ValueError(f'method={method!r} is not one of {REDUCTION_METHODS}')
