"""The AiluRus options: one typed, frozen, validated object.

Pure torch/python, no OpenMMLab import. Every backbone, tool and analysis
takes its options from :class:`AiluRusOptions`; a config's
``ailurus=dict(...)`` goes through :meth:`AiluRusOptions.from_dict` (unknown
keys and out-of-range values fail at model build time, naming the key, the
value and the allowed range) and changes go through
:meth:`AiluRusOptions.replace`, which validates again.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from ._validate import check_bool, check_choice, check_int, check_ratio
from .assignment import resolve_num_clusters
from .baselines import pool_num_groups, pool_stride
from .cluster import DEFAULT_OPTIONS, validate_cluster_options
from .merge import MERGE_MODES
from .reconstruct import RECONSTRUCT_MODES
from .reduce import REDUCTION_METHODS

__all__ = [
    'AiluRusOptions',
    'CLUSTER_KEYS',
    'RECONSTRUCT_MODES',
    'DISTANCE_MODES',
    'ATTN_KERNELS',
    'SCHEDULE_METHODS',
    'RECONSTRUCT_LEVELS',
    'STAGE_CLUSTERINGS',
]

#: Methods that reduce step by step instead of once: ``'tome_layers'`` is
#: ToMe as its users run it (r tokens merged before every layer from
#: ``cluster_after`` on, bipartite soft matching on the keys, size-weighted
#: means, proportional attention, unmerged at the outputs).
SCHEDULE_METHODS = ('tome_layers',)
#: What the clustering compares: the tokens or the next layer's attention keys.
DISTANCE_MODES = ('features', 'keys')
#: Values of ``fast_attn``.
ATTN_KERNELS = ('auto', True, False)
#: Where merged tokens return to the grid: the backbone's outputs, or the
#: decode head's logits (the head runs on the M merged tokens).
RECONSTRUCT_LEVELS = ('features', 'logits')
#: What a later clustering stage clusters: the grid reconstructed from the
#: stage before (every token free again), or the stage before's clusters
#: (merged with their neighbours: nested stages, ``ops.coarsen``).
STAGE_CLUSTERINGS = ('grid', 'clusters')
#: Methods a ``stage_clustering='clusters'`` stage can use (``random``: the
#: seeded random twin of the same nesting).
COARSEN_METHODS = ('adjacent', 'random')
#: Reconstruction modes that need nothing but the cluster outputs (so they
#: also apply to a head's logits).
OUTPUT_ONLY_MODES = ('hard', 'soft')

#: The options handed to :func:`ailurus_mm.ops.reduce_tokens` (each method
#: takes the ones it uses).
CLUSTER_KEYS = ('k', 'density_radius', 'link_radius', 'assign_radius', 'link_to')


@dataclass(frozen=True)
class AiluRusOptions:
    """Everything that decides how a backbone reduces its tokens.

    Attributes:
        enabled (bool): False runs the stock forward. Default: True.
        cluster_after (int): layers that run on all tokens; the output of
            layer ``cluster_after`` (1-based: "cluster on the output of layer
            2") is clustered. In ``[0, num_layers - 1]``. Default: 2 (set it
            per model: docs/results.md).
        keep_ratio (float | None): M / N in ``(0, 1]``; 1.0 is the stock
            model. Default: 0.4 (set it per model).
        num_clusters (int | None): a fixed M (>= 1) instead of ``keep_ratio``;
            exactly one of the two is set.
        method (str): ``'adjacent'`` (default), ``'dpc'``, ``'dpc_global'`` or
            a baseline ``'pool'``/``'random'``/``'tome'`` (once, at
            ``cluster_after``) or ``'tome_layers'`` (ToMe's schedule: tokens
            merged before every layer from ``cluster_after`` on, down to M at
            the last layer; see :data:`SCHEDULE_METHODS`).
        k, density_radius, link_radius, assign_radius, link_to: clustering
            options of :func:`ailurus_mm.ops.cluster_tokens`.
        seed (int): for ``method='random'``. Default: 0.
        merge (str): ``'mean'`` or ``'anchor'``. Default: 'mean'.
        size_aware (bool): add ``log(size)`` to the attention logits of merged
            keys. Default: True.
        fast_attn (str | bool): which attention kernel the layers use.
            ``'auto'`` (default): the fused kernel (SDPA) in every layer
            whenever tokens are reduced, the backbone's stock path when
            nothing is (so keep-all is the stock model bit for bit).
            ``True``: the fused kernel always (the benchmark control: the
            stock model through the same kernel as AiluRus). ``False``: the
            stock path before clustering, fused after it.
        reconstruct (str): how a layer's merged outputs return to the grid.
            ``'hard'`` (default): every token copies its cluster's output.
            ``'residual'``: the token's own input at the clustering layer
            plus its cluster's change since then. ``'soft'``: a weighted sum
            of the outputs of the clusters in the token's 3x3 window, weighted
            by the softmax (temperature ``soft_temperature``) of the cosine
            similarity of the token's input at the clustering layer to those
            clusters' merged inputs, over the ``soft_topk`` most similar
            (Expedite-style token reconstruction; windowed, O(N) memory).
            ``'soft_residual'``: the same weights applied to the changes.
        soft_topk (int): clusters mixed by ``'soft'`` reconstruction, in
            ``[1, 9]``. Default: 3.
        soft_temperature (float): softmax temperature of ``'soft'`` on cosine
            similarities, ``> 0``. Default: 0.05.
        refine_layers (int): the last ``refine_layers`` layers run on the
            reconstructed full-resolution tokens (no reduction there), in
            ``[0, num_layers - cluster_after - 1]``. Default: 0.
        reconstruct_level (str): ``'features'`` (default): the backbone's
            outputs are reconstructed to the grid, so any head works.
            ``'logits'``: the backbone returns its last output as the M merged
            tokens and the segmentor (``AiluRusEncoderDecoder``) runs the
            decode head on them and reconstructs the head's logits (Expedite,
            CTS, ALGM); saves the head's cost, needs a per-token or
            token-set head (1x1-conv ``FCNHead``, Segmenter's mask
            transformer), ``reconstruct`` ``'hard'`` or ``'soft'`` and
            ``refine_layers=0``. For a 1x1-conv head with ``'hard'`` it equals
            ``'features'`` up to rounding.
        distance (str): ``'features'`` (default) clusters the tokens
            themselves; ``'keys'`` clusters the attention keys of the first
            layer that runs on the merged tokens (ToMe's choice).
        second_after (int | Sequence[int] | None): a second, coarser
            clustering stage before layer ``second_after`` (0-based, the same
            count as ``cluster_after``): the merged tokens are reconstructed to
            the grid (``reconstruct``), clustered again (same ``method`` and
            options) down to ``second_keep_ratio`` and merged; the outputs
            after it are reconstructed from that stage. A sequence gives
            several later stages (e.g. ``(5, 8)`` with ``(0.5, 0.3)``: a
            third stage after the second), strictly increasing, each in
            ``[cluster_after + 1, num_layers - refine_layers - 1]``. Default:
            None (one stage). Not with ``'tome_layers'`` (already gradual).
        second_keep_ratio (float | Sequence[float] | None): each later
            stage's M / N (of all N patch tokens), strictly decreasing, in
            ``(0, keep_ratio)``; set with ``second_after`` (a sequence of the
            same length when ``second_after`` is one).
        stage_clustering (str): how a later stage groups the tokens.
            ``'grid'`` (default): it clusters the grid reconstructed from the
            stage before (same ``method`` and options as the first stage).
            ``'clusters'``: it merges whole clusters of the stage before with
            adjacent ones (density-peaks links on the clusters' region
            adjacency graph, :func:`ailurus_mm.ops.coarsen_assignment`), so
            stages nest and a cluster can outgrow one window; ``method``
            ``'adjacent'`` or ``'random'`` (its seeded random twin).
        num_layers (int | None): the backbone's depth, for the range of
            ``cluster_after`` (not an option: set by :meth:`from_dict`).
    """

    enabled: bool = True
    cluster_after: int = 2
    keep_ratio: Optional[float] = 0.4
    num_clusters: Optional[int] = None
    method: str = DEFAULT_OPTIONS['method']
    k: int = DEFAULT_OPTIONS['k']
    density_radius: int = DEFAULT_OPTIONS['density_radius']
    link_radius: int = DEFAULT_OPTIONS['link_radius']
    assign_radius: int = DEFAULT_OPTIONS['assign_radius']
    link_to: str = DEFAULT_OPTIONS['link_to']
    seed: int = 0
    merge: str = 'mean'
    size_aware: bool = True
    fast_attn: Union[bool, str] = 'auto'
    reconstruct: str = 'hard'
    soft_topk: int = 3
    soft_temperature: float = 0.05
    refine_layers: int = 0
    reconstruct_level: str = 'features'
    distance: str = 'features'
    second_after: Optional[Union[int, Tuple[int, ...]]] = None
    second_keep_ratio: Optional[Union[float, Tuple[float, ...]]] = None
    stage_clustering: str = 'grid'
    num_layers: Optional[int] = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        self._validate()

    # ------------------------------------------------------------------
    # construction

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        """The option names a config's ``ailurus`` dict may hold."""
        return tuple(f.name for f in dataclasses.fields(cls) if f.name != 'num_layers')

    @classmethod
    def from_dict(
        cls, cfg: Optional[Union[Mapping[str, Any], 'AiluRusOptions']], num_layers: int
    ) -> 'AiluRusOptions':
        """Defaults filled in, every value validated.

        Args:
            cfg (Mapping | AiluRusOptions | None): the config's ``ailurus``
                dict (any subset of :meth:`keys`), or options to re-check.
            num_layers (int): depth of the backbone.

        Raises:
            ValueError: naming the offending key, its value and the allowed
                range (unknown keys too).
        """
        if isinstance(cfg, AiluRusOptions):
            cfg = cfg.to_dict()
        cfg = dict(cfg or {})
        unknown = sorted(set(cfg) - set(cls.keys()))
        if unknown:
            raise ValueError(f'ailurus: unknown option(s) {unknown}; allowed: {sorted(cls.keys())}')
        if cfg.get('num_clusters') is not None and cfg.get('keep_ratio') is not None:
            raise ValueError(
                'ailurus: give either keep_ratio or num_clusters, not both '
                f'(keep_ratio={cfg["keep_ratio"]!r}, num_clusters={cfg["num_clusters"]!r})'
            )
        if cfg.get('num_clusters') is not None:
            cfg.setdefault('keep_ratio', None)
        return cls(num_layers=num_layers, **cfg)

    def replace(self, **overrides) -> 'AiluRusOptions':
        """A validated copy with ``overrides`` applied.

        Giving ``num_clusters`` clears ``keep_ratio`` and vice versa, so
        ``replace(num_clusters=100)`` on ratio-based options just works.
        """
        unknown = sorted(set(overrides) - set(self.keys()))
        if unknown:
            raise ValueError(
                f'ailurus: unknown option(s) {unknown}; allowed: {sorted(self.keys())}'
            )
        cfg = self.to_dict()
        if overrides.get('num_clusters') is not None and 'keep_ratio' not in overrides:
            cfg['keep_ratio'] = None
        if overrides.get('keep_ratio') is not None and 'num_clusters' not in overrides:
            cfg['num_clusters'] = None
        cfg.update(overrides)
        return self.from_dict(cfg, self.num_layers)

    def to_dict(self) -> Dict[str, Any]:
        """The options as a plain dict (what a config's ``ailurus`` holds)."""
        return {k: getattr(self, k) for k in self.keys()}

    # ------------------------------------------------------------------
    # validation (the single owner of every range)

    def _validate(self) -> None:
        for key in ('enabled', 'size_aware'):
            check_bool(f'ailurus.{key}', getattr(self, key))
        if not (self.fast_attn is True or self.fast_attn is False or self.fast_attn == 'auto'):
            raise ValueError(f'ailurus.fast_attn={self.fast_attn!r} is not one of {ATTN_KERNELS}')
        check_choice('ailurus.reconstruct', self.reconstruct, RECONSTRUCT_MODES)
        check_choice('ailurus.distance', self.distance, DISTANCE_MODES)
        check_choice('ailurus.reconstruct_level', self.reconstruct_level, RECONSTRUCT_LEVELS)
        check_int('ailurus.soft_topk', self.soft_topk, 1, 9)
        if (
            isinstance(self.soft_temperature, bool)
            or not isinstance(self.soft_temperature, (int, float))
            or not self.soft_temperature > 0
        ):
            raise ValueError(
                f'ailurus.soft_temperature={self.soft_temperature!r} is outside the allowed '
                'range: a number > 0'
            )
        if self.num_layers is not None:
            check_int('num_layers', self.num_layers, 1)
        high = None if self.num_layers is None else self.num_layers - 1
        check_int(
            'ailurus.cluster_after',
            self.cluster_after,
            0,
            high,
            hint='layers run on all tokens before clustering',
        )
        if (self.keep_ratio is None) == (self.num_clusters is None):
            raise ValueError(
                'ailurus: exactly one of keep_ratio and num_clusters must be set '
                f'(keep_ratio={self.keep_ratio!r}, num_clusters={self.num_clusters!r})'
            )
        if self.keep_ratio is not None:
            # frozen: object.__setattr__ is the dataclass way to normalise in __post_init__
            object.__setattr__(
                self, 'keep_ratio', check_ratio('ailurus.keep_ratio', self.keep_ratio)
            )
        else:
            check_int(
                'ailurus.num_clusters',
                self.num_clusters,
                1,
                hint='and <= the number of patch tokens, checked per input',
            )
        rest = None if self.num_layers is None else self.num_layers - self.cluster_after - 1
        check_int(
            'ailurus.refine_layers',
            self.refine_layers,
            0,
            rest,
            hint='final layers run on reconstructed tokens; at least one layer runs merged',
        )
        check_choice('ailurus.method', self.method, REDUCTION_METHODS + SCHEDULE_METHODS)
        if self.method in SCHEDULE_METHODS and (self.reconstruct != 'hard' or self.refine_layers):
            raise ValueError(
                f"ailurus.method={self.method!r} unmerges by copying (reconstruct='hard', "
                f'refine_layers=0), got reconstruct={self.reconstruct!r}, '
                f'refine_layers={self.refine_layers}'
            )
        if self.reconstruct_level == 'logits' and (
            self.reconstruct not in OUTPUT_ONLY_MODES or self.refine_layers
        ):
            raise ValueError(
                "ailurus.reconstruct_level='logits' reconstructs the head's logits from the "
                f'cluster outputs alone: reconstruct must be one of {OUTPUT_ONLY_MODES} and '
                f'refine_layers 0, got reconstruct={self.reconstruct!r}, '
                f'refine_layers={self.refine_layers}'
            )
        self._validate_second_stage()
        check_choice('ailurus.merge', self.merge, MERGE_MODES)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise ValueError(f'ailurus.seed={self.seed!r} must be an int')
        # baselines use a subset of the clustering options; check them all
        # with the reading that uses the most (dpc) unless it is the method
        reading = self.method if self.method in ('adjacent', 'dpc_global') else 'dpc'
        validate_cluster_options(
            reading,
            self.k,
            self.density_radius,
            self.link_radius,
            self.assign_radius,
            self.link_to,
            prefix='ailurus.',
        )

    def _validate_second_stage(self) -> None:
        if (self.second_after is None) != (self.second_keep_ratio is None):
            raise ValueError(
                'ailurus: second_after and second_keep_ratio go together (the second '
                f'clustering stage), got second_after={self.second_after!r}, '
                f'second_keep_ratio={self.second_keep_ratio!r}'
            )
        check_choice('ailurus.stage_clustering', self.stage_clustering, STAGE_CLUSTERINGS)
        if self.stage_clustering == 'clusters' and self.method not in COARSEN_METHODS:
            raise ValueError(
                f"ailurus.stage_clustering='clusters' merges clusters with method "
                f'{COARSEN_METHODS[0]!r} or its random twin {COARSEN_METHODS[1]!r}, '
                f'got method={self.method!r}'
            )
        if self.second_after is None:
            if self.stage_clustering != 'grid':
                raise ValueError(
                    f'ailurus.stage_clustering={self.stage_clustering!r} sets how later '
                    'stages cluster; give them with second_after / second_keep_ratio'
                )
            return
        if self.method in SCHEDULE_METHODS:
            raise ValueError(
                f'ailurus.second_after={self.second_after!r}: method={self.method!r} merges '
                'before every layer already; a second stage needs a one-shot method'
            )
        many = [isinstance(v, (list, tuple)) for v in (self.second_after, self.second_keep_ratio)]
        if many[0] != many[1] or (
            many[0] and not 0 < len(self.second_after) == len(self.second_keep_ratio)
        ):
            raise ValueError(
                'ailurus: second_after and second_keep_ratio are both numbers (one later '
                'stage) or both non-empty sequences of the same length (one entry per stage), '
                f'got second_after={self.second_after!r}, '
                f'second_keep_ratio={self.second_keep_ratio!r}'
            )
        afters = tuple(self.second_after) if many[0] else (self.second_after,)
        ratios = tuple(self.second_keep_ratio) if many[0] else (self.second_keep_ratio,)
        high = None
        if self.num_layers is not None:
            high = self.num_layers - self.refine_layers - 1
        prev_after, prev_ratio = self.cluster_after, self.keep_ratio
        checked = []
        for j, (after, ratio) in enumerate(zip(afters, ratios)):
            tag = f'[{j}]' if many[0] else ''
            check_int(
                f'ailurus.second_after{tag}',
                after,
                prev_after + 1,
                high,
                hint='after the previous stage, before the refine layers; at least one layer '
                'runs on its tokens',
            )
            ratio = check_ratio(f'ailurus.second_keep_ratio{tag}', ratio)
            if prev_ratio is not None and not ratio < prev_ratio:
                what = 'keep_ratio' if j == 0 else f'second_keep_ratio[{j - 1}]'
                raise ValueError(
                    f'ailurus.second_keep_ratio{tag}={ratio!r} is outside the allowed range (0, '
                    f'{what}={prev_ratio!r}): each later stage is coarser'
                )
            checked.append(ratio)
            prev_after, prev_ratio = after, ratio
        # frozen: normalise sequences to tuples (hashable) and ratios to floats
        object.__setattr__(self, 'second_after', afters if many[0] else afters[0])
        object.__setattr__(
            self, 'second_keep_ratio', tuple(checked) if many[0] else checked[0]
        )

    def later_stages(self) -> Tuple[Tuple[int, float], ...]:
        """``((second_after, second_keep_ratio), ...)``, one pair per later
        stage (empty: one stage)."""
        if self.second_after is None:
            return ()
        if isinstance(self.second_after, tuple):
            return tuple(zip(self.second_after, self.second_keep_ratio))
        return ((self.second_after, self.second_keep_ratio),)

    # ------------------------------------------------------------------
    # what the options mean for a given grid

    @property
    def budget(self) -> Union[int, float]:
        """The ``num_clusters`` argument of :func:`ailurus_mm.ops.reduce_tokens`."""
        return self.keep_ratio if self.keep_ratio is not None else self.num_clusters

    def cluster_kwargs(self) -> Dict[str, Any]:
        """Keyword arguments of :func:`ailurus_mm.ops.reduce_tokens` besides
        the tokens, the grid and the budget."""
        return dict(
            method=self.method, seed=self.seed, **{k: getattr(self, k) for k in CLUSTER_KEYS}
        )

    def num_kept(self, hw: Sequence[int]) -> int:
        """Patch tokens left after the reduction on an ``H x W`` grid.

        Right for every method: ``pool`` leaves the number of blocks its
        stride gives, not the requested M.

        Raises:
            ValueError: if ``num_clusters`` exceeds the grid's token count.
        """
        h, w = int(hw[0]), int(hw[1])
        n = h * w
        if not self.enabled:
            return n
        if self.num_clusters is not None and self.num_clusters > n:
            raise ValueError(
                f'ailurus.num_clusters={self.num_clusters} is more than the {n} patch tokens '
                f'of a {h}x{w} grid'
            )
        if self.method == 'pool':
            return pool_num_groups((h, w), pool_stride(self.budget, n))
        return resolve_num_clusters(self.budget, n)

    def fused(self, hw: Sequence[int]) -> bool:
        """Whether the layers run the fused attention kernel on this grid."""
        if self.fast_attn == 'auto':
            return self.reduces(hw)
        return bool(self.fast_attn)

    def reduces(self, hw: Sequence[int]) -> bool:
        """Whether any token is merged on this grid (False: the stock model)."""
        return self.enabled and self.num_kept(hw) < int(hw[0]) * int(hw[1])

    def layer_merges(self, hw: Sequence[int]) -> List[int]:
        """``'tome_layers'``: tokens merged before each layer from
        ``cluster_after`` on (ToMe's constant r, the last steps clipped so the
        last layer runs on M tokens)."""
        if self.num_layers is None:
            raise ValueError('layer_merges needs num_layers (build the options with from_dict)')
        n = int(hw[0]) * int(hw[1])
        m = self.num_kept(hw) if self.reduces(hw) else n
        steps = self.num_layers - self.cluster_after
        r = -(-(n - m) // steps)
        out, cur = [], n
        for _ in range(steps):
            k = min(r, cur - m, (cur + 1) // 2 if cur > 1 else 0)
            out.append(k)
            cur -= k
        return out

    def token_counts(self, hw: Sequence[int], num_prefix_tokens: int = 0) -> List[int]:
        """Tokens entering each layer, prefix (class/register) tokens included."""
        if self.num_layers is None:
            raise ValueError('token_counts needs num_layers (build the options with from_dict)')
        n = int(hw[0]) * int(hw[1])
        if self.method in SCHEDULE_METHODS and self.reduces(hw):
            counts, cur = [n] * self.cluster_after, n
            for k in self.layer_merges(hw):
                cur -= k
                counts.append(cur)
            return [num_prefix_tokens + c for c in counts]
        m = self.num_kept(hw) if self.reduces(hw) else n
        merged_until = self.num_layers - self.refine_layers
        counts = [m if self.cluster_after <= i < merged_until else n for i in range(self.num_layers)]
        if m < n:
            for after, m2 in self.later_stage_plan(hw):
                counts[after:merged_until] = [m2] * (merged_until - after)
        return [num_prefix_tokens + c for c in counts]

    def later_stage_plan(self, hw: Sequence[int]) -> List[Tuple[int, int]]:
        """``[(layer, M_s), ...]``: before which layer each later stage
        clusters, and the patch tokens it keeps (``second_keep_ratio`` of
        the grid; ``pool`` rounds to its block grid). Empty for one stage.

        Raises:
            ValueError: when a stage would not be coarser than the one
                before it on this grid.
        """
        h, w = int(hw[0]), int(hw[1])
        n = h * w
        plan, prev = [], self.num_kept(hw)
        stages = self.later_stages()
        for j, (after, ratio) in enumerate(stages):
            if self.method == 'pool':
                m = pool_num_groups((h, w), pool_stride(ratio, n))
            else:
                m = resolve_num_clusters(ratio, n)
            if not m < prev:
                tag = f'[{j}]' if isinstance(self.second_after, tuple) else ''
                what = 'first stage' if j == 0 else 'stage before it'
                raise ValueError(
                    f'ailurus.second_keep_ratio{tag}={ratio} keeps {m} of the {n} tokens of a '
                    f"{h}x{w} grid, not fewer than the {what}'s {prev}"
                )
            plan.append((after, m))
            prev = m
        return plan
