#!/usr/bin/env python
"""Train the CamVid segmentation head on cached, frozen DINOv2-S/14 features.

The backbone of ``configs/camvid/segmenter_dinov2-s14_mask_frozen_camvid-504x672.py``
is frozen and deterministic, so its final-layer feature maps (``[384, 36, 48]``
per 504x672 image) are computed once and cached; only the decode head is
trained. Everything model-related comes from the config and the mmseg
registry:

* features: the config's test pipeline (``LoadImageFromFile``, ``Resize`` to
  672x504, ``LoadAnnotations``), its ``SegDataPreProcessor`` (ImageNet
  mean/std, BGR to RGB) and its backbone initialised from the converted
  checkpoint (``init_cfg``), exactly what ``tools/test.py`` runs, with
  ``ailurus`` forced off. With ``--cache-flips`` train images are cached
  twice, as is and flipped before the backbone (exact flip augmentation; the
  backbone is not exactly flip-equivariant because of the position
  embedding). This doubles the caching time (~3.2 s per forward on one
  shared CPU core), so by default train images are cached once and
  ``--feature-flip`` (default 0.5) flips cached feature maps together with
  their labels: an approximation of image flipping that costs nothing.
* labels: the original 360x480 label maps (flipped with the image). The
  head's stock ``loss`` (``BaseDecodeHead.loss_by_feat``) upsamples the
  ``36x48`` logits bilinearly to the label size and applies the config's
  ``CrossEntropyLoss`` with ``ignore_index=11``. This is also the resolution
  the metric uses (mmseg resizes predictions back to the original shape).
* head: ``MODELS.build(cfg.model.decode_head)`` (``SegmenterMaskTransformerHead``)
  or, with ``--head linear``, the ``FCNHead`` with ``num_convs=0`` (a 1x1
  convolution, Segmenter-Linear) of
  ``configs/camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py``
  (the shipped head).
* training: a plain, seeded, deterministic torch loop (AdamW, linear decay
  to 0, batch of shuffled cached maps, feature flips). The val
  mIoU printed during training is computed on cached val features the way
  ``EncoderDecoder.predict`` does it (bilinear resize of the logits to
  360x480, argmax, IoU ignoring label 11); the reference number is measured
  with ``tools/test.py`` on the assembled checkpoint
  (``tools/camvid/assemble_checkpoint.py``).

The output is the head's state_dict with ``decode_head.`` keys, as plain
tensors (``torch.load(..., weights_only=True)`` works).

Exact command that produced ``checkpoints/segmenter_dinov2-s14_camvid_head.pth``
(the Segmenter-Linear head of
``configs/camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py``, the
reference of the AiluRus configs; CPU, 1 thread, nice 19 on a shared 2-core
machine: caching 20 min for train + 5 min for val, once; training 11 min)::

    OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python tools/camvid/train_head_cached.py \\
        --head linear --iters 1000 --batch-size 8 --lr 1e-3 --seed 0 \\
        --val-interval 250 --log-interval 50 \\
        --out checkpoints/segmenter_dinov2-s14_camvid_head.pth

It printed cached-val mIoU 49.45 at iter 1000, the same as ``tools/test.py``
on the assembled checkpoint (aAcc 86.29, mIoU 49.45).

The mask-transformer head (``--head mask``, the default config's head; the
second real model, ``checkpoints/segmenter_dinov2-s14_mask_camvid_head.pth``)
is about 10x more expensive per sample on CPU, so it trains on random 24x32-token
crops of the cached 36x48 maps, with bf16 autocast (``--amp``: 2.4x faster here;
evaluation in float32). Exact command of the shipped file (1 thread, nice 5,
beside another 1-thread job on the 2-core machine: 59 min)::

    OMP_NUM_THREADS=1 nice -n 5 .venv/bin/python tools/camvid/train_head_cached.py \\
        --head mask --crop 24 32 --iters 2000 --batch-size 8 --lr 1e-3 --seed 0 --amp \\
        --val-interval 500 --log-interval 50 --threads 1 \\
        --out checkpoints/segmenter_dinov2-s14_mask_camvid_head.pth

It printed cached-val mIoU 41.94 / 46.85 / 52.21 / 56.55 at iterations 500 /
1000 / 1500 / 2000 (still rising at the end of the linear decay; a longer
run is open); ``tools/test.py`` on the assembled checkpoint: docs/results.md.

Usage::

    python tools/camvid/train_head_cached.py [--config CFG] [--data-root DIR]
        [--cache-dir DIR] [--head {mask,linear}] [--iters N] [--batch-size B]
        [--lr LR] [--weight-decay WD] [--seed S] [--val-interval N]
        [--amp] [--threads T] [--out PATH]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import os.path as osp
import sys
import time
from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from ailurus_mm.zoo.camvid import REPO

DEFAULT_CONFIG = REPO / 'configs' / 'camvid' / 'segmenter_dinov2-s14_mask_frozen_camvid-504x672.py'
DEFAULT_DATA_ROOT = REPO / '..' / 'shared' / 'data' / 'CamVid'
DEFAULT_CACHE_DIR = Path('~/.cache/ailurus_mm/camvid_features').expanduser()
DEFAULT_OUT = REPO / 'checkpoints' / 'segmenter_dinov2-s14_camvid_head.pth'
NUM_CLASSES = 11
VOID = 11
# Bump when the cached content changes, so old caches are rebuilt.
CACHE_VERSION = 1

# Segmenter-Linear: the decode head of this config is used by --head linear.
LINEAR_CONFIG = REPO / 'configs' / 'camvid' / 'segmenter_dinov2-s14_linear_frozen_camvid-504x672.py'


def log(msg: str) -> None:
    """Print a time-stamped progress line (flushed, for nohup logs)."""
    print(f'[{time.strftime("%H:%M:%S")}] {msg}', flush=True)


def load_config(config: Path | str, data_root: Path | str):
    """Load the reference config with the data root and ailurus overridden.

    Args:
        config (Path | str): The reference (unaccelerated) config.
        data_root (Path | str): CamVid root (``train/``, ``trainannot/``, ...).

    Returns:
        mmengine.Config: The config, ``ailurus`` disabled, every dataloader
        pointing at ``data_root``.

    Raises:
        FileNotFoundError: If the config or data root does not exist.
    """
    from mmengine.config import Config

    if not osp.isfile(config):
        raise FileNotFoundError(f'config not found: {config}')
    if not osp.isdir(data_root):
        raise FileNotFoundError(
            f'CamVid data root not found: {data_root} (resolved {osp.abspath(data_root)})'
        )
    cfg = Config.fromfile(str(config))
    cfg.model.backbone.ailurus = dict(enabled=False)
    for key in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[key].dataset.data_root = str(data_root)
    return cfg


def cache_path(cache_dir: Path, split: str) -> Path:
    """Path of the cached features of one split (``train`` or ``val``)."""
    return cache_dir / f'dinov2-s14_camvid_{split}_504x672_v{CACHE_VERSION}.pth'


def backbone_checksum(model) -> str:
    """Short sha256 of the backbone parameters (to tie a cache to weights)."""
    h = hashlib.sha256()
    for k, v in sorted(model.backbone.state_dict().items()):
        h.update(k.encode())
        h.update(v.detach().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


@torch.no_grad()
def compute_features(cfg, split: str, flips: bool) -> Dict[str, object]:
    """Run the frozen backbone over one split with the config's test pipeline.

    Args:
        cfg (mmengine.Config): From :func:`load_config`.
        split (str): ``'train'`` or ``'val'`` (folder names of CamVid).
        flips (bool): Also cache each image flipped horizontally.

    Returns:
        dict: ``feats`` float32 ``[N, 384, 36, 48]``, ``labels`` uint8
        ``[N, 360, 480]`` (original size), ``names`` (file names, ``'|flip'``
        appended for flipped copies) and ``backbone_sha``.
    """
    from mmseg.registry import DATASETS, MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=True)
    if split not in ('train', 'val'):
        raise ValueError(f"split must be 'train' or 'val', got {split!r}")
    ds_cfg = cfg.val_dataloader.dataset.copy()
    ds_cfg.data_prefix = dict(img_path=split, seg_map_path=f'{split}annot')
    ds_cfg.pipeline = cfg.test_pipeline  # Resize + LoadAnnotations (orig size)
    dataset = DATASETS.build(ds_cfg)

    model = MODELS.build(cfg.model)
    model.init_weights()  # backbone from the converted DINOv2 checkpoint
    model.eval()
    sha = backbone_checksum(model)
    feats, labels, names = [], [], []
    t0 = time.time()
    for i in range(len(dataset)):
        data = dataset[i]
        batch = model.data_preprocessor(
            dict(inputs=[data['inputs']], data_samples=[data['data_samples']]), training=False
        )
        x = batch['inputs']
        label = data['data_samples'].gt_sem_seg.data[0].to(torch.uint8)
        name = osp.basename(data['data_samples'].img_path)
        variants = [(x, label, name)]
        if flips:
            variants.append((x.flip(-1), label.flip(-1), name + '|flip'))
        for xi, li, ni in variants:
            (feat,) = model.backbone(xi)  # out_indices=-1: final norm output
            feats.append(feat[0].clone())
            labels.append(li.clone())
            names.append(ni)
        if (i + 1) % 20 == 0 or i + 1 == len(dataset):
            el = time.time() - t0
            log(
                f'cache {split}: {i + 1}/{len(dataset)} images, {el:.0f}s '
                f'({el / (i + 1):.2f}s/img), feature {tuple(feat.shape)}'
            )
    return dict(
        feats=torch.stack(feats),
        labels=torch.stack(labels),
        names=names,
        backbone_sha=sha,
        version=CACHE_VERSION,
    )


def get_features(cfg, cache_dir: Path, split: str, flips: bool = False) -> Dict[str, object]:
    """Load cached features of a split, computing and saving them if missing.

    Args:
        cfg (mmengine.Config): From :func:`load_config`.
        cache_dir (Path): Folder of the cache files.
        split (str): ``'train'`` or ``'val'``.
        flips (bool): Also cache flipped images (a separate cache file).

    Returns:
        dict: See :func:`compute_features`.
    """
    path = cache_path(cache_dir, split + ('_flips' if flips else ''))
    if path.is_file():
        log(f'loading cached {split} features from {path}')
        return torch.load(path, map_location='cpu', weights_only=True)
    data = compute_features(cfg, split, flips=flips)
    cache_dir.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix('.tmp')
    torch.save(data, tmp)
    os.replace(tmp, path)
    log(f'saved {split} features {tuple(data["feats"].shape)} to {path}')
    return data


def build_head(cfg, kind: str):
    """Build the decode head from the registry.

    Args:
        cfg (mmengine.Config): From :func:`load_config`.
        kind (str): ``'mask'`` (the ``--config``'s decode head, i.e. the
            ``SegmenterMaskTransformerHead`` of the default config) or
            ``'linear'`` (the ``FCNHead`` with ``num_convs=0`` of
            ``configs/camvid/segmenter_dinov2-s14_linear_frozen_camvid-504x672.py``).

    Returns:
        mmseg.models.decode_heads.BaseDecodeHead: The initialised head.
    """
    from mmengine.config import Config
    from mmseg.registry import MODELS

    if kind == 'mask':
        head_cfg = cfg.model.decode_head
    elif kind == 'linear':
        head_cfg = Config.fromfile(str(LINEAR_CONFIG)).model.decode_head
    else:
        raise ValueError(f"--head must be 'mask' or 'linear', got {kind!r}")
    head = MODELS.build(head_cfg)
    head.init_weights()
    return head


def to_samples(labels: torch.Tensor) -> list:
    """Wrap ``[B, H, W]`` label maps in ``SegDataSample`` for the head's loss."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    out = []
    for lab in labels:
        s = SegDataSample()
        s.gt_sem_seg = PixelData(data=lab[None].long())
        out.append(s)
    return out


@torch.no_grad()
def random_crop(
    feat: torch.Tensor, lab: torch.Tensor, crop: Sequence[int], gen: torch.Generator
) -> Tuple[torch.Tensor, torch.Tensor]:
    """Crop the same random window from a batch of feature maps and labels.

    One window per batch (the head needs equal sizes to stack). Labels are at
    an integer multiple of the feature resolution (360x480 labels for 36x48
    tokens: 10 pixels per token), so the label window is exactly the pixels
    of the cropped tokens.

    Args:
        feat (torch.Tensor): ``[B, C, h, w]`` features.
        lab (torch.Tensor): ``[B, H, W]`` labels.
        crop (Sequence[int]): ``(ch, cw)`` crop in tokens.
        gen (torch.Generator): Random generator.

    Returns:
        Tuple[torch.Tensor, torch.Tensor]: The cropped features and labels.

    Raises:
        ValueError: If the crop is larger than the map or the label size is
            not an integer multiple of the feature size.
    """
    h, w = feat.shape[-2:]
    lh, lw = lab.shape[-2:]
    ch, cw = crop
    if not (0 < ch <= h and 0 < cw <= w):
        raise ValueError(f'--crop {ch} {cw} does not fit the {h}x{w} token map')
    if lh % h or lw % w or lh // h != lw // w:
        raise ValueError(
            f'label size {lh}x{lw} is not an integer multiple of '
            f'the feature size {h}x{w}; --crop is unsupported'
        )
    s = lh // h
    y = int(torch.randint(0, h - ch + 1, (1,), generator=gen))
    x = int(torch.randint(0, w - cw + 1, (1,), generator=gen))
    return (feat[..., y : y + ch, x : x + cw], lab[..., y * s : (y + ch) * s, x * s : (x + cw) * s])


def evaluate(
    head, feats: torch.Tensor, labels: torch.Tensor, batch_size: int = 8
) -> Tuple[float, np.ndarray]:
    """mIoU of the head on cached features, as ``EncoderDecoder.predict``.

    Args:
        head: The decode head.
        feats (torch.Tensor): ``[N, 384, h, w]`` features.
        labels (torch.Tensor): ``[N, H, W]`` labels (11 = void).
        batch_size (int): Evaluation batch size.

    Returns:
        Tuple[float, np.ndarray]: mIoU in percent and per-class IoU (%).
    """
    from mmseg.evaluation import IoUMetric

    head.eval()
    inter = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    union = torch.zeros(NUM_CLASSES, dtype=torch.float64)
    for i in range(0, len(feats), batch_size):
        logits = head([feats[i : i + batch_size]])
        lab = labels[i : i + batch_size].long()
        logits = F.interpolate(logits, size=lab.shape[-2:], mode='bilinear', align_corners=False)
        pred = logits.argmax(1)
        # mmseg's own counting (what IoUMetric.process does per image)
        area_i, area_u, _, _ = IoUMetric.intersect_and_union(pred, lab, NUM_CLASSES, VOID)
        inter += area_i.double()
        union += area_u.double()
    head.train()
    iou = (inter / union.clamp(min=1)).numpy() * 100
    return float(np.nanmean(iou)), iou


def train(args: argparse.Namespace) -> Optional[Path]:
    """Cache features if needed, train the head and save its weights.

    Args:
        args (argparse.Namespace): See :func:`parse_args`.

    Returns:
        Path | None: The saved head weights (None with ``--cache-only``).
    """
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    np.random.seed(args.seed)
    torch.use_deterministic_algorithms(True)

    from mmseg.utils import register_all_modules

    import ailurus_mm  # noqa: F401  (registers AiluRusVisionTransformer)

    register_all_modules(init_default_scope=True)

    cfg = load_config(args.config, args.data_root)
    train_data = get_features(cfg, args.cache_dir, 'train', args.cache_flips)
    val: Dict[str, torch.Tensor] = {}

    def val_features() -> Tuple[torch.Tensor, torch.Tensor]:
        # Loaded (or computed) at the first evaluation only.
        if not val:
            val_data = get_features(cfg, args.cache_dir, 'val')
            if train_data['backbone_sha'] != val_data['backbone_sha']:
                raise RuntimeError(
                    'train and val caches come from different '
                    f'backbone weights; delete {args.cache_dir}'
                )
            val['f'], val['l'] = val_data['feats'].float(), val_data['labels']
            log(f'val features {tuple(val["f"].shape)}')
        return val['f'], val['l']

    if args.cache_only:
        val_features()
        log('--cache-only: features cached, no training')
        return None
    tf, tl = train_data['feats'].float(), train_data['labels']
    log(f'train pool {tuple(tf.shape)} (image flips cached: {args.cache_flips})')

    torch.manual_seed(args.seed)
    head = build_head(cfg, args.head)
    head.train()
    params = [p for p in head.parameters() if p.requires_grad]
    log(
        f'head {type(head).__name__}: '
        f'{sum(p.numel() for p in params) / 1e6:.2f}M trainable parameters'
    )
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.999), weight_decay=args.weight_decay)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda it: max(0.0, 1.0 - it / args.iters))
    gen = torch.Generator().manual_seed(args.seed)
    order = torch.randperm(len(tf), generator=gen)
    pos = 0
    t0 = time.time()
    run_loss, run_acc = 0.0, 0.0
    best = (-1.0, 0)
    for it in range(1, args.iters + 1):
        if pos + args.batch_size > len(order):
            order = torch.randperm(len(tf), generator=gen)
            pos = 0
        idx = order[pos : pos + args.batch_size]
        pos += args.batch_size
        feat, lab = tf[idx], tl[idx]
        if args.feature_flip > 0:
            flip = torch.rand(len(idx), generator=gen) < args.feature_flip
            feat = torch.where(flip[:, None, None, None], feat.flip(-1), feat)
            lab = torch.where(flip[:, None, None], lab.flip(-1), lab)
        if args.crop is not None:
            feat, lab = random_crop(feat, lab, args.crop, gen)
        # bf16 autocast: weights, optimizer state and evaluation stay float32
        with torch.autocast('cpu', dtype=torch.bfloat16, enabled=args.amp):
            losses = head.loss([feat.contiguous()], to_samples(lab.contiguous()), None)
        loss = sum(v for k, v in losses.items() if 'loss' in k)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        run_loss += float(loss.detach())
        run_acc += float(losses['acc_seg'].detach())
        if it % args.log_interval == 0:
            el = time.time() - t0
            log(
                f'iter {it}/{args.iters} loss {run_loss / args.log_interval:.4f}'
                f' acc_seg {run_acc / args.log_interval:.2f} '
                f'lr {sched.get_last_lr()[0]:.2e} {el:.0f}s '
                f'({el / it:.2f}s/it, eta {el / it * (args.iters - it):.0f}s)'
            )
            run_loss, run_acc = 0.0, 0.0
        if it % args.val_interval == 0 or it == args.iters:
            miou, iou = evaluate(head, *val_features())
            log(
                f'iter {it}: cached-val mIoU {miou:.2f} | per class '
                + ' '.join(f'{v:.1f}' for v in iou)
            )
            best = max(best, (miou, it))
            if it < args.iters:  # intermediate weights, for interrupted runs
                save_head(head, Path(f'{args.out}.iter{it}'))
    log(
        f'done in {time.time() - t0:.0f}s; final cached-val mIoU {miou:.2f} '
        f'(best {best[0]:.2f} at iter {best[1]}; the final weights are saved)'
    )

    return save_head(head, Path(args.out))


def save_head(head, out: Path) -> Path:
    """Save the head's state_dict as ``decode_head.*`` plain tensors.

    Args:
        head: The decode head.
        out (Path): Output file (its folder is created).

    Returns:
        Path: ``out``.
    """
    state = {
        f'decode_head.{k}': v.detach().clone().contiguous() for k, v in head.state_dict().items()
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.save(state, out)
    log(
        f'saved {len(state)} head tensors '
        f'({sum(v.numel() for v in state.values()) / 1e6:.2f}M values) '
        f'to {out}'
    )
    return out


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Command line (see the module docstring)."""
    p = argparse.ArgumentParser(description=__doc__.split('\n')[0])
    p.add_argument(
        '--config', default=str(DEFAULT_CONFIG), help='reference config (backbone, head, pipeline)'
    )
    p.add_argument(
        '--data-root',
        default=str(DEFAULT_DATA_ROOT),
        help='CamVid root with train/, trainannot/, val/, valannot/',
    )
    p.add_argument(
        '--cache-dir',
        type=Path,
        default=DEFAULT_CACHE_DIR,
        help='where the cached features live (~1.3 GB float32; delete '
        'it after changing the backbone or pipeline)',
    )
    p.add_argument(
        '--head',
        choices=('mask', 'linear'),
        default='mask',
        help="'mask': the config's SegmenterMaskTransformerHead; "
        "'linear': FCNHead num_convs=0 (1x1 conv)",
    )
    p.add_argument(
        '--cache-flips',
        action='store_true',
        help='cache train images also flipped (exact flip augmentation, twice the caching time)',
    )
    p.add_argument(
        '--feature-flip',
        type=float,
        default=0.5,
        help='probability of flipping a cached train feature map and its label (0 disables)',
    )
    p.add_argument(
        '--cache-only', action='store_true', help='only compute the feature caches, do not train'
    )
    p.add_argument(
        '--crop',
        type=int,
        nargs=2,
        default=None,
        metavar=('H', 'W'),
        help='train on random H x W token crops of the 36x48 maps '
        '(and the matching label pixels); default: whole maps',
    )
    p.add_argument('--iters', type=int, default=1500)
    p.add_argument('--batch-size', type=int, default=8)
    p.add_argument('--lr', type=float, default=1e-3)
    p.add_argument('--weight-decay', type=float, default=1e-4)
    p.add_argument('--seed', type=int, default=0)
    p.add_argument('--log-interval', type=int, default=25)
    p.add_argument('--val-interval', type=int, default=250)
    p.add_argument(
        '--amp',
        action='store_true',
        help='bf16 autocast for the training forward/backward (CPU mixed precision, '
        '~2.4x faster for the mask head on an avx512_bf16 CPU); evaluation stays float32',
    )
    p.add_argument(
        '--threads', type=int, default=1, help='torch threads (default 1: the machine is shared)'
    )
    p.add_argument(
        '--out', default=str(DEFAULT_OUT), help='output head weights (decode_head.* tensors)'
    )
    args = p.parse_args(argv)
    for name in ('iters', 'batch_size', 'log_interval', 'val_interval', 'threads'):
        if getattr(args, name) < 1:
            p.error(f'--{name.replace("_", "-")} must be >= 1, got {getattr(args, name)}')
    if not 0 <= args.feature_flip <= 1:
        p.error(f'--feature-flip must be in [0, 1], got {args.feature_flip}')
    if not args.lr > 0:
        p.error(f'--lr must be > 0, got {args.lr}')
    args.cache_dir = Path(args.cache_dir).expanduser()
    return args


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Entry point."""
    train(parse_args(argv))
    return 0


if __name__ == '__main__':
    sys.exit(main())
