"""Drawing an assignment on its image: adaptive resolution made visible.

Pure numpy/torch (like ToMe's ``make_visualization``): cluster borders on the
image, one-token (full-resolution) clusters tinted. :func:`make_visualization`
draws on any image of the input (e.g. the original file) given how the
network input was made from it (``patch_size`` and mmseg's ``img_shape``);
:func:`cluster_overlay` draws on an image that spans the token grid.
"""

from __future__ import annotations

from typing import Optional, Sequence

import numpy as np

from ..ops import ClusterAssignment

__all__ = ['cluster_overlay', 'make_visualization', 'token_label_map']


def token_label_map(
    assignment: ClusterAssignment, size: Sequence[int], index: int = 0
) -> np.ndarray:
    """Every pixel's cluster id, the token grid stretched to ``size = (H, W)``.

    Args:
        assignment (ClusterAssignment): the grouping.
        size (Sequence[int]): ``(H, W)`` of the image to draw on.
        index (int): image of the batch.

    Returns:
        np.ndarray: ``[H, W]`` int64 cluster ids.
    """
    if not 0 <= index < assignment.labels.shape[0]:
        raise ValueError(
            f'index={index} is outside the batch [0, {assignment.labels.shape[0] - 1}]'
        )
    gh, gw = assignment.hw
    h, w = int(size[0]), int(size[1])
    labels = assignment.labels[index].reshape(gh, gw).cpu().numpy()
    rows = np.minimum(np.arange(h) * gh // h, gh - 1)
    cols = np.minimum(np.arange(w) * gw // w, gw - 1)
    return labels[rows[:, None], cols[None, :]]


def cluster_overlay(
    image: np.ndarray,
    assignment: ClusterAssignment,
    index: int = 0,
    border_color: Sequence[int] = (255, 255, 0),
    single_color: Sequence[int] = (255, 0, 255),
    single_alpha: float = 0.35,
) -> np.ndarray:
    """The image with cluster borders drawn and one-token clusters tinted.

    Args:
        image (np.ndarray): ``[H, W, 3]`` uint8 image (any channel order;
            the colours are in that order). Its extent is the token grid's
            (e.g. the network input before padding).
        assignment (ClusterAssignment): the grouping of the image's tokens.
        index (int): image of the batch.
        border_color (Sequence[int]): colour of the borders between clusters.
        single_color (Sequence[int]): tint of single-token clusters.
        single_alpha (float): tint strength in ``[0, 1]`` (0: no tint).

    Returns:
        np.ndarray: ``[H, W, 3]`` uint8.
    """
    return make_visualization(
        image,
        assignment,
        index,
        border_color=border_color,
        single_color=single_color,
        single_alpha=single_alpha,
    )


def make_visualization(
    image: np.ndarray,
    assignment: ClusterAssignment,
    index: int = 0,
    patch_size: Optional[int] = None,
    input_size: Optional[Sequence[int]] = None,
    border_color: Sequence[int] = (255, 255, 0),
    single_color: Sequence[int] = (255, 0, 255),
    single_alpha: float = 0.35,
) -> np.ndarray:
    """The overlay of an assignment on an image (ToMe's ``make_visualization``).

    Every pixel takes the cluster of the token under it; borders between
    clusters are drawn one pixel wide and one-token (full-resolution)
    clusters are tinted.

    Args:
        image (np.ndarray): ``[H, W, 3]`` uint8 image, any channel order (the
            colours are in that order), at any size.
        assignment (ClusterAssignment): the grouping of the image's tokens.
        index (int): image of the batch.
        patch_size (int, optional): input pixels per token side.
        input_size (Sequence[int], optional): ``(h, w)`` of ``image`` resized
            inside the network input before padding (mmseg's ``img_shape``).
            With ``patch_size``, tokens are mapped through the resize and the
            padded tokens are never drawn; without both, the token grid is
            stretched over the image.
        border_color (Sequence[int]): colour of the borders between clusters.
        single_color (Sequence[int]): tint of single-token clusters.
        single_alpha (float): tint strength in ``[0, 1]`` (0: no tint).

    Returns:
        np.ndarray: ``[H, W, 3]`` uint8.
    """
    from ..analysis.assignment_stats import pixel_token_index

    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(
            f'image must be an [H, W, 3] array, got {getattr(image, "shape", type(image))}'
        )
    if not 0.0 <= single_alpha <= 1.0:
        raise ValueError(f'single_alpha={single_alpha} is outside [0, 1]')
    if not 0 <= index < assignment.labels.shape[0]:
        raise ValueError(
            f'index={index} is outside the batch [0, {assignment.labels.shape[0] - 1}]'
        )
    tok = pixel_token_index(image.shape[:2], assignment.hw, patch_size, input_size).numpy()
    cell = assignment.labels[index].cpu().numpy()[tok]
    out = image.astype(np.float32).copy()
    single = (assignment.sizes[index] == 1).cpu().numpy()[cell]
    out[single] = (1 - single_alpha) * out[single] + single_alpha * np.asarray(
        single_color, np.float32
    )
    edge = np.zeros(cell.shape, bool)
    edge[1:, :] |= cell[1:, :] != cell[:-1, :]
    edge[:, 1:] |= cell[:, 1:] != cell[:, :-1]
    out[edge] = border_color
    return out.round().clip(0, 255).astype(np.uint8)
