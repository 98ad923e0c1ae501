"""FLOPs through mmengine's FlopAnalyzer, the fused attention kernel included."""

from __future__ import annotations

import warnings
from typing import Callable, Optional

import numpy as np
import torch
from torch import nn

__all__ = ['count_flops', 'sdpa_flop_jit']


def sdpa_flop_jit(inputs, outputs) -> int:
    """MACs of ``aten::scaled_dot_product_attention`` (q k^T and attn v),
    counted like mmengine counts the ``bmm`` pair of the stock attention, so
    the fused kernel is never counted as free."""
    from mmengine.analysis.jit_handles import get_shape

    q, k = get_shape(inputs[0]), get_shape(inputs[1])
    *batch, length, dim = q
    src = k[-2]
    return int(np.prod(batch)) * length * src * dim * 2


class _Call(nn.Module):
    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def count_flops(fn: Callable, x: torch.Tensor, module: Optional[nn.Module] = None) -> float:
    """GFLOPs (multiply-adds, mmengine's convention) of ``fn(x)``.

    Args:
        fn (callable): e.g. a backbone, or ``lambda t: model._forward(t)``.
        x (Tensor): the input.
        module (nn.Module, optional): the module ``fn`` runs (for the
            analyzer's module tree).
    """
    from mmengine.analysis import FlopAnalyzer

    wrapper = _Call(fn)
    if module is not None:
        wrapper.add_module('inner', module)
    with warnings.catch_warnings(), torch.no_grad():
        warnings.simplefilter('ignore')
        fa = FlopAnalyzer(wrapper, inputs=(x,))
        fa.set_op_handle('aten::scaled_dot_product_attention', sdpa_flop_jit)
        fa.unsupported_ops_warnings(False)
        fa.uncalled_modules_warnings(False)
        return fa.total() / 1e9
