"""Size-aware attention: a merged token stands for all the tokens it holds.

Adding ``log(size_j)`` to every attention logit of key ``j`` is exactly
attention over the un-merged sequence in which token ``j`` appears
``size_j`` times: ``exp(q.k_j + log s_j) = s_j * exp(q.k_j)``. Passed to
``torch.nn.functional.scaled_dot_product_attention`` as an additive float
mask that broadcasts over queries and heads, it keeps the fused attention
kernels in use and costs no N x N buffer of its own.
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = ['size_attn_bias', 'size_aware_attention']


def size_attn_bias(
    sizes: Tensor, num_prefix: int = 0, dtype: Optional[torch.dtype] = None
) -> Tensor:
    """Additive attention mask ``log(size)`` of every key token.

    Args:
        sizes (Tensor): ``[B, M]`` positive token counts of the merged tokens.
        num_prefix (int): number of unmerged tokens (class/register tokens)
            that precede the merged ones in the sequence; they have size 1.
            Default: 0.
        dtype (torch.dtype, optional): dtype of the mask (that of the queries).
            Default: ``sizes.dtype``.

    Returns:
        Tensor: ``[B, 1, 1, num_prefix + M]``, broadcastable to the
        ``[B, heads, L, S]`` logits of ``scaled_dot_product_attention``.
    """
    if sizes.dim() != 2:
        raise ValueError(f'sizes must be [B, M], got {tuple(sizes.shape)}')
    if isinstance(num_prefix, bool) or not isinstance(num_prefix, int) or num_prefix < 0:
        raise ValueError(f'num_prefix={num_prefix!r} must be an int >= 0')
    if bool((sizes <= 0).any()):
        raise ValueError('sizes must be positive (every cluster holds at least one token)')
    bias = sizes.log()
    if num_prefix:
        bias = torch.cat([bias.new_zeros(bias.shape[0], num_prefix), bias], 1)
    return bias.to(dtype or sizes.dtype)[:, None, None, :]


def size_aware_attention(
    q: Tensor, k: Tensor, v: Tensor, bias: Optional[Tensor] = None, dropout_p: float = 0.0
) -> Tensor:
    """``scaled_dot_product_attention`` with the size bias as its float mask.

    Args:
        q (Tensor): ``[B, heads, L, D]`` queries.
        k (Tensor): ``[B, heads, S, D]`` keys.
        v (Tensor): ``[B, heads, S, D]`` values.
        bias (Tensor, optional): from :func:`size_attn_bias`; None is plain
            attention. Default: None.
        dropout_p (float): attention dropout (training only). Default: 0.

    Returns:
        Tensor: ``[B, heads, L, D]``.

    Under autocast the queries may be float16/bfloat16 while the bias was
    made in float32; it is cast to the queries' dtype (what the fused
    kernels require on CUDA).
    """
    if bias is not None and bias.dtype != q.dtype:
        bias = bias.to(q.dtype)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=dropout_p)
