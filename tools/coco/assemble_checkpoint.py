#!/usr/bin/env python
"""Assemble the full mmdet checkpoint of the frozen DINOv2-S/14 Mask R-CNN (COCO person).

    python tools/coco/assemble_checkpoint.py [--heads PATH] [--out PATH] [--force]
    python tools/test.py configs/coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-person-640.py \\
        ~/.cache/ailurus_mm/mask-rcnn_dinov2-s14_coco-tiny-person.pth

Prints the checkpoint's path. The library code is :mod:`ailurus_mm.zoo.coco`.
"""

from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from ailurus_mm.zoo.coco import DEFAULT_HEADS, DEFAULT_OUT, assemble


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument('--heads', default=str(DEFAULT_HEADS), help='trained adapters, neck and heads')
    p.add_argument('--out', default=str(DEFAULT_OUT), help='output full checkpoint')
    p.add_argument('--force', action='store_true', help='rebuild even if the output is up to date')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: assemble and print the checkpoint path."""
    args = parse_args(argv)
    try:
        path = assemble(args.heads, args.out, args.force)
    except (FileNotFoundError, ValueError) as e:
        print(f'[assemble] error: {e}', file=sys.stderr)
        return 1
    print(path)
    return 0


if __name__ == '__main__':
    sys.exit(main())
