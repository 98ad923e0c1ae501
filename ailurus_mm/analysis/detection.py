"""Detection accuracy of loaded batches through mmdet's own ``CocoMetric``.

The segmentation sweep's machinery for an mmdet two-stage detector with an
AiluRus backbone: the layers before clustering are computed once per image
(:class:`~ailurus_mm.analysis.segmentation.PrefixCache`), every setting
resumes from there, and the rest of the detector is mmdet's own code path
(``TwoStageDetector.predict`` / ``loss`` with the backbone features supplied
by :func:`features_override`).
"""

from __future__ import annotations

import contextlib
import io
from typing import Dict, Iterator, List, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .models import quiet_logs

__all__ = [
    'AGREEMENT_METRICS',
    'DET_METRICS',
    'agreement_ap',
    'features_override',
    'backbone_tokens',
    'build_det_metric',
    'det_features',
    'evaluate_det',
    'evaluate_det_options',
    'level_cosine',
    'summarize_det',
]

#: the CocoMetric keys a sweep reports (mAP over IoU 0.5:0.95, AP50, by size)
DET_METRICS = (
    'bbox_mAP',
    'bbox_mAP_50',
    'bbox_mAP_s',
    'bbox_mAP_m',
    'bbox_mAP_l',
    'segm_mAP',
    'segm_mAP_50',
    'segm_mAP_s',
    'segm_mAP_m',
    'segm_mAP_l',
)


#: the agreement keys (:func:`agreement_ap`): box and mask AP against the
#: reference model's own detections
AGREEMENT_METRICS = ('agree_bbox_mAP', 'agree_segm_mAP')


@contextlib.contextmanager
def features_override(model: nn.Module, feats) -> Iterator[None]:
    """Make ``model.extract_feat`` return ``feats`` (backbone + neck output)
    inside the block, so mmdet's own ``predict``/``loss`` run unchanged on
    features computed elsewhere (a cached prefix, cached frozen maps)."""
    model.extract_feat = lambda _inputs: feats  # instance attribute shadows the method
    try:
        yield
    finally:
        del model.extract_feat


def build_det_metric(cfg, dataset_meta: dict):
    """The config's test evaluator (first one if a list), ready to process."""
    from mmdet.registry import METRICS

    ev = cfg.test_evaluator
    metric = METRICS.build(dict(ev[0] if isinstance(ev, (list, tuple)) else ev))
    metric.dataset_meta = dataset_meta
    return metric


def summarize_det(metric) -> Dict[str, float]:
    """The :data:`DET_METRICS` (percent) of a ``CocoMetric``'s processed
    results, which are cleared."""
    # pycocotools prints its tables to stdout; the numbers come back as a dict
    with quiet_logs(), contextlib.redirect_stdout(io.StringIO()):
        res = metric.compute_metrics(metric.results)
    metric.results.clear()
    return {k: 100.0 * float(res[k]) for k in DET_METRICS if k in res}


def backbone_tokens(model: nn.Module, cache, index: int, options):
    """The backbone's :class:`~ailurus_mm.ops.ReductionOutput` for batch
    ``index`` under ``options``: resumed from the cache's prefix when the
    setting reduces, else a whole forward (the stock path when it does not)."""
    bb = model.backbone
    x = cache.inputs[index]['inputs']
    if options.enabled and options.reduces(bb.token_grid(x.shape[-2:])):
        return bb.forward_from_prefix(cache.state(index, options), options)
    return bb.forward_tokens(x, options)


def det_features(model: nn.Module, cache, index: int, options):
    """Backbone + neck features of batch ``index`` under ``options``
    (:func:`backbone_tokens` through the adapters and the neck)."""
    return _neck_features(model, backbone_tokens(model, cache, index, options))


def _neck_features(model: nn.Module, res):
    """A backbone :class:`~ailurus_mm.ops.ReductionOutput` through the adapters and the neck."""
    bb = model.backbone
    feats = bb.format_outputs(bb.require_full_outputs(res))
    return model.neck(feats) if model.with_neck else feats


def _add_cosines(sums: Tensor, maps: Sequence[Tensor], reference: Sequence[Tensor]) -> int:
    """Add each output's summed per-token cosine to ``sums``; returns the token count."""
    for i, (m, r) in enumerate(zip(maps, reference)):
        sums[i] += F.cosine_similarity(m, r, dim=1).double().sum()
    return maps[0].shape[0] * maps[0].shape[-2] * maps[0].shape[-1]


def evaluate_det(model: nn.Module, batches: Sequence[dict], metric) -> Dict[str, float]:
    """``model.test_step`` over loaded batches into a ``CocoMetric``: the
    metric's keys of :data:`DET_METRICS`, in percent."""
    metric.results.clear()
    with torch.no_grad():
        for data in batches:
            metric.process(data, [o.to_dict() for o in model.test_step(data)])
    return summarize_det(metric)


def evaluate_det_options(
    model: nn.Module,
    cache,
    metric,
    options,
    predictions: Optional[list] = None,
    reference_maps: Optional[List[List[Tensor]]] = None,
) -> Dict[str, float]:
    """:func:`evaluate_det` for ``options``, reusing the cache's prefixes
    (same numbers as ``model.test_step`` with those options: tested).

    Args:
        predictions (list, optional): receives every image's ``pred_instances``
            (for :func:`agreement_ap`).
        reference_maps (list[list[Tensor]], optional): per batch, reference
            ``output_maps``; adds ``cos_out<k>`` (:func:`level_cosine`'s
            numbers) from the same backbone pass as the predictions.
    """
    bb = model.backbone
    metric.results.clear()
    sums = torch.zeros(len(bb.out_indices), dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for j, (data, pre) in enumerate(zip(cache.batches, cache.inputs)):
            res = backbone_tokens(model, cache, j, options)
            if reference_maps is not None:
                count += _add_cosines(sums, bb.output_maps(res), reference_maps[j])
            with features_override(model, _neck_features(model, res)):
                outs = model.predict(pre['inputs'], pre['data_samples'], rescale=True)
            metric.process(data, [o.to_dict() for o in outs])
            if predictions is not None:
                predictions.extend(o.pred_instances for o in outs)
    out = summarize_det(metric)
    if reference_maps is not None:
        out.update((f'cos_out{i + 1}', c) for i, c in zip(bb.out_indices, (sums / count).tolist()))
    return out


def _as_instances(pred, score_thr: float) -> List[dict]:
    """Detections above ``score_thr`` as ``CocoMetric`` ground truth
    (``bbox`` xyxy, ``bbox_label``, ``mask`` as RLE)."""
    import numpy as np
    from pycocotools import mask as mask_util

    keep = pred.scores >= score_thr
    boxes, labels = pred.bboxes[keep], pred.labels[keep]
    masks = pred.masks[keep] if 'masks' in pred else None
    out = []
    for i in range(len(boxes)):
        inst = dict(bbox=boxes[i].tolist(), bbox_label=int(labels[i]), ignore_flag=0)
        if masks is not None:
            inst['mask'] = mask_util.encode(np.asfortranarray(masks[i].numpy().astype(np.uint8)))
        out.append(inst)
    return out


def agreement_ap(
    reference: Sequence, predictions: Sequence, shapes: Sequence, dataset_meta: dict,
    score_thr: float = 0.3,
) -> Dict[str, float]:  # fmt: skip
    """Box and mask AP of ``predictions`` against the reference model's own
    detections with score >= ``score_thr`` taken as ground truth (COCO's
    evaluation through mmdet's ``CocoMetric`` without an annotation file).

    A measure of how much a setting changes the detector's output, whatever
    the detector's own accuracy: the reference scores ~100 against itself.

    Args:
        reference (Sequence[InstanceData]): per image, the reference
            ``pred_instances`` (boxes, scores, labels, masks at image size).
        predictions (Sequence[InstanceData]): per image, the setting's.
        shapes (Sequence[tuple]): per image, ``ori_shape`` ``(H, W)``.
        dataset_meta (dict): the dataset's ``classes``.
        score_thr (float): reference detections kept as ground truth.

    Returns:
        dict: :data:`AGREEMENT_METRICS` in percent.
    """
    from mmdet.evaluation import CocoMetric

    if not len(reference) == len(predictions) == len(shapes):
        raise ValueError(
            f'{len(reference)} reference, {len(predictions)} predicted and {len(shapes)} '
            'image shapes: one each per image'
        )
    metric = CocoMetric(ann_file=None, metric=['bbox', 'segm'])
    metric.dataset_meta = dataset_meta
    for i, (ref, pred, shape) in enumerate(zip(reference, predictions, shapes)):
        sample = dict(
            img_id=i,
            ori_shape=tuple(shape),
            instances=_as_instances(ref, score_thr),
            pred_instances=dict(
                bboxes=pred.bboxes, scores=pred.scores, labels=pred.labels, masks=pred.masks
            ),
        )
        metric.process({}, [sample])
    res = summarize_det(metric)
    return {'agree_bbox_mAP': res['bbox_mAP'], 'agree_segm_mAP': res['segm_mAP']}


def level_cosine(model: nn.Module, cache, options, reference: List[List[Tensor]]) -> List[float]:
    """Mean cosine similarity, per backbone output (before the adapters), of
    the unfolded maps under ``options`` and ``reference`` maps.

    Args:
        model (nn.Module): the detector.
        cache (PrefixCache): the batches and their prefixes.
        options (AiluRusOptions): the setting.
        reference (list[list[Tensor]]): per batch, the reference
            ``output_maps`` (e.g. of the stock backbone).

    Returns:
        list[float]: one mean (over tokens and images) per out index.
    """
    bb = model.backbone
    sums = torch.zeros(len(bb.out_indices), dtype=torch.float64)
    count = 0
    with torch.no_grad():
        for j in range(len(cache.inputs)):
            maps = bb.output_maps(backbone_tokens(model, cache, j, options))
            count += _add_cosines(sums, maps, reference[j])
    return (sums / count).tolist()
