"""Speed of a stock ViT model and its AiluRus twin, in one process.

    python tools/benchmark.py CONFIG [CHECKPOINT] [--images DIR] [--size H W]
        [--batch-sizes 1 2] [--warmup 1] [--iters 5] [--threads N] [--device cpu]
        [--sdpa-control] [--json OUT] [--cfg-options ...]

Both models are built from CONFIG (the stock one with the stock backbone) and
hold the same weights: CHECKPOINT's, or one seeded random init. For each batch
size the models run in turn inside every repetition (interleaved, after
``--warmup`` untimed rounds); the table gives the median over ``--iters``
repetitions and the min..max of the per-repetition speed-ups, backbone-only
and end-to-end (``model.test_step``: preprocessing, the config's whole/slide
inference, the decode head, resizing), GFLOPs (mmengine's FlopAnalyzer,
multiply-adds, fused attention counted like the stock ``bmm`` pair) and the
tokens entering each layer. ``--sdpa-control`` adds the stock model run
through the same fused attention kernel as AiluRus's reduced layers, so the
kernel's share of the speed-up is separated from the token reduction's.
Inputs: real images from ``--images`` (resized to the crop size), else seeded
random images. MMDetection configs (``default_scope='mmdet'``) work the same
way: the input size is the test pipeline's ``Resize`` scale (1333 x 800 for
the COCO configs: an 800 x 1333 image, padded to 32 by the preprocessor),
``DetDataSample`` metadata, the whole detector (RPN, RoI heads, masks) in
``test_step`` and the network FLOPs.
"""

import argparse
import json
import os.path as osp
import sys

import torch


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
    p.add_argument('--iters', type=int, default=5, help='interleaved timed repetitions')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument(
        '--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available)'
    )
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


def test_resize_scale(cfg):
    """``(H, W)`` of a landscape image at the test pipeline's ``Resize`` scale
    (mmdet's ``scale=(1333, 800)`` keeps the ratio within long x short), or None."""
    pipeline = cfg.get('test_dataloader', {}).get('dataset', {}).get('pipeline', [])
    for t in pipeline:
        if t.get('type') == 'Resize' and t.get('scale'):
            scale = t['scale']
            scale = (scale, scale) if isinstance(scale, int) else tuple(scale)
            return (min(scale), max(scale))
    return None


def crop_size(cfg):
    if cfg.get('default_scope') == 'mmdet' and test_resize_scale(cfg):
        return test_resize_scale(cfg)
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
    from mmengine.utils import ProgressBar

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import (
        build_twins,
        count_flops,
        load_images,
        machine_info,
        markdown_table,
        random_images,
        resolve_device,
        time_interleaved,
        token_counts,
    )

    try:
        device = resolve_device(args.device)
    except ValueError as e:
        sys.exit(str(e))
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    if cfg.get('default_scope') == 'mmdet':
        from mmdet.structures import DetDataSample as DataSample
    else:
        from mmseg.structures import SegDataSample as DataSample
    hw = tuple(args.size) if args.size else crop_size(cfg)
    variants = {'ailurus': {}}
    if args.sdpa_control:
        variants['stock+sdpa'] = dict(enabled=True, keep_ratio=1.0, fast_attn=True)
    models = build_twins(cfg, args.checkpoint, seed=args.seed, variants=variants, device=device)
    bmax = max(args.batch_sizes)
    src = 'random (seeded)'
    if args.images:
        imgs, src = load_images(args.images, bmax, hw), f'images from {args.images}'
    else:
        imgs = random_images(bmax, hw, seed=args.seed)
    imgs = [i.to(device) for i in imgs]

    def data_for(b):
        samples = []
        for _ in range(b):
            s = DataSample()
            s.set_metainfo(dict(img_shape=hw, ori_shape=hw, pad_shape=hw, scale_factor=(1.0, 1.0)))
            samples.append(s)
        return dict(inputs=imgs[:b], data_samples=samples)

    def backbone_alone(model, x):
        # the backbone alone cannot leave its outputs merged (reconstruct_level='logits'
        # is the segmentor's): time it at the feature level, the same backbone work
        # plus the unfold; the head-side saving shows in the end-to-end column
        bb = model.backbone
        opts = getattr(bb, 'options', None)
        if opts is not None and opts.reconstruct_level == 'logits':
            with bb.options_override(reconstruct_level='features'):
                return bb(x)
        return bb(x)

    steps = len(models) * len(args.batch_sizes) * 2 * (args.warmup + args.iters)
    bar = ProgressBar(steps, file=sys.stderr)
    rows = []
    for b in args.batch_sizes:
        data = data_for(b)
        xs = {
            n: m.data_preprocessor(dict(inputs=imgs[:b], data_samples=None), False)['inputs']
            for n, m in models.items()
        }
        t_bb = time_interleaved(
            {n: (lambda m=m, x=xs[n]: backbone_alone(m, x)) for n, m in models.items()},
            args.warmup,
            args.iters,
            device,
            bar,
        )
        t_e2e = time_interleaved(
            {n: (lambda m=m: m.test_step(data)) for n, m in models.items()},
            args.warmup,
            args.iters,
            device,
            bar,
        )
        for name, model in models.items():
            x = xs[name]
            if hasattr(model.backbone, 'grid_size'):  # e.g. the CAE ViT: H/16 x W/16 for patch 14
                grid = model.backbone.grid_size(x.shape[-2:])
            else:
                grid = (
                    x.shape[-2] // model.backbone.patch_size,
                    x.shape[-1] // model.backbone.patch_size,
                )
            sb = t_bb[name].ratio_to(t_bb['stock'])
            se = t_e2e[name].ratio_to(t_e2e['stock'])
            rows.append(
                dict(
                    model=name,
                    batch=b,
                    backbone_s=t_bb[name].median,
                    e2e_s=t_e2e[name].median,
                    backbone_times=t_bb[name].times,
                    e2e_times=t_e2e[name].times,
                    input_hw=list(x.shape[-2:]),
                    tokens=token_counts(model.backbone, grid),
                    backbone_img_s=b / t_bb[name].median,
                    e2e_img_s=b / t_e2e[name].median,
                    backbone_speedup=sb['median'],
                    e2e_speedup=se['median'],
                    backbone_speedup_range=[sb['min'], sb['max']],
                    e2e_speedup_range=[se['min'], se['max']],
                )
            )
            if 'stock+sdpa' in models:
                rows[-1]['backbone_vs_control'] = t_bb[name].ratio_to(t_bb['stock+sdpa'])
                rows[-1]['e2e_vs_control'] = t_e2e[name].ratio_to(t_e2e['stock+sdpa'])
    sys.stderr.write('\n')
    flops = {}
    if not args.no_flops:
        d1 = models['stock'].data_preprocessor(data_for(1), False)
        x1, s1 = d1['inputs'], d1['data_samples']
        for name, model in models.items():
            flops[name] = dict(
                backbone=count_flops(model.backbone, x1, model.backbone),
                # the detectors' _forward needs the samples' metadata (RPN proposals)
                network=count_flops(lambda t, m=model: m._forward(t, s1), x1, model),
            )
    info = dict(
        config=args.config,
        checkpoint=args.checkpoint or f'random init (seed {args.seed})',
        inputs=f'{src}, {hw[0]}x{hw[1]}',
        warmup=args.warmup,
        iters=args.iters,
        statistic='median of interleaved repetitions; [min..max] of per-repetition ratios',
        ailurus=models['ailurus'].backbone.ailurus,
        **machine_info(device),
    )
    print(f'# Benchmark: {osp.basename(args.config)}\n')
    for k, v in info.items():
        print(f'- {k}: {v}')

    def rng(r, key):
        lo, hi = r[key]
        return f'[{lo:.2f}..{hi:.2f}]'

    cols = [
        ('model', 'model'),
        ('batch', 'batch'),
        ('backbone_img_s', 'backbone img/s', '.3f'),
        (lambda r: 1e3 * r['backbone_s'] / r['batch'], 'backbone ms/img', '.0f'),
        ('e2e_img_s', 'end-to-end img/s', '.3f'),
        (lambda r: 1e3 * r['e2e_s'] / r['batch'], 'end-to-end ms/img', '.0f'),
        ('backbone_speedup', 'backbone speed-up', '.2f}x'),
        (lambda r: rng(r, 'backbone_speedup_range'), 'range'),
        ('e2e_speedup', 'end-to-end speed-up', '.2f}x'),
        (lambda r: rng(r, 'e2e_speedup_range'), 'range'),
    ]
    if 'stock+sdpa' in models:
        cols += [
            (lambda r: r['backbone_vs_control']['median'], 'backbone vs control', '.2f}x'),
            (lambda r: r['e2e_vs_control']['median'], 'end-to-end vs control', '.2f}x'),
        ]
    print('\n' + markdown_table(rows, cols))
    if flops:
        frows = [dict(f, model=n) for n, f in flops.items()]
        print(
            '\n'
            + markdown_table(
                frows,
                [
                    ('model', 'model'),
                    ('backbone', 'backbone GFLOPs', '.1f'),
                    ('network', 'network GFLOPs', '.1f'),
                    (
                        lambda r: flops['stock']['backbone'] / r['backbone'],
                        'backbone FLOPs ratio',
                        '.2f}x',
                    ),
                    (
                        lambda r: flops['stock']['network'] / r['network'],
                        'network FLOPs ratio',
                        '.2f}x',
                    ),
                ],
            )
        )
    print('\nTokens entering each layer (class token included):')
    for name in models:
        r = next(r for r in rows if r['model'] == name)
        print(f'- {name}: {r["tokens"]}')
    if args.json:
        with open(args.json, 'w') as f:
            json.dump(dict(info=info, rows=rows, gflops=flops), f, indent=1)


if __name__ == '__main__':
    main()
