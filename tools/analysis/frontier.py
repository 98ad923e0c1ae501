"""The Pareto frontier: full-val accuracy of every head at measured speed.

    python tools/analysis/frontier.py \
        --accuracy linear docs/measurements/nested/lin_h.csv docs/measurements/nested/lin_m.csv \
        --accuracy mask docs/measurements/nested/mask_i.csv docs/measurements/nested/mask_m.csv \
        --timing docs/measurements/nested/t10.csv docs/measurements/nested/t11.csv \
        --out-dir work_dirs/frontier

Joins the ``sweep.csv`` tables of ``tools/analysis/sweep.py`` by variant name
(``ailurus_mm.analysis.frontier``): a point is a variant timed in at least
one run and measured on all val images for every head. Its speed is the
median of the timing runs' medians (range: over runs). Writes
``frontier.md``, ``frontier.csv`` and ``frontier.png`` (one panel per head,
Pareto-optimal points ringed) to ``--out-dir``.
"""

import argparse
import os
import os.path as osp
import sys


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        '--accuracy',
        nargs='+',
        action='append',
        required=True,
        metavar=('HEAD', 'CSV'),
        help='a head name, then its accuracy CSVs (repeat per head)',
    )
    p.add_argument('--timing', nargs='+', required=True, help='timing-run CSVs')
    p.add_argument('--metric', default='delta_mIoU')
    p.add_argument('--out-dir', default='work_dirs/frontier')
    args = p.parse_args(argv)
    for a in args.accuracy:
        if len(a) < 2:
            p.error(f'--accuracy needs a head name and at least one CSV, got {a}')
    return args


def main(argv=None):
    sys.path.insert(0, osp.dirname(osp.dirname(osp.dirname(osp.abspath(__file__)))))
    from ailurus_mm.analysis.frontier import join_frontier, pareto_front, plot_frontier
    from ailurus_mm.analysis.tables import write_table

    args = parse_args(argv)
    accuracy = {a[0]: a[1:] for a in args.accuracy}
    heads = list(accuracy)
    points, missing = join_frontier(accuracy, args.timing, metric=args.metric)
    if not points:
        raise SystemExit('no variant is both timed and measured for every head')
    for head in heads:
        front = set(pareto_front(points, head))
        for i, p in enumerate(points):
            p[f'pareto_{head}'] = 'yes' if i in front else ''
    cols = [('variant', 'variant'), ('series', 'method')]
    for head in heads:
        cols += [(head, f'{args.metric} {head}', '+.2f'), (f'pareto_{head}', f'Pareto {head}')]
    cols += [
        ('speed', 'speed-up vs control (median of runs)', '.2f}x'),
        (lambda p: f'[{p["speed_min"]:.2f}..{p["speed_max"]:.2f}]', 'range over runs'),
        ('runs', 'timing runs'),
    ]
    os.makedirs(args.out_dir, exist_ok=True)
    acc_text = '; '.join(h + ': ' + ', '.join(ps) for h, ps in accuracy.items())
    head_text = (
        '# Frontier: full-val accuracy at measured speed\n\n'
        f'- accuracy: {acc_text}\n'
        f'- timing: {", ".join(args.timing)}\n'
    )
    if missing:
        head_text += f'- timed but not measured for every head (left out): {", ".join(missing)}\n'
    head_text += '\n'
    md = write_table(
        points,
        cols,
        md_path=osp.join(args.out_dir, 'frontier.md'),
        csv_path=osp.join(args.out_dir, 'frontier.csv'),
        header=head_text,
    )
    plot_frontier(points, heads, osp.join(args.out_dir, 'frontier.png'))
    print(md)
    return points


if __name__ == '__main__':
    main()
