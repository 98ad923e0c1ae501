"""How tokens are assigned to clusters over a dataset (the paper's Fig. A-1).

    python tools/analysis/assignment_stats.py CONFIG CHECKPOINT
        [--cluster-after L ...] [--num-clusters M ... | --keep-ratio r ...]
        [--methods adjacent dpc tome ...] [--num-images N] [--threads T]
        [--out-dir work_dirs/assignment_stats] [--cfg-options ...]

Runs the config's test dataloader once per image (the config's own pipeline
and preprocessor; ``--cfg-options test_dataloader.dataset...`` selects the
data). For every image the backbone runs up to each clustering layer once
(``backbone.forward_prefix``) and every (method, M) clusters those tokens
(``reduce_tokens``); later layers are not run. For every (layer, method, M)
it writes

* ``sizes.csv``: for every cluster size x, the number of centres holding x
  tokens summed over the dataset and per image (mean), and y1(x), their
  percentage of all centres of the dataset;
* ``summary.csv`` / ``summary.md``: clusters per image, share of single-token
  clusters, largest cluster, centres holding >= 4 / 8 / 16 tokens per image,
  tokens per layer, backbone GFLOPs (mmengine FlopAnalyzer, first image) and,
  with ground truth, the share of single-token clusters on class boundaries
  (patches holding two or more labels) against the base rate of boundary
  patches;
* ``classes.csv`` / ``classes.md``: mean tokens per cluster by class (a
  cluster's class is the majority label of its pixels);
* ``assignment_stats.json``: all of it, with every image's size histogram;
* ``fig_a1.png`` (all settings) and ``fig_a1_L<L>_<method>.png``: Fig. A-1,
  (a) y1(x) = percent of all centres of the dataset that hold x tokens, (b)
  y2(x) = centres holding x tokens per image (the dataset sum divided by the
  number of images), x on a log axis, one curve per M.

Bad arguments (a layer out of range, M above the token count, a keep ratio
outside (0, 1], an unknown method) fail before any image is read, naming the
value and the allowed range. Deterministic (``random`` uses the config's seed).
"""

import argparse
import json
import os
import os.path as osp
import sys
import time

import torch

DEFAULT_KEEP = [0.1, 0.2, 0.4, 0.6]
DEFAULT_METHODS = ['adjacent', 'dpc', 'tome']


def parse_args(argv=None):
    from mmengine.config import DictAction

    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('config')
    p.add_argument('checkpoint')
    p.add_argument(
        '--cluster-after',
        type=int,
        nargs='+',
        default=None,
        help="layers run before clustering (default: the config's)",
    )
    budget = p.add_mutually_exclusive_group()
    budget.add_argument('--num-clusters', type=int, nargs='+', help='numbers of clusters M')
    budget.add_argument(
        '--keep-ratio',
        type=float,
        nargs='+',
        help=f'keep ratios M / N in (0, 1] (default: {" ".join(map(str, DEFAULT_KEEP))})',
    )
    p.add_argument('--methods', nargs='+', default=DEFAULT_METHODS)
    p.add_argument('--num-images', type=int, default=None, help='first N test images (default all)')
    p.add_argument('--threads', type=int, default=None, help='torch threads (default: unchanged)')
    p.add_argument('--out-dir', default='work_dirs/assignment_stats')
    p.add_argument('--cfg-options', nargs='+', action=DictAction)
    args = p.parse_args(argv)
    if args.num_images is not None and args.num_images < 1:
        p.error(f'--num-images={args.num_images} is outside the allowed range: an int >= 1')
    if args.threads is not None and args.threads < 1:
        p.error(f'--threads={args.threads} is outside the allowed range: an int >= 1')
    if args.num_clusters is None and args.keep_ratio is None:
        args.keep_ratio = list(DEFAULT_KEEP)
    return args, p


def expected_grid(cfg, patch_size):
    """The token grid every test image gets, if the config fixes it (the
    preprocessor pads to ``size`` or sliding windows of ``crop_size``)."""
    test_cfg = cfg.model.get('test_cfg') or {}
    if test_cfg.get('mode') == 'slide':
        size = test_cfg.get('crop_size')
    else:
        size = (cfg.model.get('data_preprocessor') or {}).get('size')
    if size is None:
        return None
    return int(size[0]) // patch_size, int(size[1]) // patch_size


def check_settings(args, bb, grid):
    """Every (layer, method, budget) as validated options; raises ValueError
    naming the bad value and the allowed range."""
    from ailurus_mm.ops import REDUCTION_METHODS, resolve_num_clusters

    # one clustering per (layer, method, M): a config's later stages do not apply
    base = bb.options.replace(
        enabled=True, second_after=None, second_keep_ratio=None, stage_clustering='grid'
    )
    for m in args.methods:
        if m not in REDUCTION_METHODS:
            raise ValueError(f'--methods: {m!r} is not one of {REDUCTION_METHODS}')
    layers = args.cluster_after if args.cluster_after is not None else [base.cluster_after]
    high = bb.num_layers - 1
    for layer in layers:
        if not 0 <= layer <= high:
            raise ValueError(
                f'--cluster-after={layer} is outside the allowed range [0, {high}] '
                f'(the backbone has {bb.num_layers} layers)'
            )
    if args.num_clusters is not None:
        budgets = sorted(set(args.num_clusters))
        for m in budgets:
            if m < 1 or (grid is not None and m > grid[0] * grid[1]):
                top = f'N={grid[0] * grid[1]}, the {grid[0]}x{grid[1]} token grid' if grid else 'N'
                raise ValueError(f'--num-clusters={m} is outside the allowed range [1, {top}]')
    else:
        budgets = sorted(set(args.keep_ratio))
        for r in budgets:
            if not 0.0 < r <= 1.0:
                raise ValueError(f'--keep-ratio={r} is outside the allowed range (0, 1]')
    key = 'num_clusters' if args.num_clusters is not None else 'keep_ratio'
    settings = []
    for layer in sorted(set(layers)):
        for method in dict.fromkeys(args.methods):
            for b in budgets:
                opts = base.replace(cluster_after=layer, method=method, **{key: b})
                m = resolve_num_clusters(b, grid[0] * grid[1]) if grid else None
                settings.append(dict(cluster_after=layer, method=method, budget=b, M=m, opts=opts))
    return settings


def backbone_inputs(model, data):
    """What the backbone sees for one batch: the whole input, or the
    sliding-window crops of ``test_cfg.mode='slide'`` (as mmseg crops)."""
    x = model.data_preprocessor(data, False)['inputs']
    test_cfg = model.test_cfg or {}
    if test_cfg.get('mode') != 'slide':
        return [x], False
    (hs, ws), (hc, wc) = test_cfg['stride'], test_cfg['crop_size']
    _, _, h, w = x.shape
    crops = []
    for hi in range(max(h - hc + hs - 1, 0) // hs + 1):
        for wi in range(max(w - wc + ws - 1, 0) // ws + 1):
            y1, x1 = hi * hs, wi * ws
            y2, x2 = min(y1 + hc, h), min(x1 + wc, w)
            y1, x1 = max(y2 - hc, 0), max(x2 - wc, 0)
            crops.append(x[:, :, y1:y2, x1:x2])
    return crops, True


def run_length(counts):
    """[1729, 1729, 865] -> '2x1729 + 1x865'."""
    out = []
    for c in counts:
        if out and out[-1][1] == c:
            out[-1][0] += 1
        else:
            out.append([1, c])
    return ' + '.join(f'{n}x{c}' for n, c in out)


def main(argv=None):
    args, parser = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import Runner, load_checkpoint
    from mmengine.utils import ProgressBar
    from mmseg.registry import MODELS

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import ailurus_backbone, count_flops, quiet_logs
    from ailurus_mm.analysis import assignment_stats as st
    from ailurus_mm.ops import reduce_tokens

    t0 = time.time()
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    cfg.model.pretrained = None
    cfg.model.backbone.pop('init_cfg', None)
    with quiet_logs():
        model = MODELS.build(cfg.model)
    bb = ailurus_backbone(model)
    if bb is None:
        parser.error(
            f'{args.config}: model.backbone.type={cfg.model.backbone.type!r} '
            'is not an AiluRus backbone'
        )
    patch = int(bb.patch_size)
    grid = expected_grid(cfg, patch)
    try:
        settings = check_settings(args, bb, grid)
    except ValueError as e:
        parser.error(str(e))
    if not osp.isfile(args.checkpoint):
        parser.error(f'checkpoint not found: {args.checkpoint}')
    with quiet_logs():
        load_checkpoint(model, args.checkpoint, map_location='cpu', strict=True)
    model.eval()

    dl_cfg = cfg.test_dataloader.copy()
    dl_cfg.update(num_workers=0, persistent_workers=False, batch_size=1)
    loader = Runner.build_dataloader(dl_cfg)
    meta = loader.dataset.metainfo
    classes = list(meta.get('classes') or [])
    ev = cfg.get('test_evaluator') or {}
    ev = ev[0] if isinstance(ev, (list, tuple)) else ev
    ignore_index = int(ev.get('ignore_index', 255))
    total = len(loader.dataset)
    want = min(total, args.num_images or total)
    layers = sorted({s['cluster_after'] for s in settings})
    p = bb.num_prefix_tokens

    per_image = {i: [] for i in range(len(settings))}  # size histograms [N+1]
    boundary = {i: dict(labelled=0, boundary=0, single=0, single_boundary=0) for i in per_image}
    per_class = {i: None for i in per_image}
    images, first_x, hw, slide = [], None, None, False
    print(
        f'{want} images x {len(layers)} clustering layer(s) x {len(settings) // len(layers)} '
        '(method, M) settings',
        file=sys.stderr,
    )
    bar = ProgressBar(want, file=sys.stderr)
    with torch.no_grad():
        for n_img, data in enumerate(loader):
            if n_img >= want:
                break
            sample = data['data_samples'][0]
            crops, slide = backbone_inputs(model, data)
            if first_x is None:
                first_x = crops[0]
            token_hist = None
            for layer in layers:
                states = [
                    bb.forward_prefix(
                        c, next(s['opts'] for s in settings if s['cluster_after'] == layer)
                    )
                    for c in crops
                ]
                for i, s in enumerate(settings):
                    if s['cluster_after'] != layer:
                        continue
                    hists = []
                    for ci, state in enumerate(states):
                        hw = state.hw
                        n = hw[0] * hw[1]
                        if s['opts'].num_clusters is not None and s['opts'].num_clusters > n:
                            sys.exit(
                                f'--num-clusters={s["opts"].num_clusters} is outside the allowed '
                                f'range [1, N={n}] of image {sample.img_path} ({hw[0]}x{hw[1]} '
                                'tokens)'
                            )
                        a = reduce_tokens(
                            state.x[:, p:], hw, s['opts'].budget, **s['opts'].cluster_kwargs()
                        )
                        hists.append(st.size_histogram(a, max_size=n)[0])
                        if slide or 'gt_sem_seg' not in sample:
                            continue
                        if token_hist is None:
                            seg = sample.gt_sem_seg.data[0]
                            pix = st.pixel_token_index(
                                seg.shape, hw, patch, sample.metainfo['img_shape']
                            )
                            token_hist = st.token_label_histogram(
                                seg, pix, n, len(classes), ignore_index
                            )
                        for k, v in st.boundary_counts(a, token_hist).items():
                            boundary[i][k] += v
                        cc = st.class_cluster_counts(a, token_hist)
                        per_class[i] = (
                            cc
                            if per_class[i] is None
                            else {k: per_class[i][k] + v for k, v in cc.items()}
                        )
                    width = max(h.shape[0] for h in hists)
                    per_image[i].append(
                        sum(torch.nn.functional.pad(h, (0, width - h.shape[0])) for h in hists)
                    )
            images.append(osp.basename(sample.img_path))
            bar.update()
    t_loop = time.time() - t0
    if not images:
        sys.exit('the test dataloader yielded no image')

    # FLOPs and token counts, on the first image's (first crop's) input
    rows, size_rows, class_rows, js = [], [], [], []
    with quiet_logs(), bb.options_override(enabled=False):
        ref_gflops = count_flops(bb, first_x, bb)
    n_tok = hw[0] * hw[1]
    for i, s in enumerate(settings):
        opts = s['opts']
        width = max(h.shape[0] for h in per_image[i])
        hist = torch.stack(
            [torch.nn.functional.pad(h, (0, width - h.shape[0])) for h in per_image[i]]
        )
        summ = st.size_summary(hist)
        with quiet_logs(), bb.options_override(**opts.to_dict()):
            gflops = count_flops(bb, first_x, bb)
            counts = bb.token_counts(hw)
        b = boundary[i]
        row = dict(
            cluster_after=s['cluster_after'],
            method=s['method'],
            budget=s['budget'],
            keep_ratio=opts.keep_ratio,
            M=opts.num_kept(hw),
            tokens_per_layer=run_length(counts),
            backbone_gflops=gflops,
            gflops_ratio=ref_gflops / gflops,
            single_boundary_share=st.ratio(100 * b['single_boundary'], b['single']),
            boundary_base_rate=st.ratio(100 * b['boundary'], b['labelled']),
            **summ,
        )
        rows.append(row)
        dist = st.size_distribution(hist.sum(0))
        per_img_mean = hist[:, 1:].double().mean(0)
        for x, y1, y2, mean in zip(
            dist['x'].tolist(), dist['y1'].tolist(), dist['y2'].tolist(), per_img_mean.tolist()
        ):
            if y2:
                size_rows.append(
                    dict(
                        cluster_after=s['cluster_after'],
                        method=s['method'],
                        M=row['M'],
                        keep_ratio=opts.keep_ratio,
                        x=x,
                        clusters_total=y2,
                        y2_per_image=mean,
                        y1_percent=y1,
                    )
                )
        cc = per_class[i]
        if cc is not None:
            for c, name in enumerate(classes):
                class_rows.append(
                    dict(
                        cluster_after=s['cluster_after'],
                        method=s['method'],
                        M=row['M'],
                        cls=name,
                        clusters=int(cc['clusters'][c]),
                        mean_tokens_per_cluster=st.ratio(
                            cc['cluster_tokens'][c], cc['clusters'][c]
                        ),
                        pixel_weighted_size=st.ratio(cc['token_cluster_size'][c], cc['tokens'][c]),
                    )
                )
        js.append(
            dict(
                {k: v for k, v in row.items()},
                options=opts.to_dict(),
                boundary_counts=b,
                per_class=None if cc is None else {k: v.tolist() for k, v in cc.items()},
                per_image={
                    img: {int(x): int(c) for x, c in enumerate(h.tolist()) if c}
                    for img, h in zip(images, hist)
                },
            )
        )
    t_total = time.time() - t0
    write_outputs(
        args,
        rows,
        size_rows,
        class_rows,
        js,
        classes,
        dict(
            config=args.config,
            checkpoint=args.checkpoint,
            images=len(images),
            grid=list(hw),
            num_tokens=n_tok,
            input_shape=list(first_x.shape[-2:]),
            sliding_window=slide,
            reference_gflops=ref_gflops,
            ignore_index=ignore_index,
            seconds_loop=t_loop,
            seconds_total=t_total,
            threads=torch.get_num_threads(),
        ),
    )
    return rows


def write_outputs(args, rows, size_rows, class_rows, js, classes, info):
    from ailurus_mm.analysis import markdown_table, write_table

    os.makedirs(args.out_dir, exist_ok=True)
    out = lambda name: osp.join(args.out_dir, name)  # noqa: E731
    head = (
        f'# Assignment statistics: {osp.basename(info["config"])}\n\n'
        f'- {info["images"]} test images, input {tuple(info["input_shape"])}, '
        f'{info["grid"][0]}x{info["grid"][1]} = {info["num_tokens"]} patch tokens'
        f'{" (sliding-window crops)" if info["sliding_window"] else ""}; '
        f'stock backbone {info["reference_gflops"]:.2f} GFLOPs\n'
        f'- run time {info["seconds_total"]:.0f} s ({info["threads"]} threads)\n'
        '- per image = mean over images; single share and boundary shares are over the dataset; '
        'boundary = the patch holds >= 2 labels (ignored pixels not counted)\n\n'
    )
    cols = [
        ('cluster_after', 'layer'),
        ('method', 'method'),
        ('M', 'M'),
        ('keep_ratio', 'keep', '.2f'),
        ('backbone_gflops', 'GFLOPs', '.2f'),
        ('single_share', 'size-1 %', '.1f'),
        ('single_per_image', 'size-1 /img', '.0f'),
        ('ge4_per_image', '>=4 /img', '.1f'),
        ('ge8_per_image', '>=8 /img', '.1f'),
        ('ge16_per_image', '>=16 /img', '.1f'),
        ('ge8_token_share', 'tokens in >=8 %', '.1f'),
        ('largest_per_image', 'largest /img', '.1f'),
        ('largest', 'largest', 'd'),
        ('single_boundary_share', 'size-1 on boundary %', '.1f'),
        ('boundary_base_rate', 'boundary base %', '.1f'),
    ]
    csv_cols = [
        ('cluster_after', 'cluster_after'),
        ('method', 'method'),
        ('budget', 'budget'),
        ('keep_ratio', 'keep_ratio'),
        ('M', 'M'),
        ('clusters_per_image', 'clusters_per_image', '.2f'),
        ('tokens_per_layer', 'tokens_per_layer'),
        ('backbone_gflops', 'backbone_gflops', '.3f'),
        ('gflops_ratio', 'gflops_ratio', '.3f'),
        ('single_share', 'single_share_percent', '.3f'),
        ('single_per_image', 'single_per_image', '.2f'),
        ('mode_size', 'mode_size'),
        ('ge4_per_image', 'ge4_per_image', '.2f'),
        ('ge8_per_image', 'ge8_per_image', '.2f'),
        ('ge16_per_image', 'ge16_per_image', '.2f'),
        ('ge4_token_share', 'ge4_token_share_percent', '.2f'),
        ('ge8_token_share', 'ge8_token_share_percent', '.2f'),
        ('ge16_token_share', 'ge16_token_share_percent', '.2f'),
        ('largest_per_image', 'largest_per_image', '.2f'),
        ('largest', 'largest'),
        ('single_boundary_share', 'single_boundary_share_percent', '.2f'),
        ('boundary_base_rate', 'boundary_base_rate_percent', '.2f'),
        ('images', 'images'),
    ]
    md = write_table(rows, cols, header=head, csv_path=out('summary.csv'), csv_columns=csv_cols)
    md += (
        '\nTokens per layer (prefix token included): '
        + '; '.join(
            f'L{r["cluster_after"]} {r["method"]} M={r["M"]}: {r["tokens_per_layer"]}'
            for r in rows
            if r['method'] == rows[0]['method']
        )
        + '\n'
    )
    with open(out('summary.md'), 'w') as f:
        f.write(md)
    write_table(
        size_rows,
        [
            'cluster_after',
            'method',
            'M',
            'keep_ratio',
            'x',
            'clusters_total',
            ('y2_per_image', 'y2_per_image', '.4f'),
            ('y1_percent', 'y1_percent', '.4f'),
        ],
        csv_path=out('sizes.csv'),
    )
    if class_rows:
        write_table(
            class_rows,
            [
                'cluster_after',
                'method',
                'M',
                ('cls', 'class'),
                'clusters',
                ('mean_tokens_per_cluster', 'mean_tokens_per_cluster', '.3f'),
                ('pixel_weighted_size', 'pixel_weighted_cluster_size', '.3f'),
            ],
            csv_path=out('classes.csv'),
        )
        # wide markdown: one row per setting, one column per class
        wide = {}
        for r in class_rows:
            key = (r['cluster_after'], r['method'], r['M'])
            wide.setdefault(key, dict(layer=key[0], method=key[1], M=key[2]))[r['cls']] = r[
                'mean_tokens_per_cluster'
            ]
        with open(out('classes.md'), 'w') as f:
            f.write(
                '# Mean tokens per cluster by class (cluster class = majority label)\n\n'
                + markdown_table(
                    list(wide.values()),
                    ['layer', 'method', 'M'] + [(c, c, '.2f') for c in classes],
                )
                + '\n'
            )
    with open(out('assignment_stats.json'), 'w') as f:
        json.dump(dict(info=info, classes=classes, settings=js), f, indent=1, default=str)
    plot(size_rows, args.out_dir, info)
    print(md)
    print(
        f'wrote {args.out_dir}: summary.csv/.md, sizes.csv, classes.csv/.md, '
        f'assignment_stats.json, fig_a1*.png ({info["seconds_total"]:.0f} s)'
    )


def plot(size_rows, out_dir, info):
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    panels = {}
    for r in size_rows:
        panels.setdefault((r['cluster_after'], r['method']), {}).setdefault(r['M'], []).append(r)
    keys = sorted(panels, key=lambda k: (k[1], k[0]))
    methods = list(dict.fromkeys(k[1] for k in keys))
    layers = sorted({k[0] for k in keys})

    def draw(ax_a, ax_b, key):
        curves = panels[key]
        cmap = plt.get_cmap('viridis')
        for j, m in enumerate(sorted(curves)):
            rs = sorted(curves[m], key=lambda r: r['x'])
            col = cmap(j / max(1, len(curves) - 1))
            xs = [r['x'] for r in rs]
            ax_a.plot(xs, [r['y1_percent'] for r in rs], 'o-', ms=3, color=col, label=f'M={m}')
            ax_b.plot(xs, [r['y2_per_image'] for r in rs], 'o-', ms=3, color=col, label=f'M={m}')
        for ax, lab in ((ax_a, '(a) % of centres'), (ax_b, '(b) centres per image')):
            ax.set_xscale('log')
            ax.set_xlabel('tokens per centre x')
            ax.set_ylabel(lab)
            ax.grid(alpha=0.3, which='both')
        ax_b.set_yscale('log')
        ax_a.set_title(f'{key[1]}, after layer {key[0]}: y1(x)', fontsize=9)
        ax_b.set_title(f'{key[1]}, after layer {key[0]}: y2(x)', fontsize=9)
        ax_a.legend(fontsize=7)

    note = (
        f'{info["images"]} images, N={info["num_tokens"]} tokens; (a) over the dataset, '
        '(b) dataset sum / images'
    )
    for key in keys:
        fig, (a, b) = plt.subplots(1, 2, figsize=(9, 3.4))
        draw(a, b, key)
        fig.suptitle(note, fontsize=8)
        fig.tight_layout()
        fig.savefig(osp.join(out_dir, f'fig_a1_L{key[0]}_{key[1]}.png'), dpi=110)
        plt.close(fig)
    fig, axes = plt.subplots(
        len(methods),
        2 * len(layers),
        figsize=(4.2 * 2 * len(layers), 3.2 * len(methods)),
        squeeze=False,
    )
    for key in keys:
        r, c = methods.index(key[1]), 2 * layers.index(key[0])
        draw(axes[r, c], axes[r, c + 1], key)
    fig.suptitle(note, fontsize=9)
    fig.tight_layout()
    fig.savefig(osp.join(out_dir, 'fig_a1.png'), dpi=100)
    plt.close(fig)


if __name__ == '__main__':
    main()
