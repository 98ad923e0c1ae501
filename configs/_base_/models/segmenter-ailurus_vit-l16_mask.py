# Segmenter ViT-L/16 mask head with the AiluRus backbone: the stock mmseg
# Segmenter model file with the ViT-L sizes (as in the stock ViT-L config).
_base_ = ['mmseg::_base_/models/segmenter_vit-b16_mask.py']
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)
model = dict(
    pretrained=None,
    backbone=dict(
        type='AiluRusVisionTransformer',
        embed_dims=1024,
        num_layers=24,
        num_heads=16,
        ailurus=dict(cluster_after=2, keep_ratio=0.4),
    ),
    decode_head=dict(in_channels=1024, channels=1024, num_heads=16, embed_dims=1024),
)
