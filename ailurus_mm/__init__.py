"""ailurus_mm: AiluRus adaptive-resolution token clustering for OpenMMLab ViTs.

Importing this package registers everything it provides with the OpenMMLab
registries, so ``custom_imports = dict(imports=['ailurus_mm'])`` is all a
config needs, and makes ``torch.load`` (``weights_only=True`` in torch 2.13)
accept the metadata objects of mmengine/mmseg/mmdet checkpoints (see
:mod:`ailurus_mm.utils.checkpoint`). The algorithm itself lives in
:mod:`ailurus_mm.ops` as pure torch functions.
"""

from . import (
    apis,  # noqa: F401  (CPUAutocastOptimWrapper for --amp on CPU)
    datasets,  # noqa: F401  (mmseg DATASETS)
    models,  # noqa: F401  (mmseg MODELS)
    ops,  # noqa: F401  (pure torch, no OpenMMLab import)
    utils,  # noqa: F401  (safe torch.load allow-list, at import)
)
from .version import __version__
from .visualization import hooks as _vis_hooks  # noqa: F401  (mmseg HOOKS, VISUALIZERS)

__all__ = ['__version__']
