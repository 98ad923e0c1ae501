"""Size-aware forward of an mmseg/mmcv ViT encoder layer, with its own weights.

``mmseg.models.backbones.vit.TransformerEncoderLayer`` attends through
``mmcv.cnn.bricks.transformer.MultiheadAttention`` -> ``nn.MultiheadAttention``,
which has no way to take a per-key additive bias that broadcasts over
queries (only a dense ``[B * heads, L, S]`` mask). The function here runs the
same layer, same parameters and same dropout/drop-path modules, but calls
``scaled_dot_product_attention`` with the ``log(size)`` bias, which keeps the
fused kernel and adds no N x N buffer.
"""

from __future__ import annotations

from typing import Optional

import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from torch import Tensor

from ..ops import size_aware_attention

__all__ = ['check_layer_supported', 'sized_layer_forward']


def check_layer_supported(layer: nn.Module) -> None:
    """Raise ``ValueError`` if ``layer`` is not the plain pre-norm ViT layer
    that :func:`sized_layer_forward` reproduces."""
    mha = getattr(getattr(layer, 'attn', None), 'attn', None)
    if not isinstance(mha, nn.MultiheadAttention):
        raise ValueError(
            f'{type(layer).__name__}: expected layer.attn.attn to be nn.MultiheadAttention'
        )
    if not mha._qkv_same_embed_dim or mha.bias_k is not None or mha.add_zero_attn:
        raise ValueError(
            f'{type(layer).__name__}: size-aware attention supports self-attention '
            'with packed qkv, no bias_k/bias_v and no add_zero_attn'
        )
    if not getattr(layer.attn, 'batch_first', False):
        raise ValueError(f'{type(layer).__name__}: size-aware attention needs batch_first=True')
    if not hasattr(layer, 'ffn') or not hasattr(layer, 'norm1') or not hasattr(layer, 'norm2'):
        raise ValueError(f'{type(layer).__name__}: expected norm1/attn/norm2/ffn sub-modules')


def _sized_attention(attn_module: nn.Module, x: Tensor, bias: Optional[Tensor]) -> Tensor:
    """The attention branch of mmcv's MultiheadAttention (without identity)."""
    mha = attn_module.attn
    b, n, c = x.shape
    heads = mha.num_heads
    qkv = F.linear(x, mha.in_proj_weight, mha.in_proj_bias)
    q, k, v = qkv.view(b, n, 3, heads, c // heads).permute(2, 0, 3, 1, 4).unbind(0)
    out = size_aware_attention(q, k, v, bias, dropout_p=mha.dropout if mha.training else 0.0)
    out = mha.out_proj(out.transpose(1, 2).reshape(b, n, c))
    return attn_module.dropout_layer(attn_module.proj_drop(out))


def sized_layer_forward(layer: nn.Module, x: Tensor, bias: Optional[Tensor]) -> Tensor:
    """``layer(x)`` with ``bias`` added to every query's attention logits.

    Args:
        layer (nn.Module): an mmseg ``TransformerEncoderLayer`` (pre-norm:
            ``x + attn(norm1(x))`` then ``x + ffn(norm2(x))``).
        x (Tensor): ``[B, L, C]`` tokens (class token first if any).
        bias (Tensor, optional): ``[B, 1, 1, L]`` additive logits, e.g. from
            :func:`ailurus_mm.ops.size_attn_bias`; None is plain attention
            through the fused kernel.

    Returns:
        Tensor: ``[B, L, C]``.
    """

    def inner(x, bias):
        x = x + _sized_attention(layer.attn, layer.norm1(x), bias)
        return layer.ffn(layer.norm2(x), identity=x)

    if getattr(layer, 'with_cp', False) and x.requires_grad:
        return cp.checkpoint(inner, x, bias, use_reentrant=False)
    return inner(x, bias)
