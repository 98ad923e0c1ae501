"""What every AiluRus backbone shares: its options and the reduced forward.

No OpenMMLab import: the mmseg and mmdet backbones mix this into their
framework classes. A backbone supplies

* ``embed(inputs) -> (tokens [B, P + N, C], (H, W))``: its patch and
  position embedding, prefix (class/register) tokens first;
* ``run_layer(index, x, key_bias, fused) -> x``: one layer, with an additive
  ``[B, 1, 1, L]`` key bias (see :data:`ailurus_mm.ops.engine.LayerRunner`);
* ``num_prefix_tokens``, ``num_layers`` and ``reduction_out_indices``;
* optionally ``after_layer(index, x) -> x`` (e.g. a final norm),
  ``include_input`` (return the embedded tokens as the first output) and
  ``layer_keys(index, x) -> keys`` (for ``distance='keys'``),

and gets the options (validated once, changed only through
:meth:`AiluRusBackboneMixin.set_options` or :meth:`AiluRusBackboneMixin.options_override`),
the reduced forward and its cacheable prefix.
"""

from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional, Sequence, Tuple

from torch import Tensor

from ..ops import AiluRusOptions, ClusterAssignment, PrefixState, ReductionEngine, ReductionOutput

__all__ = ['AiluRusBackboneMixin']


class AiluRusBackboneMixin:
    """Options and reduced forward for a ViT backbone (see the module doc).

    Attributes:
        last_assignment (ClusterAssignment | None): the assignment of the
            latest ``forward`` (for callers that only see the framework's
            ``backbone(x)``); :meth:`forward_tokens` returns it explicitly.
    """

    include_input: bool = False

    def _init_ailurus(self, ailurus, num_layers: int) -> None:
        self._ailurus_options = AiluRusOptions.from_dict(ailurus, num_layers)
        self.last_assignment: Optional[ClusterAssignment] = None

    # ------------------------------------------------------------------
    # options

    @property
    def options(self) -> AiluRusOptions:
        """The current (frozen, validated) options."""
        return self._ailurus_options

    @property
    def ailurus(self) -> dict:
        """The current options as a plain dict (a copy: read-only)."""
        return self._ailurus_options.to_dict()

    @ailurus.setter
    def ailurus(self, value) -> None:
        raise AttributeError(
            'backbone.ailurus is read-only: use backbone.set_options(**overrides) or '
            'the backbone.options_override(**overrides) context manager'
        )

    def set_options(self, **overrides) -> AiluRusOptions:
        """Change options (validated again, as at build time).

        Args:
            **overrides: any keys of :meth:`AiluRusOptions.keys`; giving
                ``num_clusters`` clears ``keep_ratio`` and vice versa.

        Returns:
            AiluRusOptions: the new options.
        """
        self._ailurus_options = self._ailurus_options.replace(**overrides)
        return self._ailurus_options

    @contextlib.contextmanager
    def options_override(self, **overrides) -> Iterator[AiluRusOptions]:
        """``with backbone.options_override(keep_ratio=0.3): ...`` restores the
        previous options on exit (also after an exception)."""
        old = self._ailurus_options
        try:
            yield self.set_options(**overrides)
        finally:
            self._ailurus_options = old

    def token_grid(self, hw: Sequence[int]) -> Tuple[int, int]:
        """The patch-token grid of an ``H x W`` input (``H/p x W/p``; backbones
        that resize their input override it)."""
        return int(hw[0]) // self.patch_size, int(hw[1]) // self.patch_size

    def num_kept(self, hw: Sequence[int]) -> int:
        """Patch tokens after the reduction on an ``H x W`` grid (every method)."""
        return self._ailurus_options.num_kept(hw)

    def token_counts(self, hw: Sequence[int]) -> List[int]:
        """Tokens entering each layer, prefix tokens included."""
        return self._ailurus_options.token_counts(hw, self.num_prefix_tokens)

    # ------------------------------------------------------------------
    # the reduced forward

    def after_layer(self, index: int, x: Tensor) -> Tensor:
        """Hook after each layer (before its output is collected)."""
        return x

    def reduction_engine(self) -> ReductionEngine:
        """The engine bound to this backbone's layers."""
        return ReductionEngine(
            self.run_layer,
            self.num_layers,
            self.num_prefix_tokens,
            self.reduction_out_indices,
            after_layer=self.after_layer,
            include_input=self.include_input,
            layer_keys=getattr(self, 'layer_keys', None),
        )

    def _opts(self, options: Optional[AiluRusOptions]) -> AiluRusOptions:
        if options is None:
            return self._ailurus_options
        if not isinstance(options, AiluRusOptions):
            raise ValueError(f'options must be AiluRusOptions, got {type(options).__name__}')
        return AiluRusOptions.from_dict(options, self.num_layers)

    def forward_tokens(
        self,
        inputs: Tensor,
        options: Optional[AiluRusOptions] = None,
        assignment: Optional[ClusterAssignment] = None,
    ) -> ReductionOutput:
        """The reduced forward, returning token sequences and the assignment.

        Args:
            inputs (Tensor): ``[B, 3, H, W]`` images.
            options (AiluRusOptions, optional): instead of the backbone's own.
            assignment (ClusterAssignment, optional): use this grouping instead
                of clustering.
        """
        x, hw = self.embed(inputs)
        return self.reduction_engine()(x, hw, self._opts(options), assignment)

    def forward_prefix(
        self, inputs: Tensor, options: Optional[AiluRusOptions] = None
    ) -> PrefixState:
        """The layers before clustering only (shared by every setting with the
        same ``cluster_after`` and ``fast_attn``)."""
        x, hw = self.embed(inputs)
        return self.reduction_engine().run_prefix(x, hw, self._opts(options))

    def forward_from_prefix(
        self,
        state: PrefixState,
        options: Optional[AiluRusOptions] = None,
        assignment: Optional[ClusterAssignment] = None,
    ) -> ReductionOutput:
        """Finish a forward from :meth:`forward_prefix` (same numbers as
        :meth:`forward_tokens`)."""
        return self.reduction_engine().run_rest(state, self._opts(options), assignment)

    def tokens_to_maps(self, res: ReductionOutput) -> List[Tuple[Tensor, Tensor]]:
        """``(patch map [B, C, H, W], prefix tokens [B, P, C])`` per output.

        Outputs left merged (``reconstruct_level='logits'``) become ``[B, C, 1,
        M]`` maps of the M merged tokens, for a per-token or token-set head.
        """
        p, (h, w) = res.num_prefix_tokens, res.hw
        first_merged = len(res.outs) - res.num_merged
        maps = []
        for j, x in enumerate(res.outs):
            b, _, c = x.shape
            if j >= first_merged:
                patches = x[:, p:].transpose(1, 2).unsqueeze(2).contiguous()
            else:
                patches = x[:, p:].reshape(b, h, w, c).permute(0, 3, 1, 2).contiguous()
            maps.append((patches, x[:, :p]))
        return maps

    @staticmethod
    def require_full_outputs(res: ReductionOutput) -> ReductionOutput:
        """``res`` if every output is full resolution, else a clear error
        (the backbone alone cannot reconstruct a head's logits)."""
        if res.num_merged:
            raise ValueError(
                "ailurus.reconstruct_level='logits' leaves the backbone's outputs merged: it "
                "runs in a segmentor of type 'AiluRusEncoderDecoder' (inference); use "
                "reconstruct_level='features' anywhere else"
            )
        return res
