"""The ONE image preprocessing used by every metric: audit training, attribute accuracy, FID, diversity.

Rules (so that real phantoms, generated images and user files all land in the same space):

* 2D ``uint8`` images are in the phantom layout, channel-last: ``(H, W)`` grey or ``(H, W, 3)`` RGB,
  optionally with a leading batch axis, and are scaled by ``1 / 255``.
* 2D floating-point images are channel-first ``(C, H, W)`` or ``(B, C, H, W)`` (what a generator
  decodes) and are assumed to be in ``[0, 1]``; they are clamped to it.
* 3D volumes ``(X, Y, Z)``, ``(B, X, Y, Z)`` or ``(B, C, X, Y, Z)`` of any dtype are scaled per volume
  from their 0th to their 99.5th intensity percentile to ``[0, 1]`` and clipped, as CCELLA (MONAI
  MAISI) scales its MRI volumes.
* A sequence of images is processed image by image and stacked (sizes may differ when ``size`` is given).
* When ``size`` is given and differs from the image's spatial size, the image is resized with
  (anti-aliased, for 2D) linear interpolation, so an audit network trained at 64x64 can judge a
  generator that makes 128x128.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from monai.transforms import ScaleIntensityRangePercentiles

__all__ = ["ImageInput", "preprocess_images", "percentile_scale"]

#: what :func:`preprocess_images` accepts: one array/tensor (optionally batched) or a sequence of them.
ImageInput = np.ndarray | torch.Tensor | Sequence[Any]

#: CCELLA / MAISI intensity scaling of MRI volumes: 0th-99.5th percentile -> [0, 1], clipped.
_PERCENTILE_SCALER = ScaleIntensityRangePercentiles(lower=0.0, upper=99.5, b_min=0.0, b_max=1.0, clip=True)


def percentile_scale(volumes: torch.Tensor) -> torch.Tensor:
    """Scale each volume of a batch from its 0-99.5 intensity percentiles to ``[0, 1]`` (clipped).

    Args:
        volumes: ``(B, C, X, Y, Z)`` float tensor; all channels of one volume share the percentiles.

    Returns:
        ``(B, C, X, Y, Z)`` float32 tensor in ``[0, 1]``.
    """
    if volumes.ndim != 5:
        raise ValueError(f"percentile_scale expects (B, C, X, Y, Z), got shape {tuple(volumes.shape)}")
    volumes = volumes.float()
    # A constant volume has no range: map it to 0 instead of letting the scaler divide by zero.
    out = torch.zeros_like(volumes)
    for i, volume in enumerate(volumes):
        if torch.amax(volume) > torch.amin(volume):
            out[i] = torch.as_tensor(_PERCENTILE_SCALER(volume))
    return out


def _as_tensor(image: Any) -> torch.Tensor:
    if isinstance(image, torch.Tensor):
        return image.detach().cpu()
    if isinstance(image, np.ndarray):
        return torch.from_numpy(np.ascontiguousarray(image))
    raise ValueError(
        f"images must be numpy arrays or torch tensors (or a sequence of them), got {type(image).__name__}"
    )


def _channel_first_2d(image: torch.Tensor, channels: int) -> torch.Tensor:
    """One 2D array/tensor (maybe batched) -> ``(B, C, H, W)`` float in [0, 1]."""
    shape = tuple(image.shape)
    if image.dtype == torch.uint8:
        if channels == 1 and image.ndim == 2:
            image = image[None, None]
        elif channels == 1 and image.ndim == 3:
            image = image[:, None]
        elif channels > 1 and image.ndim == 3 and shape[-1] == channels:
            image = image.permute(2, 0, 1)[None]
        elif channels > 1 and image.ndim == 4 and shape[-1] == channels:
            image = image.permute(0, 3, 1, 2)
        else:
            raise ValueError(
                f"uint8 2D images must be channel-last (H, W{', ' + str(channels) if channels > 1 else ''}) "
                f"with an optional batch axis first; got shape {shape} for {channels} channel(s)"
            )
        return image.float() / 255.0
    if not (image.is_floating_point() or image.dtype in (torch.int16, torch.int32, torch.int64)):
        raise ValueError(f"2D images must be uint8 (channel-last) or float (channel-first), got dtype {image.dtype}")
    if image.ndim == 3 and shape[0] == channels:
        image = image[None]
    if image.ndim != 4 or image.shape[1] != channels:
        raise ValueError(
            f"floating-point 2D images must be channel-first (C, H, W) or (B, C, H, W) with C={channels}, "
            f"got shape {shape}"
        )
    return image.float().clamp(0.0, 1.0)


def _channel_first_3d(volume: torch.Tensor, channels: int) -> torch.Tensor:
    """One 3D volume (maybe batched) -> ``(B, C, X, Y, Z)`` float in [0, 1] by percentile scaling."""
    shape = tuple(volume.shape)
    if volume.ndim == 3 and channels == 1:
        volume = volume[None, None]
    elif volume.ndim == 4 and channels == 1:
        volume = volume[:, None]
    elif volume.ndim == 4 and shape[0] == channels:
        volume = volume[None]
    if volume.ndim != 5 or volume.shape[1] != channels:
        raise ValueError(
            f"3D volumes must be (X, Y, Z), (B, X, Y, Z) or (B, C, X, Y, Z) with C={channels}, got shape {shape}"
        )
    return percentile_scale(volume)


def _resize(images: torch.Tensor, size: tuple[int, ...]) -> torch.Tensor:
    if tuple(images.shape[2:]) == size:
        return images
    if images.ndim == 4:
        # Anti-aliasing keeps a 256x256 image's fine texture from aliasing into the 64x64 audit input.
        return F.interpolate(images, size=size, mode="bilinear", align_corners=False, antialias=True).clamp(0.0, 1.0)
    return F.interpolate(images, size=size, mode="trilinear", align_corners=False).clamp(0.0, 1.0)


def preprocess_images(
    images: ImageInput, spatial_dims: int, channels: int, size: Sequence[int] | None = None
) -> torch.Tensor:
    """Turn images in any accepted layout into a channel-first float batch in ``[0, 1]``.

    Args:
        images: one image, a batch, or a sequence of images (see the module docstring for layouts).
        spatial_dims: 2 or 3.
        channels: channels the consumer expects (3 for RGB, 1 for grey / MRI).
        size: spatial size to resize to, ``(H, W)`` or ``(X, Y, Z)``; ``None`` keeps the size (a
            sequence must then hold images of one size).

    Returns:
        ``(B, C, H, W)`` or ``(B, C, X, Y, Z)`` float32 tensor in ``[0, 1]``.
    """
    if spatial_dims not in (2, 3):
        raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
    if channels < 1:
        raise ValueError(f"channels must be >= 1, got {channels}")
    if size is not None:
        size = tuple(int(s) for s in size)
        if len(size) != spatial_dims or min(size) < 1:
            raise ValueError(f"size must be {spatial_dims} positive integers, got {size}")
    convert = _channel_first_2d if spatial_dims == 2 else _channel_first_3d
    if isinstance(images, (np.ndarray, torch.Tensor)):
        batch = convert(_as_tensor(images), channels)
        return _resize(batch, size) if size is not None else batch
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)) or len(images) == 0:
        raise ValueError("images must be an array, a tensor or a non-empty sequence of them")
    parts = [convert(_as_tensor(image), channels) for image in images]
    if size is not None:
        parts = [_resize(part, size) for part in parts]
    shapes = {tuple(p.shape[1:]) for p in parts}
    if len(shapes) > 1:
        raise ValueError(f"images have different shapes {sorted(shapes)}; pass size= to resize them to one size")
    return torch.cat(parts, dim=0)
