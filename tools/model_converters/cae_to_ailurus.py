#!/usr/bin/env python
"""Convert a CAE checkpoint to the AiluRusCAEViT (CAE detection) layout.

    python tools/model_converters/cae_to_ailurus.py SRC DST
        [--kind auto|pretrain|detection|mmseg_vit]
        [--pos-grid H W] [--with-norm]

* pretrain (``encoder.*``): backbone keys for ``model.backbone.init_cfg=dict(type='Pretrained',
  checkpoint=DST)``, position table resized to ``--pos-grid`` (CAE: 42 68);
* detection (official CAE Mask R-CNN, mmdet 2.x): checked, keys unchanged (``load_from``);
* mmseg_vit (e.g. the DINOv2-S/14 of ``ailurus_mm.zoo.dinov2_imgfocus``): q/v bias split.

The converter is library code: :mod:`ailurus_mm.zoo.cae`.
"""

import sys

from ailurus_mm.zoo.cae import main

if __name__ == '__main__':
    sys.exit(main())
