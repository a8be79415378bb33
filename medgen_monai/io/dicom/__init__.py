"""DICOM out and in: synthetic Secondary Capture, MR series and Basic Text SR, always marked synthetic
(:mod:`.marking`, :mod:`.writer`); files, series and studies read back with their geometry, and the conditioning a
study carries (:mod:`.reader`). See docs/dicom.md."""

from __future__ import annotations

from . import marking, reader, validation, writer
from .marking import *  # noqa: F401,F403
from .reader import *  # noqa: F401,F403
from .validation import *  # noqa: F401,F403
from .writer import *  # noqa: F401,F403

__all__ = [*marking.__all__, *writer.__all__, *reader.__all__, *validation.__all__]
