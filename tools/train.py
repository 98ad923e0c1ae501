"""Train a model: the stock mmseg/mmdet ``tools/train.py`` command line.

    python tools/train.py CONFIG [--work-dir DIR] [--resume] [--amp]
        [--cfg-options k=v ...] [--launcher {none,pytorch,slurm,mpi}]

Multi-process: tools/dist_train.sh (torchrun, --launcher pytorch); on a
machine without CUDA the gloo backend is chosen and ``--amp`` is bfloat16
autocast (see ailurus_mm.apis.train).

mmdet configs run the train script shipped in the installed mmdet; mmseg 1.2.2
ships none in its wheel, so the stock mmseg entry is reproduced below.
"""

import argparse
import logging
import os
import os.path as osp

from ailurus_mm.apis import prepare_run, run_stock_tool


def parse_args(argv=None):
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(description='Train a segmentor')
    parser.add_argument('config', help='train config file path')
    parser.add_argument('--work-dir', help='the dir to save logs and models')
    parser.add_argument(
        '--resume',
        action='store_true',
        default=False,
        help='resume from the latest checkpoint in the work_dir automatically',
    )
    parser.add_argument(
        '--amp',
        action='store_true',
        default=False,
        help='enable automatic-mixed-precision training',
    )
    parser.add_argument(
        '--cfg-options',
        nargs='+',
        action=DictAction,
        help='override some settings in the used config, key=value',
    )
    parser.add_argument(
        '--launcher',
        choices=['none', 'pytorch', 'slurm', 'mpi'],
        default='none',
        help='job launcher',
    )
    parser.add_argument('--local_rank', '--local-rank', type=int, default=0)
    args = parser.parse_args(argv)
    if 'LOCAL_RANK' not in os.environ:
        os.environ['LOCAL_RANK'] = str(args.local_rank)
    return args


def train_mmseg(argv=None):
    from mmengine.config import Config
    from mmengine.logging import print_log
    from mmengine.runner import Runner

    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    cfg.launcher = args.launcher
    if args.cfg_options is not None:
        cfg.merge_from_dict(args.cfg_options)
    if args.work_dir is not None:
        cfg.work_dir = args.work_dir
    elif cfg.get('work_dir', None) is None:
        cfg.work_dir = osp.join('./work_dirs', osp.splitext(osp.basename(args.config))[0])
    if args.amp and cfg.optim_wrapper.get('type') in ('AmpOptimWrapper', 'CPUAutocastOptimWrapper'):
        print_log(
            'AMP training is already enabled in your config.',
            logger='current',
            level=logging.WARNING,
        )
    # --launcher: gloo + no device ids on a machine without CUDA, a collective
    # timeout; --amp: float16 AmpOptimWrapper on CUDA, bfloat16 autocast on CPU
    changes = prepare_run(cfg, args.launcher, amp=args.amp)
    if changes:
        print_log(f'launcher/amp config changes: {changes}', logger='current')
    cfg.resume = args.resume
    runner = (
        Runner.from_cfg(cfg)
        if 'runner_type' not in cfg
        else __import__('mmengine.registry', fromlist=['RUNNERS']).RUNNERS.build(cfg)
    )
    runner.train()


if __name__ == '__main__':
    if not run_stock_tool('train'):
        train_mmseg()
