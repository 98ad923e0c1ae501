"""The frontier join: full-val accuracy per head at the measured speed."""

import csv
import os.path as osp
import subprocess
import sys

import pytest

from ailurus_mm.analysis.frontier import join_frontier, pareto_front, read_sweep_csv, series_of

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
COLS = ['variant', 'delta_mIoU', 'gflops_ratio', 'speedup_vs_control']


def _csv(path, column, values):
    """A sweep-like CSV: one row per ``variant -> value`` of ``column``."""
    with open(path, 'w', newline='') as f:
        w = csv.DictWriter(f, COLS)
        w.writeheader()
        for name, value in values.items():
            w.writerow({c: '' for c in COLS} | {'variant': name, column: value})
    return str(path)


@pytest.fixture
def tables(tmp_path):
    acc, speed = 'delta_mIoU', 'speedup_vs_control'
    lin = {'reference': 0.0, 'adjacent a': 1.2, 'tome_layers t': 0.4, 'random r': 0.5}
    mask = {'adjacent a': 0.0, 'tome_layers t': -0.2}  # random r: not measured on this head
    t1 = {'reference': 0.5, 'adjacent a': 1.5, 'tome_layers t': 1.7, 'random r': 1.5}
    t2 = {'adjacent a': 1.6, 'tome_layers t': 1.6}
    return (
        _csv(tmp_path / 'lin.csv', acc, lin),
        _csv(tmp_path / 'mask.csv', acc, mask),
        _csv(tmp_path / 't1.csv', speed, t1),
        _csv(tmp_path / 't2.csv', speed, t2),
    )


def test_join_takes_the_median_of_runs_and_needs_every_head(tables):
    lin, mask, t1, t2 = tables
    points, missing = join_frontier(dict(linear=[lin], mask=[mask]), [t1, t2])
    by = {p['variant']: p for p in points}
    assert set(by) == {'adjacent a', 'tome_layers t'}  # no reference, random lacks the mask head
    assert missing == ['random r']
    assert by['adjacent a']['speed'] == pytest.approx(1.55)  # median of 1.5 and 1.6
    assert (by['adjacent a']['speed_min'], by['adjacent a']['speed_max']) == (1.5, 1.6)
    assert by['tome_layers t']['speed'] == pytest.approx(1.65) and by['tome_layers t']['runs'] == 2
    assert by['adjacent a']['linear'] == 1.2 and by['adjacent a']['mask'] == 0.0
    assert (
        by['tome_layers t']['series'] == "ToMe's schedule"
        and by['adjacent a']['series'] == 'AiluRus'
    )
    assert [p['variant'] for p in points] == ['adjacent a', 'tome_layers t']  # sorted by speed


def test_pareto_front():
    pts = [
        dict(speed=1.5, acc=1.0),  # on the front (most accurate)
        dict(speed=1.7, acc=0.5),  # on the front (fastest)
        dict(speed=1.5, acc=0.4),  # dominated by both
        dict(speed=1.6, acc=0.5),  # dominated by the fastest (same accuracy, slower)
    ]
    assert pareto_front(pts, 'acc') == [0, 1]
    assert pareto_front([dict(speed=1.0, acc=0.0), dict(speed=1.0, acc=0.0)], 'acc') == [0, 1]


def test_conflicting_or_missing_values_raise(tmp_path, tables):
    lin = tables[0]
    other = _csv(tmp_path / 'other.csv', 'delta_mIoU', {'adjacent a': 0.9})
    with pytest.raises(ValueError, match="'adjacent a' has delta_mIoU=1.2 .* and 0.9"):
        read_sweep_csv([lin, other], 'delta_mIoU')
    same = _csv(tmp_path / 'same.csv', 'delta_mIoU', {'adjacent a': 1.2})
    assert read_sweep_csv([lin, same], 'delta_mIoU')['adjacent a'] == 1.2
    with pytest.raises(ValueError, match="has no column 'mIoU_x'"):
        read_sweep_csv([lin], 'mIoU_x')
    with pytest.raises(ValueError, match='at least one head'):
        join_frontier({}, [lin])
    with pytest.raises(ValueError, match='at least one CSV'):
        join_frontier(dict(linear=[lin]), [])
    assert series_of('pool L6 k0.25') == 'pooling' and series_of('mystery x') == 'mystery'


def test_frontier_tool_writes_the_table_and_plot(tmp_path, tables):
    lin, mask, t1, t2 = tables
    out = tmp_path / 'out'
    cmd = [
        sys.executable,
        osp.join(ROOT, 'tools/analysis/frontier.py'),
        '--accuracy',
        'linear',
        lin,
        '--accuracy',
        'mask',
        mask,
        '--timing',
        t1,
        t2,
        '--out-dir',
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True, cwd=ROOT)
    md = (out / 'frontier.md').read_text()
    assert '| adjacent a | AiluRus | +1.20 | yes | +0.00 | yes | 1.55x | [1.50..1.60] | 2 |' in md
    assert 'left out): random r' in md
    assert (out / 'frontier.png').stat().st_size > 0
    bad = subprocess.run(
        cmd[:2] + ['--accuracy', 'linear', '--timing', t1], capture_output=True, text=True, cwd=ROOT
    )
    assert bad.returncode != 0 and 'needs a head name and at least one CSV' in bad.stderr
