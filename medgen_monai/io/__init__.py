"""Writers and readers for outputs (PNG, NIfTI, DICOM) and the atomic-write helper."""

from __future__ import annotations

from .atomic import atomic_path, atomic_write_text

__all__ = ["atomic_path", "atomic_write_text"]
