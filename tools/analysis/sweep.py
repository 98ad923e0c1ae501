"""Accuracy versus speed of AiluRus settings and baselines, one process, same weights.

    python tools/analysis/sweep.py CONFIG CHECKPOINT
        [--cluster-after 2 4 6] [--keep 0.25 0.4 0.5]
        [--methods adjacent tome pool random dpc_global]
        [--variant name:key=value,key=value ...] [--num-images N] [--every K]
        [--time-images 8] [--repeats 3] [--device cpu] [--out-dir work_dirs/sweep]
        [--cfg-options ...]

Every row runs the config's test dataloader (the config's own pipeline, so
``--cfg-options test_dataloader.dataset.data_root=...`` selects the data) through
``model.test_step`` and the config's IoU metric: mIoU, aAcc and per-class IoU.
The unaccelerated model (``enabled=False``) is the first row; the grid is
cluster layer x keep ratio x method (AiluRus readings and baselines at the
same budget); ``--variant`` adds named option sets (e.g.
``nosize:size_aware=False``). Speed: for every row, the backbone and
``test_step`` on the first ``--time-images`` images, interleaved with the
reference in ``--repeats`` repetitions after one warm-up round (median and
min..max of the per-repetition speed-ups). Backbone GFLOPs from mmengine's
FlopAnalyzer. Writes ``sweep.md``, ``sweep.csv``, ``sweep.json`` and
``sweep.png`` (mIoU vs backbone speed-up) to ``--out-dir``.
"""

import argparse
import json
import os
import os.path as osp
import sys

import torch


def parse_args(argv=None):
    from mmengine.config import DictAction

    from ailurus_mm.analysis import parse_variant

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument('--cluster-after', type=int, nargs='+', default=[])
    p.add_argument('--keep', type=float, nargs='+', default=[])
    p.add_argument('--methods', nargs='+', default=['adjacent'])
    p.add_argument(
        '--variant',
        type=parse_variant,
        action='append',
        default=[],
        help="name:key=value,... extra AiluRus option sets (over the config's)",
    )
    p.add_argument('--num-images', type=int, default=None, help='use N test images (default all)')
    p.add_argument(
        '--every',
        type=int,
        default=1,
        help='take every K-th test image (spreads a small --num-images over the set)',
    )
    p.add_argument('--time-images', type=int, default=8)
    p.add_argument('--repeats', type=int, default=3, help='interleaved timing repetitions')
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument(
        '--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available)'
    )
    p.add_argument('--out-dir', default='work_dirs/sweep')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)
    if (
        args.time_images < 1
        or args.every < 1
        or args.repeats < 1
        or (args.num_images is not None and args.num_images < 1)
    ):
        p.error('--time-images, --repeats, --every and --num-images must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmengine.utils import ProgressBar
    from mmseg.registry import MODELS

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import (
        ailurus_backbone,
        count_flops,
        machine_info,
        markdown_table,
        quiet_logs,
        resolve_device,
        time_interleaved,
        write_table,
    )
    from ailurus_mm.analysis.models import batches_to
    from ailurus_mm.analysis.segmentation import build_seg_metric, evaluate, load_test_batches

    device = resolve_device(args.device)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.pretrained = None
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    bb = ailurus_backbone(model)
    if bb is None:
        sys.exit(
            f'{args.config}: model.backbone.type={cfg.model.backbone.type!r} '
            'is not an AiluRus backbone'
        )
    with quiet_logs():
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.to(device).eval()

    batches, meta = load_test_batches(cfg, args.num_images, args.every)
    batches = batches_to(batches, device)
    metric = build_seg_metric(cfg, meta)
    classes = list(meta['classes'])

    variants = [('reference', dict(enabled=False))]
    for ca in args.cluster_after:
        for keep in args.keep:
            for method in args.methods:
                variants.append(
                    (
                        f'{method} L{ca} k{keep}',
                        dict(enabled=True, cluster_after=ca, keep_ratio=keep, method=method),
                    )
                )
    for name, opts in args.variant:
        variants.append((name, dict(dict(enabled=True), **opts)))
    x1 = model.data_preprocessor(batches[0], False)['inputs']
    grid = (x1.shape[-2] // bb.patch_size, x1.shape[-1] // bb.patch_size)
    tb = batches[: args.time_images]
    xs = [model.data_preprocessor(b, False)['inputs'] for b in tb]

    def runner(opts, e2e):
        def fn():
            with bb.options_override(**opts):
                for b, x in zip(tb, xs):
                    model.test_step(b) if e2e else model.backbone(x)

        return fn

    rows = []
    bar = ProgressBar(len(variants), file=sys.stderr)
    for name, over in variants:
        with bb.options_override(**over) as opts:
            res, per_class, present = evaluate(model, batches, metric)
            gflops = count_flops(bb, x1, bb)
            kept = bb.num_kept(grid)
        ref = dict(enabled=False)
        t_bb = time_interleaved(
            {'ref': runner(ref, False), 'row': runner(over, False)}, 1, args.repeats, device
        )
        t_e2e = time_interleaved(
            {'ref': runner(ref, True), 'row': runner(over, True)}, 1, args.repeats, device
        )
        sb, se = t_bb['row'].ratio_to(t_bb['ref']), t_e2e['row'].ratio_to(t_e2e['ref'])
        rows.append(
            dict(
                name=name,
                options=opts.to_dict(),
                mIoU=float(res['mIoU']),
                aAcc=float(res['aAcc']),
                mAcc=float(res.get('mAcc', 'nan')),
                per_class_iou=[100 * v for v in per_class],
                backbone_ms=1e3 * t_bb['row'].median / len(tb),
                e2e_ms=1e3 * t_e2e['row'].median / len(tb),
                backbone_speedup=sb['median'] if name != 'reference' else 1.0,
                backbone_speedup_range=[sb['min'], sb['max']],
                e2e_speedup=se['median'] if name != 'reference' else 1.0,
                e2e_speedup_range=[se['min'], se['max']],
                backbone_gflops=gflops,
                tokens=kept,
            )
        )
        bar.update()
        print(
            f'\n{name}: mIoU {res["mIoU"]:.2f} backbone speed-up {sb["median"]:.2f}x',
            file=sys.stderr,
        )
    ref = rows[0]
    for r in rows:
        r['delta_mIoU'] = r['mIoU'] - ref['mIoU']
        r['gflops_ratio'] = ref['backbone_gflops'] / r['backbone_gflops']

    os.makedirs(args.out_dir, exist_ok=True)
    mi = machine_info(device)
    head = (
        f'# Sweep: {osp.basename(args.config)}\n\n- checkpoint: {args.checkpoint}\n'
        f'- images: {len(batches)} (every {args.every}-th test image of '
        f'{cfg.test_dataloader.dataset.get("data_root")}, '
        f'{cfg.test_dataloader.dataset.get("data_prefix")}), input {tuple(x1.shape[-2:])}, '
        f'{grid[0]}x{grid[1]} tokens\n'
        f'- timing: {len(tb)} images, batch 1, each row interleaved with the reference, median of '
        f'{args.repeats} repetitions after 1 warm-up round; device {mi["device"]}, threads '
        f'{mi["threads"]}, load {mi["load_1min"]}\n\n'
    )
    cols = [
        ('name', 'variant'),
        ('tokens', 'tokens'),
        ('mIoU', 'mIoU', '.2f'),
        ('delta_mIoU', 'delta', '+.2f'),
        ('aAcc', 'aAcc', '.2f'),
        ('backbone_gflops', 'backbone GFLOPs', '.2f'),
        ('gflops_ratio', 'FLOPs ratio', '.2f}x'),
        ('backbone_speedup', 'backbone speed-up', '.2f}x'),
        (lambda r: '[{:.2f}..{:.2f}]'.format(*r['backbone_speedup_range']), 'range'),
        ('e2e_speedup', 'end-to-end speed-up', '.2f}x'),
    ]
    per_class = [('name', 'variant')] + [
        (lambda r, i=i: r['per_class_iou'][i], c, '.1f') for i, c in enumerate(classes)
    ]
    csv_cols = [
        ('name', 'variant'),
        ('tokens', 'tokens'),
        ('mIoU', 'mIoU', '.3f'),
        ('delta_mIoU', 'delta_mIoU', '.3f'),
        ('aAcc', 'aAcc', '.3f'),
        ('backbone_gflops', 'backbone_gflops', '.3f'),
        ('backbone_ms', 'backbone_ms', '.1f'),
        ('e2e_ms', 'e2e_ms', '.1f'),
        ('backbone_speedup', 'backbone_speedup', '.3f'),
        ('e2e_speedup', 'e2e_speedup', '.3f'),
    ] + [(lambda r, i=i: r['per_class_iou'][i], f'IoU_{c}', '.2f') for i, c in enumerate(classes)]
    md = write_table(
        rows, cols, header=head, csv_path=osp.join(args.out_dir, 'sweep.csv'), csv_columns=csv_cols
    )
    md += '\n' + markdown_table(rows, per_class) + '\n'
    print(md)
    with open(osp.join(args.out_dir, 'sweep.md'), 'w') as f:
        f.write(md)
    with open(osp.join(args.out_dir, 'sweep.json'), 'w') as f:
        json.dump(dict(rows=rows, classes=classes, machine=mi), f, indent=1, default=str)
    plot(rows, osp.join(args.out_dir, 'sweep.png'), osp.basename(args.config))
    return rows


def plot(rows, path, title):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    groups = {}
    for r in rows:
        key = 'reference' if not r['options']['enabled'] else r['options']['method']
        groups.setdefault(key, []).append(r)
    for key, rs in groups.items():
        ax.scatter(
            [r['backbone_speedup'] for r in rs],
            [r['mIoU'] for r in rs],
            label=key,
            marker='*' if key == 'reference' else 'o',
            s=120 if key == 'reference' else 40,
        )
    ax.set_xlabel('measured backbone speed-up (x)')
    ax.set_ylabel('mIoU')
    ax.set_title(title, fontsize=9)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == '__main__':
    main()
