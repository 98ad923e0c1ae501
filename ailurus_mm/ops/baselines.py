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

:func:`ailurus_mm.ops.reduce_tokens` dispatches by method name, AiluRus readings
included.
"""

from __future__ import annotations

import math
from typing import Sequence, Union

import torch
import torch.nn.functional as F
from torch import Tensor

from .assignment import (
    ClusterAssignment,
    assignment_from_groups,
    check_tokens,
    resolve_num_clusters,
)
from .cluster import DEFAULT_OPTIONS, cluster_tokens

__all__ = [
    'BASELINE_METHODS',
    'pool_assignment',
    'pool_num_groups',
    'pool_stride',
    'random_assignment',
    'tome_assignment',
    'bipartite_soft_matching',
    'merge_by_ids',
]

BASELINE_METHODS = ('pool', 'random', 'tome')


def pool_stride(num_clusters: Union[int, float], num_tokens: int) -> int:
    """Block side ``s`` that ``pool`` uses for a requested budget."""
    m = resolve_num_clusters(num_clusters, num_tokens)
    return max(1, int(round(math.sqrt(num_tokens / m))))


def pool_num_groups(hw: Sequence[int], stride: int) -> int:
    """Number of ``stride x stride`` blocks (partial ones included) on a grid:
    the token count ``pool`` really leaves, which its block grid sets."""
    return math.ceil(hw[0] / stride) * math.ceil(hw[1] / stride)


def pool_assignment(x: Tensor, hw: Sequence[int], stride: int) -> ClusterAssignment:
    """Regular ``stride x stride`` blocks.

    Args:
        x (Tensor): ``[B, N, C]`` tokens (only the shape is used).
        hw (Sequence[int]): the grid.
        stride (int): block side, >= 1.
    """
    h, w = check_tokens(x, hw)
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
    h, w = check_tokens(x, hw)
    gen = torch.Generator().manual_seed(seed)
    score = torch.rand(h * w, generator=gen).to(x.device).expand(x.shape[0], -1)
    return cluster_tokens(
        x, (h, w), num_clusters, method='dpc', score=score, assign_radius=assign_radius
    )


@torch.no_grad()
def bipartite_soft_matching(metric: Tensor, r: int) -> Tensor:
    """One ToMe step: which of ``T`` tokens merge into which.

    The tokens are split alternately into sets A (even positions) and B (odd);
    every A token links to its most cosine-similar B token and the ``r`` most
    similar links are merged (ties: lower index first), as in ToMe's
    ``bipartite_soft_matching``.

    Args:
        metric (Tensor): ``[B, T, C]`` what is compared (ToMe: the keys).
        r (int): merges, in ``[0, ceil(T / 2)]`` (0 when ``T == 1``).

    Returns:
        Tensor: ``[B, T]`` int64 new ids in ``[0, T - r)``: the unmerged A
        tokens first (in order), then the B tokens.
    """
    b, t, _ = metric.shape
    na, nb = (t + 1) // 2, t // 2
    high = na if nb else 0
    if not isinstance(r, bool) and isinstance(r, (int, Tensor)):
        r = int(r)  # shapes are tensors while mmengine's FLOP counter traces
    if isinstance(r, bool) or not isinstance(r, int) or not 0 <= r <= high:
        raise ValueError(f'r={r!r} is outside the allowed range [0, {high}] for {t} tokens')
    dev = metric.device
    m = F.normalize(metric.float(), dim=-1)
    sim = m[:, ::2] @ m[:, 1::2].transpose(1, 2)
    best, dst = sim.max(-1)
    order = torch.sort(best, dim=1, descending=True, stable=True).indices
    merged, kept = order[:, :r], torch.sort(order[:, r:], dim=1).values
    new_of_a = torch.empty(b, na, dtype=torch.long, device=dev)
    new_of_a.scatter_(1, kept, torch.arange(na - r, device=dev).expand(b, -1))
    new_of_a.scatter_(1, merged, dst.gather(1, merged) + (na - r))
    new_of_b = torch.arange(nb, device=dev).expand(b, nb) + (na - r)
    pairs = torch.stack([new_of_a[:, :nb], new_of_b], 2).reshape(b, -1)
    return pairs if na == nb else torch.cat([pairs, new_of_a[:, nb:]], 1)


def merge_by_ids(x: Tensor, ids: Tensor, num: int, size: Tensor):
    """Size-weighted means of the tokens sharing an id, and the summed sizes.

    Args:
        x (Tensor): ``[B, T, C]``.
        ids (Tensor): ``[B, T]`` int64 in ``[0, num)``.
        num (int): number of ids.
        size (Tensor): ``[B, T, 1]`` sizes of the tokens.

    Returns:
        tuple[Tensor, Tensor]: ``[B, num, C]`` means and ``[B, num, 1]`` sizes.
    """
    b, _, c = x.shape
    wsum = size.new_zeros(b, num, 1).scatter_add(1, ids[..., None], size)
    fsum = x.new_zeros(b, num, c).scatter_add(
        1, ids[..., None].expand(-1, -1, c), x * size.to(x.dtype)
    )
    return fsum / wsum.to(x.dtype), wsum


@torch.no_grad()
def tome_assignment(
    x: Tensor, hw: Sequence[int], num_clusters: Union[int, float]
) -> ClusterAssignment:
    """ToMe-style bipartite soft matching, repeated until M groups are left.

    Each round splits the current groups alternately into sets A and B, links
    every A group to its most cosine-similar B group and merges the
    ``min(need, |A|)`` most similar links (ties: lower index first).
    """
    h, w = check_tokens(x, hw)
    b, n, c = x.shape
    m = resolve_num_clusters(num_clusters, n)
    dev = x.device
    feats = x.detach().float()
    size = torch.ones(b, n, 1, device=dev)
    groups = torch.arange(n, device=dev).expand(b, n).clone()  # token -> current group
    cur = n
    while cur > m:
        r = min(cur - m, (cur + 1) // 2)
        new_of_cur = bipartite_soft_matching(feats, r)
        groups = new_of_cur.gather(1, groups)
        cur -= r
        feats, size = merge_by_ids(feats, new_of_cur, cur, size)
    return assignment_from_groups(groups, (h, w))
