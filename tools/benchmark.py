"""Speed of a stock mmseg ViT model and its AiluRus twin, in one process.

    python tools/benchmark.py CONFIG [CHECKPOINT] [--images DIR] [--batch-sizes 1 2]
        [--warmup 1] [--iters 3] [--threads N] [--sdpa-control] [--json OUT]

Both models are built from CONFIG (the stock one with the stock
``VisionTransformer`` backbone) and hold the same weights: CHECKPOINT's, or one
seeded random init. For each model and batch size it reports images/s and
latency backbone-only and end-to-end (``model.test_step``: preprocessing,
the config's whole/slide inference, the decode head, resizing), GFLOPs
(mmengine's FlopAnalyzer, multiply-adds, fused attention counted like the
stock ``bmm`` pair), the tokens entering each layer, and the ratios to the stock
model. ``--sdpa-control`` adds the stock model run through the same fused
attention kernel as AiluRus's reduced layers, separating the kernel's share
of the speed-up from the token reduction's. Inputs: real images from
``--images`` (resized to the crop size), else seeded random images.
"""

import argparse
import json
import os
import os.path as osp
import platform
import statistics
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.abspath(__file__))))


def parse_args(argv=None):
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('config')
    p.add_argument('checkpoint', nargs='?', default=None)
    p.add_argument('--images', help='folder of real images (default: seeded random images)')
    p.add_argument(
        '--size',
        type=int,
        nargs=2,
        metavar=('H', 'W'),
        help='input size (default: the config crop size)',
    )
    p.add_argument('--batch-sizes', type=int, nargs='+', default=[1, 2])
    p.add_argument('--warmup', type=int, default=1)
    p.add_argument('--iters', type=int, default=3)
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument(
        '--sdpa-control',
        action='store_true',
        help='also time the stock model through the fused attention kernel',
    )
    p.add_argument('--no-flops', action='store_true')
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--json', help='write the results to this JSON file')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)
    for name in ('warmup', 'iters', 'threads'):
        if getattr(args, name) < (0 if name == 'warmup' else 1):
            p.error(
                f'--{name}={getattr(args, name)} is out of range (warmup >= 0, iters/threads >= 1)'
            )
    if any(b < 1 for b in args.batch_sizes):
        p.error(f'--batch-sizes={args.batch_sizes}: every batch size must be >= 1')
    return args


def crop_size(cfg):
    for src in (
        cfg.model.get('test_cfg', {}).get('crop_size'),
        cfg.model.data_preprocessor.get('size'),
        cfg.model.backbone.get('img_size'),
    ):
        if src:
            return tuple(src) if not isinstance(src, int) else (src, src)
    raise ValueError('cannot infer the input size from the config: pass --size H W')


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.config import Config
    from mmseg.structures import SegDataSample
    from tqdm import tqdm

    import ailurus_mm  # noqa: F401
    from ailurus_mm.apis.benchmark import (
        build_twins,
        count_flops,
        load_images,
        random_images,
        time_fn,
        token_counts,
    )

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    hw = tuple(args.size) if args.size else crop_size(cfg)
    variants = {'ailurus': {}}
    if args.sdpa_control:
        variants['stock+sdpa'] = dict(
            enabled=True, keep_ratio=1.0, num_clusters=None, fast_attn=True
        )
    models = build_twins(cfg, args.checkpoint, seed=args.seed, variants=variants)
    bmax = max(args.batch_sizes)
    src = 'random (seeded)'
    if args.images:
        imgs, src = load_images(args.images, bmax, hw), f'images from {args.images}'
    else:
        imgs = random_images(bmax, hw, seed=args.seed)

    def data_for(b):
        samples = []
        for _ in range(b):
            s = SegDataSample()
            s.set_metainfo(dict(img_shape=hw, ori_shape=hw, pad_shape=hw, scale_factor=(1.0, 1.0)))
            samples.append(s)
        return dict(inputs=imgs[:b], data_samples=samples)

    steps = len(models) * len(args.batch_sizes) * 2 * (args.warmup + args.iters)
    bar = tqdm(total=steps, desc='benchmark', file=sys.stderr)
    rows = []
    for name, model in models.items():
        pre = model.data_preprocessor
        for b in args.batch_sizes:
            data = data_for(b)
            x = pre(dict(inputs=imgs[:b], data_samples=None), False)['inputs']
            t_bb = time_fn(lambda: model.backbone(x), args.warmup, args.iters, bar)
            t_e2e = time_fn(lambda: model.test_step(data), args.warmup, args.iters, bar)
            grid = (
                x.shape[-2] // model.backbone.patch_size,
                x.shape[-1] // model.backbone.patch_size,
            )
            row = dict(
                model=name,
                batch=b,
                backbone_s=statistics.median(t_bb),
                e2e_s=statistics.median(t_e2e),
                input_hw=list(x.shape[-2:]),
                tokens=token_counts(model.backbone, grid),
            )
            row['backbone_img_s'] = b / row['backbone_s']
            row['e2e_img_s'] = b / row['e2e_s']
            rows.append(row)
    bar.close()
    flops = {}
    if not args.no_flops:
        x1 = models['stock'].data_preprocessor(dict(inputs=imgs[:1], data_samples=None), False)[
            'inputs'
        ]
        for name, model in models.items():
            flops[name] = dict(
                backbone=count_flops(model.backbone, x1, model.backbone),
                network=count_flops(lambda t, m=model: m._forward(t), x1, model),
            )
    base = {r['batch']: r for r in rows if r['model'] == 'stock'}
    for r in rows:
        s = base[r['batch']]
        r['backbone_speedup'] = s['backbone_s'] / r['backbone_s']
        r['e2e_speedup'] = s['e2e_s'] / r['e2e_s']
    info = dict(
        config=args.config,
        checkpoint=args.checkpoint or f'random init (seed {args.seed})',
        inputs=f'{src}, {hw[0]}x{hw[1]}',
        threads=args.threads,
        warmup=args.warmup,
        iters=args.iters,
        statistic='median',
        torch=torch.__version__,
        cpu=platform.processor() or platform.machine(),
        load_1min=os.getloadavg()[0],
        ailurus=models['ailurus'].backbone.ailurus,
    )
    print(f'# Benchmark: {osp.basename(args.config)}\n')
    for k, v in info.items():
        print(f'- {k}: {v}')
    print(
        '\n| model | batch | backbone img/s | backbone ms/img | end-to-end img/s | end-to-end ms/img |'
        ' backbone speed-up | end-to-end speed-up |'
    )
    print('|---|---|---|---|---|---|---|---|')
    for r in rows:
        print(
            f'| {r["model"]} | {r["batch"]} | {r["backbone_img_s"]:.3f} | '
            f'{1e3 * r["backbone_s"] / r["batch"]:.0f} | {r["e2e_img_s"]:.3f} | '
            f'{1e3 * r["e2e_s"] / r["batch"]:.0f} | {r["backbone_speedup"]:.2f}x | {r["e2e_speedup"]:.2f}x |'
        )
    if flops:
        print(
            '\n| model | backbone GFLOPs | network GFLOPs | backbone FLOPs ratio | network FLOPs ratio |'
        )
        print('|---|---|---|---|---|')
        for name, f in flops.items():
            print(
                f'| {name} | {f["backbone"]:.1f} | {f["network"]:.1f} | '
                f'{flops["stock"]["backbone"] / f["backbone"]:.2f}x | '
                f'{flops["stock"]["network"] / f["network"]:.2f}x |'
            )
    print('\nTokens entering each layer (class token included):')
    for name, model in models.items():
        r = next(r for r in rows if r['model'] == name)
        print(f'- {name}: {r["tokens"]}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(info=info, rows=rows, gflops=flops), f, indent=1)


if __name__ == '__main__':
    main()
