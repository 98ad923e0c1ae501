"""OpenMMLab glue: registered backbones that run ``ailurus_mm.ops``'s engine."""

from .ailurus_vit import DEFAULT_AILURUS, AiluRusVisionTransformer
from .layers import sized_layer_forward
from .reduction import AiluRusBackboneMixin

__all__ = [
    'AiluRusBackboneMixin',
    'AiluRusVisionTransformer',
    'DEFAULT_AILURUS',
    'sized_layer_forward',
]
