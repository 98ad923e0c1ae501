# Short alias used in the README and the mission statement.
_base_ = ['./segmenter-ailurus_vit-l_mask_8xb1-160k_ade20k-640x640.py']
