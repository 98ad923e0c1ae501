"""AiluRus for MMSegmentation's plain ``VisionTransformer``."""

from __future__ import annotations

import copy
from typing import Optional, Tuple

import torch
from mmseg.models.backbones import VisionTransformer
from mmseg.registry import MODELS
from torch import Tensor

from ..ops import (
    MERGE_MODES,
    REDUCTION_METHODS,
    ClusterAssignment,
    merge_tokens,
    reduce_tokens,
    resolve_num_clusters,
    size_attn_bias,
    unfold_tokens,
    validate_cluster_options,
)
from ..ops.cluster import DEFAULT_OPTIONS
from .layers import check_layer_supported, sized_layer_forward

__all__ = ['AiluRusVisionTransformer', 'DEFAULT_AILURUS', 'build_ailurus_cfg']

#: Defaults of the ``ailurus`` dict. The clustering options are the measured
#: best of docs/results.md; ``cluster_after`` and ``keep_ratio`` depend on the
#: model and are set per config (measured for the DINOv2-S CamVid model).
DEFAULT_AILURUS = dict(
    enabled=True,
    cluster_after=2,
    keep_ratio=0.4,
    num_clusters=None,
    method=DEFAULT_OPTIONS['method'],
    k=DEFAULT_OPTIONS['k'],
    density_radius=DEFAULT_OPTIONS['density_radius'],
    link_radius=DEFAULT_OPTIONS['link_radius'],
    assign_radius=DEFAULT_OPTIONS['assign_radius'],
    link_to=DEFAULT_OPTIONS['link_to'],
    seed=0,
    merge='mean',
    size_aware=True,
    fast_attn=False,
)


def build_ailurus_cfg(cfg: Optional[dict], num_layers: int) -> dict:
    """Fill in defaults and validate an ``ailurus`` dict (see the backbone).

    Raises:
        ValueError: naming the offending key, its value and the allowed range.
    """
    cfg = dict(cfg or {})
    unknown = sorted(set(cfg) - set(DEFAULT_AILURUS))
    if unknown:
        raise ValueError(
            f'ailurus: unknown option(s) {unknown}; allowed: {sorted(DEFAULT_AILURUS)}'
        )
    if cfg.get('num_clusters') is not None and cfg.get('keep_ratio') is not None:
        raise ValueError(
            'ailurus: give either keep_ratio or num_clusters, not both '
            f'(keep_ratio={cfg["keep_ratio"]!r}, num_clusters={cfg["num_clusters"]!r})'
        )
    if cfg.get('num_clusters') is not None:
        cfg.setdefault('keep_ratio', None)
    out = copy.deepcopy(DEFAULT_AILURUS)
    out.update(cfg)
    for key in ('enabled', 'size_aware', 'fast_attn'):
        if not isinstance(out[key], bool):
            raise ValueError(f'ailurus.{key}={out[key]!r} must be True or False')
    ca = out['cluster_after']
    if isinstance(ca, bool) or not isinstance(ca, int) or not 0 <= ca <= num_layers - 1:
        raise ValueError(
            f'ailurus.cluster_after={ca!r} is outside the allowed range: an int in '
            f'[0, {num_layers - 1}] (layers run on all tokens before clustering)'
        )
    if out['keep_ratio'] is not None:
        kr = out['keep_ratio']
        if isinstance(kr, bool) or not isinstance(kr, (int, float)) or not 0 < kr <= 1:
            raise ValueError(f'ailurus.keep_ratio={kr!r} is outside the allowed range (0, 1]')
        out['keep_ratio'] = float(kr)
    else:
        m = out['num_clusters']
        if isinstance(m, bool) or not isinstance(m, int) or m < 1:
            raise ValueError(
                f'ailurus.num_clusters={m!r} must be an int >= 1 (and <= the '
                'number of patch tokens, checked per input)'
            )
    if out['method'] not in REDUCTION_METHODS:
        raise ValueError(f'ailurus.method={out["method"]!r} is not one of {REDUCTION_METHODS}')
    if out['merge'] not in MERGE_MODES:
        raise ValueError(f'ailurus.merge={out["merge"]!r} is not one of {MERGE_MODES}')
    if isinstance(out['seed'], bool) or not isinstance(out['seed'], int):
        raise ValueError(f'ailurus.seed={out["seed"]!r} must be an int')
    try:
        validate_cluster_options(
            'dpc' if out['method'] not in ('adjacent', 'dpc_global') else out['method'],
            out['k'],
            out['density_radius'],
            out['link_radius'],
            out['assign_radius'],
            out['link_to'],
        )
    except ValueError as e:
        raise ValueError(f'ailurus.{e}') from None
    return out


@MODELS.register_module()
class AiluRusVisionTransformer(VisionTransformer):
    """mmseg ``VisionTransformer`` with AiluRus adaptive-resolution tokens.

    Same parameters and state_dict keys as the stock backbone, so stock
    checkpoints load unchanged. After ``cluster_after`` layers, the patch
    tokens are clustered (class token untouched), the remaining layers run on
    ``class token + M`` merged tokens with size-aware attention, and every
    returned feature map is unfolded back to the full ``[B, C, H, W]`` grid.

    Args:
        *args: everything ``mmseg.models.backbones.VisionTransformer`` takes.
        ailurus (dict, optional): the AiluRus options (defaults in
            :data:`DEFAULT_AILURUS`):

            - ``enabled`` (bool): False runs the stock forward. Default: True.
            - ``cluster_after`` (int): layers that run on all tokens; the
              output of layer ``cluster_after`` (1-based, as in "cluster on
              the output of layer 2") is clustered. In ``[0, num_layers - 1]``.
              Default: 2 (set it per model: docs/results.md).
            - ``keep_ratio`` (float): M / N in ``(0, 1]``. 1.0 (or M == N) is
              the stock model, bit for bit. Default: 0.4 (set it per model).
            - ``num_clusters`` (int): a fixed M instead of ``keep_ratio``.
            - ``method`` (str): ``'adjacent'`` (default), ``'dpc'``,
              ``'dpc_global'`` or a baseline ``'pool'``/``'random'``/``'tome'``
              (see ``ailurus_mm.ops``).
            - ``k``, ``density_radius``, ``link_radius``, ``assign_radius``, ``link_to``:
              clustering options of :func:`ailurus_mm.ops.cluster_tokens`.
            - ``seed`` (int): for ``method='random'``. Default: 0.
            - ``merge`` (str): ``'mean'`` or ``'anchor'``. Default: 'mean'.
            - ``size_aware`` (bool): add ``log(size)`` to the attention logits
              of merged keys. Default: True.
            - ``fast_attn`` (bool): run the layers before clustering through
              the same fused attention as the layers after it (numerically
              equal up to rounding; a benchmark control). Default: False.
        **kwargs: keyword arguments of ``VisionTransformer``.

    Attributes:
        last_assignment (ClusterAssignment | None): the assignment of the
            latest forward (for analysis tools), None when nothing was merged.
    """

    def __init__(self, *args, ailurus: Optional[dict] = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.ailurus = build_ailurus_cfg(ailurus, len(self.layers))
        for layer in self.layers:
            check_layer_supported(layer)
        self.last_assignment: Optional[ClusterAssignment] = None

    def num_kept(self, hw: Tuple[int, int]) -> int:
        """Number of patch tokens after clustering for an ``H x W`` grid."""
        cfg = self.ailurus
        n = hw[0] * hw[1]
        if not cfg['enabled']:
            return n
        if cfg['keep_ratio'] is not None:
            return resolve_num_clusters(cfg['keep_ratio'], n)
        if cfg['num_clusters'] > n:
            raise ValueError(
                f'ailurus.num_clusters={cfg["num_clusters"]} is more than the '
                f'{n} patch tokens of a {hw[0]}x{hw[1]} grid'
            )
        return cfg['num_clusters']

    def _cluster(self, patches: Tensor, hw: Tuple[int, int]) -> ClusterAssignment:
        cfg = self.ailurus
        budget = cfg['keep_ratio'] if cfg['keep_ratio'] is not None else self.num_kept(hw)
        return reduce_tokens(
            patches,
            hw,
            budget,
            method=cfg['method'],
            seed=cfg['seed'],
            **{key: cfg[key] for key in DEFAULT_OPTIONS if key != 'method'},
        )

    def _to_map(self, x: Tensor, hw, num_prefix: int, assign: Optional[ClusterAssignment]):
        patches = x[:, num_prefix:]
        if assign is not None:
            patches = unfold_tokens(patches, assign)
        b, _, c = patches.shape
        out = patches.reshape(b, hw[0], hw[1], c).permute(0, 3, 1, 2).contiguous()
        if self.output_cls_token:
            out = [out, x[:, 0]]
        return out

    def forward(self, inputs: Tensor):
        cfg = self.ailurus
        if not cfg['enabled']:
            self.last_assignment = None
            return super().forward(inputs)
        b = inputs.shape[0]
        x, hw = self.patch_embed(inputs)
        x = torch.cat((self.cls_token.expand(b, -1, -1), x), dim=1)
        x = self._pos_embeding(x, hw, self.pos_embed)
        if not self.with_cls_token:
            x = x[:, 1:]
        if self.pre_norm:
            x = self.pre_ln(x)
        num_prefix = 1 if self.with_cls_token else 0
        m = self.num_kept(hw)
        merge = m < hw[0] * hw[1]

        outs = []
        if self.out_origin:
            outs.append(self._to_map(x, hw, num_prefix, None))
        assign, bias = None, None
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            if merge and i == cfg['cluster_after']:
                patches = x[:, num_prefix:]
                assign = self._cluster(patches, hw)
                if assign.num_clusters == assign.num_tokens:
                    assign = None  # e.g. 'pool' with stride 1: nothing to merge
                else:
                    merged = merge_tokens(patches, assign, mode=cfg['merge'])
                    x = torch.cat([x[:, :num_prefix], merged], 1)
                    if cfg['size_aware']:
                        bias = size_attn_bias(assign.sizes, num_prefix, dtype=x.dtype)
            if assign is not None or cfg['fast_attn']:
                x = sized_layer_forward(layer, x, bias)
            else:
                x = layer(x)
            if i == last and self.final_norm:
                x = self.norm1(x)
            if i in self.out_indices:
                outs.append(self._to_map(x, hw, num_prefix, assign))
        self.last_assignment = assign
        return tuple(outs)
