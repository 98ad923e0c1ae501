"""Stock models and their AiluRus twins with identical weights, and inputs.

Used by the benchmark, sweep and demo tools: every comparison runs the same
weights in one process.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import os
import os.path as osp
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

__all__ = [
    'STOCK_TWINS',
    'stock_config',
    'build_twins',
    'load_images',
    'random_images',
    'quiet_logs',
    'token_counts',
    'ailurus_backbone',
]

#: AiluRus backbone type -> the installed stock class its checkpoints come
#: from. Types not listed are their own stock twin with ``enabled=False``.
STOCK_TWINS = {'AiluRusVisionTransformer': 'VisionTransformer'}


def stock_config(model_cfg):
    """The stock twin of an AiluRus model config: same everything, the stock
    backbone (or the AiluRus one with ``enabled=False``)."""
    cfg = copy.deepcopy(model_cfg)
    bb_type = cfg.backbone.type
    if 'ailurus' not in cfg.backbone and bb_type not in STOCK_TWINS:
        raise ValueError(f'model.backbone.type={bb_type!r}: expected an AiluRus backbone')
    if bb_type in STOCK_TWINS:
        cfg.backbone.type = STOCK_TWINS[bb_type]
        cfg.backbone.pop('ailurus', None)
    else:
        cfg.backbone.ailurus = dict(enabled=False)
    return cfg


@contextlib.contextmanager
def quiet_logs():
    """Silence mmengine's per-parameter init/load log lines."""
    from mmengine.logging import MMLogger

    logger = MMLogger.get_current_instance()
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


def build_twins(
    cfg,
    checkpoint: Optional[str] = None,
    seed: int = 0,
    variants: Optional[Dict[str, dict]] = None,
    device: Optional[torch.device] = None,
) -> Dict[str, nn.Module]:
    """Build the stock model and AiluRus variants with identical weights.

    Args:
        cfg (Config): a config whose backbone is an AiluRus backbone; its
            ``default_scope`` picks the registry (mmseg or mmdet).
        checkpoint (str, optional): weights for all models (loaded strictly
            into the stock model, then copied). Default: None (seeded init).
        seed (int): seed of the random init when no checkpoint is given.
        variants (dict, optional): name -> ``ailurus`` option overrides over
            the config's; default ``{'ailurus': {}}`` (the config's setting).
        device (torch.device, optional): where the models live. Default: CPU.

    Returns:
        dict[str, nn.Module]: ``'stock'`` first, then the variants, in eval mode.
    """
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    scope = cfg.get('default_scope', 'mmseg')
    init_default_scope(scope)
    model_cfg = copy.deepcopy(cfg.model)
    if scope == 'mmseg' or 'pretrained' in model_cfg:  # mmdet detectors take no `pretrained`
        model_cfg.pretrained = None
    model_cfg.backbone.pop('init_cfg', None)
    torch.manual_seed(seed)
    stock = MODELS.build(stock_config(model_cfg))
    with quiet_logs():  # init_weights/load_checkpoint log one line per parameter
        if checkpoint:
            load_checkpoint(stock, checkpoint, map_location='cpu', strict=True)
        else:
            stock.init_weights()
    state = stock.state_dict()
    models = {'stock': stock}
    for name, over in (variants or {'ailurus': {}}).items():
        m = MODELS.build(model_cfg)
        m.load_state_dict(state, strict=True)
        if over:
            m.backbone.set_options(**over)
        models[name] = m
    for m in models.values():
        m.to(device or torch.device('cpu')).eval()
    return models


def ailurus_backbone(model: nn.Module):
    """The model's backbone if it is an AiluRus backbone, else None."""
    from ..models import AiluRusBackboneMixin

    bb = getattr(model, 'backbone', model)
    return bb if isinstance(bb, AiluRusBackboneMixin) else None


def token_counts(backbone: nn.Module, hw: Tuple[int, int]) -> List[int]:
    """Tokens (prefix tokens included) entering each layer of a ViT backbone,
    AiluRus or stock."""
    from ..models import AiluRusBackboneMixin

    if isinstance(backbone, AiluRusBackboneMixin):
        return backbone.token_counts(hw)
    prefix = 1 if getattr(backbone, 'with_cls_token', True) else 0
    layers = getattr(backbone, 'layers', None) or getattr(backbone, 'blocks')
    return [hw[0] * hw[1] + prefix] * len(layers)


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


def batches_to(batches: Sequence[dict], device: torch.device) -> List[dict]:
    """Loaded batches with their input tensors on ``device``."""
    if device.type == 'cpu':
        return list(batches)
    return [dict(b, inputs=[t.to(device) for t in b['inputs']]) for b in batches]
