"""A later clustering stage that merges the clusters of the stage before.

Pure torch, no OpenMMLab import. A later stage (``second_after``) can either
re-cluster the grid reconstructed from the stage before (every token free to
join any cluster of its 3x3 window again) or, here, merge whole clusters of
the stage before with their neighbours on the grid: the stages nest like a
hierarchy, a cluster grows past one window in flat regions (stage after
stage) and boundaries found by an earlier stage are kept.

The rule is the ``'adjacent'`` reading of AiluRus one level up, on the
region adjacency graph of the clusters (two clusters are adjacent when two of
their tokens are 8-neighbours on the grid):

* the distance of two adjacent clusters is ``||y_a - y_b||^2 / C`` of their
  current tokens ``y`` (the input of the layer the stage runs before);
* a cluster's density is ``exp(-mean distance over its boundary)``: the mean
  runs over the 8-neighbour token pairs across its boundary, so a cluster in
  a flat region is dense;
* every cluster links to the feature-nearest *denser* adjacent cluster (its
  density-peaks parent); the ``M - M'`` cheapest links are kept and the
  clusters of a tree merge into one, rooted at its densest cluster.

Local peaks (no denser neighbour) have no link; when a round cannot remove
``M - M'`` clusters, the next round runs on the merged clusters (their tokens
are size-weighted means) until ``M'`` is reached. Every round removes at
least one cluster per image (the least dense cluster of every connected grid
has a denser neighbour), so the loop ends; it is a loop over rounds (usually
one), never over tokens or images.

``randomize`` gives the random twin at the same budget: densities and link
costs are seeded random numbers, the adjacency and nesting the same.
"""

from __future__ import annotations

import torch
from torch import Tensor

from ._validate import check_int
from .assignment import ClusterAssignment, assignment_from_groups
from .cluster import follow_to_roots
from .window import add_rows, neighbour_index, take_rows, window_offsets, window_sqdist

__all__ = ['coarsen_assignment']


@torch.no_grad()
def coarsen_assignment(
    y: Tensor,
    assignment: ClusterAssignment,
    num_clusters: int,
    randomize: bool = False,
    seed: int = 0,
) -> ClusterAssignment:
    """Merge adjacent clusters of ``assignment`` down to ``num_clusters``.

    Args:
        y (Tensor): ``[B, M, C]`` cluster tokens (in the assignment's cluster
            order) whose distances decide the merges; float32 inside.
        assignment (ClusterAssignment): the stage before (``M`` clusters on
            the grid ``assignment.hw``).
        num_clusters (int): ``M'`` in ``[1, M]``; the same for every image.
        randomize (bool): random densities and link costs (seeded by
            ``seed``): the random-anchor twin of this stage. Default: False.
        seed (int): seed of ``randomize``. Default: 0.

    Returns:
        ClusterAssignment: ``M'`` clusters, each a union of clusters of
        ``assignment`` (canonical ids: raster order of the lowest token).
    """
    if not isinstance(assignment, ClusterAssignment):
        raise ValueError(f'assignment must be a ClusterAssignment, got {type(assignment).__name__}')
    b, m = assignment.anchors.shape
    if y.dim() != 3 or y.shape[:2] != (b, m):
        raise ValueError(f'y must be [B={b}, M={m}, C], got {tuple(y.shape)}')
    m2 = check_int('num_clusters', num_clusters, 1, m)
    if m2 == m:
        return assignment
    hw = assignment.hw
    n = hw[0] * hw[1]
    dev = y.device
    yf = y.detach().float()
    offsets = window_offsets(1, dev)[1:]  # the 8 neighbours
    nidx, nvalid = neighbour_index(*hw, offsets)  # [N, 8]
    ar_m = torch.arange(m, device=dev)
    gen = None
    if randomize:
        gen = torch.Generator(device='cpu').manual_seed(int(seed))
    # root[b, j]: the current cluster (a slot in [0, M)) of the stage-before cluster j
    root = ar_m.expand(b, m).clone()
    sizes = assignment.sizes.float()
    ones = torch.ones_like(root, dtype=torch.bool)
    first = True  # the slots are the clusters of the stage before: y as given
    for _ in range(m):  # rounds; bounded by M (one removal per round at least)
        lab = root.gather(1, assignment.labels)  # [B, N] current slot of every token
        alive = torch.zeros(b, m, dtype=torch.bool, device=dev).scatter(1, root, ones)
        count = alive.sum(1)
        need = count - m2
        if not bool((need > 0).any()):
            break
        nb = lab[:, nidx]  # [B, N, 8] the neighbours' slots
        edge = nvalid & (nb != lab[..., None])
        if randomize:
            # drawn per grid position and read at each slot's anchor, so an
            # image's draw does not depend on the rest of the batch
            anchors = assignment.anchors
            rho = torch.rand(n, generator=gen).to(dev)[anchors]
            key = torch.rand(n, generator=gen).to(dev)[anchors]
            cost = key.gather(1, nb.reshape(b, -1)).view_as(nb)
        elif first:
            cost = _boundary_cost(yf, lab, hw)
        else:
            # slot features: size-weighted means of the merged stage-before clusters
            yc = add_rows(yf * sizes[..., None], root, m)
            ws = torch.zeros(b, m, device=dev).scatter_add_(1, root, sizes)
            yc = yc / ws.clamp_min(1)[..., None]
            cost = _boundary_cost(yc, lab, hw)
        if not randomize:
            cost_sum = torch.zeros(b, m, device=dev).scatter_add_(
                1,
                lab[..., None].expand_as(cost).reshape(b, -1),
                cost.masked_fill(~edge, 0).reshape(b, -1),
            )
            cnt = torch.zeros(b, m, device=dev).scatter_add_(
                1, lab[..., None].expand_as(cost).reshape(b, -1), edge.float().reshape(b, -1)
            )
            rho = torch.exp(-cost_sum / cnt.clamp_min(1))
        first = False
        src = lab[..., None].expand_as(nb)
        r_src, r_dst = rho.gather(1, src.reshape(b, -1)), rho.gather(1, nb.reshape(b, -1))
        denser = (r_dst > r_src) | ((r_dst == r_src) & (nb.reshape(b, -1) < src.reshape(b, -1)))
        cost = cost.reshape(b, -1).masked_fill(~(edge.reshape(b, -1) & denser), float('inf'))
        # each slot's cheapest link to a denser neighbour; ties: the lowest slot
        best = torch.full((b, m), float('inf'), device=dev)
        best.scatter_reduce_(1, src.reshape(b, -1), cost, reduce='amin')
        at_best = torch.isfinite(cost) & (cost == best.gather(1, src.reshape(b, -1)))
        parent = torch.full((b, m), m, dtype=torch.long, device=dev)
        parent.scatter_reduce_(
            1, src.reshape(b, -1), torch.where(at_best, nb.reshape(b, -1), m), reduce='amin'
        )
        has = torch.isfinite(best) & alive
        # keep each image's `need` cheapest links (ties: lower slot first)
        rank_key = torch.where(has, best, float('inf'))
        order = torch.sort(rank_key, dim=1, stable=True).indices
        rank = torch.empty_like(order).scatter_(1, order, ar_m.expand(b, m))
        keep = has & (rank < need[:, None])
        root = follow_to_roots(torch.where(keep, parent, ar_m)).gather(1, root)
    else:  # pragma: no cover - the loop always breaks
        raise RuntimeError('coarsen_assignment did not reach its budget; this is a bug')
    return assignment_from_groups(root.gather(1, assignment.labels), hw)


def _boundary_cost(yc: Tensor, lab: Tensor, hw) -> Tensor:
    """``[B, N, 8]`` distance of every token's slot to each 8-neighbour's slot."""
    grid = take_rows(yc, lab)  # [B, N, C]
    return window_sqdist(grid, hw, window_offsets(1, yc.device))[..., 1:]
