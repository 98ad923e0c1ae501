"""The result of every token reduction: which cluster each token belongs to.

Pure torch. AiluRus and every baseline return a :class:`ClusterAssignment`,
so merging, size-aware attention and unfolding are the same code for every
method and a comparison measures only how the tokens were grouped.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence, Tuple, Union

import torch
from torch import Tensor

__all__ = [
    'ClusterAssignment',
    'assignment_from_labels',
    'assignment_from_groups',
    'resolve_num_clusters',
    'check_tokens',
]


@dataclass
class ClusterAssignment:
    """How the tokens of a batch are grouped.

    Attributes:
        labels (Tensor): ``[B, N]`` int64, cluster id of every token, in
            ``[0, M)``. Cluster ids follow the raster order of the anchors.
        anchors (Tensor): ``[B, M]`` int64, token index of each cluster's
            anchor, increasing; ``labels[b, anchors[b, m]] == m``.
        sizes (Tensor): ``[B, M]`` float, number of tokens in each cluster
            (sums to N per image).
        hw (tuple[int, int]): the grid ``(H, W)`` the labels refer to.
    """

    labels: Tensor
    anchors: Tensor
    sizes: Tensor
    hw: Tuple[int, int]

    @property
    def num_clusters(self) -> int:
        return self.anchors.shape[1]

    @property
    def num_tokens(self) -> int:
        return self.labels.shape[1]


def resolve_num_clusters(num_clusters: Union[int, float], num_tokens: int) -> int:
    """Turn a cluster count or keep ratio into a cluster count M.

    Args:
        num_clusters (int | float): an int M with ``1 <= M <= N`` or a float
            keep ratio in ``(0, 1]``; ``M = max(1, floor(ratio * N + 0.5))``.
        num_tokens (int): N, the number of patch tokens.

    Returns:
        int: M.
    """
    if isinstance(num_clusters, bool) or not isinstance(num_clusters, (int, float)):
        raise ValueError(
            f'num_clusters must be an int M in [1, N] or a float keep '
            f'ratio in (0, 1], got {num_clusters!r}'
        )
    if isinstance(num_clusters, float):
        if not (0.0 < num_clusters <= 1.0) or math.isnan(num_clusters):
            raise ValueError(
                f'keep ratio num_clusters={num_clusters} is outside the allowed range (0, 1]'
            )
        return max(1, min(num_tokens, int(math.floor(num_clusters * num_tokens + 0.5))))
    if not 1 <= num_clusters <= num_tokens:
        raise ValueError(
            f'num_clusters={num_clusters} is outside the allowed range [1, N={num_tokens}]'
        )
    return int(num_clusters)


def check_tokens(x: Tensor, hw: Sequence[int]) -> Tuple[int, int]:
    """Validate ``[B, N, C]`` float tokens on an ``(H, W)`` grid; return ``(H, W)``."""
    if not isinstance(x, Tensor) or x.dim() != 3:
        raise ValueError(
            f'x must be a [B, N, C] tensor, got '
            f'{tuple(x.shape) if isinstance(x, Tensor) else type(x)}'
        )
    if len(hw) != 2 or any(isinstance(v, bool) or int(v) != v or v < 1 for v in hw):
        raise ValueError(f'hw must be a pair of positive ints (H, W), got {hw!r}')
    h, w = int(hw[0]), int(hw[1])
    if h * w != x.shape[1]:
        raise ValueError(f'hw={h}x{w} does not match the number of tokens N={x.shape[1]}')
    if not x.is_floating_point():
        raise ValueError(f'x must be a floating point tensor, got {x.dtype}')
    return h, w


def assignment_from_labels(
    labels: Tensor, anchors: Tensor, hw: Tuple[int, int], dtype: torch.dtype = torch.float32
) -> ClusterAssignment:
    """Wrap labels/anchors into a :class:`ClusterAssignment`, counting sizes.

    Args:
        labels (Tensor): ``[B, N]`` int64 cluster ids in ``[0, M)``.
        anchors (Tensor): ``[B, M]`` int64 anchor token indices.
        hw (tuple[int, int]): the grid.
        dtype (torch.dtype): dtype of ``sizes``. Default: float32.
    """
    b, m = anchors.shape
    sizes = torch.zeros(b, m, dtype=dtype, device=labels.device)
    sizes.scatter_add_(1, labels, torch.ones_like(labels, dtype=dtype))
    return ClusterAssignment(labels=labels, anchors=anchors, sizes=sizes, hw=tuple(hw))


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
