#!/usr/bin/env python
"""Fine-tune DINOv2-S/14 + linear head on CamVid with and without AiluRus.

The paper's training claim (fine-tuning with AiluRus in the loop is faster at
about the same accuracy), tested on one CPU with a recipe both arms share:

* layers 1..4 of the backbone (patch/position embedding, class token and
  ``layers[0:4]``) are FROZEN in both arms; their output (the tokens entering
  layer 5, where AiluRus clusters: ``cluster_after=4``) is computed once per
  image by ``backbone.forward_prefix`` and cached (``cache`` step, run once,
  shared by both arms). No augmentation (the cache fixes the input), test
  pipeline (``Resize`` to 672x504), labels at the original 360x480.
* trained: ``layers[4:12]``, the final norm and the linear head (1x1 conv,
  initialised from ``checkpoints/segmenter_dinov2-s14_camvid_head.pth``), with
  the stock ``OptimWrapper`` around AdamW (backbone lr ``--lr``, head lr
  ``--head-lr``, weight decay 1e-4, linear decay to 0), batch ``--batch-size``,
  same seeded image order in both arms. The loss is the head's stock
  ``loss`` (bilinear upsampling to 360x480, cross-entropy ignoring label 11).
* arm ``stock``: the layers after the cache run on all 1 + 36x48 tokens (the
  stock layers); arm ``ailurus``: clustering + merging + size-aware attention
  at the config's setting (after layer 4, keep 0.5), outputs unfolded before
  the head, gradients through merge/unfold.
* evaluation: each fine-tuned model is assembled into a full checkpoint
  (``work_dirs/...``, never committed) and evaluated on all 101 val images
  with AiluRus off and on through ``model.test_step`` (the path of
  ``tools/test.py``) and mmseg's ``IoUMetric``.

Usage (see docs/results.md for the exact commands and numbers)::

    python tools/camvid/finetune_cached.py cache --work-dir work_dirs/finetune_camvid
    python tools/camvid/finetune_cached.py train --arm stock --iters 120 ...
    python tools/camvid/finetune_cached.py train --arm ailurus --iters 120 ...
"""

from __future__ import annotations

import argparse
import json
import os
import os.path as osp
import statistics
import sys
import time

import torch

from ailurus_mm.zoo.camvid import CAMVID_CONFIG, REFERENCE_CONFIG, REPO

DEFAULT_DATA_ROOT = REPO / '..' / 'shared' / 'data' / 'CamVid'
CLUSTER_AFTER = 4


def log(msg: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def load_cfg(config, data_root):
    from mmengine.config import Config

    if not osp.isdir(data_root):
        raise FileNotFoundError(f'CamVid data root not found: {data_root}')
    cfg = Config.fromfile(str(config))
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = str(data_root)
    return cfg


def build_model(cfg, checkpoint):
    """The config's segmentor with the full checkpoint loaded strictly."""
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint

    from ailurus_mm.analysis import quiet_logs

    init_default_scope('mmseg')
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    with quiet_logs():
        load_checkpoint(model, str(checkpoint), map_location='cpu', strict=True)
    return model


def cache_prefix(args) -> None:
    """Tokens entering layer 5 (frozen layers 1..4) and labels, per train image."""
    from mmseg.registry import DATASETS

    os.makedirs(args.work_dir, exist_ok=True)
    out = osp.join(args.work_dir, 'prefix_train.pth')
    cfg = load_cfg(REFERENCE_CONFIG, args.data_root)
    model = build_model(cfg, args.checkpoint).eval()
    ds_cfg = cfg.val_dataloader.dataset.copy()
    ds_cfg.data_prefix = dict(img_path='train', seg_map_path='trainannot')
    dataset = DATASETS.build(ds_cfg)
    opts = model.backbone.options.replace(enabled=True, cluster_after=CLUSTER_AFTER)
    tokens, labels, names = [], [], []
    t0 = time.time()
    with torch.no_grad():
        for i in range(min(len(dataset), args.limit or len(dataset))):
            data = dataset[i]
            batch = model.data_preprocessor(
                dict(inputs=[data['inputs']], data_samples=[data['data_samples']]), training=False
            )
            state = model.backbone.forward_prefix(batch['inputs'], opts)
            assert state.stop == CLUSTER_AFTER and not state.outs
            tokens.append(state.x[0].clone())
            labels.append(data['data_samples'].gt_sem_seg.data[0].to(torch.uint8))
            names.append(osp.basename(data['data_samples'].img_path))
            if (i + 1) % 50 == 0 or i + 1 == len(dataset):
                log(f'cached {i + 1}/{len(dataset)} ({time.time() - t0:.0f} s)')
    torch.save(
        dict(tokens=torch.stack(tokens), labels=torch.stack(labels), names=names, hw=state.hw),
        out,
    )
    log(f'wrote {out}: tokens {tuple(torch.stack(tokens).shape)}')


def trainable(model):
    """Freeze the cached part; return (backbone params, head params) to train."""
    bb = model.backbone
    for p in model.parameters():
        p.requires_grad_(False)
    bb_params = [p for layer in bb.layers[CLUSTER_AFTER:] for p in layer.parameters()]
    bb_params += list(bb.norm1.parameters())
    head_params = list(model.decode_head.parameters())
    for p in bb_params + head_params:
        p.requires_grad_(True)
    return bb_params, head_params


def train(args) -> None:
    from mmengine.optim import OptimWrapper
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    from ailurus_mm.analysis import machine_info
    from ailurus_mm.analysis.segmentation import build_seg_metric, evaluate, load_test_batches
    from ailurus_mm.ops import PrefixState

    torch.manual_seed(args.seed)
    work = osp.join(args.work_dir, args.arm)
    os.makedirs(work, exist_ok=True)
    cache = torch.load(osp.join(args.work_dir, 'prefix_train.pth'), map_location='cpu')
    tokens, labels, hw = cache['tokens'], cache['labels'], tuple(cache['hw'])
    cfg = load_cfg(CAMVID_CONFIG, args.data_root)  # AiluRus on: the default setting
    model = build_model(cfg, args.checkpoint)
    bb = model.backbone
    on = bb.options
    if on.cluster_after != CLUSTER_AFTER:
        raise ValueError(f'{CAMVID_CONFIG}: cluster_after={on.cluster_after}, cache is after 4')
    # The cache ran layers 1..4 on the stock path (fast_attn=False: stock before
    # clustering, size-aware SDPA after it); the stock arm keeps every token
    # (= the stock layers bit for bit).
    train_opts = on.replace(fast_attn=False)
    if args.arm == 'stock':
        train_opts = train_opts.replace(keep_ratio=1.0)
    bb_params, head_params = trainable(model)
    optim = torch.optim.AdamW(
        [dict(params=bb_params, lr=args.lr), dict(params=head_params, lr=args.head_lr)],
        weight_decay=args.weight_decay,
    )
    wrapper = OptimWrapper(optim)
    sched = torch.optim.lr_scheduler.LambdaLR(optim, lambda it: 1.0 - it / args.iters)
    g = torch.Generator().manual_seed(args.seed)
    n = tokens.shape[0]
    order = torch.cat(
        [torch.randperm(n, generator=g) for _ in range(-(-args.iters * args.batch_size // n))]
    )
    log(f'arm={args.arm} options={train_opts.to_dict()} machine={machine_info()}')
    log(
        f'{len(bb_params)} backbone + {len(head_params)} head tensors trained; '
        f'{n} cached images, batch {args.batch_size}, {args.iters} iters'
    )
    model.train()
    times, losses = [], []
    t_start = time.perf_counter()
    for it in range(args.iters):
        idx = order[it * args.batch_size : (it + 1) * args.batch_size]
        t = time.perf_counter()
        samples = []
        for j in idx.tolist():
            s = SegDataSample()
            s.gt_sem_seg = PixelData(data=labels[j][None].long())
            samples.append(s)
        state = PrefixState(x=tokens[idx].clone(), hw=hw, stop=CLUSTER_AFTER, fused=False)
        res = bb.forward_from_prefix(state, train_opts)
        feats = [m for m, _ in bb.tokens_to_maps(res)]
        loss = model.decode_head.loss(feats, samples, model.train_cfg)['loss_ce']
        wrapper.update_params(loss)
        sched.step()
        times.append(time.perf_counter() - t)
        losses.append(loss.item())
        if (it + 1) % args.log_interval == 0 or it + 1 == args.iters:
            recent = losses[-args.log_interval :]
            log(
                f'iter {it + 1}/{args.iters} loss {sum(recent) / len(recent):.4f} '
                f's/iter median {statistics.median(times):.2f} (last {times[-1]:.2f}) '
                f'load {os.getloadavg()[0]:.2f}'
            )
    total = time.perf_counter() - t_start
    log(
        f'TRAIN DONE arm={args.arm}: {args.iters} iters in {total:.1f} s, '
        f'median {statistics.median(times):.3f} s/iter, mean {total / args.iters:.3f} s/iter'
    )
    ckpt = osp.join(work, 'finetuned.pth')
    torch.save(dict(meta=dict(arm=args.arm, iters=args.iters), state_dict=model.state_dict()), ckpt)
    log(f'wrote {ckpt}')

    model.eval()
    batches, meta = load_test_batches(cfg, num_images=args.val_images, progress=False)
    metric = build_seg_metric(cfg, meta)
    results = {}
    for name, enabled in (('off', False), ('on', True)):
        t = time.perf_counter()
        with bb.options_override(enabled=enabled):
            summary, _, _ = evaluate(model, batches, metric)
        results[name] = float(summary['mIoU'])
        log(
            f'EVAL arm={args.arm} ailurus={name}: mIoU {summary["mIoU"]:.2f} '
            f'aAcc {summary["aAcc"]:.2f} '
            f'({len(batches)} val images, {time.perf_counter() - t:.0f} s)'
        )
    summary = dict(
        arm=args.arm,
        iters=args.iters,
        batch_size=args.batch_size,
        train_seconds=total,
        median_s_per_iter=statistics.median(times),
        mean_s_per_iter=total / args.iters,
        first_loss=float(losses[0]),
        last_losses_mean=sum(losses[-10:]) / len(losses[-10:]),
        val_miou_ailurus_off=results['off'],
        val_miou_ailurus_on=results['on'],
        machine=machine_info(),
        argv=sys.argv,
    )
    with open(osp.join(work, 'summary.json'), 'w') as f:
        json.dump(summary, f, indent=2)
    log(f'SUMMARY {json.dumps(summary)}')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('step', choices=['cache', 'train'])
    p.add_argument('--arm', choices=['stock', 'ailurus'], default='stock')
    p.add_argument('--work-dir', default='work_dirs/finetune_camvid')
    p.add_argument('--data-root', default=str(DEFAULT_DATA_ROOT))
    p.add_argument(
        '--checkpoint',
        default=osp.expanduser('~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth'),
        help='full frozen-model checkpoint (ailurus_mm.zoo.camvid.assemble())',
    )
    p.add_argument('--iters', type=int, default=120)
    p.add_argument('--batch-size', type=int, default=2)
    p.add_argument('--lr', type=float, default=1e-5)
    p.add_argument('--head-lr', type=float, default=1e-4)
    p.add_argument('--weight-decay', type=float, default=1e-4)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--threads', type=int, default=1)
    p.add_argument('--log-interval', type=int, default=10)
    p.add_argument('--limit', type=int, default=0, help='cache only the first N (smoke runs)')
    p.add_argument('--val-images', type=int, default=0, help='evaluate on the first N (0: all)')
    args = p.parse_args(argv)
    for k in ('iters', 'batch_size', 'threads', 'log_interval'):
        if getattr(args, k) < 1:
            raise SystemExit(f'--{k.replace("_", "-")}={getattr(args, k)} must be >= 1')
    if not osp.isfile(args.checkpoint):
        raise SystemExit(f'checkpoint not found: {args.checkpoint}')
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    import ailurus_mm  # noqa: F401

    (cache_prefix if args.step == 'cache' else train)(args)


if __name__ == '__main__':
    main()
