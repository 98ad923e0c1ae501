"""The token-reduction forward, written once for every plain ViT.

Pure torch, no OpenMMLab import. A backbone supplies its token sequence
(after embedding), its depth, and one callable that runs layer ``i`` with an
optional additive key bias; :class:`ReductionEngine` does the rest:

1. layers ``0 .. L-1`` on every token (``L = cluster_after``);
2. cluster the patch tokens of layer ``L``'s input (prefix tokens, i.e. class
   and register tokens, are counted once and never merged), merge them;
3. layers ``L ..`` on ``prefix + M`` tokens with the ``log(size)`` key bias
   (with ``second_after``: from that layer on, the tokens are reconstructed
   to the grid, clustered again to ``M2 < M`` and merged; a sequence of
   layers gives a stage before each);
4. every requested output unfolded back to ``prefix + N`` tokens.

Step 1 does not depend on the reduction setting, so it is exposed on its own
(:meth:`ReductionEngine.run_prefix`): a sweep or an analysis computes it once
per image and runs many settings from it (:meth:`ReductionEngine.run_rest`),
with exactly the numbers of the uncached path. The assignment is part of the
result and can be passed in, so whoever needs it (analysis, reconstruction
of a head's output) gets it explicitly.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ._validate import check_int
from .assignment import ClusterAssignment, assignment_from_groups
from .attention import size_attn_bias
from .baselines import bipartite_soft_matching, merge_by_ids
from .coarsen import coarsen_assignment
from .merge import merge_tokens
from .options import SCHEDULE_METHODS, AiluRusOptions
from .reconstruct import reconstruct_tokens, soft_weights
from .reduce import reduce_tokens
from .window import take_rows

__all__ = ['ReductionEngine', 'PrefixState', 'ReductionOutput', 'LayerRunner']

#: ``run_layer(index, x, key_bias, fused) -> x``: run layer ``index`` on
#: ``x [B, L, C]``. ``key_bias`` is None or a ``[B, 1, 1, L]`` additive
#: attention-logit mask; ``fused`` asks for the fused attention kernel. With
#: ``key_bias=None`` and ``fused=False`` the backbone runs its stock layer.
LayerRunner = Callable[[int, Tensor, Optional[Tensor], bool], Tensor]


@dataclass
class PrefixState:
    """Where the setting-independent part of a forward ends.

    Attributes:
        x (Tensor): ``[B, P + N, C]`` input of layer ``stop``.
        hw (tuple[int, int]): the patch grid.
        stop (int): number of layers already run (the clustering layer).
        fused (bool): whether those layers ran through the fused kernel.
        outs (list[Tensor]): requested outputs collected so far (full
            ``[B, P + N, C]`` sequences, in order).
    """

    x: Tensor
    hw: Tuple[int, int]
    stop: int
    fused: bool
    outs: List[Tensor] = field(default_factory=list)


@dataclass
class ReductionOutput:
    """A reduced forward's result.

    Attributes:
        outs (list[Tensor]): every requested output as a full-resolution
            ``[B, P + N, C]`` sequence (prefix tokens first), in order.
        assignment (ClusterAssignment | None): the clustering used, None when
            nothing was merged (with later stages: the last stage's, which
            the last layers and the outputs after it use).
        hw (tuple[int, int]): the patch grid.
        num_prefix_tokens (int): P.
        num_merged (int): with ``reconstruct_level='logits'``, how many of the
            last outputs are left as merged ``[B, P + M, C]`` sequences
            (0: every output is full resolution).
        unfold (callable, optional): ``[B, M, C'] -> [B, N, C']``, the
            reconstruction of the merged outputs' patch tokens (any
            per-token quantity, e.g. a head's logits); set when
            ``num_merged > 0``.
    """

    outs: List[Tensor]
    assignment: Optional[ClusterAssignment]
    hw: Tuple[int, int]
    num_prefix_tokens: int
    num_merged: int = 0
    unfold: Optional[Callable[[Tensor], Tensor]] = None


class ReductionEngine:
    """Runs a ViT's layers with AiluRus token reduction.

    Args:
        run_layer (LayerRunner): runs one layer (see :data:`LayerRunner`).
        num_layers (int): depth.
        num_prefix_tokens (int): class/register tokens in front of the patch
            tokens; never merged, size 1 in the attention bias.
        out_indices (Sequence[int]): layers whose outputs are returned.
        after_layer (callable, optional): ``(index, x) -> x`` applied after a
            layer and before its output is collected (e.g. a final norm); it
            must act per token (it is applied after reconstruction).
        include_input (bool): also return the input sequence as the first
            output (mmseg's ``out_origin``).
        layer_keys (callable, optional): ``(index, x) -> keys [B, L, C']``, the
            attention keys layer ``index`` would compute from ``x``; needed by
            ``distance='keys'``.
    """

    def __init__(
        self,
        run_layer: LayerRunner,
        num_layers: int,
        num_prefix_tokens: int,
        out_indices: Sequence[int],
        after_layer: Optional[Callable[[int, Tensor], Tensor]] = None,
        include_input: bool = False,
        layer_keys: Optional[Callable[[int, Tensor], Tensor]] = None,
    ):
        self.run_layer = run_layer
        self.num_layers = check_int('num_layers', num_layers, 1)
        self.num_prefix_tokens = check_int('num_prefix_tokens', num_prefix_tokens, 0)
        self.out_indices = tuple(out_indices)
        self.after_layer = after_layer
        self.include_input = include_input
        self.layer_keys = layer_keys

    def _layer(self, i: int, x: Tensor, bias: Optional[Tensor], fused: bool) -> Tensor:
        x = self.run_layer(i, x, bias, fused)
        if self.after_layer is not None:
            x = self.after_layer(i, x)
        return x

    def _check_tokens(self, x: Tensor, hw: Sequence[int]) -> Tuple[int, int]:
        h, w = int(hw[0]), int(hw[1])
        if x.dim() != 3 or x.shape[1] != self.num_prefix_tokens + h * w:
            raise ValueError(
                f'tokens must be [B, {self.num_prefix_tokens} + {h}x{w}, C], got {tuple(x.shape)}'
            )
        return h, w

    def run_prefix(self, x: Tensor, hw: Sequence[int], options: AiluRusOptions) -> PrefixState:
        """Layers ``0 .. cluster_after - 1`` on every token.

        Args:
            x (Tensor): ``[B, P + N, C]`` embedded tokens.
            hw (Sequence[int]): the patch grid.
            options (AiluRusOptions): only ``cluster_after`` and ``fast_attn``
                are used; the state serves every setting that shares them.
        """
        hw = self._check_tokens(x, hw)
        stop = options.cluster_after
        fused = options.fused(hw)
        outs = [x] if self.include_input else []
        for i in range(stop):
            x = self._layer(i, x, None, fused)
            if i in self.out_indices:
                outs.append(x)
        return PrefixState(x=x, hw=hw, stop=stop, fused=fused, outs=outs)

    def run_rest(
        self,
        state: PrefixState,
        options: AiluRusOptions,
        assignment: Optional[ClusterAssignment] = None,
    ) -> ReductionOutput:
        """Cluster, merge, and run the remaining layers.

        Args:
            state (PrefixState): from :meth:`run_prefix` with the same
                ``cluster_after`` and ``fast_attn``.
            options (AiluRusOptions): the setting.
            assignment (ClusterAssignment, optional): use this grouping
                instead of clustering (it must match the batch and the grid).
        """
        fused = options.fused(state.hw)
        if state.stop != options.cluster_after or state.fused != fused:
            raise ValueError(
                f'the prefix state ran {state.stop} layers (fused kernel: {state.fused}); the '
                f'options ask for cluster_after={options.cluster_after} (fused kernel: {fused})'
            )
        x, hw, p = state.x, state.hw, self.num_prefix_tokens
        outs = list(state.outs)
        if options.method in SCHEDULE_METHODS and options.reduces(hw) and assignment is None:
            return self._run_layerwise(state, options, fused)
        if assignment is None and options.reduces(hw):
            assignment = self._reduce(x, hw, options, options.cluster_after, options.budget)
        if assignment is not None:
            self._check_assignment(assignment, x, hw)
            if assignment.num_clusters == assignment.num_tokens:
                assignment = None  # nothing merged: the stock path
        bias = rec = None
        if assignment is not None:
            tokens = x[:, p:]
            merged = merge_tokens(tokens, assignment, mode=options.merge)
            rec = _Reconstruction(options, assignment, tokens, merged)
            x = torch.cat([x[:, :p], merged], 1)
            if options.size_aware:
                bias = size_attn_bias(assignment.sizes, p, dtype=x.dtype)
        refine_from = self.num_layers - options.refine_layers
        keep_merged = options.reconstruct_level == 'logits'
        stages = dict(options.later_stage_plan(state.hw)) if rec is not None else {}
        last_stage = max(stages, default=None)
        num_merged = 0
        for i in range(state.stop, self.num_layers):
            if rec is not None and i == refine_from:
                x, bias, rec = rec.full(x, p), None, None  # the rest at full resolution
            if rec is not None and i in stages:
                # a later stage merges the reconstructed grid's tokens, so it sees the
                # same kind of input as the first; 'grid' also clusters that grid,
                # 'clusters' merges the current clusters (decided on their tokens)
                tokens = rec.full(x, p)
                if options.stage_clustering == 'clusters':
                    later = self._coarsen(x, assignment, options, i, stages[i])
                else:
                    later = self._reduce(tokens, hw, options, i, stages[i])
                self._check_assignment(later, tokens, hw)
                merged = merge_tokens(tokens[:, p:], later, mode=options.merge)
                rec = _Reconstruction(options, later, tokens[:, p:], merged)
                x, assignment = torch.cat([x[:, :p], merged], 1), later
                if options.size_aware:
                    bias = size_attn_bias(later.sizes, p, dtype=x.dtype)
            x = self.run_layer(i, x, bias, fused)
            if i in self.out_indices:
                # merged outputs share one unfold (the last stage's): an earlier
                # stage's outputs are reconstructed here when a later stage follows
                merged_out = keep_merged and (last_stage is None or i >= last_stage)
                out = x if rec is None or merged_out else rec.full(x, p)
                num_merged += int(rec is not None and merged_out)
                outs.append(out if self.after_layer is None else self.after_layer(i, out))
            if self.after_layer is not None:
                x = self.after_layer(i, x)
        return ReductionOutput(
            outs=outs,
            assignment=assignment,
            hw=hw,
            num_prefix_tokens=p,
            num_merged=num_merged,
            unfold=rec.patches if num_merged else None,
        )

    def __call__(
        self,
        x: Tensor,
        hw: Sequence[int],
        options: AiluRusOptions,
        assignment: Optional[ClusterAssignment] = None,
    ) -> ReductionOutput:
        """The whole forward: :meth:`run_prefix` then :meth:`run_rest`."""
        return self.run_rest(self.run_prefix(x, hw, options), options, assignment)

    def _run_layerwise(self, state: PrefixState, options: AiluRusOptions, fused: bool):
        """ToMe's schedule: merge before every layer, unmerge at the outputs.

        Mirrors ToMe (``tome/merge.py`` + ``tome/patch``): bipartite soft
        matching on the layer's keys (the tokens when the backbone gives no
        keys), size-weighted means, proportional attention (our log-size key
        bias), prefix tokens protected. It merges before a layer, where ToMe
        merges between the attention and the MLP of the previous block.
        """
        x, hw, p = state.x, state.hw, self.num_prefix_tokens
        outs = list(state.outs)
        b, n = x.shape[0], hw[0] * hw[1]
        labels = torch.arange(n, device=x.device).expand(b, n)  # token -> current slot
        size = x.new_ones(b, n, 1, dtype=torch.float32)
        bias = unfold = None
        keep_merged = options.reconstruct_level == 'logits'
        num_merged = 0
        for i, r in zip(range(state.stop, self.num_layers), options.layer_merges(hw)):
            if r:
                metric = x if self.layer_keys is None else self.layer_keys(i, x)
                ids = bipartite_soft_matching(metric[:, p:], r)
                merged, size = merge_by_ids(x[:, p:], ids, x.shape[1] - p - r, size)
                labels = ids.gather(1, labels)
                x = torch.cat([x[:, :p], merged], 1)
                if options.size_aware:
                    bias = size_attn_bias(size[..., 0], p, dtype=x.dtype)
            x = self.run_layer(i, x, bias, fused)
            if i in self.out_indices:
                unfold = functools.partial(_gather_tokens, labels=labels)
                out = x if keep_merged else torch.cat([x[:, :p], unfold(x[:, p:])], 1)
                num_merged += int(keep_merged)
                outs.append(out if self.after_layer is None else self.after_layer(i, out))
            if self.after_layer is not None:
                x = self.after_layer(i, x)
        assignment = assignment_from_groups(labels, hw)  # canonical ids, for analysis
        return ReductionOutput(
            outs=outs,
            assignment=assignment,
            hw=hw,
            num_prefix_tokens=p,
            num_merged=num_merged,
            unfold=unfold if num_merged else None,
        )

    def _reduce(
        self, x: Tensor, hw: Tuple[int, int], options: AiluRusOptions, layer: int, budget
    ) -> ClusterAssignment:
        """Cluster the patch tokens of ``x`` (the input of ``layer``)."""
        feats = self._compared(x, options, layer)
        return reduce_tokens(feats, hw, budget, **options.cluster_kwargs())

    def _compared(self, x: Tensor, options: AiluRusOptions, layer: int) -> Tensor:
        """What a clustering step compares: the patch tokens of ``x`` or, with
        ``distance='keys'``, the keys layer ``layer`` computes from them."""
        feats = x
        if options.distance == 'keys':
            if self.layer_keys is None:
                raise ValueError("ailurus.distance='keys' needs a backbone that gives layer_keys")
            feats = self.layer_keys(layer, x)
        return feats[:, self.num_prefix_tokens :]

    def _coarsen(
        self, x: Tensor, assignment: ClusterAssignment, options: AiluRusOptions, layer: int, m: int
    ) -> ClusterAssignment:
        """Merge the clusters of ``assignment`` (their tokens: ``x``, the
        input of ``layer``) with adjacent ones down to ``m``."""
        return coarsen_assignment(
            self._compared(x, options, layer),
            assignment,
            m,
            randomize=options.method == 'random',
            seed=options.seed,
        )

    def _check_assignment(self, a: ClusterAssignment, x: Tensor, hw: Tuple[int, int]) -> None:
        if not isinstance(a, ClusterAssignment):
            raise ValueError(f'assignment must be a ClusterAssignment, got {type(a).__name__}')
        if tuple(a.hw) != tuple(hw) or a.labels.shape != (x.shape[0], hw[0] * hw[1]):
            raise ValueError(
                f'assignment for a {a.hw} grid and batch {a.labels.shape[0]} does not fit '
                f'the tokens (grid {hw}, batch {x.shape[0]})'
            )


class _Reconstruction:
    """What reconstruction needs from the clustering step (see ``ops.reconstruct``)."""

    def __init__(
        self, options: AiluRusOptions, assignment: ClusterAssignment, tokens: Tensor, merged: Tensor
    ):
        self.mode = options.reconstruct
        self.assignment = assignment
        residual = self.mode in ('residual', 'soft_residual')
        self.tokens = tokens if residual else None
        self.merged = merged if residual else None
        self.weights = None
        if self.mode.startswith('soft'):
            self.weights = soft_weights(
                tokens, merged, assignment, options.soft_topk, options.soft_temperature
            )

    def full(self, x: Tensor, p: int) -> Tensor:
        """``[B, P + M, C]`` -> ``[B, P + N, C]``."""
        return torch.cat([x[:, :p], self.patches(x[:, p:])], 1)

    def patches(self, y: Tensor) -> Tensor:
        """``[B, M, C']`` cluster outputs -> ``[B, N, C']``."""
        return reconstruct_tokens(
            y, self.assignment, self.mode, self.tokens, self.merged, self.weights
        )


def _gather_tokens(y: Tensor, labels: Tensor) -> Tensor:
    """``[B, M, C']`` -> ``[B, N, C']``: every token copies its slot (``labels``)."""
    return take_rows(y, labels)
