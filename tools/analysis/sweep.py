"""Accuracy versus speed of AiluRus settings and baselines, one process, same weights.

    python tools/analysis/sweep.py CONFIG CHECKPOINT
        [--cluster-after 2 4 6] [--keep 0.25 0.4 0.5] [--methods adjacent tome pool random dpc_global]
        [--variant name:key=value,key=value ...] [--num-images N] [--time-images 8]
        [--out-dir work_dirs/sweep] [--cfg-options ...]

Every row runs the config's test dataloader (the config's own pipeline, so
``--cfg-options test_dataloader.dataset.data_root=...`` selects the data) through
``model.test_step`` and the config's IoU metric: mIoU, aAcc and per-class IoU.
The unaccelerated model (``enabled=False``) is the first row; the grid is
cluster layer x keep ratio x method (AiluRus readings and baselines at the
same budget); ``--variant`` adds named option sets (e.g.
``nosize:size_aware=False``). Speed: backbone and end-to-end (``test_step``)
time per image on the first ``--time-images`` images after one warm-up pass,
the reference timed before and after the sweep (their mean is the baseline,
their spread is reported). Backbone GFLOPs from mmengine's FlopAnalyzer.
Writes ``sweep.md``, ``sweep.csv``, ``sweep.json`` and ``sweep.png`` (mIoU vs
backbone speed-up) to ``--out-dir``.
"""

import argparse
import csv
import json
import os
import os.path as osp
import sys

import torch

sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))


def parse_value(v: str):
    for cast in (int, float):
        try:
            return cast(v)
        except ValueError:
            pass
    return {'True': True, 'False': False, 'None': None}.get(v, v)


def parse_variant(text: str):
    """``name:key=value,key=value`` -> (name, dict)."""
    if ':' not in text:
        raise argparse.ArgumentTypeError(f'--variant {text!r}: expected name:key=value[,key=value]')
    name, body = text.split(':', 1)
    opts = {}
    for item in filter(None, body.split(',')):
        if '=' not in item:
            raise argparse.ArgumentTypeError(f'--variant {text!r}: {item!r} is not key=value')
        k, v = item.split('=', 1)
        opts[k] = parse_value(v)
    return name, opts


def parse_args(argv=None):
    from mmengine.config import DictAction

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
    p.add_argument('--threads', type=int, default=torch.get_num_threads())
    p.add_argument('--out-dir', default='work_dirs/sweep')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)
    if (
        args.time_images < 1
        or args.every < 1
        or (args.num_images is not None and args.num_images < 1)
    ):
        p.error('--time-images, --every and --num-images must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    from mmengine.config import Config
    from mmengine.runner import Runner, load_checkpoint
    from mmseg.registry import METRICS, MODELS
    from tqdm import tqdm

    import ailurus_mm  # noqa: F401
    from ailurus_mm.apis.benchmark import count_flops, evaluate, time_model
    from ailurus_mm.models import build_ailurus_cfg

    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get('default_scope', 'mmseg'))
    if cfg.model.backbone.type != 'AiluRusVisionTransformer':
        sys.exit(f'{args.config}: model.backbone.type must be AiluRusVisionTransformer')
    cfg.model.pretrained = None
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()
    bb = model.backbone
    base_opts = dict(cfg.model.backbone.get('ailurus', {}))

    dl_cfg = cfg.test_dataloader.copy()
    dl_cfg.update(num_workers=0, persistent_workers=False, batch_size=1)
    loader = Runner.build_dataloader(dl_cfg)
    batches = []
    for i, data in enumerate(tqdm(loader, desc='loading images', file=sys.stderr)):
        if i % args.every:
            continue
        batches.append(data)
        if args.num_images and len(batches) >= args.num_images:
            break
    ev = cfg.test_evaluator
    metric = METRICS.build(dict(ev[0] if isinstance(ev, (list, tuple)) else ev))
    metric.dataset_meta = loader.dataset.metainfo
    classes = list(loader.dataset.metainfo['classes'])

    variants = [('reference', dict(enabled=False))]
    for ca in args.cluster_after:
        for keep in args.keep:
            for method in args.methods:
                variants.append(
                    (
                        f'{method} L{ca} k{keep}',
                        dict(
                            enabled=True,
                            cluster_after=ca,
                            keep_ratio=keep,
                            num_clusters=None,
                            method=method,
                        ),
                    )
                )
    for name, opts in args.variant:
        variants.append((name, dict(dict(enabled=True), **opts)))
    x1 = model.data_preprocessor(batches[0], False)['inputs']
    grid = (x1.shape[-2] // bb.patch_size, x1.shape[-1] // bb.patch_size)

    rows = []
    tb = batches[: args.time_images]
    for name, over in tqdm(variants, desc='variants', file=sys.stderr):
        opts = dict(base_opts, **over)
        if opts.get('num_clusters') is not None:
            opts['keep_ratio'] = None
        bb.ailurus = build_ailurus_cfg(opts, len(bb.layers))
        res, per_class, present = evaluate(model, batches, metric)
        t_bb, t_e2e = time_model(model, tb)
        gflops = count_flops(bb, x1, bb)
        kept = bb.num_kept(grid) if bb.ailurus['enabled'] else grid[0] * grid[1]
        if (
            bb.ailurus['enabled']
            and bb.ailurus['method'] == 'pool'
            and bb.last_assignment is not None
        ):
            kept = bb.last_assignment.num_clusters
        rows.append(
            dict(
                name=name,
                options=bb.ailurus,
                mIoU=float(res['mIoU']),
                aAcc=float(res['aAcc']),
                mAcc=float(res.get('mAcc', 'nan')),
                per_class_iou=[100 * v for v in per_class],
                backbone_ms=1e3 * t_bb,
                e2e_ms=1e3 * t_e2e,
                backbone_gflops=gflops,
                tokens=kept,
            )
        )
        print(f'{name}: mIoU {res["mIoU"]:.2f} backbone {1e3 * t_bb:.0f} ms', file=sys.stderr)
    # the reference again, to bound timing drift over the sweep
    bb.ailurus = build_ailurus_cfg(dict(base_opts, enabled=False), len(bb.layers))
    t_bb2, t_e2e2 = time_model(model, tb)
    ref = rows[0]
    ref_bb = (ref['backbone_ms'] + 1e3 * t_bb2) / 2
    ref_e2e = (ref['e2e_ms'] + 1e3 * t_e2e2) / 2
    drift = abs(ref['backbone_ms'] - 1e3 * t_bb2) / ref_bb
    for r in rows:
        r['backbone_speedup'] = ref_bb / r['backbone_ms'] if r is not ref else 1.0
        r['e2e_speedup'] = ref_e2e / r['e2e_ms'] if r is not ref else 1.0
        r['delta_mIoU'] = r['mIoU'] - ref['mIoU']
        r['gflops_ratio'] = ref['backbone_gflops'] / r['backbone_gflops']

    os.makedirs(args.out_dir, exist_ok=True)
    head = (
        f'# Sweep: {osp.basename(args.config)}\n\n- checkpoint: {args.checkpoint}\n'
        f'- images: {len(batches)} (every {args.every}-th image of {dl_cfg.dataset.get("data_root")}, '
        f'{dl_cfg.dataset.get("data_prefix")}), input {tuple(x1.shape[-2:])}, {grid[0]}x{grid[1]} tokens\n'
        f'- timing: {len(tb)} images, batch 1, median-free mean after 1 warm-up pass, '
        f'threads {args.threads}, load {os.getloadavg()[0]:.2f}; reference drift over the sweep '
        f'{100 * drift:.1f}%\n\n'
    )
    lines = [
        '| variant | tokens | mIoU | delta | aAcc | backbone GFLOPs | FLOPs ratio | backbone speed-up '
        '| end-to-end speed-up |',
        '|---|---|---|---|---|---|---|---|---|',
    ]
    for r in rows:
        lines.append(
            f'| {r["name"]} | {r["tokens"]} | {r["mIoU"]:.2f} | {r["delta_mIoU"]:+.2f} | '
            f'{r["aAcc"]:.2f} | {r["backbone_gflops"]:.2f} | {r["gflops_ratio"]:.2f}x | '
            f'{r["backbone_speedup"]:.2f}x | {r["e2e_speedup"]:.2f}x |'
        )
    lines += ['', '| variant | ' + ' | '.join(classes) + ' |', '|---|' + '---|' * len(classes)]
    for r in rows:
        lines.append(
            f'| {r["name"]} | ' + ' | '.join(f'{v:.1f}' for v in r['per_class_iou']) + ' |'
        )
    md = head + '\n'.join(lines) + '\n'
    print(md)
    with open(osp.join(args.out_dir, 'sweep.md'), 'w') as f:
        f.write(md)
    with open(osp.join(args.out_dir, 'sweep.json'), 'w') as f:
        json.dump(dict(rows=rows, classes=classes, drift=drift), f, indent=1, default=str)
    with open(osp.join(args.out_dir, 'sweep.csv'), 'w', newline='') as f:
        w = csv.writer(f)
        w.writerow(
            [
                'variant',
                'tokens',
                'mIoU',
                'delta_mIoU',
                'aAcc',
                'backbone_gflops',
                'backbone_ms',
                'e2e_ms',
                'backbone_speedup',
                'e2e_speedup',
            ]
            + [f'IoU_{c}' for c in classes]
        )
        for r in rows:
            w.writerow(
                [
                    r['name'],
                    r['tokens'],
                    f'{r["mIoU"]:.3f}',
                    f'{r["delta_mIoU"]:.3f}',
                    f'{r["aAcc"]:.3f}',
                    f'{r["backbone_gflops"]:.3f}',
                    f'{r["backbone_ms"]:.1f}',
                    f'{r["e2e_ms"]:.1f}',
                    f'{r["backbone_speedup"]:.3f}',
                    f'{r["e2e_speedup"]:.3f}',
                ]
                + [f'{v:.2f}' for v in r['per_class_iou']]
            )
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
