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
from typing import Optional, Sequence, Union

import torch
from torch import Tensor

from ._validate import check_choice, check_int
from .assignment import (
    ClusterAssignment,
    assignment_from_labels,
    check_tokens,
    resolve_num_clusters,
)
from .window import (
    denser_than,
    local_density,
    neighbour_index,
    take_rows,
    window_offsets,
    window_sqdist,
)

__all__ = [
    'cluster_tokens',
    'validate_cluster_options',
    'CLUSTER_METHODS',
    'DEFAULT_OPTIONS',
    'LINK_MODES',
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


# ----------------------------------------------------------------------------
# options


def validate_cluster_options(
    method: str = DEFAULT_OPTIONS['method'],
    k: int = DEFAULT_OPTIONS['k'],
    density_radius: Optional[int] = DEFAULT_OPTIONS['density_radius'],
    link_radius: Optional[int] = DEFAULT_OPTIONS['link_radius'],
    assign_radius: Optional[int] = DEFAULT_OPTIONS['assign_radius'],
    link_to: str = DEFAULT_OPTIONS['link_to'],
    prefix: str = '',
) -> None:
    """Raise ``ValueError`` naming the first invalid clustering option.

    Usable at model build time (no tensors needed). Arguments as in
    :func:`cluster_tokens`; ``prefix`` is prepended to every name in the
    message (e.g. ``'ailurus.'``).
    """
    check_choice(f'{prefix}method', method, CLUSTER_METHODS)
    check_choice(f'{prefix}link_to', link_to, LINK_MODES)
    check_int(f'{prefix}k', k, 1, 64)
    for name, value in (
        ('density_radius', density_radius),
        ('link_radius', link_radius),
        ('assign_radius', assign_radius),
    ):
        if value is None and method == 'dpc_global':
            continue
        check_int(f'{prefix}{name}', value, 1, 32)
    if method != 'dpc_global' and k > (2 * density_radius + 1) ** 2 - 1:
        raise ValueError(
            f'{prefix}k={k} exceeds the {(2 * density_radius + 1) ** 2 - 1} neighbours '
            f'of a density window with density_radius={density_radius}'
        )


# ----------------------------------------------------------------------------
# building an assignment


def follow_to_roots(parent: Tensor) -> Tensor:
    """``parent [B, N]`` (a forest: roots are their own parent) -> every
    node's root. Pointer jumping: each step doubles the followed path, so
    ``log2(N)`` gathers reach every root."""
    root = parent
    for _ in range(max(1, math.ceil(math.log2(max(parent.shape[1], 2)))) + 1):
        nxt = root.gather(1, root)
        if torch.equal(nxt, root):
            break
        root = nxt
    return root


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
    offsets = window_offsets(r, dev)
    ring = offsets.abs().amax(1)
    d = window_sqdist(x, hw, offsets)  # [B, N, K]
    rho = local_density(d[..., ring <= density_radius], k)

    # Parent = the feature-nearest denser token inside the link window.
    lmask = ring <= link_radius
    idx, valid = neighbour_index(*hw, offsets[lmask])
    dl = d[..., lmask]
    rho_nb = rho[:, idx]  # [B, N, K]
    denser = denser_than(rho[..., None], ar[:, None], rho_nb, idx[None]) & valid
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
        aidx, avalid = neighbour_index(*hw, offsets[amask])
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
        pdenser = denser_than(rp[:, :, None], order[:, :, None], rp[:, None, :], order[:, None, :])
        pdenser &= p_valid[:, None, :] & p_valid[:, :, None]
        py, px = (order // w).double(), (order % w).double()
        sd = (py[:, :, None] - py[:, None, :]).square() + (px[:, :, None] - px[:, None, :]).square()
        # distinct keys (ties by candidate slot) so topk's choice is deterministic
        sd = sd + torch.arange(p_max, device=dev, dtype=sd.dtype) / (p_max + 1)
        kk = min(_PEAK_CANDIDATES, p_max)
        near_d, cand = torch.topk(sd.masked_fill(~pdenser, float('inf')), kk, dim=-1, largest=False)
        xp = take_rows(x, order)
        xc = take_rows(xp, cand)
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
    root = follow_to_roots(torch.where(keep, parent, ar))
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
    offsets = window_offsets(r, dev)
    ring = offsets.abs().amax(1)
    d = window_sqdist(x, hw, offsets)
    if score is None:
        rho = local_density(d[..., ring <= density_radius], k)
        dmask = ring <= link_radius
        idx, valid = neighbour_index(*hw, offsets[dmask])
        dist = d[..., dmask].sqrt()
        denser = denser_than(rho[..., None], ar[:, None], rho[:, idx], idx[None]) & valid
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
    idx, valid = neighbour_index(*hw, offsets[amask])
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
    denser = denser_than(rho[:, :, None], ar[None, :, None], rho[:, None, :], ar[None, None, :])
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
    h, w = check_tokens(x, hw)
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
