"""Accuracy on all images joined with measured speed: the Pareto frontier.

A sweep's accuracy run (``--no-timing``, every val image, one head) and its
timing runs (a few images, interleaved with the stock model and the control)
write separate ``sweep.csv`` tables; this joins them by variant name, one
column per head, so every point of the plot is a full-val accuracy at a
measured speed. No OpenMMLab import.
"""

from __future__ import annotations

import csv
import statistics
from typing import Dict, List, Mapping, Optional, Sequence, Tuple

__all__ = ['read_sweep_csv', 'join_frontier', 'pareto_front', 'plot_frontier', 'series_of']

#: What a variant's first word says about its method (the sweep's naming:
#: ``'adjacent ...'``, ``'random ...'``, ``'tome_layers ...'``).
SERIES = {
    'adjacent': 'AiluRus',
    'dpc': 'AiluRus (dpc)',
    'dpc_global': 'AiluRus (dpc_global)',
    'random': 'random anchors',
    'tome': 'ToMe-style once',
    'tome_layers': "ToMe's schedule",
    'pool': 'pooling',
}


def series_of(variant: str) -> str:
    """The method series of a variant name (its first word; unknown words as given)."""
    word = variant.split()[0] if variant.split() else variant
    return SERIES.get(word, word)


def read_sweep_csv(paths: Sequence[str], column: str) -> Dict[str, float]:
    """``variant -> value of column`` over several ``sweep.csv`` files.

    Args:
        paths (Sequence[str]): CSV files written by ``tools/analysis/sweep.py``.
        column (str): e.g. ``'delta_mIoU'`` or ``'speedup_vs_control'``.

    Raises:
        ValueError: a file lacks the column, or one variant has two different
            values (accuracy runs are deterministic, so that is a naming
            clash, not noise).
    """
    out: Dict[str, float] = {}
    where: Dict[str, str] = {}
    for path in paths:
        with open(path, newline='') as f:
            reader = csv.DictReader(f)
            if column not in (reader.fieldnames or []):
                raise ValueError(f'{path} has no column {column!r} (columns: {reader.fieldnames})')
            for row in reader:
                if row[column] in ('', None):
                    continue
                name, value = row['variant'], float(row[column])
                if name in out and abs(out[name] - value) > 1e-9:
                    raise ValueError(
                        f'variant {name!r} has {column}={out[name]} in {where[name]} '
                        f'and {value} in {path}'
                    )
                out[name], where[name] = value, path
    return out


def _timings(paths: Sequence[str], column: str) -> Dict[str, List[float]]:
    """``variant -> [median of each timing run]`` (runs differ: that is noise)."""
    runs: Dict[str, List[float]] = {}
    for path in paths:
        for name, value in read_sweep_csv([path], column).items():
            runs.setdefault(name, []).append(value)
    return runs


def join_frontier(
    accuracy: Mapping[str, Sequence[str]],
    timing: Sequence[str],
    metric: str = 'delta_mIoU',
    speed: str = 'speedup_vs_control',
) -> Tuple[List[dict], List[str]]:
    """Points with a full-val accuracy for every head and a measured speed.

    Args:
        accuracy (Mapping[str, Sequence[str]]): head name -> its accuracy CSVs.
        timing (Sequence[str]): timing-run CSVs (any head: the backbone is
            the same).
        metric (str): accuracy column. Default: ``'delta_mIoU'``.
        speed (str): speed column. Default: ``'speedup_vs_control'``.

    Returns:
        tuple: the points (``variant``, ``series``, ``speed`` = median of the
        runs' medians, ``speed_min``/``speed_max`` over runs, ``runs``, and
        one entry per head), sorted by speed; and the timed variants left out
        because a head has no accuracy for them.
    """
    if not accuracy:
        raise ValueError('accuracy needs at least one head')
    if not timing:
        raise ValueError('timing needs at least one CSV')
    acc = {head: read_sweep_csv(paths, metric) for head, paths in accuracy.items()}
    points, missing = [], []
    for name, runs in _timings(timing, speed).items():
        if name == 'reference':
            continue
        if any(name not in a for a in acc.values()):
            missing.append(name)
            continue
        p = dict(
            variant=name,
            series=series_of(name),
            speed=statistics.median(runs),
            speed_min=min(runs),
            speed_max=max(runs),
            runs=len(runs),
        )
        p.update({head: a[name] for head, a in acc.items()})
        points.append(p)
    points.sort(key=lambda p: (p['speed'], p['variant']))
    return points, missing


def pareto_front(points: Sequence[Mapping], key: str, speed: str = 'speed') -> List[int]:
    """Indices of the points no other point beats in both speed and ``key``.

    A point is dominated when another is at least as fast and at least as
    accurate and strictly better in one of the two.
    """
    front = []
    for i, p in enumerate(points):
        dominated = any(
            q[speed] >= p[speed] and q[key] >= p[key] and (q[speed] > p[speed] or q[key] > p[key])
            for j, q in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return front


def plot_frontier(
    points: Sequence[Mapping], heads: Sequence[str], path: str, title: Optional[str] = None
) -> None:
    """One panel per head: accuracy change vs measured speed, by series,
    the Pareto-optimal points ringed, run-to-run range as error bars."""
    import matplotlib

    matplotlib.use('Agg')
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(heads), figsize=(7 * len(heads), 5), squeeze=False)
    for ax, head in zip(axes[0], heads):
        front = set(pareto_front(points, head))
        for series in sorted({p['series'] for p in points}):
            ps = [p for p in points if p['series'] == series]
            xs = [p['speed'] for p in ps]
            err = [
                [p['speed'] - p['speed_min'] for p in ps],
                [p['speed_max'] - p['speed'] for p in ps],
            ]
            ax.errorbar(xs, [p[head] for p in ps], xerr=err, fmt='o', capsize=3, label=series)
        for i in sorted(front):
            ax.scatter(
                points[i]['speed'], points[i][head], s=160, facecolors='none', edgecolors='k'
            )
        ax.axhline(-0.3, color='grey', ls='--', lw=0.8)
        ax.axvline(1.5, color='grey', ls='--', lw=0.8)
        ax.set_xlabel(
            'backbone speed-up over the control (median of timing runs; bars: their range)'
        )
        ax.set_ylabel(f'change in mIoU, {head} (all val images)')
        ax.set_title(title or head, fontsize=9)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
