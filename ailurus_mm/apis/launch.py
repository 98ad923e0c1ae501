"""Run the stock MMSegmentation / MMDetection tools on ailurus_mm configs.

``tools/train.py`` and ``tools/test.py`` keep the stock command lines exactly by
running the scripts that ship inside the installed packages
(``<pkg>/.mim/tools/*.py``), picked by the config's ``default_scope``, after
importing ``ailurus_mm`` (registration and safe checkpoint loading). mmseg
1.2.2's wheel ships no ``train.py``; ``tools/train.py`` carries the stock
mmseg training entry for that case.
"""

from __future__ import annotations

import argparse
import importlib
import os
import os.path as osp
import pickle
import runpy
import sys
from typing import List, Optional

SCOPES = ('mmseg', 'mmdet')


def config_scope(config: str) -> str:
    """The ``default_scope`` of a config file (``'mmseg'`` or ``'mmdet'``)."""
    from mmengine.config import Config

    if not osp.isfile(config):
        raise FileNotFoundError(f'config file not found: {config}')
    scope = Config.fromfile(config).get('default_scope')
    if scope not in SCOPES:
        raise ValueError(f'{config}: default_scope={scope!r}; these tools support {SCOPES}')
    return scope


def stock_tool_path(scope: str, name: str) -> Optional[str]:
    """Path of ``<scope>/.mim/tools/<name>.py`` in the installed package, or None."""
    pkg = importlib.import_module(scope)
    path = osp.join(osp.dirname(pkg.__file__), '.mim', 'tools', f'{name}.py')
    return path if osp.isfile(path) else None


def _config_arg(argv: List[str]) -> str:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('config')
    args, _ = parser.parse_known_args([a for a in argv if a not in ('-h', '--help')])
    return args.config


def _run_args(argv: List[str]):
    """``--launcher``, ``--amp`` and ``--cfg-options`` of a stock command line."""
    from mmengine.config import DictAction

    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument('--launcher', default='none')
    parser.add_argument('--amp', action='store_true')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    args, _ = parser.parse_known_args(argv)
    return args


def stock_run_overrides(config: str, argv: List[str]) -> List[str]:
    """The command line for a stock tool with the multi-process / ``--amp``
    changes of :func:`ailurus_mm.apis.train.prepare_run` appended as
    ``--cfg-options`` (``--amp`` is replaced on a machine without CUDA), after
    joining the process group of a CPU ``pytorch`` launch."""
    import torch
    from mmengine.config import Config

    from .train import format_cfg_options, prepare_run

    args = _run_args(argv)
    cfg = Config.fromfile(config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    cpu_amp = args.amp and not torch.cuda.is_available()
    changes = prepare_run(cfg, args.launcher, amp=cpu_amp)
    if cpu_amp:
        argv = [a for a in argv if a != '--amp']
    if changes:
        argv = argv + ['--cfg-options'] + format_cfg_options(changes)
    return argv


def run_stock_tool(name: str, argv: Optional[List[str]] = None) -> bool:
    """Run the installed stock tool ``name`` for the config in ``argv``.

    Returns:
        bool: False when the scope's package ships no such tool (the caller
        then runs its own implementation); the tool's own exit otherwise.
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    import ailurus_mm  # noqa: F401  (registries + torch.load allow-list)

    if any(a in ('-h', '--help') for a in argv) and not any(a.endswith('.py') for a in argv):
        return False
    scope = config_scope(_config_arg(argv))
    path = stock_tool_path(scope, name)
    if path is None:
        return False
    argv = stock_run_overrides(_config_arg(argv), argv)
    sys.argv = [path] + argv
    os.environ.setdefault('LOCAL_RANK', '0')
    try:
        runpy.run_path(path, run_name='__main__')
    except pickle.UnpicklingError as e:
        # torch's weights-only refusal names the object but not our opt-in
        from ..utils import UnsafeCheckpointError, explain_unsafe_load

        if isinstance(e, UnsafeCheckpointError):
            raise
        ckpt = next(
            (a for a in argv if a.endswith(('.pth', '.pt', '.ckpt')) and osp.isfile(a)), None
        )
        raise explain_unsafe_load(e, ckpt) from e
    return True
