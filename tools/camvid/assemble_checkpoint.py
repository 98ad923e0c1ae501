#!/usr/bin/env python
"""Assemble the full mmseg checkpoint of the frozen DINOv2-S/14 CamVid model.

    python tools/camvid/assemble_checkpoint.py [--head PATH] [--out PATH] [--force]
    python tools/test.py configs/ailurus/segmenter_dinov2-s14_camvid.py \\
        ~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth

Prints the checkpoint's path. The library code is :mod:`ailurus_mm.zoo.camvid`.
"""

from __future__ import annotations

import sys
from typing import Optional, Sequence

from ailurus_mm.zoo.assemble import assemble_cli
from ailurus_mm.zoo.camvid import DEFAULT_HEAD, DEFAULT_OUT, assemble


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point: assemble and print the checkpoint path."""
    return assemble_cli(
        argv,
        __doc__.split('\n')[0],
        assemble,
        DEFAULT_HEAD,
        DEFAULT_OUT,
        'head',
        'trained head weights (decode_head.* tensors)',
    )


if __name__ == '__main__':
    sys.exit(main())
