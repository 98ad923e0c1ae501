"""The main job on an embedded default: stock vs AiluRus on real CamVid images.

    python tools/demo.py [--data-root ../shared/data/CamVid] [--num-images 4] [--out demo.png]

Builds a registered AiluRus Segmenter from ``configs/ailurus/`` and its stock
twin with the same weights, runs both on a few CamVid val images, prints the
agreement and the speed-up side by side, and writes a PNG that overlays the
clusters (the adaptive resolution) on the first image.
"""
import argparse
import os
import os.path as osp
import sys
import time

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_CONFIG = osp.join(ROOT, 'configs/ailurus/segmenter-ailurus_vit-t_mask_8xb1-160k_ade20k-512x512.py')


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument('--config', default=DEFAULT_CONFIG)
    p.add_argument('--checkpoint', default=None)
    p.add_argument('--data-root', default=osp.join(ROOT, '..', 'shared', 'data', 'CamVid'))
    p.add_argument('--split', default='val')
    p.add_argument('--num-images', type=int, default=4)
    p.add_argument('--out', default='work_dirs/demo/clusters.png')
    args = p.parse_args(argv)
    if args.num_images < 1:
        p.error(f'--num-images={args.num_images} must be >= 1')
    return args


def cluster_overlay(img_rgb: np.ndarray, labels: np.ndarray, hw, patch: int) -> np.ndarray:
    """Draw cluster borders (between patches of different clusters) on the image."""
    import mmcv
    h, w = hw
    grid = labels.reshape(h, w)
    cell = np.kron(grid, np.ones((patch, patch), dtype=grid.dtype))
    edge = np.zeros(cell.shape, bool)
    edge[1:, :] |= cell[1:, :] != cell[:-1, :]
    edge[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    img = mmcv.imresize(img_rgb, (w * patch, h * patch)).copy()
    img[edge] = (255, 255, 0)
    return img


def main(argv=None):
    args = parse_args(argv)
    img_dir = osp.join(args.data_root, args.split)
    if not osp.isdir(img_dir):
        sys.exit(f'CamVid images not found at {img_dir}. Point --data-root at a folder with the SegNet '
                 f'CamVid layout ({args.split}/ with PNG images), e.g. --data-root /path/to/CamVid')
    from mmengine.config import Config

    import ailurus_mm  # noqa: F401
    from ailurus_mm.apis.benchmark import build_twins, load_images
    cfg = Config.fromfile(args.config)
    hw = tuple(cfg.model.data_preprocessor.size)
    models = build_twins(cfg, args.checkpoint)
    imgs = load_images(img_dir, args.num_images, hw)
    x = models['stock'].data_preprocessor(dict(inputs=imgs, data_samples=None), False)['inputs']
    res = {}
    with torch.no_grad():
        for name, m in models.items():
            m.backbone(x[:1])  # warm-up
            t = time.perf_counter()
            feats = [m.backbone(x[i:i + 1])[-1] for i in range(len(imgs))]
            res[name] = (time.perf_counter() - t, torch.cat(feats))
    bb = models['ailurus'].backbone
    grid = (hw[0] // bb.patch_size, hw[1] // bb.patch_size)
    cos = torch.nn.functional.cosine_similarity(res['stock'][1], res['ailurus'][1], dim=1).mean()
    print(f"config: {osp.relpath(args.config, ROOT)} ({'checkpoint ' + args.checkpoint if args.checkpoint else 'random init: a smoke run'})")
    print(f'images: {len(imgs)} from {img_dir}, input {hw[0]}x{hw[1]}, {grid[0] * grid[1]} patch tokens, '
          f'threads {torch.get_num_threads()}')
    print(f"tokens after layer {bb.ailurus['cluster_after']}: {bb.num_kept(grid)} "
          f"(keep {bb.ailurus['keep_ratio']}, method {bb.ailurus['method']})")
    print(f"backbone time: stock {res['stock'][0]:.2f} s, AiluRus {res['ailurus'][0]:.2f} s, "
          f"speed-up {res['stock'][0] / res['ailurus'][0]:.2f}x; feature cosine similarity {cos:.3f}")
    bb(x[:1])
    a = bb.last_assignment
    rgb = imgs[0].numpy().transpose(1, 2, 0)[..., ::-1]
    over = cluster_overlay(rgb, a.labels[0].numpy(), grid, bb.patch_size)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    import mmcv
    mmcv.imwrite(over[..., ::-1], args.out)
    print(f'cluster overlay: {args.out} ({a.num_clusters} clusters, largest {int(a.sizes.max())} tokens, '
          f'{int((a.sizes == 1).sum())} single-token clusters)')


if __name__ == '__main__':
    main()
