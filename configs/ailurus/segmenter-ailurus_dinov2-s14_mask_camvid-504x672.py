# Frozen DINOv2-S/14 on CamVid 504x672 with AiluRus, the paper's head: the
# Segmenter mask transformer of
# configs/camvid/segmenter_dinov2-s14_mask_frozen_camvid-504x672.py (the second
# real model; its weights are checkpoints/segmenter_dinov2-s14_mask_camvid_head.pth,
# full checkpoint: python tools/camvid/assemble_checkpoint.py --head
# checkpoints/segmenter_dinov2-s14_mask_camvid_head.pth --out
# ~/.cache/ailurus_mm/segmenter_dinov2-s14_mask_camvid.pth). The ailurus values
# are the linear-head model's (./segmenter-ailurus_dinov2-s14_linear_camvid-504x672.py),
# so no setting is tuned to one head; both heads' numbers: docs/results.md section 5.
_base_ = ['../camvid/segmenter_dinov2-s14_mask_frozen_camvid-504x672.py']

model = dict(
    # mmseg's EncoderDecoder + ailurus.reconstruct_level='logits' (same checkpoints)
    type='AiluRusEncoderDecoder',
    backbone=dict(
        ailurus=dict(
            enabled=True,
            method='adjacent',
            link_to='parent',
            cluster_after=2,
            keep_ratio=0.8,
            second_after=[5, 7, 9],
            second_keep_ratio=[0.5, 0.35, 0.25],
            stage_clustering='clusters',
            reconstruct='soft_residual',
            soft_temperature=0.1,
        )
    ),
)
