"""Spatial-aware density-peaks clustering of ViT patch tokens (AiluRus).

Pure torch, no OpenMMLab import. Every function works on patch tokens
``x`` of shape ``[B, N, C]`` laid out row-major on an ``H x W`` grid
(``N = H * W``); class/register tokens are the caller's business.

Two readings of the paper are implemented (``docs/algorithm.md`` gives the
formulas, the choices and the measurements behind the defaults):

* ``method='adjacent'`` (default), the abstract's reading: anchors sit where
  density is high and absorb the *adjacent* tokens that resemble them, while
  tokens in detailed regions stay independent (one-token clusters). Every
  token links to its feature-nearest denser neighbour inside a spatial window
  (the density-peaks parent); the N - M cheapest links are kept and the
  clusters are the resulting trees, rooted at their densest token (the
  anchor). Exactly M clusters, one vectorised pass, no threshold search.
* ``method='dpc'``, the naive reading: the M tokens with the highest
  ``rho * delta`` become anchors and every other token joins the
  feature-nearest anchor inside its assignment window.

``method='dpc_global'`` is the non-spatial TCFormer-style variant of the dpc
reading with N x N distances, for comparison in benchmarks.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'ClusterAssignment',
    'cluster_tokens',
    'resolve_num_clusters',
    'assignment_from_labels',
    'CLUSTER_METHODS',
    'DEFAULT_OPTIONS',
    'validate_cluster_options',
]

CLUSTER_METHODS = ('adjacent', 'dpc', 'dpc_global')

# 'adjacent': a local density peak links to the feature-nearest of this many
# spatially nearest denser peaks (keeps the step linear in N).
_PEAK_CANDIDATES = 8

#: Documented defaults of every clustering option (see ``cluster_tokens``).
LINK_MODES = ('peak', 'parent')

DEFAULT_OPTIONS = dict(
    method='adjacent',
    k=5,
    density_radius=2,
    link_radius=1,
    assign_radius=1,
    link_to='peak',
)


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


# ----------------------------------------------------------------------------
# argument checking


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


def _check_int(name: str, value, low: int, high: Optional[int] = None) -> None:
    ok = isinstance(value, int) and not isinstance(value, bool) and value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        rng = f'[{low}, {high}]' if high is not None else f'>= {low}'
        raise ValueError(f'{name}={value!r} is outside the allowed range: an int {rng}')


def validate_cluster_options(
    method: str = DEFAULT_OPTIONS['method'],
    k: int = DEFAULT_OPTIONS['k'],
    density_radius: Optional[int] = DEFAULT_OPTIONS['density_radius'],
    link_radius: Optional[int] = DEFAULT_OPTIONS['link_radius'],
    assign_radius: Optional[int] = DEFAULT_OPTIONS['assign_radius'],
    link_to: str = DEFAULT_OPTIONS['link_to'],
) -> None:
    """Raise ``ValueError`` naming the first invalid clustering option.

    Usable at model build time (no tensors needed). Arguments as in
    :func:`cluster_tokens`.
    """
    if method not in CLUSTER_METHODS:
        raise ValueError(f'method={method!r} is not one of {CLUSTER_METHODS}')
    if link_to not in LINK_MODES:
        raise ValueError(f'link_to={link_to!r} is not one of {LINK_MODES}')
    _check_int('k', k, 1, 64)
    for name, value in (
        ('density_radius', density_radius),
        ('link_radius', link_radius),
        ('assign_radius', assign_radius),
    ):
        if value is None and method == 'dpc_global':
            continue
        _check_int(name, value, 1, 32)
    if method != 'dpc_global' and k > (2 * density_radius + 1) ** 2 - 1:
        raise ValueError(
            f'k={k} exceeds the {(2 * density_radius + 1) ** 2 - 1} neighbours '
            f'of a density window with density_radius={density_radius}'
        )


def _check_inputs(x: Tensor, hw: Sequence[int]) -> Tuple[int, int]:
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


# ----------------------------------------------------------------------------
# spatial windows


def _window_offsets(radius: int, device) -> Tensor:
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


def _neighbour_index(h: int, w: int, offsets: Tensor) -> Tuple[Tensor, Tensor]:
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


def window_sqdist(x: Tensor, hw: Tuple[int, int], offsets: Tensor) -> Tensor:
    """Squared feature distance ``||x_i - x_j||^2 / C`` to each window neighbour.

    Computed on shifted views of the padded grid, one offset at a time, in
    bands of rows small enough (about 1 MiB of features) to stay in cache while
    all offsets are visited: memory ``O(N * K)``, never ``O(N^2)``; the Python
    loops run over offsets and row bands, never over tokens.

    Args:
        x (Tensor): ``[B, N, C]`` float tokens.
        hw (tuple[int, int]): grid ``(H, W)``.
        offsets (Tensor): ``[K, 2]`` window offsets from :func:`_window_offsets`.

    Returns:
        Tensor: ``[B, N, K]``; ``inf`` where the neighbour is off the grid.
    """
    b, n, c = x.shape
    h, w = hw
    r = int(offsets.abs().max())
    grid = x.reshape(b, h, w, c)
    sq = grid.square().sum(-1)
    padded = F.pad(grid, (0, 0, r, r, r, r))
    sq_padded = F.pad(sq, (r, r, r, r))
    offs = offsets.tolist()
    out = x.new_empty(b, h, w, len(offs))
    band = max(1, (1 << 20) // (b * w * c * x.element_size()))
    for y0 in range(0, h, band):
        y1 = min(h, y0 + band)
        rows = grid[:, y0:y1]
        for k, (dy, dx) in enumerate(offs):
            out[:, y0:y1, :, k] = torch.linalg.vecdot(
                rows, padded[:, r + dy + y0 : r + dy + y1, r + dx : r + dx + w]
            )
    out.mul_(-2).add_(sq[..., None])
    for k, (dy, dx) in enumerate(offs):
        out[..., k] += sq_padded[:, r + dy : r + dy + h, r + dx : r + dx + w]
    out = out.clamp_min_(0).div_(c).reshape(b, n, len(offs))
    _, valid = _neighbour_index(h, w, offsets)
    return out.masked_fill_(~valid, float('inf'))


def _local_density(d: Tensor, k: int) -> Tensor:
    """``rho = exp(-mean of the k smallest distances)``, excluding the token
    itself (column 0); near borders with fewer than k neighbours, the mean
    runs over the neighbours there are."""
    nb = d[..., 1:]
    kk = min(k, nb.shape[-1])
    near = torch.topk(nb, kk, dim=-1, largest=False).values  # ascending
    finite = torch.isfinite(near)
    mean = near.masked_fill(~finite, 0).sum(-1) / finite.sum(-1).clamp_min(1)
    return torch.exp(-mean)


def _denser(rho_i: Tensor, idx_i: Tensor, rho_j: Tensor, idx_j: Tensor) -> Tensor:
    """Strict total order "j is denser than i": density, then lower index
    (deterministic tie-break; no random noise as in TCFormer)."""
    return (rho_j > rho_i) | ((rho_j == rho_i) & (idx_j < idx_i))


# ----------------------------------------------------------------------------
# building an assignment


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


def _labels_from_roots(root: Tensor, m: int, hw) -> ClusterAssignment:
    """``root [B, N]``: index of each token's anchor (anchors are their own
    root); exactly m anchors per image."""
    b, n = root.shape
    ar = torch.arange(n, device=root.device)
    is_anchor = root == ar
    cid = torch.cumsum(is_anchor, 1) - 1  # cluster id = raster rank of the anchor
    labels = cid.gather(1, root)
    anchors = torch.sort(torch.where(is_anchor, ar, n), dim=1).values[:, :m]
    return assignment_from_labels(labels, anchors, hw)


def _cluster_adjacent(
    x: Tensor,
    hw,
    m: int,
    k: int,
    density_radius: int,
    link_radius: int,
    assign_radius: int,
    link_to: str,
) -> ClusterAssignment:
    b, n, c = x.shape
    dev = x.device
    ar = torch.arange(n, device=dev)
    r = max(density_radius, link_radius, assign_radius if link_to == 'peak' else 0)
    offsets = _window_offsets(r, dev)
    ring = offsets.abs().amax(1)
    d = window_sqdist(x, hw, offsets)  # [B, N, K]
    rho = _local_density(d[..., ring <= density_radius], k)

    # Parent = the feature-nearest denser token inside the link window.
    lmask = ring <= link_radius
    idx, valid = _neighbour_index(*hw, offsets[lmask])
    dl = d[..., lmask]
    rho_nb = rho[:, idx]  # [B, N, K]
    denser = _denser(rho[..., None], ar[:, None], rho_nb, idx[None]) & valid
    cost = dl.masked_fill(~denser, float('inf'))
    best = cost.argmin(-1)
    parent = idx[ar[None], best]  # [B, N]: idx[n, best[b, n]]
    link_cost = cost.gather(2, best[..., None])[..., 0]

    peak = ~torch.isfinite(link_cost)
    if link_to == 'peak':
        # Star clusters: a token links to the feature-nearest local density
        # peak within assign_radius (the anchors absorb their neighbours), so
        # a cluster stays inside one window. Tokens with no peak in reach keep
        # their parent link, and the peak-to-peak links below come last: both
        # are used only when the star links cannot reach M. The ranks are
        # kept apart by adding multiples of an offset above every distance.
        amask = ring <= assign_radius
        aidx, avalid = _neighbour_index(*hw, offsets[amask])
        da = d[..., amask].masked_fill(~(peak[:, aidx] & avalid), float('inf'))
        da[..., 0] = float('inf')  # not to itself
        ab = da.argmin(-1)
        acost = da.gather(2, ab[..., None])[..., 0]
        star = torch.isfinite(acost) & ~peak
        step = torch.where(torch.isfinite(d), d, 0).amax() + 1
        parent = torch.where(star, aidx[ar[None], ab], parent)
        link_cost = torch.where(star, acost, link_cost + step)

    # Local peaks (no denser token in the window) link to the feature-nearest
    # of their _PEAK_CANDIDATES spatially nearest denser peaks. Peaks are at
    # least link_radius + 1 apart (P <= N / (link_radius + 1)^2); the P x P step
    # only compares grid coordinates, features are compared for P x K pairs.
    # Every peak but the global density maximum has a denser peak, so only
    # that one token is left without a parent.
    if peak.any():
        w = hw[1]
        p_max = int(peak.sum(1).max())
        order = torch.sort((~peak).to(torch.int8), dim=1, stable=True).indices[:, :p_max]
        p_valid = peak.gather(1, order)  # [B, P] padding mask
        rp = rho.gather(1, order)
        pdenser = _denser(rp[:, :, None], order[:, :, None], rp[:, None, :], order[:, None, :])
        pdenser &= p_valid[:, None, :] & p_valid[:, :, None]
        py, px = (order // w).double(), (order % w).double()
        sd = (py[:, :, None] - py[:, None, :]).square() + (px[:, :, None] - px[:, None, :]).square()
        # distinct keys (ties by candidate slot) so topk's choice is deterministic
        sd = sd + torch.arange(p_max, device=dev, dtype=sd.dtype) / (p_max + 1)
        kk = min(_PEAK_CANDIDATES, p_max)
        near_d, cand = torch.topk(sd.masked_fill(~pdenser, float('inf')), kk, dim=-1, largest=False)
        xp = x.gather(1, order[..., None].expand(-1, -1, c))
        xc = xp.gather(1, cand.reshape(b, -1, 1).expand(-1, -1, c)).view(b, p_max, kk, c)
        dc = (xc - xp[:, :, None]).square_().sum(-1).div_(c)
        dc = dc.masked_fill(~torch.isfinite(near_d), float('inf'))
        pbest = dc.argmin(-1)
        pc = dc.gather(2, pbest[..., None])[..., 0]
        if link_to == 'peak':
            pc = pc + 2 * step
        pparent = order.gather(1, cand.gather(2, pbest[..., None])[..., 0])
        # Padding slots (non-peaks sorted in behind the peaks) write back
        # their own values.
        tgt_cost = torch.where(p_valid, pc, link_cost.gather(1, order))
        tgt_par = torch.where(p_valid, pparent, parent.gather(1, order))
        link_cost = link_cost.scatter(1, order, tgt_cost)
        parent = parent.scatter(1, order, tgt_par)

    # Keep the N - M cheapest links (ties: lower token index first). The links
    # form a forest with a single root per image, so exactly M trees remain.
    rank = torch.empty_like(ar).expand(b, n).clone()
    order = torch.sort(link_cost, dim=1, stable=True).indices
    rank.scatter_(1, order, ar.expand(b, n))
    keep = rank < (n - m)
    root = torch.where(keep, parent, ar)
    # Pointer jumping: each step doubles the followed path, so log2(N) steps
    # reach every tree's root.
    for _ in range(max(1, math.ceil(math.log2(max(n, 2)))) + 1):
        nxt = root.gather(1, root)
        if torch.equal(nxt, root):
            break
        root = nxt
    return _labels_from_roots(root, m, hw)


def _grow_fallback(
    labels: Tensor, d1: Tensor, idx1: Tensor, valid1: Tensor, max_steps: int
) -> Tensor:
    """Give every unlabelled token (-1) the label of its feature-nearest
    labelled 8-neighbour, one ring per step (a geodesic region growing).
    Terminates because at least one token is labelled and the grid is
    connected; ``max_steps`` (>= H + W) is a safety bound."""
    for _ in range(max_steps):
        todo = labels < 0
        if not todo.any():
            return labels
        nb = labels[:, idx1]  # [B, N, 8]
        cost = d1.masked_fill(~(valid1 & (nb >= 0)), float('inf'))
        best = cost.argmin(-1)
        got = torch.isfinite(cost.gather(2, best[..., None])[..., 0]) & todo
        labels = torch.where(got, nb.gather(2, best[..., None])[..., 0], labels)
    raise RuntimeError('fallback region growing did not finish; this is a bug')


def _cluster_dpc(
    x: Tensor,
    hw,
    m: int,
    k: int,
    density_radius: int,
    link_radius: int,
    assign_radius: int,
    score: Optional[Tensor] = None,
) -> ClusterAssignment:
    b, n, c = x.shape
    dev = x.device
    ar = torch.arange(n, device=dev)
    r = max(density_radius, link_radius, assign_radius, 1)
    offsets = _window_offsets(r, dev)
    ring = offsets.abs().amax(1)
    d = window_sqdist(x, hw, offsets)
    if score is None:
        rho = _local_density(d[..., ring <= density_radius], k)
        dmask = ring <= link_radius
        idx, valid = _neighbour_index(*hw, offsets[dmask])
        dist = d[..., dmask].sqrt()
        denser = _denser(rho[..., None], ar[:, None], rho[:, idx], idx[None]) & valid
        delta = dist.masked_fill(~denser, float('inf')).amin(-1)
        # a local peak takes the largest distance in its window
        peak_delta = dist.masked_fill(~valid, 0).amax(-1)
        delta = torch.where(torch.isfinite(delta), delta, peak_delta)
        score = rho * delta
    # Top-M by score, ties by lower index (stable sort), anchors in raster order.
    top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :m]
    anchors = torch.sort(top, dim=1).values
    cid = torch.full((b, n), -1, dtype=torch.long, device=dev)
    cid.scatter_(1, anchors, torch.arange(m, device=dev).expand(b, m))

    amask = ring <= assign_radius
    idx, valid = _neighbour_index(*hw, offsets[amask])
    cand = cid[:, idx]  # [B, N, Ka]
    cost = d[..., amask].masked_fill(~(valid & (cand >= 0)), float('inf'))
    best = cost.argmin(-1)  # centre first: an anchor picks itself
    found = torch.isfinite(cost.gather(2, best[..., None])[..., 0])
    labels = torch.where(found, cand.gather(2, best[..., None])[..., 0], -1)
    labels.scatter_(1, anchors, torch.arange(m, device=dev).expand(b, m))
    if not bool(found.all()):
        r1 = ring[amask] == 1
        labels = _grow_fallback(
            labels, d[..., amask][..., r1], idx[:, r1], valid[:, r1], max_steps=hw[0] + hw[1] + 2
        )
    return assignment_from_labels(labels, anchors, hw)


def _cluster_dpc_global(x: Tensor, hw, m: int, k: int) -> ClusterAssignment:
    """TCFormer-style DPC-KNN over all N tokens: N x N memory, for comparison."""
    b, n, c = x.shape
    dev = x.device
    ar = torch.arange(n, device=dev)
    d = torch.cdist(x, x).square_().div_(c)
    kk = min(k + 1, n)
    near = torch.topk(d, kk, dim=-1, largest=False).values[..., 1:]
    rho = torch.exp(-near.mean(-1)) if kk > 1 else torch.ones(b, n, device=dev)
    denser = _denser(rho[:, :, None], ar[None, :, None], rho[:, None, :], ar[None, None, :])
    dist = d.sqrt()
    delta = dist.masked_fill(~denser, float('inf')).amin(-1)
    delta = torch.where(torch.isfinite(delta), delta, dist.amax(-1))
    score = rho * delta
    top = torch.sort(score, dim=1, descending=True, stable=True).indices[:, :m]
    anchors = torch.sort(top, dim=1).values
    da = d.gather(2, anchors[:, None, :].expand(b, n, m))
    labels = da.argmin(-1)
    labels.scatter_(1, anchors, torch.arange(m, device=dev).expand(b, m))
    return assignment_from_labels(labels, anchors, hw)


@torch.no_grad()
def cluster_tokens(
    x: Tensor,
    hw: Sequence[int],
    num_clusters: Union[int, float],
    method: str = DEFAULT_OPTIONS['method'],
    k: int = DEFAULT_OPTIONS['k'],
    density_radius: int = DEFAULT_OPTIONS['density_radius'],
    link_radius: int = DEFAULT_OPTIONS['link_radius'],
    assign_radius: int = DEFAULT_OPTIONS['assign_radius'],
    link_to: str = DEFAULT_OPTIONS['link_to'],
    score: Optional[Tensor] = None,
) -> ClusterAssignment:
    """Cluster patch tokens into M groups with spatial-aware DPC-KNN.

    Runs without gradient (decisions only); use :func:`merge_tokens` and
    :func:`unfold_tokens` for the differentiable part.

    Args:
        x (Tensor): ``[B, N, C]`` patch tokens (no class token), row-major on
            the grid. Computed in float32 whatever the input dtype.
        hw (Sequence[int]): grid ``(H, W)`` with ``H * W == N``.
        num_clusters (int | float): M in ``[1, N]``, or a keep ratio in
            ``(0, 1]``. M is the same for every image of the batch.
        method (str): ``'adjacent'`` (default), ``'dpc'`` or ``'dpc_global'``;
            see the module docstring.
        k (int): neighbours in the local density, in ``[1, 64]`` and at most
            the window's ``(2 * density_radius + 1)^2 - 1``. Default: 5.
        density_radius (int): Chebyshev radius of the k-NN search window, in
            ``[1, 32]``. Default: 2 (a 5 x 5 window).
        link_radius (int): radius in which a token looks for denser tokens
            (its parent in ``'adjacent'``, its delta in ``'dpc'``), in
            ``[1, 32]``. Default: 1 (3 x 3: measured best, docs/results.md).
        assign_radius (int): radius in which a token looks for anchors, in
            ``[1, 32]``. ``'dpc'``: tokens with no anchor in reach join the
            cluster of their feature-nearest assigned 8-neighbour, grown ring
            by ring. ``'adjacent'`` with ``link_to='peak'``: tokens link to the
            feature-nearest local density peak within this radius. Default: 1
            (clusters of at most 3 x 3 tokens: measured best, docs/results.md).
        link_to (str): ``'adjacent'`` only: ``'peak'`` (default) links tokens
            to a local density peak in reach (star clusters bounded by the
            window; parent and peak-to-peak links only when those cannot reach
            M); ``'parent'`` links every token to its denser parent (trees of
            any extent: chains of cheap links can grow across a whole region).
        score (Tensor, optional): ``'dpc'`` only: ``[B, N]`` anchor scores
            replacing ``rho * delta`` (e.g. seeded random scores for the
            random-anchor baseline). Default: None.

    Returns:
        ClusterAssignment: labels ``[B, N]``, anchors ``[B, M]``, sizes ``[B, M]``.
    """
    h, w = _check_inputs(x, hw)
    validate_cluster_options(method, k, density_radius, link_radius, assign_radius, link_to)
    n = h * w
    m = resolve_num_clusters(num_clusters, n)
    if score is not None:
        if method != 'dpc':
            raise ValueError(f"score is only used with method='dpc', got method={method!r}")
        if score.shape != x.shape[:2]:
            raise ValueError(
                f'score must have shape {tuple(x.shape[:2])}, got {tuple(score.shape)}'
            )
    xf = x.detach().float()
    if m == n:
        ar = torch.arange(n, device=x.device).expand(x.shape[0], n).clone()
        return assignment_from_labels(ar, ar.clone(), (h, w))
    if method == 'adjacent':
        return _cluster_adjacent(
            xf, (h, w), m, k, density_radius, link_radius, assign_radius, link_to
        )
    if method == 'dpc':
        return _cluster_dpc(
            xf,
            (h, w),
            m,
            k,
            density_radius,
            link_radius,
            assign_radius,
            score=None if score is None else score.float(),
        )
    return _cluster_dpc_global(xf, (h, w), m, k)
