"""How tokens are assigned to clusters: the statistics of the paper's Fig. A-1.

Pure torch (no OpenMMLab import). For an assignment of ``N`` tokens to ``M``
clusters, the *cluster size* ``x`` is how many tokens a centre holds. The paper
plots, for several M,

* ``y1(x)``: the percentage of centres that hold ``x`` tokens (Fig. A-1a);
* ``y2(x)``: the number of such centres (Fig. A-1b).

Everything here returns integer counts (histograms, sums) so that per-image
results add up over a dataset; :func:`size_distribution` and
:func:`size_summary` turn accumulated counts into ``y1``/``y2`` and the
numbers that decide the paper's two claims. With ground truth,
:func:`token_label_histogram` counts the labels in every token's patch, and
:func:`boundary_counts` / :func:`class_cluster_counts` say where the
single-token clusters are and how coarse each class is seen.
"""

from __future__ import annotations

from typing import Dict, Optional, Sequence

import torch
from torch import Tensor

from ..ops import ClusterAssignment

__all__ = [
    'size_histogram',
    'size_distribution',
    'size_summary',
    'pixel_token_index',
    'token_label_histogram',
    'boundary_counts',
    'class_cluster_counts',
    'LARGE_SIZES',
    'ratio',
]

#: Cluster sizes whose counts decide claim (2): centres holding at least this
#: many tokens are "low-resolution regions".
LARGE_SIZES = (4, 8, 16)


def _sizes(sizes) -> Tensor:
    if isinstance(sizes, ClusterAssignment):
        sizes = sizes.sizes
    if not isinstance(sizes, Tensor) or sizes.dim() != 2:
        raise ValueError(
            'sizes must be a [B, M] tensor or a ClusterAssignment, got '
            f'{tuple(sizes.shape) if isinstance(sizes, Tensor) else type(sizes).__name__}'
        )
    s = sizes.round().long()
    if not torch.equal(s.to(sizes.dtype), sizes) or bool((s < 1).any()):
        raise ValueError('cluster sizes must be positive whole numbers')
    return s


def size_histogram(sizes, max_size: Optional[int] = None) -> Tensor:
    """Number of clusters of every size, per image.

    Args:
        sizes (Tensor | ClusterAssignment): ``[B, M]`` cluster sizes (tokens
            per cluster; float or int), or an assignment.
        max_size (int, optional): length of the histogram minus one (default:
            the largest size present); sizes above it raise.

    Returns:
        Tensor: ``[B, max_size + 1]`` int64, ``hist[b, x]`` = number of
        clusters of image ``b`` holding exactly ``x`` tokens (``hist[:, 0]``
        is 0). ``(hist * x).sum(1)`` is N for every image.
    """
    s = _sizes(sizes)
    b = s.shape[0]
    top = int(s.max()) if s.numel() else 0
    if max_size is None:
        max_size = top
    if top > max_size:
        raise ValueError(f'a cluster holds {top} tokens, more than max_size={max_size}')
    width = max_size + 1
    flat = (s + torch.arange(b, device=s.device)[:, None] * width).flatten()
    return torch.bincount(flat, minlength=b * width).view(b, width)


def size_distribution(hist: Tensor) -> Dict[str, Tensor]:
    """``y1`` and ``y2`` of Fig. A-1 from a size histogram.

    Args:
        hist (Tensor): ``[X]`` counts by size (e.g. summed over a dataset),
            or ``[I, X]`` per image (then ``y1`` is per image too).

    Returns:
        dict: ``x`` (sizes ``1 .. X-1``), ``y2`` (number of centres holding
        ``x`` tokens, same shape as ``hist[..., 1:]``), ``y1`` (``y2`` as a
        percentage of all centres, float64).
    """
    h = hist[..., 1:].long()
    total = h.sum(-1, keepdim=True)
    y1 = 100.0 * h.double() / total.clamp_min(1).double()
    return dict(x=torch.arange(1, hist.shape[-1], device=hist.device), y1=y1, y2=h)


def size_summary(hist: Tensor, large: Sequence[int] = LARGE_SIZES) -> Dict[str, float]:
    """The numbers that decide the paper's claims, from per-image histograms.

    Args:
        hist (Tensor): ``[I, X]`` per-image size histograms (:func:`size_histogram`).
        large (Sequence[int]): thresholds for "many tokens".

    Returns:
        dict: ``images``; ``clusters_per_image`` (mean M); ``single_share``
        (percent of all centres that hold one token, over the dataset);
        ``single_per_image`` (mean); ``largest`` (over the dataset);
        ``largest_per_image`` (mean of every image's largest);
        ``mode_size`` (the most frequent size over the dataset);
        ``ge{t}_per_image`` (mean number of centres holding >= t tokens) and
        ``ge{t}_token_share`` (percent of tokens in such centres) for every
        ``t`` in ``large``.
    """
    h = hist.long()
    if h.dim() != 2 or h.shape[0] < 1:
        raise ValueError(f'hist must be [I, X] with I >= 1, got {tuple(h.shape)}')
    i = h.shape[0]
    x = torch.arange(h.shape[1], device=h.device)
    total = h.sum(0)
    clusters = int(total.sum())
    tokens = int((total * x).sum())
    present = (h > 0) * x
    out = dict(
        images=i,
        clusters_per_image=clusters / i,
        single_share=100.0 * int(total[1]) / max(clusters, 1) if h.shape[1] > 1 else 0.0,
        single_per_image=int(total[1]) / i if h.shape[1] > 1 else 0.0,
        largest=int(present.max()),
        largest_per_image=float(present.amax(1).double().mean()),
        mode_size=int(total.argmax()),
    )
    for t in large:
        out[f'ge{t}_per_image'] = int(total[t:].sum()) / i
        out[f'ge{t}_token_share'] = 100.0 * int((total[t:] * x[t:]).sum()) / max(tokens, 1)
    return out


# ----------------------------------------------------------------------------
# where the clusters are: ground truth per token


def pixel_token_index(
    image_size: Sequence[int],
    grid: Sequence[int],
    patch_size: Optional[int] = None,
    input_size: Optional[Sequence[int]] = None,
) -> Tensor:
    """The token that covers every pixel of an image.

    The network input is the image resized to ``input_size = (h, w)`` (mmseg's
    ``img_shape``) and padded at the bottom/right to the token grid, each
    token covering ``patch_size x patch_size`` input pixels. A pixel maps to
    the token under its centre. Without ``patch_size``/``input_size`` the grid
    is stretched over the whole image.

    Args:
        image_size (Sequence[int]): ``(H, W)`` of the image to map (e.g. the
            original image, or its ground truth).
        grid (Sequence[int]): the token grid ``(gh, gw)``.
        patch_size (int, optional): input pixels per token side.
        input_size (Sequence[int], optional): ``(h, w)`` of the resized image
            inside the network input (before padding).

    Returns:
        Tensor: ``[H, W]`` int64 token indices in ``[0, gh * gw)``.
    """
    h, w = int(image_size[0]), int(image_size[1])
    gh, gw = int(grid[0]), int(grid[1])
    if (patch_size is None) != (input_size is None):
        raise ValueError('give both patch_size and input_size, or neither')
    if patch_size is None:
        span_h, span_w = float(gh), float(gw)  # the grid covers the image
    else:
        span_h = float(input_size[0]) / patch_size
        span_w = float(input_size[1]) / patch_size
    rows = ((torch.arange(h, dtype=torch.float64) + 0.5) * (span_h / h)).long().clamp_(0, gh - 1)
    cols = ((torch.arange(w, dtype=torch.float64) + 0.5) * (span_w / w)).long().clamp_(0, gw - 1)
    return rows[:, None] * gw + cols[None, :]


def token_label_histogram(
    seg: Tensor, pixel_token: Tensor, num_tokens: int, num_classes: int, ignore_index: int = 255
) -> Tensor:
    """Ground-truth pixels of every class in every token's patch.

    Args:
        seg (Tensor): ``[H, W]`` integer labels (``ignore_index`` and values
            outside ``[0, num_classes)`` are not counted).
        pixel_token (Tensor): ``[H, W]`` token of every pixel
            (:func:`pixel_token_index`).
        num_tokens (int): N.
        num_classes (int): C.
        ignore_index (int): label to skip.

    Returns:
        Tensor: ``[N, C]`` int64 pixel counts.
    """
    if seg.shape != pixel_token.shape:
        raise ValueError(
            f'seg {tuple(seg.shape)} and pixel_token {tuple(pixel_token.shape)} differ in shape'
        )
    s = seg.long().flatten()
    t = pixel_token.to(s.device).flatten()
    ok = (s >= 0) & (s < num_classes) & (s != ignore_index)
    flat = t[ok] * num_classes + s[ok]
    return torch.bincount(flat, minlength=num_tokens * num_classes).view(num_tokens, num_classes)


def _token_cluster_size(assignment: ClusterAssignment, index: int) -> Tensor:
    return assignment.sizes[index].gather(0, assignment.labels[index]).round().long()


def boundary_counts(
    assignment: ClusterAssignment, token_hist: Tensor, index: int = 0
) -> Dict[str, int]:
    """Whether single-token clusters sit on class boundaries (one image).

    A token is *labelled* if its patch holds a valid pixel and a *boundary*
    token if it holds two or more classes (ignored pixels do not count).

    Args:
        assignment (ClusterAssignment): the grouping.
        token_hist (Tensor): ``[N, C]`` from :func:`token_label_histogram`.
        index (int): image of the batch.

    Returns:
        dict: ``labelled``, ``boundary`` (all labelled tokens), ``single``,
        ``single_boundary`` (labelled tokens in one-token clusters): sum them
        over images; the single-token boundary share is
        ``single_boundary / single`` and the base rate ``boundary / labelled``.
    """
    classes = (token_hist > 0).sum(1)
    labelled = classes >= 1
    boundary = classes >= 2
    single = (_token_cluster_size(assignment, index) == 1) & labelled
    return dict(
        labelled=int(labelled.sum()),
        boundary=int(boundary.sum()),
        single=int(single.sum()),
        single_boundary=int((single & boundary).sum()),
    )


def class_cluster_counts(
    assignment: ClusterAssignment, token_hist: Tensor, index: int = 0
) -> Dict[str, Tensor]:
    """Cluster sizes per ground-truth class (one image), as sums to accumulate.

    A cluster's class is the majority class of the valid pixels of all its
    tokens (clusters without a valid pixel are not counted); a token's class
    is the majority class of its patch.

    Returns:
        dict of ``[C]`` int64 tensors: ``clusters`` (clusters of each class),
        ``cluster_tokens`` (tokens in them; mean tokens per cluster =
        ``cluster_tokens / clusters``), ``tokens`` (tokens of each class) and
        ``token_cluster_size`` (sum of the size of each such token's cluster;
        ``/ tokens`` = the size of the cluster an average pixel of the class
        lies in).
    """
    c = token_hist.shape[1]
    labels = assignment.labels[index]
    m = assignment.num_clusters
    chist = torch.zeros(m, c, dtype=torch.long, device=token_hist.device)
    chist.index_add_(0, labels.to(token_hist.device), token_hist.long())
    cvalid = chist.sum(1) > 0
    ccls = chist.argmax(1)[cvalid]
    csize = assignment.sizes[index].round().long().to(token_hist.device)[cvalid]
    tvalid = token_hist.sum(1) > 0
    tcls = token_hist.argmax(1)[tvalid]
    tsize = _token_cluster_size(assignment, index).to(token_hist.device)[tvalid]
    return dict(
        clusters=torch.bincount(ccls, minlength=c),
        cluster_tokens=torch.bincount(ccls, weights=csize.double(), minlength=c).round().long(),
        tokens=torch.bincount(tcls, minlength=c),
        token_cluster_size=torch.bincount(tcls, weights=tsize.double(), minlength=c).round().long(),
    )


def ratio(num, den) -> Optional[float]:
    """``num / den`` or None when ``den`` is 0 (for tables)."""
    return None if not den else float(num) / float(den)
