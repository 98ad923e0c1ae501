"""OpenMMLab glue: registered backbones (mmseg ViT, mmdet CAE ViT) on ``ailurus_mm.ops``."""

from .ailurus_vit import DEFAULT_AILURUS, AiluRusVisionTransformer
from .cae_vit import AiluRusCAEViT
from .layers import sized_layer_forward
from .reduction import AiluRusBackboneMixin
from .segmentor import AiluRusEncoderDecoder

__all__ = [
    'AiluRusBackboneMixin',
    'AiluRusCAEViT',
    'AiluRusEncoderDecoder',
    'AiluRusVisionTransformer',
    'DEFAULT_AILURUS',
    'sized_layer_forward',
]
