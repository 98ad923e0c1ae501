#!/usr/bin/env python
"""Assemble the full mmseg checkpoint of the frozen DINOv2-S/14 CamVid model.

    python tools/camvid/assemble_checkpoint.py [--head PATH] [--out PATH] [--force]
    python tools/test.py configs/ailurus/segmenter_dinov2-s14_camvid.py \\
        ~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth

Prints the checkpoint's path. The library code is :mod:`ailurus_mm.zoo.camvid`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ailurus_mm.zoo.camvid import DEFAULT_HEAD, DEFAULT_OUT, assemble


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--head', default=str(DEFAULT_HEAD), help='trained head weights (decode_head.* tensors)'
    )
    p.add_argument('--out', default=str(DEFAULT_OUT), help='output full checkpoint')
    p.add_argument('--force', action='store_true', help='rebuild even if the output is up to date')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: assemble and print the checkpoint path."""
    args = parse_args(argv)
    try:
        path = assemble(args.head, args.out, args.force)
    except (FileNotFoundError, ValueError) as e:
        print(f'[assemble] error: {e}', file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
