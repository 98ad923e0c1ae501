"""The package imports, registers its modules and sits on a working OpenMMLab stack."""

import importlib

import torch


def test_import_and_version():
    import ailurus_mm

    assert ailurus_mm.__version__.count('.') == 2


def test_registries_hold_our_modules():
    from mmseg.registry import DATASETS, MODELS

    import ailurus_mm  # noqa: F401

    assert MODELS.get('AiluRusVisionTransformer') is ailurus_mm.models.AiluRusVisionTransformer
    assert DATASETS.get('CamVidDataset') is ailurus_mm.datasets.CamVidDataset


def test_custom_imports_is_all_a_config_needs(tmp_path):
    from mmengine.config import Config

    cfg_file = tmp_path / 'c.py'
    cfg_file.write_text(
        "custom_imports = dict(imports=['ailurus_mm'], allow_failed_imports=False)\n"
        "model = dict(type='AiluRusVisionTransformer', img_size=32, patch_size=8, embed_dims=16,"
        ' num_layers=2, num_heads=2, ailurus=dict(cluster_after=1, keep_ratio=0.5))\n'
    )
    cfg = Config.fromfile(str(cfg_file))
    from mmseg.registry import MODELS

    model = MODELS.build(cfg.model)
    out = model(torch.randn(1, 3, 32, 32))
    assert out[0].shape == (1, 16, 4, 4)


def test_compiled_mmcv_ops():
    ext = importlib.import_module('mmcv._ext')  # raises if the ops were not compiled
    assert hasattr(ext, 'nms')
    from mmcv.ops import nms, roi_align

    boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0], [20.0, 20.0, 30.0, 30.0]])
    _, keep = nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5)
    assert keep.tolist() == [0, 2]
    feat = torch.arange(16.0).view(1, 1, 4, 4)
    out = roi_align(feat, torch.tensor([[0.0, 0.0, 0.0, 4.0, 4.0]]), (2, 2), 1.0, 2, 'avg', True)
    assert out.shape == (1, 1, 2, 2)


def test_pinned_stack():
    import mmcv
    import mmdet
    import mmengine
    import mmseg

    assert torch.__version__.split('+')[0] == '2.13.0'
    assert (mmengine.__version__, mmcv.__version__, mmseg.__version__, mmdet.__version__) == (
        '0.10.7',
        '2.1.0',
        '1.2.2',
        '3.3.0',
    )
