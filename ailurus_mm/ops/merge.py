"""Merging tokens into their clusters and unfolding them back to the grid.

Both are differentiable in ``x`` (training runs through them); the cluster
assignment itself is a constant.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import Tensor

from .assignment import ClusterAssignment
from .window import add_rows, take_rows

__all__ = ['merge_tokens', 'unfold_tokens', 'MERGE_MODES']

MERGE_MODES = ('mean', 'anchor')


def _check(x: Tensor, assign: ClusterAssignment, name: str) -> None:
    if not isinstance(assign, ClusterAssignment):
        raise ValueError(f'assign must be a ClusterAssignment, got {type(assign).__name__}')
    n = assign.num_tokens if name == 'x' else assign.num_clusters
    if x.dim() != 3 or x.shape[0] != assign.labels.shape[0] or x.shape[1] != n:
        raise ValueError(
            f'{name} must be [B={assign.labels.shape[0]}, {n}, C], got {tuple(x.shape)}'
        )


def merge_tokens(
    x: Tensor, assign: ClusterAssignment, mode: str = 'mean', weights: Optional[Tensor] = None
) -> Tensor:
    """Pool every cluster's member tokens into one token.

    Args:
        x (Tensor): ``[B, N, C]`` tokens the assignment was made for.
        assign (ClusterAssignment): from :func:`cluster_tokens`.
        mode (str): ``'mean'`` (default): the (weighted) mean of the members;
            ``'anchor'``: the anchor's own feature.
        weights (Tensor, optional): ``[B, N]`` non-negative member weights for
            ``'mean'`` (e.g. the sizes of already merged tokens). Default: None
            (uniform).

    Returns:
        Tensor: ``[B, M, C]`` in cluster order.
    """
    _check(x, assign, 'x')
    if mode not in MERGE_MODES:
        raise ValueError(f'mode={mode!r} is not one of {MERGE_MODES}')
    b, n, c = x.shape
    if mode == 'anchor':
        return take_rows(x, assign.anchors)
    if weights is None:
        total = add_rows(x, assign.labels, assign.num_clusters)
        return total / assign.sizes.to(x.dtype)[..., None]
    if weights.shape != (b, n):
        raise ValueError(f'weights must be [B, N]={b, n}, got {tuple(weights.shape)}')
    wsum = weights.new_zeros(b, assign.num_clusters).scatter_add(1, assign.labels, weights)
    total = add_rows(x * weights[..., None], assign.labels, assign.num_clusters)
    return total / wsum.clamp_min(torch.finfo(wsum.dtype).tiny)[..., None].to(x.dtype)


def unfold_tokens(y: Tensor, assign: ClusterAssignment) -> Tensor:
    """Give every grid cell its cluster's feature.

    Args:
        y (Tensor): ``[B, M, C]`` cluster tokens.
        assign (ClusterAssignment): the assignment that produced them.

    Returns:
        Tensor: ``[B, N, C]`` on the original grid.
    """
    _check(y, assign, 'y')
    return take_rows(y, assign.labels)
