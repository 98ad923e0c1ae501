#!/usr/bin/env python
"""Assemble the full mmdet checkpoint of the frozen DINOv2-S/14 Mask R-CNN (class-agnostic COCO).

    python tools/coco/assemble_checkpoint.py [--heads PATH] [--out PATH] [--force]
    python tools/test.py configs/coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py \\
        ~/.cache/ailurus_mm/mask-rcnn_dinov2-s14_coco-tiny-agnostic.pth

Prints the checkpoint's path. The library code is :mod:`ailurus_mm.zoo.coco`.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ailurus_mm.zoo.assemble import assemble_cli
from ailurus_mm.zoo.coco import DEFAULT_HEADS, DEFAULT_OUT, assemble


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: assemble and print the checkpoint path."""
    return assemble_cli(
        argv,
        __doc__.split('\n')[0],
        assemble,
        DEFAULT_HEADS,
        DEFAULT_OUT,
        'heads',
        'trained adapters, neck and heads',
    )


if __name__ == '__main__':
    sys.exit(main())
