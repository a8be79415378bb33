"""Diversity of generated images: ``1 - mean pairwise MS-SSIM`` within each class.

MS-SSIM comes from MONAI (:class:`monai.metrics.MultiScaleSSIMMetric`). Its default 11-voxel kernel
and five scales need images larger than 64x64, so :func:`ms_ssim_settings` picks, for the image
size at hand, the largest number of scales (the standard MS-SSIM weights, renormalised) and kernel
that MONAI accepts. The settings used are returned with the score, so numbers are comparable only
between runs that report the same settings.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import MultiScaleSSIMMetric

from .preprocess import ImageInput, preprocess_images

__all__ = ["MS_SSIM_WEIGHTS", "ms_ssim_settings", "pairwise_ms_ssim", "diversity"]

#: the five-scale weights of Wang et al. (2003), as MONAI uses them.
MS_SSIM_WEIGHTS: tuple[float, ...] = (0.0448, 0.2856, 0.3001, 0.2363, 0.1333)


def ms_ssim_settings(spatial_size: Sequence[int], max_kernel: int = 7) -> dict[str, Any]:
    """Kernel size and scale weights that MONAI's MS-SSIM accepts for images of ``spatial_size``.

    MONAI requires ``size // (n_scales - 1) ** 2 > kernel_size - 1`` along every axis. The most scales
    (up to five) with a kernel of at least 3 win; the kernel is the largest odd size <= ``max_kernel``
    that fits, with Gaussian sigma ``min(1.5, kernel_size / 3)``.

    Args:
        spatial_size: ``(H, W)`` or ``(X, Y, Z)``.
        max_kernel: the largest (odd) Gaussian kernel to use.

    Returns:
        ``{"kernel_size": k, "kernel_sigma": sigma, "weights": (w_1, ..., w_s)}`` (weights sum to 1).

    Raises:
        ValueError: an axis shorter than 4 voxels.
    """
    size = [int(s) for s in spatial_size]
    if len(size) not in (2, 3) or min(size) < 4:
        raise ValueError(f"MS-SSIM needs a 2D or 3D spatial size with every axis >= 4, got {tuple(size)}")
    if max_kernel < 3 or max_kernel % 2 == 0:
        raise ValueError(f"max_kernel must be an odd number >= 3, got {max_kernel}")
    for scales in range(len(MS_SSIM_WEIGHTS), 0, -1):
        divisor = max(1, scales - 1) ** 2
        kernel = min(max_kernel, min(s // divisor for s in size))  # need size // divisor > kernel - 1
        kernel = kernel if kernel % 2 == 1 else kernel - 1
        if kernel >= 3:
            weights = np.asarray(MS_SSIM_WEIGHTS[:scales])
            weights = tuple(float(w) for w in weights / weights.sum())
            # MONAI's sigma 1.5, narrowed for small kernels so the Gaussian is not cut to a box filter
            return {"kernel_size": kernel, "kernel_sigma": min(1.5, kernel / 3.0), "weights": weights}
    raise ValueError(f"images of size {tuple(size)} are too small for MS-SSIM")  # unreachable for size >= 4


def pairwise_ms_ssim(x: torch.Tensor, pairs: np.ndarray, batch_size: int = 256) -> torch.Tensor:
    """MS-SSIM of the given pairs of one batch.

    Args:
        x: ``(N, C, *spatial)`` float in ``[0, 1]``.
        pairs: ``(P, 2)`` integer indices into ``x``.
        batch_size: pairs per MONAI call.

    Returns:
        ``(P,)`` MS-SSIM per pair (mean over channels).
    """
    settings = ms_ssim_settings(x.shape[2:])
    metric = MultiScaleSSIMMetric(spatial_dims=x.ndim - 2, data_range=1.0, reduction="none", **settings)
    scores = []
    for start in range(0, len(pairs), batch_size):
        chunk = torch.as_tensor(pairs[start : start + batch_size], dtype=torch.long)
        scores.append(metric(x[chunk[:, 0]], x[chunk[:, 1]]).reshape(len(chunk), -1).mean(dim=1))
    return torch.cat(scores) if scores else torch.zeros(0)


def diversity(
    images: ImageInput,
    labels: Sequence[Hashable] | None = None,
    spatial_dims: int = 2,
    channels: int = 3,
    max_pairs: int = 500,
    seed: int = 0,
) -> dict[str, Any]:
    """``1 - mean pairwise MS-SSIM`` within each class, and its mean over classes.

    Args:
        images: ``N`` images in any layout :func:`~medgen_monai.metrics.preprocess.preprocess_images`
            accepts (uint8 channel-last phantoms, float channel-first generator output, volumes).
        labels: ``N`` class keys (anything hashable; a multi-label tuple counts as one key); ``None``: one class.
        spatial_dims: 2 or 3.
        channels: image channels.
        max_pairs: at most this many pairs per class, drawn without replacement (seeded) when a class has more.
        seed: seed of the pair draw.

    Returns:
        ``{"diversity": mean over classes, "per_class": {class: value}, "pairs": {class: count},
        "settings": MS-SSIM kernel and weights}``. Classes with fewer than two images are skipped.

    Raises:
        ValueError: ``labels`` of another length than ``images``; no class with two images.
    """
    if max_pairs < 1:
        raise ValueError(f"max_pairs must be >= 1, got {max_pairs}")
    x = preprocess_images(images, spatial_dims, channels)
    keys = [None] * x.shape[0] if labels is None else [tuple(k) if isinstance(k, list) else k for k in labels]
    if len(keys) != x.shape[0]:
        raise ValueError(f"labels: got {len(keys)} labels for {x.shape[0]} images")
    members: dict[Hashable, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        members[key].append(i)
    rng = np.random.default_rng(seed)
    per_class: dict[str, float] = {}
    counts: dict[str, int] = {}
    for key, index in members.items():
        if len(index) < 2:
            continue
        rows, cols = np.triu_indices(len(index), k=1)
        if len(rows) > max_pairs:
            keep = np.sort(rng.choice(len(rows), size=max_pairs, replace=False))
            rows, cols = rows[keep], cols[keep]
        pairs = np.stack([np.asarray(index)[rows], np.asarray(index)[cols]], axis=1)
        name = "all" if key is None else str(key)
        per_class[name] = float(1.0 - pairwise_ms_ssim(x, pairs).mean())
        counts[name] = len(pairs)
    if not per_class:
        raise ValueError("diversity needs at least one class with two or more images")
    return {
        "diversity": float(np.mean(list(per_class.values()))),
        "per_class": per_class,
        "pairs": counts,
        "settings": ms_ssim_settings(x.shape[2:]),
    }
