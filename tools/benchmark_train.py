#!/usr/bin/env python
"""Time a full training step with AiluRus off, off through the fused kernel, and on.

One step = ``model.train_step(data, optim_wrapper)``: the stock mmseg path
(data preprocessor, forward, loss, backward, the config's optimizer in the
stock ``OptimWrapper``, zero_grad). One model, one optimizer: the candidates
are option settings of the same AiluRus backbone, so they share the weights
at every moment (each step updates them; all candidates see the same drift):

* ``stock``: ``enabled=False`` (mmseg's ``VisionTransformer.forward`` bit for bit);
* ``stock+sdpa``: every token kept, every layer through the fused attention
  kernel (``keep_ratio=1.0, fast_attn=True``): the control isolating the
  token reduction from the kernel;
* ``ailurus``: the config's setting.

Timing: :func:`ailurus_mm.analysis.time_interleaved` (warm-up, interleaved
repetitions, median, min..max) with gradients enabled inside each call.
Inputs: seeded random images (or ``--images DIR``, resized to the crop) and
seeded random labels. ``--trainable-backbone`` (default) makes every
backbone parameter trainable (configs that freeze it, e.g. the frozen CamVid
model, are benchmarked as fine-tuning).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` per step; on CPU
the resident set size sampled every 2 ms during each step, minus the RSS
when the step started (peak extra memory of the step: activations, gradients
and optimizer state growth), max over the steps of a candidate. The tool
re-executes itself with ``MALLOC_MMAP_THRESHOLD_=65536`` so freed tensors
are returned to the OS and later candidates do not look smaller.

Usage::

    python tools/benchmark_train.py CONFIG [--checkpoint CKPT] [--batch-size 1]
        [--warmup 1] [--repeats 3] [--threads 1] [--device cpu]
        [--images DIR] [--out-md PATH] [--out-csv PATH]
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time

MMAP_ENV = 'MALLOC_MMAP_THRESHOLD_'


def parse_args(argv=None):
    p = argparse.ArgumentParser(description='AiluRus training-step benchmark')
    p.add_argument('config')
    p.add_argument('--checkpoint', default=None, help='weights (default: seeded init)')
    p.add_argument('--batch-size', type=int, default=1)
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--repeats', type=int, default=3)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--device', default=None)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--images', default=None, help='folder of real images (default: random)')
    p.add_argument(
        '--frozen-backbone',
        action='store_true',
        help="keep the config's frozen backbone parameters frozen (default: all trainable)",
    )
    p.add_argument('--out-md', default=None)
    p.add_argument('--out-csv', default=None)
    args = p.parse_args(argv)
    for k in ('batch_size', 'repeats', 'threads'):
        if getattr(args, k) < 1:
            p.error(f'--{k.replace("_", "-")}={getattr(args, k)} must be >= 1')
    if args.warmup < 0:
        p.error(f'--warmup={args.warmup} must be >= 0')
    return args


class RSSPeak:
    """Peak resident set size above the start of each measured call (CPU)."""

    def __init__(self, interval=0.002):
        self.interval = interval
        self.page = os.sysconf('SC_PAGE_SIZE')
        self._peak = 0
        self._on = False
        self._stop = False
        self._t = threading.Thread(target=self._run, daemon=True)
        self._t.start()

    def rss(self) -> int:
        with open('/proc/self/statm') as f:
            return int(f.read().split()[1]) * self.page

    def _run(self):
        while not self._stop:
            if self._on:
                self._peak = max(self._peak, self.rss())
            time.sleep(self.interval)

    def measure(self, fn):
        start = self.rss()
        self._peak = start
        self._on = True
        try:
            fn()
        finally:
            self._on = False
        return max(self._peak, self.rss()) - start


def make_batch(cfg, args, n_classes, crop):
    import torch
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from ailurus_mm.analysis import load_images, random_images

    if args.images:
        imgs = load_images(args.images, args.batch_size, crop)
    else:
        imgs = random_images(args.batch_size, crop, seed=args.seed)
    g = torch.Generator().manual_seed(args.seed + 1)
    samples = []
    for _ in imgs:
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=torch.randint(0, n_classes, (1, *crop), generator=g))
        s.set_metainfo(dict(img_shape=crop, ori_shape=crop, pad_shape=crop))
        samples.append(s)
    return dict(inputs=imgs, data_samples=samples)


def main(argv=None):
    if MMAP_ENV not in os.environ:  # see the module doc (memory)
        os.environ[MMAP_ENV] = '65536'
        os.execv(sys.executable, [sys.executable] + sys.argv)
    args = parse_args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from mmengine.config import Config
    from mmengine.optim import build_optim_wrapper
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import (
        machine_info,
        quiet_logs,
        resolve_device,
        time_interleaved,
        token_counts,
        write_table,
    )

    device = resolve_device(args.device)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.pretrained = None
    cfg.model.backbone.pop('init_cfg', None)
    torch.manual_seed(args.seed)
    model = MODELS.build(cfg.model)
    with quiet_logs():
        if args.checkpoint:
            load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
        else:
            model.init_weights()
    if not args.frozen_backbone:
        for p in model.backbone.parameters():
            p.requires_grad_(True)
    model.to(device).train()
    bb = model.backbone
    if not bb.options.enabled or bb.options.keep_ratio == 1.0:
        raise ValueError(f'{args.config}: the config must enable AiluRus with a reduction')
    optim_wrapper = build_optim_wrapper(model, cfg.optim_wrapper)
    crop = tuple(cfg.model.data_preprocessor.get('size') or cfg.crop_size)
    batch = make_batch(cfg, args, cfg.model.decode_head.num_classes, crop)
    if device.type == 'cuda':
        batch['inputs'] = [t.to(device) for t in batch['inputs']]

    variants = {
        'stock': dict(enabled=False),
        'stock+sdpa': dict(keep_ratio=1.0, fast_attn=True),
        'ailurus': {},
    }
    rss = RSSPeak() if device.type == 'cpu' else None
    peaks = {name: 0 for name in variants}

    def step(name, over):
        def run():
            with torch.enable_grad(), bb.options_override(**over):
                model.train_step(batch, optim_wrapper)

        def call():
            if rss is not None:
                peaks[name] = max(peaks[name], rss.measure(run))
            else:
                torch.cuda.reset_peak_memory_stats(device)
                base = torch.cuda.memory_allocated(device)
                run()
                peaks[name] = max(peaks[name], torch.cuda.max_memory_allocated(device) - base)

        return call

    fns = {name: step(name, over) for name, over in variants.items()}
    info = machine_info(device)
    print(f'config {args.config}, crop {crop}, batch {args.batch_size}, machine {info}', flush=True)
    t0 = time.time()
    timings = time_interleaved(fns, warmup=args.warmup, repeats=args.repeats, device=device)
    info_after = machine_info(device)
    ps = cfg.model.backbone.patch_size
    grid = (crop[0] // ps, crop[1] // ps)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    rows = []
    for name, over in variants.items():
        t = timings[name]
        with bb.options_override(**over):
            counts = token_counts(bb, grid)
        rows.append(
            dict(
                variant=name,
                median=t.median,
                range=f'{t.min:.2f}-{t.max:.2f}',
                img_s=args.batch_size / t.median,
                vs_stock=t.ratio_to(timings['stock'])['median'],
                vs_sdpa=t.ratio_to(timings['stock+sdpa'])['median'],
                peak_mb=peaks[name] / 2**20,
                tokens=f'{counts[0]} -> {counts[-1]}',
            )
        )
    cols = [
        ('variant', 'variant'),
        ('median', 's/step (median)', '.2f'),
        ('range', 'min-max'),
        ('img_s', 'images/s', '.3f'),
        ('vs_stock', 'speed-up vs stock', '.2f}x'),
        ('vs_sdpa', 'vs stock+sdpa', '.2f}x'),
        ('peak_mb', 'peak step memory (MiB)', '.0f'),
        ('tokens', 'tokens per layer'),
    ]
    opt = cfg.optim_wrapper.optimizer.type
    header = (
        f'Training step (train_step: preprocess, forward, loss, backward, {opt} step) '
        f'of `{args.config}`, crop {crop}, batch {args.batch_size}, '
        f'{"real images" if args.images else "random images"}, {trainable / 1e6:.1f} M trainable '
        f'parameters, warm-up {args.warmup}, {args.repeats} interleaved repetitions; '
        f'{info["device"]}, {info["threads"]} thread(s), load {info["load_1min"]} -> '
        f'{info_after["load_1min"]} (1-min, {info["cpus"]} CPUs), torch {info["torch"]}; '
        f'{time.time() - t0:.0f} s. Peak step memory: '
        f'{"RSS above the step start" if rss else "cuda max_memory_allocated above the start"}.\n\n'
    )
    md = write_table(rows, cols, args.out_md, args.out_csv, header=header)
    print(md, flush=True)


if __name__ == '__main__':
    main()
