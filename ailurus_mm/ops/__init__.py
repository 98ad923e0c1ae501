"""AiluRus as pure torch functions (no OpenMMLab import).

===================  ==========================================================
module               owns
===================  ==========================================================
``assignment``       :class:`ClusterAssignment`, budgets, canonical labels
``window``           spatial windows: offsets, neighbours, distances, density
``cluster``          the AiluRus readings (``adjacent``, ``dpc``, ``dpc_global``)
``baselines``        ``pool``, ``random``, ``tome`` at the same budget
``reduce``           :func:`reduce_tokens`: any method by name
``coarsen``          later stages that merge the clusters of the stage before
``merge``            merging tokens into clusters, unfolding them back
``attention``        the ``log(size)`` key bias and size-aware attention
``options``          :class:`AiluRusOptions`: every option, validated once
``engine``           :class:`ReductionEngine`: the reduced forward of any ViT
===================  ==========================================================
"""

from .assignment import (
    ClusterAssignment,
    assignment_from_groups,
    assignment_from_labels,
    resolve_num_clusters,
)
from .attention import size_attn_bias, size_aware_attention
from .baselines import (
    BASELINE_METHODS,
    pool_assignment,
    pool_num_groups,
    pool_stride,
    random_assignment,
    tome_assignment,
)
from .cluster import (
    CLUSTER_METHODS,
    DEFAULT_OPTIONS,
    LINK_MODES,
    cluster_tokens,
    validate_cluster_options,
)
from .coarsen import coarsen_assignment
from .engine import PrefixState, ReductionEngine, ReductionOutput
from .merge import MERGE_MODES, merge_tokens, unfold_tokens
from .options import AiluRusOptions
from .reduce import REDUCTION_METHODS, reduce_tokens

__all__ = [
    'AiluRusOptions',
    'ReductionEngine',
    'PrefixState',
    'ReductionOutput',
    'ClusterAssignment',
    'cluster_tokens',
    'merge_tokens',
    'unfold_tokens',
    'size_attn_bias',
    'size_aware_attention',
    'resolve_num_clusters',
    'assignment_from_labels',
    'assignment_from_groups',
    'validate_cluster_options',
    'reduce_tokens',
    'coarsen_assignment',
    'pool_assignment',
    'pool_num_groups',
    'pool_stride',
    'random_assignment',
    'tome_assignment',
    'CLUSTER_METHODS',
    'BASELINE_METHODS',
    'REDUCTION_METHODS',
    'DEFAULT_OPTIONS',
    'MERGE_MODES',
    'LINK_MODES',
]
