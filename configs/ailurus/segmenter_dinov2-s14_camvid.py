# Short alias of the AiluRus frozen DINOv2-S/14 Segmenter on CamVid.
_base_ = ['./segmenter-ailurus_dinov2-s14_linear_camvid-504x672.py']
