"""One entry point for every token reduction, by method name.

Pure torch. The AiluRus readings (``adjacent``, ``dpc``, ``dpc_global``) and
the baselines (``pool``, ``random``, ``tome``) all return a
:class:`~ailurus_mm.ops.assignment.ClusterAssignment`.
"""

from __future__ import annotations

from typing import Sequence, Union

from torch import Tensor

from ._validate import check_choice
from .assignment import ClusterAssignment
from .baselines import (
    BASELINE_METHODS,
    pool_assignment,
    pool_stride,
    random_assignment,
    tome_assignment,
)
from .cluster import CLUSTER_METHODS, DEFAULT_OPTIONS, cluster_tokens

__all__ = ['REDUCTION_METHODS', 'reduce_tokens']

REDUCTION_METHODS = CLUSTER_METHODS + BASELINE_METHODS


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
    check_choice('method', method, REDUCTION_METHODS)
    raise AssertionError('unreachable')
