"""Checkpoints for :class:`ailurus_mm.models.AiluRusCAEViT` (CAE layout).

Three sources, one output layout (the CAE detection backbone's keys):

* **CAE pre-training checkpoints** (``{'model': {'encoder.*', 'decoder.*',
  'teacher_network.*', ...}}``): the encoder's keys without the prefix; the
  rest is dropped, and so is the encoder's final ``norm`` (CAE's detection
  loader renames it to ``fc_norm``, which the detection model does not have).
  The position table (square, e.g. 14 x 14 + class slot) is resized to the
  detection table's grid the way CAE's loader does (bicubic to the target
  size, ``align_corners=False``, class slot kept). Load the result as the
  backbone's ``init_cfg=dict(type='Pretrained', checkpoint=...)``.
* **Official CAE Mask R-CNN checkpoints** (mmdet 2.x, ``{'state_dict':
  {'backbone.*', 'neck.*', 'rpn_head.*', 'roi_head.*'}}``): mmdet 3.x uses the
  same key names for Mask R-CNN's neck and heads, so this checks the layout
  (every backbone key of the architecture is present, no relative-position
  tables, which the class does not implement) and keeps the keys unchanged;
  pass the result as ``load_from`` / the test tool's CHECKPOINT.
* **mmseg ``VisionTransformer`` state dicts** (e.g. the DINOv2-S/14 of
  :mod:`ailurus_mm.zoo.dinov2_imgfocus`): ``in_proj`` split into ``qkv``
  weight + ``q_bias``/``v_bias``; the k bias is dropped, exactly (it adds
  ``q . b_k`` to every logit of a query, which softmax cancels);
  LayerScale is already folded into ``out_proj``/``fc2`` there, so the
  backbone is built with ``init_values=0``; the final ``ln1`` becomes
  ``norm`` (``out_with_norm=True``) or is dropped.

No checkpoint is downloaded: none of these files is reachable from here.
The command line is ``tools/model_converters/cae_to_ailurus.py``.
"""

from __future__ import annotations

import argparse
import math
import re
from collections import OrderedDict
from typing import Dict, Mapping, Optional, Sequence, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor

__all__ = [
    'BLOCK_KEYS',
    'CheckpointLayoutError',
    'DINOV2_S14_BACKBONE',
    'backbone_keys',
    'convert_cae_detection',
    'convert_cae_pretrain',
    'convert_mmseg_vit',
    'detect_kind',
    'main',
    'unwrap',
]

#: Parameters of every block (``blocks.{i}.<key>``), CAE's names.
BLOCK_KEYS = (
    'gamma_1',
    'gamma_2',
    'norm1.weight',
    'norm1.bias',
    'attn.q_bias',
    'attn.v_bias',
    'attn.qkv.weight',
    'attn.proj.weight',
    'attn.proj.bias',
    'norm2.weight',
    'norm2.bias',
    'mlp.fc1.weight',
    'mlp.fc1.bias',
    'mlp.fc2.weight',
    'mlp.fc2.bias',
)
FPN_KEYS = (
    'fpn1.0.weight',
    'fpn1.0.bias',
    'fpn1.1.weight',
    'fpn1.1.bias',
    'fpn1.1.running_mean',
    'fpn1.1.running_var',
    'fpn1.1.num_batches_tracked',
    'fpn1.3.weight',
    'fpn1.3.bias',
    'fpn2.0.weight',
    'fpn2.0.bias',
)

#: The DINOv2-S/14 of ``ailurus_mm.zoo.dinov2_imgfocus`` as a CAE-layout
#: detection backbone (learned 37 x 37 table, LayerScale folded: no gamma).
DINOV2_S14_BACKBONE = dict(
    type='AiluRusCAEViT',
    img_size=(518, 518),
    patch_size=14,
    embed_dim=384,
    depth=12,
    num_heads=6,
    init_values=0.0,
    pos_embed_type='learned',
    out_indices=(3, 5, 7, 11),
    out_with_norm=False,
)

_PRETRAIN_DROP = re.compile(r'^(norm|fc_norm|head|mask_token|masked_embed)\.|^(mask_token)$')


class CheckpointLayoutError(ValueError):
    """A state dict is not in the layout a converter expects (names the keys)."""


def unwrap(ckpt: Mapping) -> Dict[str, Tensor]:
    """The state dict inside a checkpoint (``state_dict``/``model``/``module``
    or the dict itself), without a DataParallel ``module.`` prefix."""
    if not isinstance(ckpt, Mapping):
        raise CheckpointLayoutError(f'expected a checkpoint dict, got {type(ckpt).__name__}')
    for key in ('state_dict', 'model', 'module'):
        if key in ckpt and isinstance(ckpt[key], Mapping):
            ckpt = ckpt[key]
            break
    state = OrderedDict(ckpt)
    if state and all(k.startswith('module.') for k in state):
        state = OrderedDict((k[len('module.') :], v) for k, v in state.items())
    if not state or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointLayoutError('the checkpoint holds no tensor state dict')
    return state


def detect_kind(state: Mapping[str, Tensor]) -> str:
    """``'pretrain'`` (``encoder.*``), ``'detection'`` (``backbone.blocks.*``)
    or ``'mmseg_vit'`` (``layers.*.attn.attn.in_proj_weight``)."""
    if any(k.startswith('encoder.blocks.') for k in state):
        return 'pretrain'
    if any(k.startswith('backbone.blocks.') for k in state):
        return 'detection'
    if any(re.match(r'^(backbone\.)?layers\.\d+\.attn\.attn\.in_proj_weight$', k) for k in state):
        return 'mmseg_vit'
    sample = sorted(state)[:5]
    raise CheckpointLayoutError(
        f'not a CAE pre-training, CAE detection or mmseg ViT state dict (first keys: {sample})'
    )


def _depth(state: Mapping[str, Tensor], prefix: str) -> int:
    idx = {int(m.group(1)) for k in state if (m := re.match(rf'^{prefix}(\d+)\.', k))}
    if not idx or idx != set(range(max(idx) + 1)):
        raise CheckpointLayoutError(f'blocks under {prefix!r} are not numbered 0..N-1: {idx}')
    return max(idx) + 1


def backbone_keys(depth: int, layer_scale: bool = True, fpn: bool = True) -> Tuple[str, ...]:
    """Every state-dict key of the CAE detection backbone (sin-cos table)."""
    block = [k for k in BLOCK_KEYS if layer_scale or not k.startswith('gamma')]
    keys = ['cls_token', 'pos_embed', 'patch_embed.proj.weight', 'patch_embed.proj.bias']
    keys += [f'blocks.{i}.{k}' for i in range(depth) for k in block]
    return tuple(keys + (list(FPN_KEYS) if fpn else []))


def _check_backbone(state: Mapping[str, Tensor], prefix: str, fpn: bool) -> None:
    bb = {k[len(prefix) :] for k in state if k.startswith(prefix)}
    rel = sorted(k for k in bb if 'relative_position' in k or k.startswith('rel_pos_bias'))
    if rel:
        raise CheckpointLayoutError(
            f'relative position bias ({rel[:2]}...) is not supported: AiluRusCAEViT '
            'implements the sin-cos/learned absolute position embedding of the CAE configs'
        )
    depth = _depth(state, f'{prefix}blocks.')
    layer_scale = f'{prefix}blocks.0.gamma_1' in state
    missing = sorted(set(backbone_keys(depth, layer_scale, fpn)) - bb)
    if missing:
        raise CheckpointLayoutError(
            f'missing backbone keys {missing[:6]}{"..." if len(missing) > 6 else ""} '
            f'(expected the CAE detection layout, depth {depth})'
        )


def _resize_square_table(pos: Tensor, grid: Sequence[int]) -> Tensor:
    """CAE's loader: a square ``[1, 1 + n*n, C]`` table to ``grid``, bicubic."""
    n = math.isqrt(pos.shape[1] - 1)
    if n * n != pos.shape[1] - 1:
        raise CheckpointLayoutError(
            f'pos_embed {tuple(pos.shape)}: expected 1 class slot + a square grid'
        )
    gh, gw = int(grid[0]), int(grid[1])
    if (n, n) == (gh, gw):
        return pos
    c = pos.shape[-1]
    tok = pos[:, 1:].reshape(1, n, n, c).permute(0, 3, 1, 2).float()
    tok = F.interpolate(tok, size=(gh, gw), mode='bicubic', align_corners=False)
    tok = tok.permute(0, 2, 3, 1).flatten(1, 2).to(pos.dtype)
    return torch.cat([pos[:, :1], tok], 1)


def convert_cae_pretrain(
    ckpt: Mapping, pos_grid: Optional[Sequence[int]] = (42, 68)
) -> Dict[str, Tensor]:
    """A CAE pre-training checkpoint -> backbone state dict (no ``backbone.``).

    Args:
        ckpt (Mapping): the loaded checkpoint (``{'model': ...}`` or a state
            dict) with ``encoder.*`` keys.
        pos_grid (Sequence[int], optional): the detection backbone's table
            grid (``img_size // patch_size``; CAE: 672x1092 / 16 = (42, 68)).
            None keeps the pre-training table.

    Returns:
        dict: ``cls_token``, ``pos_embed``, ``patch_embed.proj.*``,
        ``blocks.*`` (the adapters ``fpn1..fpn4`` are new: not in it).

    Raises:
        CheckpointLayoutError: naming what is missing or unsupported.
    """
    state = unwrap(ckpt)
    if detect_kind(state) != 'pretrain':
        raise CheckpointLayoutError('expected a CAE pre-training checkpoint (encoder.* keys)')
    out = OrderedDict()
    for k, v in state.items():
        if k.startswith('encoder.'):
            k = k[len('encoder.') :]
            if not _PRETRAIN_DROP.match(k):
                out[k] = v
    _check_backbone(out, '', fpn=False)
    if pos_grid is not None:
        out['pos_embed'] = _resize_square_table(out['pos_embed'], pos_grid)
    return out


def convert_cae_detection(ckpt: Mapping) -> Dict[str, Tensor]:
    """An official CAE Mask R-CNN checkpoint (mmdet 2.x) -> mmdet 3.x state dict.

    The keys are unchanged (module doc); the layout is checked.

    Raises:
        CheckpointLayoutError: naming the missing/unsupported keys.
    """
    state = unwrap(ckpt)
    if detect_kind(state) != 'detection':
        raise CheckpointLayoutError('expected a CAE detection checkpoint (backbone.blocks.* keys)')
    _check_backbone(state, 'backbone.', fpn=True)
    for part in ('neck.', 'rpn_head.', 'roi_head.'):
        if not any(k.startswith(part) for k in state):
            raise CheckpointLayoutError(f'no {part}* keys: not a Mask R-CNN checkpoint')
    return OrderedDict(state)


def convert_mmseg_vit(ckpt: Mapping, with_norm: bool = False) -> Dict[str, Tensor]:
    """An mmseg ``VisionTransformer`` state dict -> CAE-layout backbone keys.

    Args:
        ckpt (Mapping): checkpoint or state dict (``layers.{i}.*``, optionally
            under ``backbone.``), e.g. the DINOv2-S/14 conversion.
        with_norm (bool): keep the final ``ln1`` as ``norm`` (for
            ``out_with_norm=True``). Default: False (dropped).

    Returns:
        dict: keys of :data:`DINOV2_S14_BACKBONE`-style backbones (no
        ``gamma_*``: build with ``init_values=0``; no ``fpn*``).
    """
    state = unwrap(ckpt)
    if detect_kind(state) != 'mmseg_vit':
        raise CheckpointLayoutError('expected an mmseg VisionTransformer state dict')
    if any(k.startswith('backbone.') for k in state):
        state = OrderedDict((k[9:], v) for k, v in state.items() if k.startswith('backbone.'))
    out = OrderedDict(
        cls_token=state['cls_token'],
        pos_embed=state['pos_embed'],
    )
    out['patch_embed.proj.weight'] = state['patch_embed.projection.weight']
    w = state['patch_embed.projection.weight']
    # mmseg's patch_bias=False: a zero bias is the same convolution
    out['patch_embed.proj.bias'] = state.get('patch_embed.projection.bias', w.new_zeros(len(w)))
    for i in range(_depth(state, 'layers.')):
        s, d = f'layers.{i}.', f'blocks.{i}.'
        w, b = state[s + 'attn.attn.in_proj_weight'], state[s + 'attn.attn.in_proj_bias']
        c = w.shape[1]
        out[d + 'norm1.weight'] = state[s + 'ln1.weight']
        out[d + 'norm1.bias'] = state[s + 'ln1.bias']
        out[d + 'attn.q_bias'] = b[:c].clone()
        out[d + 'attn.v_bias'] = b[2 * c :].clone()  # b[c:2c], the k bias: softmax-invariant
        out[d + 'attn.qkv.weight'] = w
        out[d + 'attn.proj.weight'] = state[s + 'attn.attn.out_proj.weight']
        out[d + 'attn.proj.bias'] = state[s + 'attn.attn.out_proj.bias']
        out[d + 'norm2.weight'] = state[s + 'ln2.weight']
        out[d + 'norm2.bias'] = state[s + 'ln2.bias']
        out[d + 'mlp.fc1.weight'] = state[s + 'ffn.layers.0.0.weight']
        out[d + 'mlp.fc1.bias'] = state[s + 'ffn.layers.0.0.bias']
        out[d + 'mlp.fc2.weight'] = state[s + 'ffn.layers.1.weight']
        out[d + 'mlp.fc2.bias'] = state[s + 'ffn.layers.1.bias']
    if with_norm:
        out['norm.weight'], out['norm.bias'] = state['ln1.weight'], state['ln1.bias']
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description='Convert a CAE pre-training / CAE Mask R-CNN / mmseg ViT checkpoint to '
        'the AiluRusCAEViT layout.'
    )
    p.add_argument('src', help='input checkpoint (.pth)')
    p.add_argument('dst', help='output checkpoint (.pth)')
    p.add_argument(
        '--kind',
        choices=('auto', 'pretrain', 'detection', 'mmseg_vit'),
        default='auto',
        help='input layout (default: detected from the keys)',
    )
    p.add_argument(
        '--pos-grid',
        type=int,
        nargs=2,
        default=(42, 68),
        metavar=('H', 'W'),
        help='pretrain: the table grid img_size // patch_size (default: 42 68, CAE 672x1092/16)',
    )
    p.add_argument('--with-norm', action='store_true', help='mmseg_vit: keep ln1 as norm')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Command line of ``tools/model_converters/cae_to_ailurus.py``."""
    args = parse_args(argv)
    # an untrusted checkpoint stays weights-only: tensors and plain containers
    ckpt = torch.load(args.src, map_location='cpu', weights_only=True)
    state = unwrap(ckpt)
    kind = detect_kind(state) if args.kind == 'auto' else args.kind
    if kind == 'pretrain':
        out = convert_cae_pretrain(state, args.pos_grid)
    elif kind == 'detection':
        out = convert_cae_detection(state)
    else:
        out = convert_mmseg_vit(state, with_norm=args.with_norm)
    torch.save(dict(state_dict=out, meta=dict(converted_from=kind)), args.dst)
    print(f'{kind}: {len(out)} tensors -> {args.dst}')
    return 0
