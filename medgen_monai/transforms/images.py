"""Reading 2D image files into the channels a bundle expects, by one rule, with the file named on failure.

Real folders mix files: ISIC holds RGB JPEGs and the odd grayscale one, other sources give palette or
RGBA PNGs and CMYK JPEGs. MONAI's ``LoadImaged`` + ``EnsureChannelFirstd`` takes the last axis as channels
whatever they are, so a grayscale JPEG in an RGB folder becomes an image with 64 "channels" and training
stops inside a batch, naming no file. :class:`LoadImageChannelsd` converts at read time instead:

* to 3 channels (RGB): grayscale is repeated, a palette is looked up, CMYK goes through PIL's conversion,
  an alpha channel is dropped (the colour values are kept as they are), 16-bit grayscale is scaled to 8 bits;
* to 1 channel (grayscale): RGB and the above become luma, ``L = 0.299 R + 0.587 G + 0.114 B`` (ITU-R 601-2,
  PIL's ``convert("L")``), alpha dropped, 16-bit scaled to 8 bits.

A DICOM file (``.dcm`` or the ``DICM`` marker) is read through :func:`medgen_monai.io.dicom.read_image_2d`:
8-bit pixels as stored, deeper ones (12- or 16-bit radiographs) mapped linearly from their minimum and maximum to
0-255, MONOCHROME1 inverted; then converted as above. So a view pulled from a PACS conditions a bundle directly.

Anything else (a file PIL cannot open, a float image, a multi-frame file) is refused with one ``ValueError``
naming the file and what was expected. With a ``CacheDataset`` (the bundles' training configs) every file
is read when the cache fills, so a bad file stops the run before the first iteration.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from monai.transforms import MapTransform

__all__ = ["CONVERTIBLE_MODES", "GRAYSCALE_MODES", "LoadImageChannelsd", "read_image_channels"]

#: PIL modes converted by the rule above
CONVERTIBLE_MODES: tuple[str, ...] = (
    "1",
    "L",
    "LA",
    "P",
    "PA",
    "RGB",
    "RGBA",
    "RGBX",
    "CMYK",
    "YCbCr",
    "I;16",
    "I;16B",
    "I;16L",
    "I",
)


#: modes read as grayscale when the channels are left to the file
GRAYSCALE_MODES: tuple[str, ...] = ("1", "L", "LA", "I;16", "I;16B", "I;16L", "I")


def read_image_channels(path: str | Path, channels: int | None) -> np.ndarray:
    """A 2D image file as ``(channels, H, W)`` float32 in ``[0, 255]``, converted by the module's rule.

    ``channels`` ``None`` keeps what the file is: 1 for grayscale modes (:data:`GRAYSCALE_MODES`), else 3.

    Raises:
        ValueError: the file is missing or unreadable, holds several frames, or its mode cannot be converted.
    """
    from PIL import Image, UnidentifiedImageError

    if channels not in (1, 3, None):
        raise ValueError(f"channels must be 1 (grayscale), 3 (RGB) or None (as the file is), got {channels}")
    path = Path(path)
    if _is_dicom(path):
        image = _dicom_as_pil(path)
    else:
        try:
            image = Image.open(path)
        except FileNotFoundError:
            raise ValueError(f"{path}: image file not found") from None
        except (UnidentifiedImageError, OSError) as e:
            raise ValueError(f"{path}: not an image file PIL can read ({e})") from None
    with image:
        if getattr(image, "n_frames", 1) > 1:
            raise ValueError(f"{path}: holds {image.n_frames} frames; expected a single 2D image")
        if channels is None:
            channels = 1 if image.mode in GRAYSCALE_MODES else 3
        if image.mode not in CONVERTIBLE_MODES:
            raise ValueError(
                f"{path}: image mode {image.mode!r} cannot be converted to {channels} channel(s); "
                f"expected one of {list(CONVERTIBLE_MODES)}"
            )
        try:
            image.load()
        except OSError as e:
            raise ValueError(f"{path}: the image data is broken ({e})") from None
        if image.mode.startswith("I"):  # 16- or 32-bit grayscale: to 8 bits by the type's range
            array = np.asarray(image, dtype=np.float64)
            top = 65535.0 if image.mode.startswith("I;16") or array.max() <= 65535 else float(array.max())
            image = Image.fromarray(np.clip(array / top * 255.0 + 0.5, 0, 255).astype(np.uint8), mode="L")
        if image.mode in ("LA", "PA", "RGBA", "RGBX"):
            image = image.convert("RGB")  # the alpha channel is dropped, the colour values kept
        converted = image.convert("RGB" if channels == 3 else "L")
        array = np.asarray(converted, dtype=np.float32)
    return array[None] if channels == 1 else np.ascontiguousarray(np.moveaxis(array, -1, 0))


def _is_dicom(path: Path) -> bool:
    """A DICOM Part 10 file: the ``.dcm`` suffix, or the ``DICM`` marker after the 128-byte preamble."""
    if path.suffix.lower() == ".dcm":
        return True
    try:
        with open(path, "rb") as f:
            return f.read(132)[128:] == b"DICM"
    except OSError:
        return False


def _dicom_as_pil(path: Path):
    """A single-frame DICOM image as an 8-bit PIL image: 8-bit pixels as stored, others (12- or 16-bit radiographs,
    rescaled values) mapped linearly from their minimum and maximum to 0-255; MONOCHROME1 is inverted so that
    bright means dense, as in MONOCHROME2."""
    from PIL import Image

    from ..io.dicom.reader import read_dicom, read_image_2d

    array = np.asarray(read_image_2d(path))
    if array.dtype != np.uint8:
        low, high = float(array.min()), float(array.max())
        array = np.round((array.astype(np.float64) - low) / max(high - low, 1e-12) * 255.0).astype(np.uint8)
    if array.ndim == 2 and str(read_dicom(path).get("PhotometricInterpretation", "")) == "MONOCHROME1":
        array = 255 - array
    return Image.fromarray(array)  # (H, W) uint8 -> L, (H, W, 3) -> RGB


class LoadImageChannelsd(MapTransform):
    """Load 2D image files at ``keys`` as ``(channels, H, W)`` float32 arrays in ``[0, 255]`` (see the module).

    Args:
        keys: keys of the file paths.
        channels: 1 (grayscale) or 3 (RGB), the bundle's image channels.
        allow_missing_keys: skip absent keys.
    """

    def __init__(self, keys: Sequence[Hashable] | Hashable, channels: int, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        if int(channels) not in (1, 3):
            raise ValueError(f"channels must be 1 (grayscale) or 3 (RGB), got {channels}")
        self.channels = int(channels)

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = read_image_channels(d[key], self.channels)
        return d
