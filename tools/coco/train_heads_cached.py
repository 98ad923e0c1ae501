#!/usr/bin/env python
"""Train the adapters, FPN and Mask R-CNN heads on cached frozen DINOv2-S/14 maps.

The ViT of ``configs/coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py``
is frozen and deterministic, so its four stride-16 output maps (blocks 4, 6,
8, 12 with the final norm: ``AiluRusCAEViT.output_maps``) are computed once
per training image, as is and flipped (exact flip augmentation: the image is
flipped before the ViT), and kept in memory. Every iteration then runs only
what trains: ``fpn1..fpn4`` (``backbone.adapt``), the neck and mmdet's own
``TwoStageDetector.loss`` (the features are handed in through
:func:`ailurus_mm.analysis.detection.features_override`). Everything else
comes from the config: datasets and pipelines (``RandomFlip`` replaced by the
cached as-is/flipped pair, picked at random with p=0.5), the
``DetDataPreprocessor``, the optimizer (``optim_wrapper`` through mmengine's
builder) and ``param_scheduler`` (epoch-based entries converted to
iterations, as mmengine's runner does). Batch 1 (the cached maps are those
of the padded image the detector sees at test time, batch 1). Seeded (head
init, image order and flips); ``--cache-file`` keeps the maps between runs.

Validation (``--val-interval`` epochs and at the end) runs the config's
``CocoMetric`` on the val set through ``model.predict`` with the cached val
maps: what ``tools/test.py`` gives on the assembled checkpoint, up to the
float16 rounding of the saved weights (the documented AP is ``tools/test.py``'s).

The output holds only the trained tensors (``backbone.fpn*``, ``neck.*``,
``rpn_head.*``, ``roi_head.*``), plain float16 tensors (``weights_only``
loadable; ``fpn1`` is saved but unused: the FPN starts at stride 8);
``tools/coco/assemble_checkpoint.py`` joins them with the converted ViT.

``checkpoints/mask-rcnn_dinov2-s14_coco-tiny-agnostic_heads.pth`` is this
script's output with the defaults (``--threads 1 --val-interval 6``: 24 epochs,
59 min on one core; its AP and the runs before it: docs/results.md, "Detection
on real images").

Usage::

    python tools/coco/train_heads_cached.py [--config CFG] [--epochs N]
        [--seed S] [--threads T] [--val-interval E] [--val-images N]
        [--log-interval N] [--cache-file PATH] [--out PATH] [--cfg-options ...]
"""

from __future__ import annotations

import argparse
import copy
import random
import sys
import time
from pathlib import Path
from typing import List, Optional, Sequence

import torch

from ailurus_mm.zoo.coco import DEFAULT_HEADS, HEAD_PREFIXES, REFERENCE_CONFIG, backbone_state


def log(msg: str) -> None:
    """A time-stamped, flushed progress line (for nohup logs)."""
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def build_model(cfg, seed: int):
    """The detector: seeded init of what trains, the converted frozen ViT."""
    from mmdet.registry import MODELS

    torch.manual_seed(seed)
    model = MODELS.build(cfg.model)
    model.init_weights()
    missing, unexpected = model.load_state_dict(backbone_state(), strict=False)
    bad = [k for k in missing if not k.startswith(HEAD_PREFIXES)]
    if bad or unexpected:
        raise ValueError(
            f'backbone checkpoint mismatch: missing {bad[:5]}, unexpected {unexpected[:5]}'
        )
    if not model.backbone.frozen:
        raise ValueError('the config must freeze the ViT (model.backbone.frozen=True)')
    return model


def _with_flip(dataset_cfg, prob: float):
    """The dataset config with every ``RandomFlip`` set to ``prob``."""
    cfg = copy.deepcopy(dataset_cfg)
    subsets = cfg.datasets if cfg.type == 'ConcatDataset' else [cfg]
    for sub in subsets:
        flips = [t for t in sub.pipeline if t['type'] == 'RandomFlip']
        if len(flips) != 1:
            raise ValueError('the train pipeline needs exactly one RandomFlip')
        flips[0]['prob'] = prob
    return cfg


class _Batches:
    """Loaded batches seen as a dataset of single items (for :func:`cache_split`)."""

    def __init__(self, batches):
        self.batches = batches

    def __len__(self):
        return len(self.batches)

    def __getitem__(self, i):
        b = self.batches[i]
        return dict(inputs=b['inputs'][0], data_samples=b['data_samples'][0])


def cache_split(model, dataset, desc: str) -> List[dict]:
    """Preprocess every item and run the frozen ViT once on it.

    Returns:
        list[dict]: ``inputs`` (preprocessed ``[1, 3, H, W]``), ``data_samples``
        and ``maps`` (the ViT's stride-16 output maps).
    """
    from mmengine.dataset import pseudo_collate

    bb = model.backbone
    out = []
    t0 = time.time()
    with torch.no_grad():
        for i in range(len(dataset)):
            pre = model.data_preprocessor(pseudo_collate([dataset[i]]), False)
            maps = bb.output_maps(bb.forward_tokens(pre['inputs']))
            out.append(dict(pre, maps=maps))
    log(f'cached {desc}: {len(out)} images in {time.time() - t0:.0f} s')
    return out


def build_schedulers(cfg, optim_wrapper, epoch_length: int):
    """``cfg.param_scheduler`` as iteration-based mmengine schedulers."""
    from mmengine.registry import PARAM_SCHEDULERS

    scheds = []
    for s in copy.deepcopy(cfg.param_scheduler):
        if s.pop('by_epoch', True):
            cls = PARAM_SCHEDULERS.get(s.pop('type'))
            scheds.append(cls.build_iter_from_epoch(optim_wrapper, epoch_length=epoch_length, **s))
        else:
            scheds.append(PARAM_SCHEDULERS.build(dict(s, optimizer=optim_wrapper)))
    return scheds


def neck_features(model, maps):
    """What the heads read from the cached maps: the adapters from the neck's
    ``start_level`` on (the levels below are never read), then the neck."""
    return model.neck(model.backbone.adapt(maps, model.neck.start_level))


def validate(model, val_items, val_batches, metric) -> dict:
    """CocoMetric on the cached val maps (``model.predict``, AiluRus off)."""
    from ailurus_mm.analysis.detection import features_override, summarize_det

    model.eval()
    metric.results.clear()
    with torch.no_grad():
        for item, data in zip(val_items, val_batches):
            feats = neck_features(model, item['maps'])
            with features_override(model, feats):
                outs = model.predict(item['inputs'], item['data_samples'], rescale=True)
            metric.process(data, [o.to_dict() for o in outs])
    res = summarize_det(metric)
    model.train()
    return res


def save_parts(model, out: Path) -> Path:
    """Write the trained tensors (:data:`HEAD_PREFIXES`) atomically, floating
    point ones as float16 (a 9 MB file instead of 18; the documented AP is
    measured on the assembled checkpoint, i.e. with these rounded weights)."""
    state = {
        k: (v.half() if v.is_floating_point() else v).detach().clone().contiguous()
        for k, v in model.state_dict().items()
        if k.startswith(HEAD_PREFIXES)
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + '.tmp')
    torch.save(state, tmp)
    tmp.replace(out)
    return out


def train(args: argparse.Namespace) -> Path:
    from mmdet.registry import DATASETS
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import init_default_scope

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis.detection import build_det_metric, features_override
    from ailurus_mm.analysis.segmentation import load_test_batches

    torch.set_num_threads(args.threads)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cfg.model.backbone.ailurus = dict(enabled=False)
    epochs = args.epochs or cfg.train_cfg.max_epochs
    if epochs > cfg.train_cfg.max_epochs:
        # the schedule's milestones are the config's: a longer run would sit at its last lr
        raise ValueError(
            f'--epochs {epochs} exceeds the config\'s train_cfg.max_epochs='
            f'{cfg.train_cfg.max_epochs}; lengthen the schedule with --cfg-options '
            '(train_cfg.max_epochs, param_scheduler) instead'
        )
    init_default_scope('mmdet')
    model = build_model(cfg, args.seed)
    model.train()

    cache = Path(args.cache_file).expanduser() if args.cache_file else None
    val_batches, meta = load_test_batches(cfg, args.val_images, progress=False)
    if cache is not None and cache.is_file():
        # our own file (pickled samples): trusted, not weights_only
        items, val_items = torch.load(cache, map_location='cpu', weights_only=False)
        if len(val_items) != len(val_batches):
            raise ValueError(
                f'{cache} holds {len(val_items)} val images, the run uses {len(val_batches)}: '
                'delete it or drop --val-images'
            )
        log(f'loaded cached maps from {cache}')
    else:
        plain = DATASETS.build(_with_flip(cfg.train_dataloader.dataset, 0.0))
        flipped = DATASETS.build(_with_flip(cfg.train_dataloader.dataset, 1.0))
        items = [cache_split(model, plain, 'train'), cache_split(model, flipped, 'train, flipped')]
        val_items = cache_split(model, _Batches(val_batches), 'val')
        if cache is not None:
            cache.parent.mkdir(parents=True, exist_ok=True)
            torch.save((items, val_items), cache)
    metric = build_det_metric(cfg, meta)

    n = len(items[0])
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    scheds = build_schedulers(cfg, optim_wrapper, n)
    rng = random.Random(args.seed)
    log(f'training {epochs} epochs x {n} images, batch 1, {args.threads} threads')
    t0, it, run = time.time(), 0, {}
    for epoch in range(epochs):
        order = list(range(n))
        rng.shuffle(order)
        for i in order:
            item = items[rng.random() < 0.5][i]
            feats = neck_features(model, item['maps'])
            with features_override(model, feats):
                losses = model.loss(item['inputs'], item['data_samples'])
            loss, log_vars = model.parse_losses(losses)
            optim_wrapper.update_params(loss)
            for k, v in log_vars.items():  # logged as means over the interval
                run[k] = run.get(k, 0.0) + float(v.detach())
            for s in scheds:
                s.step()
            it += 1
            if it % args.log_interval == 0:
                lr = optim_wrapper.get_lr()['lr'][0]
                parts = ', '.join(f'{k} {v / args.log_interval:.3f}' for k, v in run.items())
                run.clear()
                speed = (time.time() - t0) / it
                log(f'ep {epoch + 1} it {it} lr {lr:.2e} {parts} ({speed:.2f} s/it)')
        if (epoch + 1) % args.val_interval == 0 or epoch + 1 == epochs:
            res = validate(model, val_items, val_batches, metric)
            log(f'ep {epoch + 1} val ' + ', '.join(f'{k} {v:.1f}' for k, v in res.items()))
            save_parts(model, Path(args.out))
    log(f'done: {it} iterations in {(time.time() - t0) / 60:.1f} min -> {args.out}')
    return Path(args.out)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(
        description=__doc__.split('\n')[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--config', default=str(REFERENCE_CONFIG))
    p.add_argument('--epochs', type=int, default=None, help="default: the config's max_epochs")
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--val-interval', type=int, default=4, help='epochs between validations')
    p.add_argument('--log-interval', type=int, default=20)
    p.add_argument('--val-images', type=int, default=None, help='first N val images (default all)')
    p.add_argument('--out', default=str(DEFAULT_HEADS))
    p.add_argument(
        '--cache-file',
        default=None,
        help='keep the frozen ViT maps here (reused when it exists; delete it after '
        'changing the config, the data or the ViT)',
    )
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)
    for name in ('threads', 'val_interval', 'log_interval'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")}={getattr(args, name)} must be >= 1')
    for name in ('epochs', 'val_images'):
        if getattr(args, name) is not None and getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")}={getattr(args, name)} must be >= 1')
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    train(parse_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
