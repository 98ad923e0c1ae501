"""Drawing an assignment on its image: adaptive resolution made visible.

Pure numpy/torch (like ToMe's ``make_visualization``): cluster borders on the
image, one-token (full-resolution) clusters tinted.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from ..ops import ClusterAssignment

__all__ = ['cluster_overlay', 'token_label_map']


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
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f'image must be [H, W, 3], got {image.shape}')
    if not 0.0 <= single_alpha <= 1.0:
        raise ValueError(f'single_alpha={single_alpha} is outside [0, 1]')
    cell = token_label_map(assignment, image.shape[:2], index)
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
