"""Multi-process and mixed-precision training with mmengine's own Runner.

Two gaps of mmengine 0.10.7 on a machine without CUDA, closed by config
changes only (mmengine itself is not patched):

* ``--launcher pytorch``: mmengine's ``init_dist`` calls
  ``torch.cuda.set_device`` before ``init_process_group`` and wraps the model
  in ``MMDistributedDataParallel(device_ids=[LOCAL_RANK])``; both fail on a
  CPU. :func:`distributed_overrides` picks the gloo backend (nccl needs CUDA;
  an explicit non-nccl choice is kept), sets a collective timeout and
  ``model_wrapper_cfg.device_ids=None``; :func:`init_cpu_process_group` joins
  the process group torchrun describes (``RANK``, ``WORLD_SIZE``,
  ``MASTER_ADDR``, ``MASTER_PORT``) before the Runner, which then skips its own
  ``init_dist`` (it only initialises when ``torch.distributed`` is not yet).
  With CUDA nothing changes: nccl and mmengine's path, as in OpenMMLab.
* ``--amp``: mmengine's ``AmpOptimWrapper`` asserts CUDA. On CPU
  :func:`amp_overrides` selects :class:`CPUAutocastOptimWrapper`, the stock
  ``OptimWrapper`` with ``torch.autocast('cpu', dtype=torch.bfloat16)`` around
  forward and loss (bfloat16 has float32's exponent range: no loss scaling).
  On CUDA it is mmengine's ``AmpOptimWrapper`` (float16, dynamic loss scale).
"""

from __future__ import annotations

import contextlib
import datetime
import os
from typing import Dict, Optional

import torch
from mmengine.optim import OptimWrapper
from mmengine.registry import OPTIM_WRAPPERS

__all__ = [
    'CPUAutocastOptimWrapper',
    'DEFAULT_DIST_TIMEOUT',
    'LAUNCHERS',
    'amp_overrides',
    'distributed_overrides',
    'format_cfg_options',
    'init_cpu_process_group',
    'prepare_run',
]

#: seconds a collective may wait for the other ranks before the job fails
#: (mmengine's ``env_cfg.dist_cfg.timeout``; torch's own default is 30 min).
DEFAULT_DIST_TIMEOUT = 1800
LAUNCHERS = ('none', 'pytorch', 'slurm', 'mpi')


@OPTIM_WRAPPERS.register_module()
class CPUAutocastOptimWrapper(OptimWrapper):
    """The stock ``OptimWrapper`` with bfloat16 autocast in ``optim_context``.

    Args:
        dtype (str): autocast dtype; only ``'bfloat16'`` (what CPU autocast
            supports). Default: 'bfloat16'.
        **kwargs: ``OptimWrapper`` arguments.
    """

    def __init__(self, dtype: str = 'bfloat16', **kwargs):
        if dtype not in ('bfloat16', torch.bfloat16):
            raise ValueError(
                f"CPUAutocastOptimWrapper: dtype={dtype!r}; CPU autocast is 'bfloat16'"
            )
        super().__init__(**kwargs)
        self.cast_dtype = torch.bfloat16

    @contextlib.contextmanager
    def optim_context(self, model):
        with super().optim_context(model), torch.autocast('cpu', dtype=self.cast_dtype):
            yield


def amp_overrides(optim_wrapper_type: str, cuda: Optional[bool] = None) -> Dict[str, object]:
    """Config changes of ``--amp`` (``{}`` if the config already uses AMP).

    Raises:
        ValueError: for an optimizer wrapper other than ``OptimWrapper``.
    """
    cuda = torch.cuda.is_available() if cuda is None else cuda
    if optim_wrapper_type in ('AmpOptimWrapper', 'CPUAutocastOptimWrapper'):
        return {}
    if optim_wrapper_type != 'OptimWrapper':
        raise ValueError(f'--amp needs optim_wrapper.type=OptimWrapper, got {optim_wrapper_type!r}')
    if cuda:
        return {'optim_wrapper.type': 'AmpOptimWrapper', 'optim_wrapper.loss_scale': 'dynamic'}
    return {'optim_wrapper.type': 'CPUAutocastOptimWrapper', 'optim_wrapper.dtype': 'bfloat16'}


def distributed_overrides(cfg, launcher: str, cuda: Optional[bool] = None) -> Dict[str, object]:
    """Config changes for a multi-process run (``{}`` for ``launcher='none'``).

    Args:
        cfg (Config): the run's config (after the user's ``--cfg-options``).
        launcher (str): one of :data:`LAUNCHERS`.
        cuda (bool, optional): whether CUDA is used. Default: detected.

    Returns:
        dict: dotted keys for ``cfg.merge_from_dict`` / ``--cfg-options``.

    Raises:
        ValueError: unknown launcher; nccl asked for explicitly on a machine
            without CUDA is replaced, but a CPU run with ``slurm``/``mpi`` is
            refused (mmengine initialises those through CUDA).
    """
    if launcher not in LAUNCHERS:
        raise ValueError(f'--launcher={launcher!r} is not one of {LAUNCHERS}')
    if launcher == 'none':
        return {}
    cuda = torch.cuda.is_available() if cuda is None else cuda
    dist_cfg = dict(cfg.get('env_cfg', {}).get('dist_cfg', {}) or {})
    out: Dict[str, object] = {}
    if dist_cfg.get('timeout') is None:
        out['env_cfg.dist_cfg.timeout'] = DEFAULT_DIST_TIMEOUT
    if cuda:
        return out
    if launcher != 'pytorch':
        raise ValueError(
            f'--launcher {launcher} on a machine without CUDA: mmengine initialises slurm/mpi '
            'jobs through CUDA; run CPU jobs with torchrun '
            '(tools/dist_train.sh, --launcher pytorch)'
        )
    if dist_cfg.get('backend', 'nccl') == 'nccl':
        out['env_cfg.dist_cfg.backend'] = 'gloo'
    wrapper = cfg.get('model_wrapper_cfg') or {}
    if wrapper.get('type', 'MMDistributedDataParallel') in (
        'MMDistributedDataParallel',
        'DistributedDataParallel',
    ):
        out['model_wrapper_cfg.type'] = wrapper.get('type', 'MMDistributedDataParallel')
        out['model_wrapper_cfg.device_ids'] = None  # a CPU module takes no device ids
    return out


def init_cpu_process_group(dist_cfg: dict) -> bool:
    """Join torchrun's process group on CPU (what ``init_dist`` would do
    without its ``torch.cuda.set_device``). No-op if already initialised.

    Returns:
        bool: whether this call initialised the group.

    Raises:
        RuntimeError: naming the torchrun variables that are missing.
    """
    import torch.distributed as dist

    if dist.is_initialized():
        return False
    missing = [
        k for k in ('RANK', 'WORLD_SIZE', 'MASTER_ADDR', 'MASTER_PORT') if k not in os.environ
    ]
    if missing:
        raise RuntimeError(
            f'--launcher pytorch: environment variables {missing} are not set; start the job '
            'with torchrun (tools/dist_train.sh / tools/dist_test.sh)'
        )
    backend = dist_cfg.get('backend', 'gloo')
    timeout = datetime.timedelta(seconds=float(dist_cfg.get('timeout', DEFAULT_DIST_TIMEOUT)))
    dist.init_process_group(
        backend=backend,
        rank=int(os.environ['RANK']),
        world_size=int(os.environ['WORLD_SIZE']),
        timeout=timeout,
    )
    return True


def prepare_run(cfg, launcher: str = 'none', amp: bool = False) -> Dict[str, object]:
    """Apply the launcher's and ``--amp``'s config changes to ``cfg`` and, for
    a CPU ``pytorch`` launch, join the process group.

    Returns:
        dict: the dotted-key changes made (for logging or ``--cfg-options``).
    """
    changes = distributed_overrides(cfg, launcher)
    if amp:
        changes.update(amp_overrides(cfg.optim_wrapper.get('type', 'OptimWrapper')))
    cfg.merge_from_dict(changes)
    if launcher == 'pytorch' and not torch.cuda.is_available():
        init_cpu_process_group(dict(cfg.env_cfg.dist_cfg))
    return changes


def format_cfg_options(changes: Dict[str, object]) -> list:
    """``{'a.b': None, 'c': 3}`` -> ``['a.b=None', 'c=3']`` (``--cfg-options``)."""
    return [f'{k}={v}' for k, v in changes.items()]
