"""ailurus_mm: AiluRus adaptive-resolution token clustering for OpenMMLab ViTs.

Importing this package registers everything it provides with the OpenMMLab
registries, so ``custom_imports = dict(imports=['ailurus_mm'])`` is all a
config needs, and makes ``torch.load`` (``weights_only=True`` in torch 2.13)
accept the metadata objects of mmengine/mmseg/mmdet checkpoints.
"""
from .version import __version__

__all__ = ['__version__']
