"""AiluRus for MMDetection: CAE's detection ViT (plain ViT + ``fpn1..fpn4``).

A re-implementation (not a copy) of the backbone of CAE's Mask R-CNN code
(lxtGH/CAE, ``downstream_tasks/detection``, mmdet 2.x:
``mmcv_custom/register_backbone.py`` on top of ``models/vision_transformer.py``)
with the same parameter names, so the official checkpoints load unchanged:

* ``patch_embed.proj`` (conv), ``cls_token``, ``pos_embed`` (class slot first);
* ``blocks.{i}.{norm1, attn.qkv.weight, attn.q_bias, attn.v_bias, attn.proj,
  norm2, mlp.fc1, mlp.fc2, gamma_1, gamma_2}`` (BEiT-style q/v bias, no k
  bias; layer scale);
* ``fpn1`` (2x ConvTranspose, norm, GELU, 2x ConvTranspose: stride 4),
  ``fpn2`` (ConvTranspose: 8), ``fpn3`` (identity: 16), ``fpn4`` (2x2
  max-pool: 32).

What is mirrored from CAE's code path (so a fine-tuned CAE model gives its
numbers here), each marked ``# CAE:`` below: the class token runs through
every block and is dropped at the outputs; the attention is global and
computed as ``softmax((q @ k^T) * scale) @ v``; no final norm (``norm`` only
with ``out_with_norm=True``, applied to every output as CAE does); the fixed
2D sin-cos table is built in CAE's (w-major) order with a zero class slot
and resized to the input grid with CAE's ``scale_factor=(n + 0.1) / N``
bicubic interpolation; LayerNorm eps 1e-6; drop path linear in depth.

AiluRus: layers ``0 .. cluster_after - 1`` run on every token; the patch
tokens are then clustered and merged, the remaining blocks run on the short
sequence with size-aware attention, and every output index at or after
``cluster_after`` is unfolded back to the full grid before the adapters, so
FPN and the heads see full-resolution maps. The forward is
:class:`ailurus_mm.ops.ReductionEngine`'s (through
:class:`~ailurus_mm.models.reduction.AiluRusBackboneMixin`); this module only
supplies the layer math. ``ailurus=dict(enabled=False)`` is the stock CAE
backbone (the benchmark's baseline twin); any setting that keeps every token
equals it bit for bit.

Patch size 14 (DINOv2-S/14, learned position embedding): the heads expect
strides 4/8/16/32 from ``fpn1..fpn4`` built for a stride-16 map, so the
image is resized by ``patch_size / 16`` (bilinear) before the patch
embedding: an ``H x W`` input (a multiple of 16; mmdet pads to 32) gives an
``H/16 x W/16`` grid, the same token count as a patch-16 model. (The
alternative, resampling the finer ``H/14`` maps in the adapters, runs 31 %
more tokens through every block.)
"""

from __future__ import annotations

import math
from typing import List, Optional, Sequence, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.utils.checkpoint as cp
from mmcv.cnn import build_norm_layer
from mmcv.cnn.bricks import DropPath
from mmdet.registry import MODELS
from mmengine.model import BaseModule
from mmengine.model.weight_init import trunc_normal_
from torch import Tensor

from ..ops import size_aware_attention
from ..ops._validate import check_bool, check_choice, check_int
from .reduction import AiluRusBackboneMixin

__all__ = [
    'AiluRusCAEViT',
    'CAEAttention',
    'CAEBlock',
    'FEATURE_STRIDE',
    'cae_sincos_pos_embed',
    'resize_pos_embed',
]

#: Stride of the map the adapters ``fpn1..fpn4`` are built for.
FEATURE_STRIDE = 16
POS_EMBED_TYPES = ('sincos', 'learned')


def cae_sincos_pos_embed(grid: Sequence[int], dim: int, temperature: float = 10000.0) -> Tensor:
    """CAE's fixed 2D sin-cos position table with a zero class slot.

    CAE builds it with ``meshgrid(arange(w), arange(h))`` ('ij' indexing),
    i.e. the sequence runs over ``w`` first, and reads it back as an
    ``h x w`` grid; the same order is kept here because a fine-tuned CAE
    model learned with exactly these values at these positions.

    Args:
        grid (Sequence[int]): ``(h, w)``, the table's patch grid.
        dim (int): embedding width, a multiple of 4.
        temperature (float): frequency base. Default: 10000.

    Returns:
        Tensor: ``[1, 1 + h * w, dim]`` float32.
    """
    h, w = int(grid[0]), int(grid[1])
    if dim % 4:
        raise ValueError(f'embed_dim={dim} must be a multiple of 4 for the sin-cos embedding')
    grid_w, grid_h = torch.meshgrid(
        torch.arange(w, dtype=torch.float32), torch.arange(h, dtype=torch.float32), indexing='ij'
    )
    pos_dim = dim // 4
    omega = 1.0 / (temperature ** (torch.arange(pos_dim, dtype=torch.float32) / pos_dim))
    out_w = grid_w.flatten()[:, None] * omega[None]
    out_h = grid_h.flatten()[:, None] * omega[None]
    table = torch.cat([out_w.sin(), out_w.cos(), out_h.sin(), out_h.cos()], 1)[None]
    return torch.cat([torch.zeros(1, 1, dim), table], 1)


def resize_pos_embed(pos_embed: Tensor, src: Sequence[int], dst: Sequence[int]) -> Tensor:
    """Resize a ``[1, 1 + h*w, C]`` table (class slot first) to another grid.

    CAE: unchanged when the grids match; else bicubic ``F.interpolate`` with
    ``scale_factor=(n + 0.1) / N`` per axis (the DINO trick against floor
    rounding), ``align_corners=False``, the class slot kept.

    Args:
        pos_embed (Tensor): ``[1, 1 + src_h * src_w, C]``.
        src (Sequence[int]): the table's grid ``(h, w)``.
        dst (Sequence[int]): the input's patch grid ``(h, w)``.

    Returns:
        Tensor: ``[1, 1 + dst_h * dst_w, C]``.
    """
    (sh, sw), (dh, dw) = (int(src[0]), int(src[1])), (int(dst[0]), int(dst[1]))
    if (sh, sw) == (dh, dw):
        return pos_embed
    c = pos_embed.shape[-1]
    grid = pos_embed[:, 1:].reshape(1, sh, sw, c).permute(0, 3, 1, 2)
    grid = F.interpolate(
        grid, scale_factor=((dh + 0.1) / sh, (dw + 0.1) / sw), mode='bicubic', align_corners=False
    )
    if tuple(grid.shape[-2:]) != (dh, dw):  # cannot happen for grids below ~10^5 cells
        raise RuntimeError(f'position embedding resized to {tuple(grid.shape[-2:])}, not {dh, dw}')
    return torch.cat([pos_embed[:, :1], grid.flatten(2).transpose(1, 2)], 1)


class CAEAttention(nn.Module):
    """Global multi-head self-attention with BEiT-style q/v bias (no k bias).

    Args:
        dim (int): width.
        num_heads (int): heads (``dim`` is a multiple of it).
        qkv_bias (bool): learn ``q_bias`` and ``v_bias``. Default: True.
    """

    def __init__(self, dim: int, num_heads: int, qkv_bias: bool = True):
        super().__init__()
        self.num_heads = num_heads
        self.scale = (dim // num_heads) ** -0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=False)
        if qkv_bias:
            self.q_bias = nn.Parameter(torch.zeros(dim))
            self.v_bias = nn.Parameter(torch.zeros(dim))
        else:
            self.q_bias = self.v_bias = None
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: Tensor, key_bias: Optional[Tensor] = None, fused: bool = False) -> Tensor:
        """``x [B, L, C]`` -> ``[B, L, C]``.

        Args:
            x (Tensor): normalised tokens.
            key_bias (Tensor, optional): ``[B, 1, 1, L]`` additive logits
                (the AiluRus ``log(size)``); forces the fused kernel.
            fused (bool): use ``scaled_dot_product_attention`` even without
                a bias (the benchmark's kernel control).
        """
        b, n, c = x.shape
        bias = None
        if self.q_bias is not None:
            # CAE: a zero k bias (a key bias shifts every logit of a query
            # equally, so softmax ignores it; DINOv2's is dropped for that reason)
            bias = torch.cat((self.q_bias, torch.zeros_like(self.v_bias), self.v_bias))
        qkv = F.linear(x, self.qkv.weight, bias).reshape(b, n, 3, self.num_heads, -1)
        q, k, v = qkv.permute(2, 0, 3, 1, 4).unbind(0)
        if key_bias is None and not fused:
            # CAE's own attention (the stock path): logits scaled after the product
            attn = ((q @ k.transpose(-2, -1)) * self.scale).softmax(dim=-1)
            out = attn @ v
        else:
            out = size_aware_attention(q, k, v, key_bias)
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class CAEMlp(nn.Module):
    """``fc1 -> GELU -> fc2`` (CAE's ``Mlp`` without its zero-rate dropout)."""

    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class CAEBlock(nn.Module):
    """Pre-norm ViT block with optional layer scale (``gamma_1``, ``gamma_2``).

    Args:
        dim (int): width.
        num_heads (int): attention heads.
        mlp_ratio (float): hidden width of the MLP over ``dim``.
        qkv_bias (bool): q/v bias of the attention.
        drop_path (float): stochastic depth rate of this block.
        init_values (float): layer-scale init; 0 disables layer scale.
        norm_eps (float): LayerNorm epsilon.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        drop_path: float = 0.0,
        init_values: float = 0.0,
        norm_eps: float = 1e-6,
    ):
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=norm_eps)
        self.attn = CAEAttention(dim, num_heads, qkv_bias)
        self.drop_path = DropPath(drop_path) if drop_path > 0 else nn.Identity()
        self.norm2 = nn.LayerNorm(dim, eps=norm_eps)
        self.mlp = CAEMlp(dim, int(dim * mlp_ratio))
        if init_values > 0:
            self.gamma_1 = nn.Parameter(init_values * torch.ones(dim))
            self.gamma_2 = nn.Parameter(init_values * torch.ones(dim))
        else:
            self.gamma_1 = self.gamma_2 = None

    def forward(self, x: Tensor, key_bias: Optional[Tensor] = None, fused: bool = False) -> Tensor:
        y = self.attn(self.norm1(x), key_bias, fused)
        if self.gamma_1 is None:
            x = x + self.drop_path(y)
            return x + self.drop_path(self.mlp(self.norm2(x)))
        x = x + self.drop_path(self.gamma_1 * y)
        return x + self.drop_path(self.gamma_2 * self.mlp(self.norm2(x)))


class PatchEmbed(nn.Module):
    """``proj``: the non-overlapping patch convolution (CAE's key name)."""

    def __init__(self, in_chans: int, embed_dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x)


def _pair(name: str, value) -> Tuple[int, int]:
    if isinstance(value, int) and not isinstance(value, bool):
        value = (value, value)
    if (
        not isinstance(value, (tuple, list))
        or len(value) != 2
        or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in value)
    ):
        raise ValueError(f'{name}={value!r} must be an int >= 1 or a pair (H, W) of them')
    return int(value[0]), int(value[1])


@MODELS.register_module()
class AiluRusCAEViT(AiluRusBackboneMixin, BaseModule):
    """CAE's detection ViT (mmdet backbone) with AiluRus token reduction.

    Args:
        img_size (int | Sequence[int]): ``(H, W)`` the position table is built
            for; its grid is ``img_size // patch_size`` (CAE: (672, 1092), a
            42 x 68 table). Inputs of any size multiple of 16 are accepted
            (the table is resized). Default: (672, 1092).
        patch_size (int): in ``[1, 16]``; below 16 the input is resized by
            ``patch_size / 16`` so the grid stays ``H/16 x W/16`` (module
            doc). Default: 16.
        in_chans (int): image channels. Default: 3.
        embed_dim (int): width. Default: 768.
        depth (int): blocks. Default: 12.
        num_heads (int): attention heads (``embed_dim`` a multiple). Default: 12.
        mlp_ratio (float): MLP hidden width over ``embed_dim``. Default: 4.
        qkv_bias (bool): learn q/v biases. Default: True.
        init_values (float): layer-scale init, >= 0 (0: none). CAE: 0.1
            (ViT-B), 1e-5 (ViT-L). Default: 0.1.
        drop_path_rate (float): stochastic depth at the last block, in
            ``[0, 1)``. Default: 0.2.
        norm_eps (float): LayerNorm epsilon. Default: 1e-6.
        pos_embed_type (str): ``'sincos'`` (CAE: fixed, a persistent buffer)
            or ``'learned'`` (e.g. DINOv2: a parameter). Default: 'sincos'.
        out_indices (Sequence[int]): blocks whose outputs are returned,
            increasing, in ``[0, depth - 1]``; four with ``with_fpn``.
            Default: (3, 5, 7, 11).
        out_with_norm (bool): a LayerNorm ``norm`` on every output (CAE's
            option). Default: False.
        with_fpn (bool): apply ``fpn1..fpn4`` (strides 4, 8, 16, 32).
            Default: True.
        fpn_norm_cfg (dict): the norm inside ``fpn1`` (CAE: SyncBN; BN works
            on CPU and loads the same keys). Default: ``dict(type='BN')``.
        use_checkpoint (bool): gradient checkpointing of every block in
            training. Default: False.
        frozen (bool): freeze the ViT (patch embedding, class token, position
            table, blocks, ``norm``) and keep it in eval mode; the adapters
            ``fpn1..fpn4`` still train (a frozen pre-trained backbone, e.g.
            DINOv2). Default: False.
        ailurus (dict, optional): AiluRus options
            (:class:`ailurus_mm.ops.AiluRusOptions`).
        init_cfg (dict, optional): mmengine init config (e.g. ``Pretrained``
            with a checkpoint from :mod:`ailurus_mm.zoo.cae`). Default: None
            (CAE's random init).
    """

    def __init__(
        self,
        img_size=(672, 1092),
        patch_size: int = 16,
        in_chans: int = 3,
        embed_dim: int = 768,
        depth: int = 12,
        num_heads: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        init_values: float = 0.1,
        drop_path_rate: float = 0.2,
        norm_eps: float = 1e-6,
        pos_embed_type: str = 'sincos',
        out_indices: Sequence[int] = (3, 5, 7, 11),
        out_with_norm: bool = False,
        with_fpn: bool = True,
        fpn_norm_cfg: Optional[dict] = None,
        use_checkpoint: bool = False,
        frozen: bool = False,
        ailurus: Optional[dict] = None,
        init_cfg: Optional[dict] = None,
    ):
        super().__init__(init_cfg=init_cfg)
        self.patch_size = check_int('patch_size', patch_size, 1, FEATURE_STRIDE)
        check_int('in_chans', in_chans, 1)
        check_int('embed_dim', embed_dim, 1)
        self.depth = check_int('depth', depth, 1)
        check_int('num_heads', num_heads, 1, embed_dim)
        if embed_dim % num_heads:
            raise ValueError(f'embed_dim={embed_dim} must be a multiple of num_heads={num_heads}')
        for name, value, low, high in (
            ('mlp_ratio', mlp_ratio, 0.0, math.inf),
            ('drop_path_rate', drop_path_rate, 0.0, 1.0),
            ('init_values', init_values, 0.0, math.inf),
            ('norm_eps', norm_eps, 0.0, math.inf),
        ):
            if (
                isinstance(value, bool)
                or not isinstance(value, (int, float))
                or not (low <= value < high)
                or (name in ('mlp_ratio', 'norm_eps') and value <= 0)
            ):
                rng = f'[{low}, {high})' if name in ('drop_path_rate', 'init_values') else '> 0'
                raise ValueError(f'{name}={value!r} is outside the allowed range {rng}')
        check_choice('pos_embed_type', pos_embed_type, POS_EMBED_TYPES)
        for name, value in (
            ('qkv_bias', qkv_bias),
            ('out_with_norm', out_with_norm),
            ('with_fpn', with_fpn),
            ('use_checkpoint', use_checkpoint),
            ('frozen', frozen),
        ):
            check_bool(name, value)
        self.out_indices = self._check_out_indices(out_indices, depth, with_fpn)
        img_size = _pair('img_size', img_size)
        self.pos_grid = (img_size[0] // patch_size, img_size[1] // patch_size)
        if min(self.pos_grid) < 1:
            raise ValueError(f'img_size={img_size} is smaller than patch_size={patch_size}')
        self.embed_dim = embed_dim
        self.pos_embed_type = pos_embed_type
        self.with_fpn = with_fpn
        self.use_checkpoint = use_checkpoint
        self.frozen = frozen

        self.patch_embed = PatchEmbed(in_chans, embed_dim, patch_size)
        self.cls_token = nn.Parameter(torch.zeros(1, 1, embed_dim))
        table = (
            cae_sincos_pos_embed(self.pos_grid, embed_dim)
            if pos_embed_type == 'sincos'
            else torch.zeros(1, 1 + self.pos_grid[0] * self.pos_grid[1], embed_dim)
        )
        if pos_embed_type == 'sincos':
            # CAE: a frozen table (requires_grad=False); a buffer keeps the key
            # `pos_embed` in the state dict and out of the optimizer
            self.register_buffer('pos_embed', table)
        else:
            self.pos_embed = nn.Parameter(table)
        # CAE: linear decay rule (on the CPU: also when built under torch.device('meta'))
        dpr = torch.linspace(0, drop_path_rate, depth, device='cpu').tolist()
        self.blocks = nn.ModuleList(
            CAEBlock(embed_dim, num_heads, mlp_ratio, qkv_bias, dpr[i], init_values, norm_eps)
            for i in range(depth)
        )
        self.norm = nn.LayerNorm(embed_dim, eps=norm_eps) if out_with_norm else None
        if with_fpn:
            norm = build_norm_layer(fpn_norm_cfg or dict(type='BN'), embed_dim)[1]
            self.fpn1 = nn.Sequential(
                nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
                norm,
                nn.GELU(),
                nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2),
            )
            self.fpn2 = nn.Sequential(
                nn.ConvTranspose2d(embed_dim, embed_dim, kernel_size=2, stride=2)
            )
            self.fpn3 = nn.Identity()
            self.fpn4 = nn.MaxPool2d(kernel_size=2, stride=2)
        self._init_ailurus(ailurus, depth)
        if frozen:
            for p in self.vit_parameters():
                p.requires_grad_(False)

    @staticmethod
    def _check_out_indices(out_indices, depth: int, with_fpn: bool) -> Tuple[int, ...]:
        if isinstance(out_indices, int):
            out_indices = (out_indices,)
        idx = tuple(out_indices)
        ok = all(isinstance(i, int) and not isinstance(i, bool) and 0 <= i < depth for i in idx)
        if not idx or not ok or list(idx) != sorted(set(idx)):
            raise ValueError(
                f'out_indices={out_indices!r} must be increasing block indices in [0, {depth - 1}]'
            )
        if with_fpn and len(idx) != 4:
            raise ValueError(
                f'out_indices={out_indices!r}: with_fpn needs exactly 4 (one per fpn1..fpn4)'
            )
        return idx

    def vit_modules(self) -> Tuple[nn.Module, ...]:
        """The ViT proper (everything but the adapters ``fpn1..fpn4``)."""
        return tuple(m for m in (self.patch_embed, self.blocks, self.norm) if m is not None)

    def vit_parameters(self):
        """Parameters of :meth:`vit_modules` plus the class token and a
        learned position table."""
        yield self.cls_token
        if isinstance(self.pos_embed, nn.Parameter):
            yield self.pos_embed
        for m in self.vit_modules():
            yield from m.parameters()

    def train(self, mode: bool = True) -> 'AiluRusCAEViT':
        """``nn.Module.train``; a ``frozen`` ViT stays in eval mode (no drop
        path), its adapters follow ``mode``."""
        super().train(mode)
        if self.frozen:
            for m in self.vit_modules():
                m.eval()
        return self

    # -- initialisation -----------------------------------------------------

    def init_weights(self) -> None:
        """CAE's init (truncated normal 0.02 for linear weights and the class
        token, zero biases, unit LayerNorms), then ``init_cfg`` (e.g.
        ``Pretrained``) on top."""
        for m in self.modules():
            if isinstance(m, nn.Linear):
                trunc_normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.LayerNorm):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
        trunc_normal_(self.cls_token, std=0.02)
        if self.pos_embed_type == 'learned':
            trunc_normal_(self.pos_embed, std=0.02)
        super().init_weights()

    # -- what the engine needs -------------------------------------------------

    @property
    def num_layers(self) -> int:
        return self.depth

    @property
    def num_prefix_tokens(self) -> int:
        return 1  # CAE: the class token runs through every block

    @property
    def reduction_out_indices(self) -> Tuple[int, ...]:
        return self.out_indices

    def grid_size(self, hw: Sequence[int]) -> Tuple[int, int]:
        """The patch grid of an ``H x W`` input (``H/16 x W/16``).

        Raises:
            ValueError: if H or W is not a positive multiple of 16.
        """
        h, w = int(hw[0]), int(hw[1])
        if h < FEATURE_STRIDE or w < FEATURE_STRIDE or h % FEATURE_STRIDE or w % FEATURE_STRIDE:
            raise ValueError(
                f'input size {h}x{w}: H and W must be multiples of {FEATURE_STRIDE} '
                "(mmdet's DetDataPreprocessor pads to pad_size_divisor=32)"
            )
        return h // FEATURE_STRIDE, w // FEATURE_STRIDE

    def embed(self, inputs: Tensor) -> Tuple[Tensor, Tuple[int, int]]:
        if inputs.dim() != 4:
            raise ValueError(f'inputs must be [B, C, H, W], got {tuple(inputs.shape)}')
        gh, gw = self.grid_size(inputs.shape[-2:])
        if self.patch_size != FEATURE_STRIDE:
            # keep the stride-16 grid the adapters are built for (module doc)
            size = (gh * self.patch_size, gw * self.patch_size)
            inputs = F.interpolate(inputs, size=size, mode='bilinear', align_corners=False)
        x = self.patch_embed(inputs)
        hw = (x.shape[-2], x.shape[-1])
        x = torch.cat([self.cls_token.expand(x.shape[0], -1, -1), x.flatten(2).transpose(1, 2)], 1)
        x = x + resize_pos_embed(self.pos_embed, self.pos_grid, hw)
        return x, hw

    def run_layer(self, index: int, x: Tensor, key_bias: Optional[Tensor], fused: bool) -> Tensor:
        block = self.blocks[index]
        if self.use_checkpoint and self.training and x.requires_grad:
            return cp.checkpoint(block, x, key_bias, fused, use_reentrant=False)
        return block(x, key_bias, fused)  # key_bias None, not fused: CAE's own block

    def layer_keys(self, index: int, x: Tensor) -> Tensor:
        """The attention keys block ``index`` computes from ``x`` (all heads;
        CAE has no k bias), for ``ailurus.distance='keys'``."""
        block = self.blocks[index]
        c = x.shape[-1]
        return F.linear(block.norm1(x), block.attn.qkv.weight[c : 2 * c])

    # -- mmdet interface ---------------------------------------------------------

    def adapt(self, maps: Sequence[Tensor], start: int = 0) -> Tuple[Tensor, ...]:
        """``fpn1..fpn4`` on the stride-16 maps (identity without FPN).

        Args:
            maps (Sequence[Tensor]): :meth:`output_maps`.
            start (int): the first level to adapt; the maps below it are
                returned as they are. For a neck with ``start_level=start``,
                which never reads them (the FPN from stride 8 skips ``fpn1``,
                ~20% of a cached training step). Default: 0 (all levels).
        """
        if not self.with_fpn:
            return tuple(maps)
        if not 0 <= start <= len(maps):
            raise ValueError(f'adapt: start={start} is not in [0, {len(maps)}]')
        ops = (self.fpn1, self.fpn2, self.fpn3, self.fpn4)
        return tuple(m if i < start else op(m) for i, (op, m) in enumerate(zip(ops, maps)))

    def token_grid(self, hw: Sequence[int]) -> Tuple[int, int]:
        """The token grid of an ``H x W`` input (:meth:`grid_size`)."""
        return self.grid_size(hw)

    def output_maps(self, res) -> List[Tensor]:
        """The stride-16 ``[B, C, H/16, W/16]`` map of every out index, before
        the adapters (``norm`` applied with ``out_with_norm``)."""
        maps = [patches for patches, _ in self.tokens_to_maps(res)]
        if self.norm is not None:
            # CAE: norm on the patch tokens of every output (out_with_norm)
            maps = [self.norm(m.permute(0, 2, 3, 1)).permute(0, 3, 1, 2) for m in maps]
        return maps

    def format_outputs(self, res) -> Tuple[Tensor, ...]:
        """mmdet's backbone output for a :class:`ReductionOutput`:
        :meth:`output_maps` through the adapters."""
        return self.adapt(self.output_maps(res))

    def forward(self, inputs: Tensor) -> Tuple[Tensor, ...]:
        """``[B, 3, H, W]`` (H, W multiples of 16) -> one map per out index:
        strides 4, 8, 16, 32 with FPN, else 16; ``embed_dim`` channels."""
        res = self.require_full_outputs(self.forward_tokens(inputs))
        self.last_assignment = res.assignment
        return self.format_outputs(res)
