"""Segmentation accuracy of loaded batches through mmseg's own ``IoUMetric``."""

from __future__ import annotations

import copy
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .models import quiet_logs

__all__ = ['load_test_batches', 'build_seg_metric', 'evaluate']


def load_test_batches(cfg, num_images: Optional[int] = None, every: int = 1, progress: bool = True):
    """Batches (batch size 1) of the config's test dataloader, loaded once.

    Args:
        cfg (Config): an mmseg config.
        num_images (int, optional): keep at most this many. Default: all.
        every (int): keep every ``every``-th image.
        progress (bool): show mmengine's progress bar.

    Returns:
        tuple[list[dict], dict]: the batches and the dataset's metainfo.
    """
    from mmengine.runner import Runner
    from mmengine.utils import ProgressBar

    dl_cfg = copy.deepcopy(cfg.test_dataloader)
    dl_cfg.update(num_workers=0, persistent_workers=False, batch_size=1)
    loader = Runner.build_dataloader(dl_cfg)
    total = len(loader.dataset)
    want = min(total, -(-total // every))
    if num_images:
        want = min(want, num_images)
    bar = ProgressBar(want, file=sys.stderr) if progress else None
    batches = []
    for i, data in enumerate(loader):
        if i % every:
            continue
        batches.append(data)
        if bar is not None:
            bar.update()
        if len(batches) >= want:
            break
    return batches, loader.dataset.metainfo


def build_seg_metric(cfg, dataset_meta: dict):
    """The config's test evaluator (first one if a list), ready to process."""
    from mmseg.registry import METRICS

    ev = cfg.test_evaluator
    metric = METRICS.build(dict(ev[0] if isinstance(ev, (list, tuple)) else ev))
    metric.dataset_meta = dataset_meta
    return metric


def evaluate(
    model: nn.Module, batches: Sequence[dict], metric
) -> Tuple[dict, List[float], List[bool]]:
    """Run ``model.test_step`` over loaded batches into an mmseg ``IoUMetric``.

    The metric's ``process`` (``IoUMetric.intersect_and_union``) does the
    counting; nothing is re-implemented here.

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
    return summarize(metric)


def summarize(metric) -> Tuple[dict, List[float], List[bool]]:
    """Summary, per-class IoU and presence from a metric's processed results
    (which are cleared)."""
    inter = sum(r[0] for r in metric.results)
    union = sum(r[1] for r in metric.results)
    with quiet_logs():
        res = metric.compute_metrics(metric.results)
    metric.results.clear()
    return res, (inter / union.clamp_min(1)).tolist(), (union > 0).tolist()
