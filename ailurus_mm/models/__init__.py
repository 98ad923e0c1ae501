"""OpenMMLab glue: registered models that call ``ailurus_mm.ops``."""

from .ailurus_vit import DEFAULT_AILURUS, AiluRusVisionTransformer, build_ailurus_cfg
from .layers import sized_layer_forward

__all__ = [
    'AiluRusVisionTransformer',
    'DEFAULT_AILURUS',
    'build_ailurus_cfg',
    'sized_layer_forward',
]
