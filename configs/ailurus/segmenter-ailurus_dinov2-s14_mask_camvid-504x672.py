# Frozen DINOv2-S/14 + Segmenter head on CamVid 504x672 with AiluRus: only the
# delta over the unaccelerated reference. The ailurus values are provisional
# (the real-model sweep picks the defaults); override them with
# --cfg-options model.backbone.ailurus.keep_ratio=0.5 etc.
_base_ = ['../camvid/segmenter_dinov2-s14_mask_frozen_camvid-504x672.py']

model = dict(
    backbone=dict(ailurus=dict(enabled=True, cluster_after=4, keep_ratio=0.5)))
