"""AiluRus for MMSegmentation's plain ``VisionTransformer``."""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from torch import Tensor

from ..ops import AiluRusOptions
from .layers import check_layer_supported, sized_layer_forward
from .reduction import AiluRusBackboneMixin

__all__ = ['AiluRusVisionTransformer', 'DEFAULT_AILURUS']

#: Defaults of the ``ailurus`` dict (owned by :class:`AiluRusOptions`).
DEFAULT_AILURUS = AiluRusOptions().to_dict()


@MODELS.register_module()
class AiluRusVisionTransformer(AiluRusBackboneMixin, VisionTransformer):
    """mmseg ``VisionTransformer`` with AiluRus adaptive-resolution tokens.

    Same parameters and state_dict keys as the stock backbone, so stock
    checkpoints load unchanged. After ``cluster_after`` layers, the patch
    tokens are clustered (class token untouched), the remaining layers run on
    ``class token + M`` merged tokens with size-aware attention, and every
    returned feature map is unfolded back to the full ``[B, C, H, W]`` grid.
    ``enabled=False`` runs the stock forward; any setting that keeps every
    token equals it bit for bit.

    Args:
        *args: everything ``mmseg.models.backbones.VisionTransformer`` takes.
        ailurus (dict, optional): the AiluRus options, see
            :class:`ailurus_mm.ops.AiluRusOptions` (keys, defaults, ranges).
            Change them later with :meth:`set_options`.
        **kwargs: keyword arguments of ``VisionTransformer``.
    """

    def __init__(self, *args, ailurus: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self._init_ailurus(ailurus, len(self.layers))
        for layer in self.layers:
            check_layer_supported(layer)

    # -- what the engine needs ------------------------------------------

    @property
    def num_layers(self) -> int:
        return len(self.layers)

    @property
    def num_prefix_tokens(self) -> int:
        return 1 if self.with_cls_token else 0

    @property
    def reduction_out_indices(self):
        return self.out_indices

    @property
    def include_input(self) -> bool:
        return self.out_origin

    def embed(self, inputs: Tensor):
        # Copied from mmseg 1.2.2 VisionTransformer.forward (the lines before
        # the layer loop), including its private ``_pos_embeding``.
        b = inputs.shape[0]
        x, hw_shape = self.patch_embed(inputs)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = self._pos_embeding(x, hw_shape, self.pos_embed)
        if not self.with_cls_token:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.pre_ln(x)
        return x, tuple(hw_shape)

    def run_layer(self, index: int, x: Tensor, key_bias: Optional[Tensor], fused: bool) -> Tensor:
        layer = self.layers[index]
        if key_bias is None and not fused:
            return layer(x)  # the stock path (keep-all is the stock model bit for bit)
        return sized_layer_forward(layer, x, key_bias)

    def layer_keys(self, index: int, x: Tensor) -> Tensor:
        """The attention keys layer ``index`` computes from ``x`` (all heads)."""
        layer = self.layers[index]
        mha = layer.attn.attn
        c = x.shape[-1]
        w, b = mha.in_proj_weight[c : 2 * c], mha.in_proj_bias
        return F.linear(layer.norm1(x), w, None if b is None else b[c : 2 * c])

    def after_layer(self, index: int, x: Tensor) -> Tensor:
        if index == len(self.layers) - 1 and self.final_norm:
            x = self.norm1(x)
        return x

    # -- mmseg interface --------------------------------------------------

    def forward(self, inputs: Tensor):
        if not self.options.enabled:
            self.last_assignment = None
            return super().forward(inputs)
        res = self.require_full_outputs(self.forward_tokens(inputs))
        self.last_assignment = res.assignment
        return self.format_outputs(res)

    def format_outputs(self, res) -> tuple:
        """mmseg 1.2.2's output format of a :class:`ReductionOutput`: a map per
        out index, ``[map, cls token]`` with ``output_cls_token``."""
        outs = []
        for patches, prefix in self.tokens_to_maps(res):
            outs.append([patches, prefix[:, 0]] if self.output_cls_token else patches)
        return tuple(outs)

    def train(self, mode: bool = True):
        # mmseg's VisionTransformer.train() returns None; nn.Module returns self
        super().train(mode)
        return self
