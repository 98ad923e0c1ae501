"""Multi-process training and testing on CPU (gloo) through mmengine's launcher.

``tools/dist_train.sh`` / ``tools/dist_test.sh`` (torchrun, ``--launcher
pytorch``) with two CPU processes on a tiny ViT-T AiluRus config and a tiny
ADE20K-layout dataset, against one process (mmengine's Runner in this
process) on the same global batch and the same images.

Tolerance of the 2-process vs 1-process parameters: DDP averages the two
ranks' float32 gradients (each the mean over its own image) where one process
back-propagates the mean over both images at once. The sums run in another
order, so gradients differ by a few float32 ulps (relative ~1e-7); with SGD
(lr 1e-3, momentum 0.9; linear in the gradients) over 3 iterations the
parameters can differ by about lr x 3 x that, far below 1e-6. We allow
``atol=1e-6`` and require the training to have moved the parameters by much
more than that (so the comparison can fail).
"""

import os
import os.path as osp
import re
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

import ailurus_mm  # noqa: F401
import ailurus_mm.apis  # noqa: F401  (launcher helpers, CPUAutocastOptimWrapper)
from ailurus_mm.apis import distributed_overrides

ROOT = osp.dirname(osp.dirname(osp.abspath(__file__)))
VIT_T = osp.join(ROOT, 'configs/ailurus/segmenter-ailurus_vit-t_mask_8xb1-160k_ade20k-512x512.py')
ITERS = 3
TIMEOUT = 240  # a subprocess that outlives this failed (no hang in CI)

HOOK_MODULE = '''
import os.path as osp

import torch
from mmengine.hooks import Hook
from mmengine.model import is_model_wrapper
from mmengine.registry import HOOKS


@HOOKS.register_module(force=True)
class SaveRankParamsHook(Hook):
    """Every rank writes its final parameters (tests only)."""

    def after_train(self, runner):
        model = runner.model.module if is_model_wrapper(runner.model) else runner.model
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        torch.save(state, osp.join(runner.work_dir, f'params_rank{runner.rank}.pth'))
'''

CONFIG = """
_base_ = [{vit_t!r}]
custom_imports = dict(imports=['ailurus_mm', 'rank_params_hook'], allow_failed_imports=False)
data_root = {data_root!r}
size = (64, 96)
model = dict(
    data_preprocessor=dict(size=size),
    backbone=dict(img_size=size, drop_path_rate=0.0, drop_rate=0.0, attn_drop_rate=0.0,
                  ailurus=dict(cluster_after=2, keep_ratio=0.4)),
    decode_head=dict(dropout_ratio=0.0, drop_path_rate=0.0),
    test_cfg=dict(mode='whole'),
)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='Resize', scale=(96, 64), keep_ratio=False),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(96, 64), keep_ratio=False),
    dict(type='LoadAnnotations', reduce_zero_label=True),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    sampler=dict(type='InfiniteSampler', shuffle=False),
    dataset=dict(data_root=data_root, pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=1, num_workers=0, persistent_workers=False,
    dataset=dict(data_root=data_root, pipeline=test_pipeline))
test_dataloader = val_dataloader
train_cfg = dict(type='IterBasedTrainLoop', max_iters={iters}, val_interval=1000)
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval={iters}),
                     logger=dict(type='LoggerHook', interval=1))
custom_hooks = [dict(type='SaveRankParamsHook')]
randomness = dict(seed=0)
env_cfg = dict(dist_cfg=dict(timeout=60))
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


@pytest.fixture(scope='module')
def setup(tmp_path_factory, make_ade):
    base = tmp_path_factory.mktemp('dist')
    make_ade(str(base / 'data'), n=6)  # 6 train images (3 x 2), 6 val (3 per rank)
    (base / 'hooks').mkdir()
    (base / 'hooks' / 'rank_params_hook.py').write_text(HOOK_MODULE)
    cfg_path = base / 'tiny.py'
    cfg_path.write_text(CONFIG.format(vit_t=VIT_T, data_root=str(base / 'data'), iters=ITERS))
    # the failing-rank config: rank 1's data root does not exist
    bad = CONFIG.format(vit_t=VIT_T, data_root=str(base / 'rank{{$RANK:0}}'), iters=ITERS)
    (base / 'bad.py').write_text(bad)
    shutil.copytree(base / 'data', base / 'rank0')
    # the torchrun processes import the hook module (PYTHONPATH); this process
    # registers the same hook by running its source
    exec(compile(HOOK_MODULE, 'rank_params_hook', 'exec'), {})
    return base


def torchrun(script, args, setup, timeout=TIMEOUT):
    env = dict(
        os.environ,
        PYTHON=sys.executable,
        PORT=str(free_port()),
        PYTHONWARNINGS='ignore',
        OMP_NUM_THREADS='1',
        PYTHONPATH=os.pathsep.join([str(setup / 'hooks'), os.environ.get('PYTHONPATH', '')]),
    )
    env.pop('CUDA_VISIBLE_DEVICES', None)
    proc = subprocess.run(
        ['bash', osp.join(ROOT, 'tools', script)] + args,
        cwd=str(setup),
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def one_process_cfg(setup, work_dir, batch_size):
    cfg = Config.fromfile(str(setup / 'tiny.py'), import_custom_modules=False)
    cfg.custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)
    cfg.work_dir = str(work_dir)
    cfg.train_dataloader.batch_size = batch_size
    cfg.launcher = 'none'
    return cfg


@pytest.fixture(scope='module')
def two_process_train(setup):
    work = setup / 'train2'
    rc, out = torchrun(
        'dist_train.sh', [str(setup / 'tiny.py'), '2', '--work-dir', str(work)], setup
    )
    assert rc == 0, out[-4000:]
    return work, out


def test_cpu_launch_picks_gloo_and_cpu_ddp():
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='nccl'))))
    assert distributed_overrides(cfg, 'pytorch', cuda=False) == {
        'env_cfg.dist_cfg.timeout': 1800,
        'env_cfg.dist_cfg.backend': 'gloo',
        'model_wrapper_cfg.type': 'MMDistributedDataParallel',
        'model_wrapper_cfg.device_ids': None,
    }
    # GPUs: nccl and mmengine's own path, only a timeout
    assert distributed_overrides(cfg, 'pytorch', cuda=True) == {'env_cfg.dist_cfg.timeout': 1800}
    # an explicit choice is kept
    cfg = Config(dict(env_cfg=dict(dist_cfg=dict(backend='mpi', timeout=30))))
    assert 'env_cfg.dist_cfg.backend' not in distributed_overrides(cfg, 'pytorch', cuda=False)
    assert distributed_overrides(cfg, 'none', cuda=False) == {}
    with pytest.raises(ValueError, match='--launcher slurm on a machine without CUDA'):
        distributed_overrides(cfg, 'slurm', cuda=False)
    with pytest.raises(ValueError, match="--launcher='ssh'"):
        distributed_overrides(cfg, 'ssh', cuda=False)


def test_two_process_training_equals_one_process_on_the_global_batch(two_process_train, setup):
    work, out = two_process_train
    assert "backend='gloo'" in out and 'Distributed training: True' in out
    assert 'GPU number: 2' in out  # mmengine's name for the world size
    assert osp.isfile(work / f'iter_{ITERS}.pth')
    r0 = torch.load(work / 'params_rank0.pth')
    r1 = torch.load(work / 'params_rank1.pth')
    assert r0.keys() == r1.keys()
    for k in r0:  # DDP: the same reduced gradients on every rank
        assert torch.equal(r0[k], r1[k]), k

    runner = Runner.from_cfg(one_process_cfg(setup, setup / 'train1', batch_size=2))
    init = {k: v.detach().clone() for k, v in runner.model.state_dict().items()}
    runner.train()
    ref = torch.load(setup / 'train1' / 'params_rank0.pth')
    moved = max((ref[k].float() - init[k].float()).abs().max().item() for k in ref)
    assert moved > 1e-4  # training happened, so the comparison below can fail
    assert any(  # on both sides of the clustering layer
        not torch.equal(ref[k], init[k]) for k in ref if k.startswith('backbone.layers.0.')
    )
    assert any(not torch.equal(ref[k], init[k]) for k in ref if k.startswith('backbone.layers.11.'))
    worst = max((ref[k].float() - r0[k].float()).abs().max().item() for k in ref)
    assert worst <= 1e-6, f'2 processes vs 1: max parameter difference {worst:.3g}'


def test_two_process_testing_equals_one_process(two_process_train, setup):
    work, _ = two_process_train
    ckpt = str(work / f'iter_{ITERS}.pth')
    rc, out = torchrun(
        'dist_test.sh',
        [str(setup / 'tiny.py'), ckpt, '2', '--work-dir', str(setup / 'test2')],
        setup,
    )
    assert rc == 0, out[-4000:]
    found = re.findall(r'Iter\(test\) \[(\d+)/\d+\]\s+aAcc: ([\d.]+)\s+mIoU: ([\d.]+)', out)
    assert found, out[-3000:]
    cfg = one_process_cfg(setup, setup / 'test1', batch_size=1)
    cfg.load_from = ckpt
    one = Runner.from_cfg(cfg).test()
    _, aacc, miou = found[-1]
    assert float(miou) == pytest.approx(one['mIoU'], abs=0.005)  # logged with 2 decimals
    assert float(aacc) == pytest.approx(one['aAcc'], abs=0.005)


def test_a_failing_rank_ends_the_job_with_its_error(setup):
    rc, out = torchrun(
        'dist_train.sh', [str(setup / 'bad.py'), '2', '--work-dir', str(setup / 'bad')], setup, 180
    )
    assert rc != 0
    assert 'rank1' in out and ('FileNotFoundError' in out or 'No such file' in out), out[-3000:]
    assert 'ChildFailedError' in out  # torchrun names the failed rank and stops the others
