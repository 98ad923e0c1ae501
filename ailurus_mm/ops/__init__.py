"""AiluRus as pure torch functions (no OpenMMLab import)."""

from .attention import size_attn_bias, size_aware_attention
from .baselines import (
    BASELINE_METHODS,
    REDUCTION_METHODS,
    assignment_from_groups,
    pool_assignment,
    pool_stride,
    random_assignment,
    reduce_tokens,
    tome_assignment,
)
from .cluster import (
    CLUSTER_METHODS,
    DEFAULT_OPTIONS,
    LINK_MODES,
    ClusterAssignment,
    assignment_from_labels,
    cluster_tokens,
    resolve_num_clusters,
    validate_cluster_options,
)
from .merge import MERGE_MODES, merge_tokens, unfold_tokens

__all__ = [
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
    'pool_assignment',
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
