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
``nosize:size_aware=False``). Every row is the library's option defaults
(``AiluRusOptions()``) plus what the row sets, not the config's setting plus
it, so a row means the same whatever the config's default is. The layers
before the clustering layer are computed once per image and shared by
every row with the same clustering layer
(``ailurus_mm.analysis.segmentation.PrefixCache``: the numbers of
``model.test_step``, tested). Speed: for every row, the backbone on the first
``--time-images`` images, interleaved with the stock model and with the
control (the stock model through the fused attention kernel) in
``--repeats`` repetitions after one warm-up round: median and min..max of the
per-repetition speed-ups against both. Backbone GFLOPs from mmengine's
FlopAnalyzer. Writes ``sweep.md``, ``sweep.csv``, ``sweep.json`` and
``sweep.png`` (mIoU vs backbone speed-up over the control) to ``--out-dir``.
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
        help="name:key=value,... extra AiluRus option sets (over the library defaults)",
    )
    p.add_argument('--num-images', type=int, default=None, help='use N test images (default all)')
    p.add_argument(
        '--every',
        type=int,
        default=1,
        help='take every K-th test image (spreads a small --num-images over the set)',
    )
    p.add_argument('--time-images', type=int, default=8)
    p.add_argument('--repeats', type=int, default=5, help='interleaved timing repetitions')
    p.add_argument('--no-timing', action='store_true', help='accuracy and FLOPs only')
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
    from mmengine.registry import MODELS, init_default_scope
    from mmengine.runner import load_checkpoint
    from mmengine.utils import ProgressBar

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import (
        ailurus_backbone,
        count_flops,
        machine_info,
        markdown_table,
        quiet_logs,
        resolve_device,
        row_options,
        time_interleaved,
        write_table,
    )
    from ailurus_mm.analysis.models import batches_to
    from ailurus_mm.analysis.segmentation import PrefixCache, load_test_batches

    device = resolve_device(args.device)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    scope = cfg.get('default_scope', 'mmseg')
    init_default_scope(scope)
    if scope == 'mmseg':
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
    task = (DetTask if scope == 'mmdet' else SegTask)(cfg, model, meta)

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
    variants = [(name, row_options(over)) for name, over in variants]
    # every option set is validated before any image is evaluated
    for name, over in variants:
        try:
            bb.options.replace(**over)
        except ValueError as e:
            sys.exit(f'variant {name!r}: {e}')
    whole = (model.test_cfg or {}).get('mode', 'whole') == 'whole'
    # slide inference cannot resume from a cached prefix: it runs model.test_step
    cache = PrefixCache(model, batches) if whole else None
    with torch.no_grad():
        xs = [model.data_preprocessor(b, False)['inputs'] for b in batches[: args.time_images]]
    x1 = xs[0]
    grid = bb.token_grid(x1.shape[-2:])
    stock = dict(enabled=False)
    control = dict(enabled=True, keep_ratio=1.0, fast_attn=True)

    # The backbone alone cannot leave its outputs merged, so logits-level rows are
    # timed and counted at the feature level: the same backbone work but the unfold
    # (a copy); their head-side saving is not in the backbone numbers.
    backbone_only = dict(reconstruct_level='features')

    def runner(opts):
        def fn():
            with bb.options_override(**dict(opts, **backbone_only)):
                for x in xs:
                    model.backbone(x)

        return fn

    rows = []
    bar = ProgressBar(len(variants), file=sys.stderr)
    for name, over in variants:
        with bb.options_override(**over) as opts:
            res = task.evaluate(cache, batches, opts)
            with bb.options_override(**backbone_only):
                gflops = count_flops(bb, x1, bb)
            kept = bb.num_kept(grid)
        row = dict(name=name, options=opts.to_dict(), backbone_gflops=gflops, tokens=kept, **res)
        if not args.no_timing:
            t = time_interleaved(
                {'stock': runner(stock), 'control': runner(control), 'row': runner(over)},
                1,
                args.repeats,
                device,
            )
            vs_stock, vs_ctrl = t['row'].ratio_to(t['stock']), t['row'].ratio_to(t['control'])
            row.update(
                backbone_ms=1e3 * t['row'].median / len(xs),
                speedup_vs_stock=vs_stock['median'],
                speedup_vs_stock_range=[vs_stock['min'], vs_stock['max']],
                speedup_vs_control=vs_ctrl['median'],
                speedup_vs_control_range=[vs_ctrl['min'], vs_ctrl['max']],
                kernel_gain=t['stock'].median / t['control'].median,
            )
        rows.append(row)
        bar.update()
        speed = f', {row["speedup_vs_control"]:.2f}x vs control' if not args.no_timing else ''
        acc = ', '.join(f'{k} {row[k]:.2f}' for k in task.primary)
        print(f'\n{name}: {acc}{speed}', file=sys.stderr)
    ref = rows[0]
    for r in rows:
        for k in task.primary:
            r[f'delta_{k}'] = r[k] - ref[k]
        r['gflops_ratio'] = ref['backbone_gflops'] / r['backbone_gflops']

    os.makedirs(args.out_dir, exist_ok=True)
    mi = machine_info(device)
    head = (
        f'# Sweep: {osp.basename(args.config)}\n\n- checkpoint: {args.checkpoint}\n'
        f'- images: {len(batches)} (every {args.every}-th test image of '
        f'{cfg.test_dataloader.dataset.get("data_root")}, '
        f'{cfg.test_dataloader.dataset.get("data_prefix")}), input {tuple(x1.shape[-2:])}, '
        f'{grid[0]}x{grid[1]} tokens; '
        + (
            'layers before clustering cached per image\n'
            if cache
            else 'slide inference: no cache\n'
        )
        + (
            f'- no timing (--no-timing): accuracy and FLOPs only; device {mi["device"]}, threads '
            f'{mi["threads"]}, load {mi["load_1min"]}\n\n'
            if args.no_timing
            else f'- timing (backbone only): {len(xs)} images, batch 1, every row interleaved with '
            f'the stock model and the control (the stock model through the fused kernel), median '
            f'of {args.repeats} repetitions after 1 warm-up round; device {mi["device"]}, threads '
            f'{mi["threads"]}, load {mi["load_1min"]}\n\n'
        )
    )

    def rng(key):
        return lambda r: '[{:.2f}..{:.2f}]'.format(*r[key]) if key in r else ''

    cols = [('name', 'variant'), ('tokens', 'tokens')]
    csv_cols = [('name', 'variant'), ('tokens', 'tokens')]
    for k in task.primary:
        cols += [(k, k, '.2f'), (f'delta_{k}', 'delta', '+.2f')]
        csv_cols += [(k, k, '.3f'), (f'delta_{k}', f'delta_{k}', '.3f')]
    cols += [(k, k, '.2f') for k in task.secondary] + [
        ('backbone_gflops', 'backbone GFLOPs', '.2f'),
        ('gflops_ratio', 'FLOPs ratio', '.2f}x'),
        ('speedup_vs_control', 'speed-up vs control', '.2f}x'),
        (rng('speedup_vs_control_range'), 'range'),
        ('speedup_vs_stock', 'speed-up vs stock', '.2f}x'),
        (rng('speedup_vs_stock_range'), 'range'),
    ]
    csv_cols += (
        [(k, k, '.3f') for k in task.secondary]
        + [
            ('backbone_gflops', 'backbone_gflops', '.3f'),
            ('gflops_ratio', 'gflops_ratio', '.3f'),
            ('backbone_ms', 'backbone_ms', '.1f'),
            ('speedup_vs_control', 'speedup_vs_control', '.3f'),
            ('speedup_vs_stock', 'speedup_vs_stock', '.3f'),
            ('kernel_gain', 'kernel_gain', '.3f'),
        ]
        + task.detail_columns(csv=True)
    )
    md = write_table(
        rows, cols, header=head, csv_path=osp.join(args.out_dir, 'sweep.csv'), csv_columns=csv_cols
    )
    md += '\n' + markdown_table(rows, [('name', 'variant')] + task.detail_columns()) + '\n'
    print(md)
    with open(osp.join(args.out_dir, 'sweep.md'), 'w') as f:
        f.write(md)
    with open(osp.join(args.out_dir, 'sweep.json'), 'w') as f:
        json.dump(dict(rows=rows, machine=mi, **task.meta), f, indent=1, default=str)
    plot(rows, osp.join(args.out_dir, 'sweep.png'), osp.basename(args.config), task.primary)
    return rows


def plot(rows, path, title, metrics):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(metrics), figsize=(7 * len(metrics), 5), squeeze=False)
    groups = {}
    for r in rows:
        key = 'reference' if not r['options']['enabled'] else r['options']['method']
        groups.setdefault(key, []).append(r)
    for ax, metric in zip(axes[0], metrics):
        for key, rs in groups.items():
            ax.scatter(
                [r.get('speedup_vs_control', r['gflops_ratio']) for r in rs],
                [r[metric] for r in rs],
                label=key,
                marker='*' if key == 'reference' else 'o',
                s=120 if key == 'reference' else 40,
            )
        ax.set_xlabel('backbone speed-up over the control (x; FLOPs ratio with --no-timing)')
        ax.set_ylabel(metric)
        ax.set_title(title, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


class SegTask:
    """Segmentation rows: mmseg's ``IoUMetric`` (mIoU, aAcc, per-class IoU)."""

    primary = ('mIoU',)
    secondary = ('aAcc',)

    def __init__(self, cfg, model, meta):
        from ailurus_mm.analysis.segmentation import build_seg_metric

        self.model = model
        self.metric = build_seg_metric(cfg, meta)
        self.classes = list(meta['classes'])
        self.meta = dict(classes=self.classes)

    def evaluate(self, cache, batches, opts) -> dict:
        from ailurus_mm.analysis.segmentation import evaluate, evaluate_options

        if cache is not None:
            res, per_class, _ = evaluate_options(self.model, cache, self.metric, opts)
        else:
            res, per_class, _ = evaluate(self.model, batches, self.metric)
        return dict(
            mIoU=float(res['mIoU']),
            aAcc=float(res['aAcc']),
            mAcc=float(res.get('mAcc', 'nan')),
            per_class_iou=[100 * v for v in per_class],
        )

    def detail_columns(self, csv=False):
        return [
            (
                lambda r, i=i: r['per_class_iou'][i],
                f'IoU_{c}' if csv else c,
                '.2f' if csv else '.1f',
            )
            for i, c in enumerate(self.classes)
        ]


class DetTask:
    """Detection rows: mmdet's ``CocoMetric`` (box and mask AP) and the cosine
    similarity of every backbone output to the stock model's."""

    primary = ('bbox_mAP', 'segm_mAP')
    secondary = ('bbox_mAP_50', 'segm_mAP_50', 'agree_bbox_mAP', 'agree_segm_mAP')

    def __init__(self, cfg, model, meta):
        from ailurus_mm.analysis.detection import build_det_metric

        self.model = model
        self.metric = build_det_metric(cfg, meta)
        self.reference = None
        self.ref_predictions = None  # the first row's (the reference's) detections
        self.levels = [f'cos_out{i + 1}' for i in model.backbone.out_indices]
        self.meta = dict(classes=list(meta['classes']))
        self.dataset_meta = meta

    def evaluate(self, cache, batches, opts) -> dict:
        from ailurus_mm.analysis.detection import (
            DET_METRICS,
            agreement_ap,
            evaluate_det,
            evaluate_det_options,
        )

        if cache is None:  # no prefix cache: no per-image predictions kept either
            res = evaluate_det(self.model, batches, self.metric)
            return dict(res, agree_bbox_mAP=float('nan'), agree_segm_mAP=float('nan'))
        bb = self.model.backbone
        if self.reference is None:  # the stock backbone's maps, once
            with torch.no_grad(), bb.options_override(enabled=False):
                self.reference = [
                    bb.output_maps(bb.forward_tokens(p['inputs'])) for p in cache.inputs
                ]
        preds = []
        res = evaluate_det_options(self.model, cache, self.metric, opts, preds, self.reference)
        row = {k: res.get(k, float('nan')) for k in DET_METRICS}
        row.update((k, res[k]) for k in self.levels)  # one backbone pass for both
        if self.ref_predictions is None:  # rows[0] is the reference (AiluRus off)
            self.ref_predictions = preds
        # how much the setting changes the detector's output, whatever its accuracy
        shapes = [s.ori_shape for b in cache.batches for s in b['data_samples']]
        row.update(agreement_ap(self.ref_predictions, preds, shapes, self.dataset_meta))
        return row

    def detail_columns(self, csv=False):
        from ailurus_mm.analysis.detection import DET_METRICS

        cols = [(k, k, '.1f') for k in DET_METRICS if k not in self.primary + self.secondary]
        return cols + [(k, k, '.4f') for k in self.levels]


if __name__ == '__main__':
    main()
