"""Segmentation accuracy of loaded batches through mmseg's own ``IoUMetric``."""

from __future__ import annotations

import copy
import sys
from typing import List, Optional, Sequence, Tuple

import torch
from torch import nn

from .models import quiet_logs

__all__ = ['load_test_batches', 'build_seg_metric', 'evaluate', 'PrefixCache', 'evaluate_options']


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


class PrefixCache:
    """The setting-independent part of each batch's backbone forward, kept.

    The layers before the clustering layer do not depend on the reduction
    setting, so a sweep computes them once per image (per ``cluster_after``
    and attention kernel) and runs every setting from there
    (:func:`evaluate_options`): exactly the numbers of ``model.test_step``
    (tested), at a fraction of the cost.

    Args:
        model (nn.Module): an mmseg ``EncoderDecoder`` with an AiluRus
            backbone and whole-image inference (``test_cfg.mode='whole'``).
        batches (Sequence[dict]): loaded batches.
    """

    def __init__(self, model: nn.Module, batches: Sequence[dict]):
        mode = (model.test_cfg or {}).get('mode', 'whole')
        if mode != 'whole':
            raise ValueError(
                f"prefix caching needs whole-image inference (test_cfg.mode='whole'), got "
                f'{mode!r}: evaluate with model.test_step instead'
            )
        self.model = model
        self.batches = list(batches)
        with torch.no_grad():
            self.inputs = [model.data_preprocessor(b, False) for b in self.batches]
        self._states = {}

    def state(self, index: int, options):
        """The prefix of batch ``index`` for ``options`` (computed on first use)."""
        bb = self.model.backbone
        x = self.inputs[index]['inputs']
        hw = bb.token_grid(x.shape[-2:])
        key = (index, options.cluster_after, options.fused(hw))
        if key not in self._states:
            with torch.no_grad():
                self._states[key] = bb.forward_prefix(x, options)
        return self._states[key]


def evaluate_options(model: nn.Module, cache: PrefixCache, metric, options):
    """:func:`evaluate` for ``options``, reusing the cache's prefixes.

    Runs what ``EncoderDecoder.predict`` runs in whole mode (backbone, neck,
    ``decode_head.predict``, ``postprocess_result``), with the backbone
    resumed from the cached prefix; settings that reduce nothing run the
    backbone's own forward.
    """
    bb = model.backbone
    metric.results.clear()
    with torch.no_grad():
        for j, (data, pre) in enumerate(zip(cache.batches, cache.inputs)):
            x, samples = pre['inputs'], pre['data_samples']
            hw = bb.token_grid(x.shape[-2:])
            metas = [s.metainfo for s in samples]
            res = None
            if options.enabled and options.reduces(hw):
                res = bb.forward_from_prefix(cache.state(j, options), options)
            if res is not None and res.num_merged:  # logits level (AiluRusEncoderDecoder)
                if not hasattr(model, 'decode_tokens'):
                    raise ValueError(
                        "ailurus.reconstruct_level='logits' needs model.type="
                        f"'AiluRusEncoderDecoder', got {type(model).__name__}"
                    )
                with bb.options_override(**options.to_dict()):
                    model.check_logits_level()
                logits = model.decode_tokens(res, metas)
            else:
                if res is not None:
                    feats = bb.format_outputs(res)
                else:
                    with bb.options_override(**options.to_dict()):
                        feats = bb(x)
                if model.with_neck:
                    feats = model.neck(feats)
                logits = model.decode_head.predict(feats, metas, model.test_cfg)
            outs = model.postprocess_result(logits, samples)
            metric.process(data, [o.to_dict() for o in outs])
    return summarize(metric)
