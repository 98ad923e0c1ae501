"""Spatial windows on a token grid: the machinery under every clustering reading.

Pure torch. Tokens ``x`` are ``[B, N, C]`` laid out row-major on an ``H x W``
grid. Everything here is ``O(N * K)`` for a window of ``K`` offsets: no
``N x N`` buffer, and Python loops over offsets and row bands, never over
tokens or images.
"""

from __future__ import annotations

from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'add_rows',
    'take_rows',
    'window_dot',
    'window_offsets',
    'neighbour_index',
    'window_sqdist',
    'local_density',
    'denser_than',
]


def take_rows(y: Tensor, index: Tensor) -> Tensor:
    """``y[b, index[b, ...]]``: rows of ``y [B, M, C]`` picked per image.

    The same values as ``y.gather(1, index[..., None].expand(..., C))``, but
    one ``index_select`` on the flattened batch: a gather with an expanded
    index walks every element's index and costs ~10x more on CPU (profiled
    on 1728 x 384 tokens), and gathers like this run several times per
    reduced forward.

    Args:
        y (Tensor): ``[B, M, C]``.
        index (Tensor): ``[B, ...]`` int64 in ``[0, M)``.

    Returns:
        Tensor: ``[B, ..., C]``.
    """
    b, m, c = y.shape
    return y.reshape(b * m, c).index_select(0, _flat_rows(index, m)).view(*index.shape, c)


def add_rows(x: Tensor, index: Tensor, m: int) -> Tensor:
    """Per-group row sums: ``out[b, j] = sum of x[b, i] over index[b, i] == j``.

    One ``index_add_`` over the flattened batch (a ``scatter_add`` with an
    index expanded over the channels was ~2x slower on CPU at 1 thread, >10x
    at 2 threads, for the same sums). Differentiable in ``x``.

    Args:
        x (Tensor): ``[B, N, C]``.
        index (Tensor): ``[B, N]`` int64 in ``[0, m)``.
        m (int): number of groups.

    Returns:
        Tensor: ``[B, m, C]``.
    """
    b, n, c = x.shape
    return (
        x.new_zeros(b * m, c).index_add_(0, _flat_rows(index, m), x.reshape(b * n, c)).view(b, m, c)
    )


def _flat_rows(index: Tensor, m: int) -> Tensor:
    """``[B, ...]`` per-image row ids in ``[0, m)`` -> ids into the ``B * m``
    rows of the flattened batch, as one 1-D index."""
    b = index.shape[0]
    return (index.reshape(b, -1) + (torch.arange(b, device=index.device) * m)[:, None]).reshape(-1)


def window_offsets(radius: int, device) -> Tensor:
    """``[K, 2]`` (dy, dx) offsets of a Chebyshev window, centre first, then ring
    by ring (so argmin ties favour the centre, then the spatially nearer)."""
    r = torch.arange(-radius, radius + 1, device=device)
    dy, dx = torch.meshgrid(r, r, indexing='ij')
    off = torch.stack([dy.flatten(), dx.flatten()], 1)
    ring = off.abs().amax(1)
    order = torch.argsort(
        ring * (2 * radius + 1) ** 2 + torch.arange(len(off), device=device), stable=True
    )
    return off[order]


def neighbour_index(h: int, w: int, offsets: Tensor) -> Tuple[Tensor, Tensor]:
    """Token index of every window neighbour and whether it lies on the grid.

    Returns:
        tuple[Tensor, Tensor]: ``idx [N, K]`` int64 (clamped to a valid index
        where off-grid) and ``valid [N, K]`` bool.
    """
    dev = offsets.device
    ys = torch.arange(h, device=dev).repeat_interleave(w)[:, None] + offsets[None, :, 0]
    xs = torch.arange(w, device=dev).repeat(h)[:, None] + offsets[None, :, 1]
    valid = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
    idx = ys.clamp(0, h - 1) * w + xs.clamp(0, w - 1)
    return idx, valid


@torch.no_grad()
def window_dot(a: Tensor, b: Tensor, hw: Tuple[int, int], offsets: Tensor) -> Tensor:
    """Dot products ``a_i . b_j`` of every token with each window neighbour's
    row of ``b`` (zero where the neighbour is off the grid).

    One offset at a time on shifted views of the zero-padded grid of ``b``, in
    bands of rows small enough (about 1 MiB of features) to stay in cache while
    all offsets are visited: memory ``O(N * K)``, never ``O(N^2)``; the Python
    loops run over offsets and row bands, never over tokens. Each view is
    copied into one reused band buffer and multiplied in place: a dot product
    over the strided view allocates a fresh product per offset, which cost ~2x
    more on CPU. A decision input (clustering, soft weights): no gradient.

    Args:
        a (Tensor): ``[B, N, C]`` float tokens.
        b (Tensor): ``[B, N, C]`` float rows on the same grid.
        hw (tuple[int, int]): grid ``(H, W)``.
        offsets (Tensor): ``[K, 2]`` window offsets from :func:`window_offsets`.

    Returns:
        Tensor: ``[B, H, W, K]``.
    """
    bs, n, c = a.shape
    h, w = hw
    r = int(offsets.abs().max())
    rows_a = a.reshape(bs, h, w, c)
    padded = F.pad(b.reshape(bs, h, w, c), (0, 0, r, r, r, r))
    offs = offsets.tolist()
    out = a.new_empty(bs, h, w, len(offs))
    band = max(1, (1 << 20) // (bs * w * c * a.element_size()))
    buf = a.new_empty(bs, min(band, h), w, c)
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        rows = rows_a[:, y0:y1]
        cur = buf[:, : y1 - y0]
        for k, (dy, dx) in enumerate(offs):
            cur.copy_(padded[:, r + dy + y0 : r + dy + y1, r + dx : r + dx + w])
            out[:, y0:y1, :, k] = cur.mul_(rows).sum(-1)
    return out


@torch.no_grad()
def window_sqdist(x: Tensor, hw: Tuple[int, int], offsets: Tensor) -> Tensor:
    """Squared feature distance ``||x_i - x_j||^2 / C`` to each window neighbour,
    from :func:`window_dot` (memory ``O(N * K)``; no gradient).

    Args:
        x (Tensor): ``[B, N, C]`` float tokens.
        hw (tuple[int, int]): grid ``(H, W)``.
        offsets (Tensor): ``[K, 2]`` window offsets from :func:`window_offsets`.

    Returns:
        Tensor: ``[B, N, K]``; ``inf`` where the neighbour is off the grid.
    """
    b, n, c = x.shape
    h, w = hw
    r = int(offsets.abs().max())
    sq = x.reshape(b, h, w, c).square().sum(-1)
    sq_padded = F.pad(sq, (r, r, r, r))
    offs = offsets.tolist()
    out = window_dot(x, x, hw, offsets)
    out.mul_(-2).add_(sq[..., None])
    for k, (dy, dx) in enumerate(offs):
        out[..., k] += sq_padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
    out = out.clamp_min_(0).div_(c).reshape(b, n, len(offs))
    _, valid = neighbour_index(h, w, offsets)
    return out.masked_fill_(~valid, float('inf'))


def local_density(d: Tensor, k: int) -> Tensor:
    """``rho = exp(-mean of the k smallest distances)``, excluding the token
    itself (column 0); near borders with fewer than k neighbours, the mean
    runs over the neighbours there are."""
    nb = d[..., 1:]
    kk = min(k, nb.shape[-1])
    near = torch.topk(nb, kk, dim=-1, largest=False).values  # ascending
    finite = torch.isfinite(near)
    mean = near.masked_fill(~finite, 0).sum(-1) / finite.sum(-1).clamp_min(1)
    return torch.exp(-mean)


def denser_than(rho_i: Tensor, idx_i: Tensor, rho_j: Tensor, idx_j: Tensor) -> Tensor:
    """Strict total order "j is denser than i": density, then lower index
    (deterministic tie-break; no random noise as in TCFormer)."""
    return (rho_j > rho_i) | ((rho_j == rho_i) & (idx_j < idx_i))
