"""The one table writer: the same rows as markdown (for docs) and CSV."""

from __future__ import annotations

import csv
import os
import os.path as osp
from typing import Mapping, Optional, Sequence, Union

__all__ = ['format_value', 'markdown_table', 'write_table']

Column = Union[str, tuple]


def format_value(value, fmt: Optional[str] = None) -> str:
    """``fmt`` (e.g. ``'.2f'``, ``'.2f}x'``) applied to numbers; str otherwise."""
    if value is None:
        return ''
    if fmt and isinstance(value, (int, float)) and not isinstance(value, bool):
        suffix = ''
        if '}' in fmt:
            fmt, suffix = fmt.split('}', 1)
        return f'{value:{fmt}}{suffix}'
    return str(value)


def _columns(columns: Sequence[Column]):
    """Each column: ``key`` or ``(key, header)`` or ``(key, header, fmt)``."""
    out = []
    for c in columns:
        c = (c,) if isinstance(c, str) else tuple(c)
        key = c[0]
        header = c[1] if len(c) > 1 else key
        fmt = c[2] if len(c) > 2 else None
        out.append((key, header, fmt))
    return out


def _get(row: Mapping, key) -> object:
    return key(row) if callable(key) else row.get(key)


def markdown_table(rows: Sequence[Mapping], columns: Sequence[Column]) -> str:
    """A markdown table of ``rows`` (dicts) with the given columns.

    Args:
        rows (Sequence[Mapping]): one dict per row.
        columns (Sequence): ``key``, ``(key, header)`` or ``(key, header,
            fmt)``; ``key`` may be a callable ``row -> value``.
    """
    cols = _columns(columns)
    lines = [
        '| ' + ' | '.join(h for _, h, _ in cols) + ' |',
        '|' + '---|' * len(cols),
    ]
    for r in rows:
        lines.append('| ' + ' | '.join(format_value(_get(r, k), f) for k, _, f in cols) + ' |')
    return '\n'.join(lines)


def write_table(
    rows: Sequence[Mapping],
    columns: Sequence[Column],
    md_path: Optional[str] = None,
    csv_path: Optional[str] = None,
    header: str = '',
    csv_columns: Optional[Sequence[Column]] = None,
) -> str:
    """Write ``rows`` as markdown and/or CSV; return the markdown text.

    Args:
        rows, columns: as :func:`markdown_table`.
        md_path (str, optional): markdown file (``header`` + table).
        csv_path (str, optional): CSV file; numbers unrounded unless a
            column has a format.
        header (str): text written above the markdown table.
        csv_columns (Sequence, optional): columns of the CSV (default: those
            of the markdown table).
    """
    md = header + markdown_table(rows, columns) + '\n'
    for path in (md_path, csv_path):
        if path and osp.dirname(path):
            os.makedirs(osp.dirname(path), exist_ok=True)
    if md_path:
        with open(md_path, 'w') as f:
            f.write(md)
    if csv_path:
        cols = _columns(csv_columns or columns)
        with open(csv_path, 'w', newline='') as f:
            w = csv.writer(f)
            w.writerow([h for _, h, _ in cols])
            for r in rows:
                w.writerow([format_value(_get(r, k), fmt) for k, _, fmt in cols])
    return md
