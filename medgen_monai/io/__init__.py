"""Writers and readers for outputs (PNG, NIfTI, DICOM), the one volume loader (:func:`load_volume`, RAS) and the
atomic-write helper."""

from __future__ import annotations

from .atomic import atomic_folder, atomic_path, atomic_write_text
from .volumes import load_volume
from .writers import FORMATS, OutputWriter, StreamOutputWriter, image_grid, save_image_2d, to_uint8

__all__ = [
    "FORMATS",
    "OutputWriter",
    "StreamOutputWriter",
    "atomic_folder",
    "atomic_path",
    "atomic_write_text",
    "image_grid",
    "load_volume",
    "save_image_2d",
    "to_uint8",
]
