"""Utilities for ailurus_mm.

Importing this package allow-lists the globals that mmengine/mmseg/mmdet
Runner checkpoints need for ``torch.load(weights_only=True)`` (the torch 2.13
default), see :mod:`ailurus_mm.utils.checkpoint`.
"""

from .checkpoint import (
    TRUSTED_GLOBALS_ENV,
    UnsafeCheckpointError,
    allow_checkpoint_globals,
    describe_safe_globals,
    explain_unsafe_load,
    load_checkpoint_safely,
    register_safe_globals,
)

# Done at import so that mmengine's own torch.load calls (Runner.resume,
# load_checkpoint) accept mmengine checkpoints once ailurus_mm is imported,
# e.g. through ``custom_imports``.
register_safe_globals()

__all__ = [
    'TRUSTED_GLOBALS_ENV',
    'UnsafeCheckpointError',
    'allow_checkpoint_globals',
    'describe_safe_globals',
    'explain_unsafe_load',
    'load_checkpoint_safely',
    'register_safe_globals',
]
