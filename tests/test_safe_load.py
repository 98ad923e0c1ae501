"""Checkpoint loading under torch 2.13's ``weights_only=True`` default.

The Runner tests use mmengine's own loading path (``Runner.resume`` and
``load_checkpoint``, which call ``torch.load`` without ``weights_only``) on a
checkpoint written by a real mmseg Runner, so they fail if the allow-list in
``ailurus_mm.utils.checkpoint`` misses anything such a checkpoint contains.
"""

import os.path as osp
import pickle
from pathlib import Path
from typing import Dict

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import Runner, load_checkpoint
from PIL import Image

import ailurus_mm.utils  # noqa: F401  (registers the allow-list)
from ailurus_mm.utils import (
    TRUSTED_GLOBALS_ENV,
    UnsafeCheckpointError,
    allow_checkpoint_globals,
    describe_safe_globals,
    load_checkpoint_safely,
    register_safe_globals,
)

NUM_CLASSES = 3


class NotAllowListed:
    """A class no allow-list knows: stands for arbitrary pickled objects."""

    def __init__(self, value: int) -> None:
        self.value = value


NOT_ALLOW_LISTED = f'{NotAllowListed.__module__}.{NotAllowListed.__qualname__}'


class _GetattrInit:
    """Pickles as ``getattr(HistoryBuffer, '__init__')``.

    With the real ``getattr`` allow-listed, such lookups reach
    ``__init__.__globals__`` and from there any builtin.
    """

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.fixture
def restore_safe_globals():
    """Undo opt-ins made by a test: torch's allow-list is process-wide."""
    saved = torch.serialization.get_safe_globals()
    yield
    torch.serialization.clear_safe_globals()
    torch.serialization.add_safe_globals(saved)


# --------------------------------------------------------------------------
# A real mmseg Runner: train 2 iterations, checkpoint, resume to 3.
# --------------------------------------------------------------------------


def _write_tiny_seg_data(root: Path, n: int = 4, size: int = 32) -> None:
    """Write ``n`` RGB images and uint8 label maps in an mmseg layout."""
    rng = np.random.default_rng(0)
    (root / 'img').mkdir(parents=True)
    (root / 'ann').mkdir(parents=True)
    for i in range(n):
        img = rng.integers(0, 256, (size, size, 3), dtype=np.uint8)
        ann = rng.integers(0, NUM_CLASSES, (size, size), dtype=np.uint8)
        Image.fromarray(img).save(root / 'img' / f'{i:03d}.png')
        Image.fromarray(ann).save(root / 'ann' / f'{i:03d}.png')


class _RecordIter(Hook):
    """Records the Runner state right after it resumed."""

    def __init__(self) -> None:
        self.iter_before_train = None
        self.loss_history_len = None

    def before_train(self, runner) -> None:
        self.iter_before_train = runner.iter
        loss = runner.message_hub.get_scalar('train/loss')
        self.loss_history_len = len(loss.data[0])


def _runner_cfg(data_root: Path, work_dir: Path, max_iters: int, name: str) -> Dict:
    """Config of a tiny ViT + FCN EncoderDecoder Runner (CPU, a second)."""
    metainfo = dict(classes=('a', 'b', 'c'), palette=[[0, 0, 0], [255, 0, 0], [0, 255, 0]])
    dataset = dict(
        type='BaseSegDataset',
        data_root=str(data_root),
        data_prefix=dict(img_path='img', seg_map_path='ann'),
        img_suffix='.png',
        seg_map_suffix='.png',
        metainfo=metainfo,
    )
    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='PackSegInputs'),
    ]
    model = dict(
        type='EncoderDecoder',
        data_preprocessor=dict(
            type='SegDataPreProcessor',
            mean=[123.675, 116.28, 103.53],
            std=[58.395, 57.12, 57.375],
            bgr_to_rgb=True,
            size=(32, 32),
        ),
        backbone=dict(
            type='VisionTransformer',
            img_size=(32, 32),
            patch_size=8,
            embed_dims=32,
            num_layers=2,
            num_heads=2,
            mlp_ratio=2,
            out_indices=(1,),
            final_norm=True,
        ),
        decode_head=dict(
            type='FCNHead',
            in_channels=32,
            channels=16,
            num_convs=1,
            concat_input=False,
            num_classes=NUM_CLASSES,
            norm_cfg=dict(type='BN'),
            loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0),
        ),
        train_cfg=dict(),
        test_cfg=dict(mode='whole'),
    )
    return dict(
        model=model,
        work_dir=str(work_dir),
        experiment_name=name,  # distinct MessageHub per Runner
        train_dataloader=dict(
            batch_size=2,
            num_workers=0,
            sampler=dict(type='InfiniteSampler', shuffle=True),
            dataset=dict(**dataset, pipeline=train_pipeline),
        ),
        val_dataloader=dict(
            batch_size=1,
            num_workers=0,
            sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dict(**dataset, pipeline=train_pipeline, indices=2),
        ),
        val_evaluator=dict(type='IoUMetric', iou_metrics=['mIoU']),
        train_cfg=dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=1),
        val_cfg=dict(type='ValLoop'),
        optim_wrapper=dict(
            type='OptimWrapper', optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01)
        ),
        param_scheduler=[
            dict(type='PolyLR', eta_min=1e-5, power=0.9, begin=0, end=max_iters, by_epoch=False)
        ],
        default_hooks=dict(
            timer=dict(type='IterTimerHook'),
            logger=dict(type='LoggerHook', interval=1),
            param_scheduler=dict(type='ParamSchedulerHook'),
            # save_best puts numpy scores into message_hub.runtime_info.
            checkpoint=dict(
                type='CheckpointHook', interval=1, by_epoch=False, save_best='mIoU', rule='greater'
            ),
            sampler_seed=dict(type='DistSamplerSeedHook'),
        ),
        log_processor=dict(by_epoch=False),
        default_scope='mmseg',
        env_cfg=dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo')),
        launcher='none',
        randomness=dict(seed=0),
    )


@pytest.fixture(scope='module')
def trained(tmp_path_factory) -> Dict[str, Path]:
    """Train the tiny Runner for 2 iterations; return data and checkpoint."""
    tmp = tmp_path_factory.mktemp('runner')
    _write_tiny_seg_data(tmp / 'data')
    # Through Config, as tools/train.py does (the model needs ConfigDicts).
    runner = Runner.from_cfg(
        Config(_runner_cfg(tmp / 'data', tmp / 'run1', 2, f'first_{tmp.name}'))
    )
    runner.train()
    ckpt = tmp / 'run1' / 'iter_2.pth'
    assert ckpt.is_file(), sorted(p.name for p in (tmp / 'run1').iterdir())
    return dict(data=tmp / 'data', ckpt=ckpt, root=tmp)


def test_runner_checkpoint_needs_the_allow_list(trained, restore_safe_globals):
    """torch alone refuses a Runner checkpoint; with our list it loads."""
    torch.serialization.clear_safe_globals()
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(trained['ckpt'], map_location='cpu')
    register_safe_globals()
    ckpt = torch.load(trained['ckpt'], map_location='cpu')
    assert ckpt['meta']['iter'] == 2
    hub = ckpt['message_hub']
    assert isinstance(hub['log_scalars']['train/loss'], HistoryBuffer)
    # The restored default statistics really work (restricted getattr).
    assert np.isfinite(hub['log_scalars']['train/loss'].mean())
    assert 'best_score' in hub['runtime_info']
    # Nothing in the file is left un-allow-listed.
    assert torch.serialization.get_unsafe_globals_in_checkpoint(str(trained['ckpt'])) == []


def test_runner_resume(trained):
    """A new Runner resumes at iteration 2 and finishes iteration 3."""
    record = _RecordIter()
    cfg = _runner_cfg(
        trained['data'], trained['root'] / 'run2', 3, f'resumed_{trained["root"].name}'
    )
    cfg.update(load_from=str(trained['ckpt']), resume=True)
    runner = Runner.from_cfg(Config(cfg))
    runner.register_hook(record)
    runner.train()
    assert record.iter_before_train == 2
    # The message hub (HistoryBuffer) was restored, not only the meta.
    assert record.loss_history_len == 2
    assert runner.iter == 3
    assert osp.isfile(trained['root'] / 'run2' / 'iter_3.pth')


def test_tools_test_style_load(trained):
    """``load_checkpoint(model, path)`` (tools/test.py, load_from) works."""
    runner_cfg = _runner_cfg(
        trained['data'], trained['root'] / 'run3', 2, f'load_{trained["root"].name}'
    )
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)
    model = MODELS.build(Config(runner_cfg).model)
    ckpt = load_checkpoint(model, str(trained['ckpt']), map_location='cpu')
    saved = ckpt['state_dict']
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, saved[key])
    assert ckpt['meta']['dataset_meta']['classes'] == ('a', 'b', 'c')


# --------------------------------------------------------------------------
# Anything else is refused, with a clear error and a working opt-in.
# --------------------------------------------------------------------------


def _save_untrusted(path: Path) -> None:
    torch.save({'state_dict': {'w': torch.ones(2)}, 'meta': {'extra': NotAllowListed(7)}}, path)


def test_unknown_object_is_refused_with_clear_error(tmp_path):
    path = tmp_path / 'untrusted.pth'
    _save_untrusted(path)
    with pytest.raises(pickle.UnpicklingError):  # torch itself refuses it
        torch.load(path, map_location='cpu')
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_safely(path)
    message = str(info.value)
    assert NOT_ALLOW_LISTED in message
    assert f'{TRUSTED_GLOBALS_ENV}="{NOT_ALLOW_LISTED}"' in message
    assert 'allow_checkpoint_globals' in message
    assert str(path) in message
    assert info.value.offending == [NOT_ALLOW_LISTED]
    # Still an UnpicklingError for code that already catches torch's error.
    assert isinstance(info.value, pickle.UnpicklingError)


def test_opt_in_by_function(tmp_path, restore_safe_globals):
    path = tmp_path / 'untrusted.pth'
    _save_untrusted(path)
    allow_checkpoint_globals(NOT_ALLOW_LISTED)  # the name from the message
    ckpt = load_checkpoint_safely(path)
    assert isinstance(ckpt['meta']['extra'], NotAllowListed)
    assert ckpt['meta']['extra'].value == 7


def test_opt_in_by_env_var(tmp_path, monkeypatch, restore_safe_globals):
    path = tmp_path / 'untrusted.pth'
    _save_untrusted(path)
    monkeypatch.setenv(TRUSTED_GLOBALS_ENV, f' collections.Counter, {NOT_ALLOW_LISTED} ')
    names = register_safe_globals()
    assert NOT_ALLOW_LISTED in names
    assert torch.load(path)['meta']['extra'].value == 7


def test_unlisted_numpy_dtype_is_named_and_can_be_opted_in(tmp_path, restore_safe_globals):
    """Only the dtypes seen in Runner checkpoints are allow-listed."""
    path = tmp_path / 'int32.pth'
    torch.save({'meta': {'counts': np.arange(3, dtype=np.int32)}}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_safely(path)
    assert info.value.offending == ['numpy.dtypes.Int32DType']
    allow_checkpoint_globals(*info.value.offending)
    loaded = load_checkpoint_safely(path)['meta']['counts']
    assert loaded.dtype == np.int32 and loaded.tolist() == [0, 1, 2]


def test_bad_opt_ins_are_rejected(monkeypatch, restore_safe_globals):
    with pytest.raises(ValueError, match='no_such_module_xyz'):
        allow_checkpoint_globals('no_such_module_xyz.Thing')
    with pytest.raises(ValueError, match="'collections.NoSuchThing'"):
        allow_checkpoint_globals('collections.NoSuchThing')
    # These would make every later weights-only load unsafe.
    for name in ('builtins.eval', 'builtins.getattr', 'os.system'):
        with pytest.raises(ValueError, match='arbitrary code'):
            allow_checkpoint_globals(name)
    with pytest.raises(ValueError, match='arbitrary code'):
        allow_checkpoint_globals(eval)
    monkeypatch.setenv(TRUSTED_GLOBALS_ENV, 'not_a_module_q.X')
    with pytest.raises(ValueError, match=f'{TRUSTED_GLOBALS_ENV}.*not_a_module_q.X'):
        register_safe_globals()


def test_getattr_stand_in_is_restricted(tmp_path):
    """Only getattr(HistoryBuffer, <default statistic>) is resolved."""
    path = tmp_path / 'getattr.pth'
    torch.save({'x': _GetattrInit()}, path)
    with pytest.raises(UnsafeCheckpointError) as info:
        load_checkpoint_safely(path)
    message = str(info.value)
    assert "getattr(mmengine.logging.history_buffer.HistoryBuffer, '__init__')" in message
    assert 'weights_only=False' in message  # no opt-in is offered
    assert TRUSTED_GLOBALS_ENV not in message


# --------------------------------------------------------------------------
# Plain weights.
# --------------------------------------------------------------------------


def test_plain_weights_load_weights_only(tmp_path):
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    path = tmp_path / 'weights.pth'
    torch.save(model.state_dict(), path)
    loaded = torch.load(path, map_location='cpu', weights_only=True)
    assert list(loaded) == list(model.state_dict())
    for key, value in model.state_dict().items():
        torch.testing.assert_close(loaded[key], value)
    # The wrapper and mmengine's path agree.
    also = load_checkpoint_safely(path)
    fresh = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4))
    load_checkpoint(fresh, str(path), map_location='cpu', strict=True)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(also[key], value)
        torch.testing.assert_close(fresh.state_dict()[key], value)


def test_allow_list_is_what_the_docs_say():
    """Every entry is documented and nothing dangerous is in it."""
    described = describe_safe_globals()
    registered = {
        f if isinstance(f, str) else f'{f.__module__}.{f.__qualname__}'
        for f in (
            g[1] if isinstance(g, tuple) else g for g in torch.serialization.get_safe_globals()
        )
    }
    assert set(described) <= registered
    assert all(why for why in described.values())
    # The only builtin is the restricted getattr stand-in, never the real one.
    assert getattr not in torch.serialization.get_safe_globals()
    assert not any(name.startswith(('os.', 'sys.', 'subprocess.')) for name in described)
    # Idempotent: a second registration adds nothing.
    before = len(torch.serialization.get_safe_globals())
    register_safe_globals()
    assert len(torch.serialization.get_safe_globals()) == before
