"""Measuring a stock model and its AiluRus twin side by side, in one process.

Used by ``tools/benchmark.py`` (segmentation speed) and the real-model tools.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import os.path as osp
import time
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = [
    'stock_config',
    'build_twins',
    'load_images',
    'random_images',
    'time_fn',
    'count_flops',
    'token_counts',
    'sdpa_flop_jit',
    'evaluate',
    'time_model',
]


def stock_config(model_cfg):
    """The stock twin of an AiluRus model config: same everything, stock
    ``VisionTransformer`` backbone without the ``ailurus`` dict."""
    cfg = copy.deepcopy(model_cfg)
    if cfg.backbone.type != 'AiluRusVisionTransformer':
        raise ValueError(f'model.backbone.type={cfg.backbone.type!r}: expected an AiluRus backbone')
    cfg.backbone.type = 'VisionTransformer'
    cfg.backbone.pop('ailurus', None)
    return cfg


def build_twins(
    cfg, checkpoint: Optional[str] = None, seed: int = 0, variants: Optional[Dict[str, dict]] = None
) -> Dict[str, nn.Module]:
    """Build the stock model and AiluRus variants with identical weights.

    Args:
        cfg (Config): an mmseg config whose backbone is ``AiluRusVisionTransformer``.
        checkpoint (str, optional): weights for all models (loaded strictly
            into the stock model, then copied). Default: None (seeded init).
        seed (int): seed of the random init when no checkpoint is given.
        variants (dict, optional): name -> ``ailurus`` dict overrides; default
            ``{'ailurus': {}}`` (the config's own setting).

    Returns:
        dict[str, nn.Module]: ``'stock'`` first, then the variants, in eval mode.
    """
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS

    model_cfg = copy.deepcopy(cfg.model)
    model_cfg.pretrained = None
    model_cfg.backbone.pop('init_cfg', None)
    torch.manual_seed(seed)
    stock = MODELS.build(stock_config(model_cfg))
    with _quiet_logs():  # init_weights/load_checkpoint log one line per parameter
        if checkpoint:
            load_checkpoint(stock, checkpoint, map_location='cpu', strict=True)
        else:
            stock.init_weights()
    state = stock.state_dict()
    models = {'stock': stock}
    for name, over in (variants or {'ailurus': {}}).items():
        mc = copy.deepcopy(model_cfg)
        mc.backbone.ailurus = dict(mc.backbone.get('ailurus', {}), **over)
        m = MODELS.build(mc)
        m.load_state_dict(state, strict=True)
        models[name] = m
    for m in models.values():
        m.eval()
    return models


@contextlib.contextmanager
def _quiet_logs():
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def random_images(n: int, hw: Tuple[int, int], seed: int = 0) -> List[torch.Tensor]:
    """``n`` seeded random uint8 ``[3, H, W]`` images."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randint(0, 256, (3, *hw), generator=g, dtype=torch.uint8) for _ in range(n)]


def load_images(folder: str, n: int, hw: Tuple[int, int]) -> List[torch.Tensor]:
    """The first ``n`` images (sorted names) of ``folder``, resized to ``hw``,
    as uint8 BGR ``[3, H, W]`` tensors (what mmseg's loaders produce)."""
    import mmcv

    exts = ('.png', '.jpg', '.jpeg', '.bmp')
    if not osp.isdir(folder):
        raise FileNotFoundError(f'image folder not found: {folder}')
    names = sorted(f for f in os.listdir(folder) if f.lower().endswith(exts))[:n]
    if not names:
        raise FileNotFoundError(f'no {exts} images in {folder}')
    out = []
    for name in names:
        img = mmcv.imresize(mmcv.imread(osp.join(folder, name)), (hw[1], hw[0]))
        out.append(torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))))
    while len(out) < n:  # cycle when the folder has fewer images
        out.append(out[len(out) % len(names)])
    return out


def time_fn(fn: Callable[[], object], warmup: int, iters: int, progress=None) -> List[float]:
    """Seconds per call of ``fn`` after ``warmup`` untimed calls."""
    with torch.no_grad():
        for _ in range(warmup):
            fn()
            if progress is not None:
                progress.update(1)
        times = []
        for _ in range(iters):
            t = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t)
            if progress is not None:
                progress.update(1)
    return times


def sdpa_flop_jit(inputs, outputs):
    """MACs of ``aten::scaled_dot_product_attention`` (q k^T and attn v),
    counted like mmengine counts the ``bmm`` pair of the stock attention."""
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
    """GFLOPs (multiply-adds, mmengine's convention) of ``fn(x)``."""
    import warnings

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


def token_counts(backbone, hw: Tuple[int, int]) -> List[int]:
    """Tokens (class token included) entering each layer of a (AiluRus) ViT."""
    n = hw[0] * hw[1]
    prefix = 1 if backbone.with_cls_token else 0
    cfg = getattr(backbone, 'ailurus', None)
    if not cfg or not cfg['enabled']:
        return [n + prefix] * len(backbone.layers)
    m = backbone.num_kept(hw)
    if cfg['method'] == 'pool':
        from ..ops import pool_stride

        s = pool_stride(cfg['keep_ratio'] or m, n)
        m = -(-hw[0] // s) * -(-hw[1] // s)
    return [
        n + prefix if i < cfg['cluster_after'] else m + prefix for i in range(len(backbone.layers))
    ]


def evaluate(
    model: nn.Module, batches: Sequence[dict], metric
) -> Tuple[dict, List[float], List[bool]]:
    """Run ``model.test_step`` over loaded batches into an mmseg ``IoUMetric``.

    Args:
        model (nn.Module): an mmseg segmentor in eval mode.
        batches (Sequence[dict]): dataloader batches (``inputs``, ``data_samples``).
        metric: an ``IoUMetric`` with ``dataset_meta`` set; its results are cleared.

    Returns:
        tuple: the metric's summary dict (percent), IoU per class (0-1) and
        whether each class occurs (union > 0).
    """
    metric.results.clear()
    with torch.no_grad():
        for data in batches:
            metric.process(data, [o.to_dict() for o in model.test_step(data)])
    inter = sum(r[0] for r in metric.results)
    union = sum(r[1] for r in metric.results)
    with _quiet_logs():
        res = metric.compute_metrics(metric.results)
    metric.results.clear()
    return res, (inter / union.clamp_min(1)).tolist(), (union > 0).tolist()


def time_model(model: nn.Module, batches: Sequence[dict]) -> Tuple[float, float]:
    """Mean seconds per batch of the backbone and of ``test_step``, after one
    untimed warm-up pass over ``batches``."""
    with torch.no_grad():
        for data in batches:
            model.test_step(data)
        t_bb = t_e2e = 0.0
        for data in batches:
            x = model.data_preprocessor(data, False)['inputs']
            t = time.perf_counter()
            model.backbone(x)
            t_bb += time.perf_counter() - t
            t = time.perf_counter()
            model.test_step(data)
            t_e2e += time.perf_counter() - t
    return t_bb / len(batches), t_e2e / len(batches)
