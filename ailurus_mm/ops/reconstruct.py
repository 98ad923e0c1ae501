"""From merged outputs back to the grid: hard, residual and soft reconstruction.

Pure torch. Every mode is windowed: a token looks at most at the clusters of
its 3x3 neighbourhood, so memory stays ``O(N * 9 * C)``, never ``O(N * M)``.

* ``hard``: token ``i`` copies its cluster's output ``y[c(i)]``.
* ``residual``: ``x_i + (y[c(i)] - m[c(i)])``: the token's own input at the
  clustering layer plus its cluster's change since the merge (``m`` are the
  merged inputs). Detail inside a cluster survives the reduced layers.
* ``soft``: ``sum_k w_ik y[c_ik]`` over the ``topk`` clusters ``c_ik`` of the
  window most cosine-similar to ``x_i`` (compared with their merged inputs
  ``m``), ``w = softmax(cos / temperature)`` (Expedite's token
  reconstruction, restricted to a window). ``soft_residual`` applies the same
  weights to the changes ``y - m``. The weights are decisions (no gradient);
  the values are differentiable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

from .assignment import ClusterAssignment
from .merge import unfold_tokens
from .window import neighbour_index, take_rows, window_dot, window_offsets

__all__ = ['SoftWeights', 'soft_weights', 'reconstruct_tokens', 'RECONSTRUCT_MODES']

RECONSTRUCT_MODES = ('hard', 'residual', 'soft', 'soft_residual')


@dataclass
class SoftWeights:
    """Per-token mixing of window clusters.

    Attributes:
        clusters (Tensor): ``[B, N, K]`` int64 cluster ids.
        weights (Tensor): ``[B, N, K]`` float, summing to 1 per token.
    """

    clusters: Tensor
    weights: Tensor


@torch.no_grad()
def soft_weights(
    x: Tensor, merged: Tensor, assign: ClusterAssignment, topk: int = 3, temperature: float = 0.05
) -> SoftWeights:
    """Weights of the soft reconstruction.

    Args:
        x (Tensor): ``[B, N, C]`` tokens at the clustering layer.
        merged (Tensor): ``[B, M, C]`` the clusters' merged inputs.
        assign (ClusterAssignment): the grouping.
        topk (int): clusters mixed per token, in ``[1, 9]``.
        temperature (float): softmax temperature on cosine similarity, > 0.

    Returns:
        SoftWeights: ``[B, N, topk]`` cluster ids and weights.
    """
    if not 1 <= topk <= 9:
        raise ValueError(f'topk={topk} is outside the allowed range [1, 9]')
    if not temperature > 0:
        raise ValueError(f'temperature={temperature} must be > 0')
    b, n, c = x.shape
    h, w = assign.hw
    idx, valid = neighbour_index(h, w, window_offsets(1, x.device))  # [N, 9], centre first
    cand = assign.labels[:, idx]  # [B, N, 9]
    # each distinct cluster once: a slot repeating an earlier on-grid slot's cluster is
    # dropped (off-grid slots hold a clamped neighbour's cluster and must not shadow it)
    same = (cand[..., :, None] == cand[..., None, :]) & valid[None, :, None, :]
    earlier = torch.ones(9, 9, dtype=torch.bool, device=x.device).tril(-1)
    ok = valid[None] & ~(same & earlier).any(-1)
    xn = F.normalize(x.float(), dim=-1)
    mn = F.normalize(merged.float(), dim=-1)
    # similarity to the cluster of each window neighbour, on shifted views of the
    # grid of cluster means: one [B, N, C] gather instead of a [B, N, 9, C] one
    # (which, with a batched 1x9 matmul per token, cost ~4x more on CPU)
    own = take_rows(mn, assign.labels)
    sim = window_dot(xn, own, (h, w), window_offsets(1, x.device)).view(b, n, 9)
    sim = sim.masked_fill(~ok, float('-inf'))
    top, slot = sim.topk(topk, dim=-1)
    return SoftWeights(clusters=cand.gather(2, slot), weights=torch.softmax(top / temperature, -1))


def reconstruct_tokens(
    y: Tensor,
    assign: ClusterAssignment,
    mode: str = 'hard',
    x: Optional[Tensor] = None,
    merged: Optional[Tensor] = None,
    weights: Optional[SoftWeights] = None,
) -> Tensor:
    """Cluster outputs ``[B, M, C]`` -> token outputs ``[B, N, C]``.

    Args:
        y (Tensor): ``[B, M, C]`` outputs of the merged tokens.
        assign (ClusterAssignment): the grouping.
        mode (str): one of :data:`RECONSTRUCT_MODES`.
        x (Tensor, optional): ``[B, N, C]`` tokens at the clustering layer
            (``residual`` modes).
        merged (Tensor, optional): ``[B, M, C]`` merged inputs (``residual``
            modes).
        weights (SoftWeights, optional): from :func:`soft_weights` (``soft``
            modes).
    """
    if mode not in RECONSTRUCT_MODES:
        raise ValueError(f'mode={mode!r} is not one of {RECONSTRUCT_MODES}')
    residual = mode in ('residual', 'soft_residual')
    if residual and (x is None or merged is None):
        raise ValueError(f'mode={mode!r} needs x and merged')
    if mode.startswith('soft') and weights is None:
        raise ValueError(f'mode={mode!r} needs weights (soft_weights)')
    v = y - merged if residual else y
    if mode.startswith('soft'):
        g = take_rows(v, weights.clusters)
        out = (g * weights.weights.to(v.dtype)[..., None]).sum(2)
    else:
        out = unfold_tokens(v, assign)
    return x + out if residual else out
