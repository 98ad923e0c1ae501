# Segmenter ViT-S/16 with AiluRus: only the deltas over the stock mmseg config.
# ailurus: a speed setting without an accuracy measurement here (docs/results.md); override any
# of them with --cfg-options model.backbone.ailurus.keep_ratio=0.5 etc.
_base_ = ['mmseg::segmenter/segmenter_vit-s_mask_8xb1-160k_ade20k-512x512.py']
custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)

model = dict(
    # mmseg's EncoderDecoder + ailurus.reconstruct_level='logits' (same checkpoints)
    type='AiluRusEncoderDecoder',
    # Test with an official trained checkpoint (loaded unchanged); for training
    # point model.backbone.init_cfg at a local pretrained file instead of the
    # stock URL: nothing is downloaded at run time.
    pretrained=None,
    backbone=dict(type='AiluRusVisionTransformer', ailurus=dict(cluster_after=2, keep_ratio=0.4)),
)
