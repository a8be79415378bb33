"""Errors raised on bad input: one message that names the file, the field and what was expected."""

from __future__ import annotations

from os import PathLike

__all__ = ["DatasetError", "DicomError", "PacsError"]


class DatasetError(ValueError):
    """A dataset on disk does not match the layout it claims to be in.

    Args:
        path: the file or folder at fault.
        field: the column, key, view or file name at fault.
        expected: what was expected there (and, where useful, what was found).
    """

    def __init__(self, path: str | PathLike, field: str, expected: str) -> None:
        self.path = str(path)
        self.field = field
        self.expected = expected
        super().__init__(f"{self.path}: {field}: {expected}")


class DicomError(ValueError):
    """A DICOM file, series or study that cannot be used as asked.

    Args:
        path: the file or folder at fault.
        field: the DICOM keyword (``PixelData``, ``ImageOrientationPatient``), ``file meta`` or ``series`` at fault.
        expected: what was expected there (and, where useful, what was found).
    """

    def __init__(self, path: str | PathLike, field: str, expected: str) -> None:
        self.path = str(path)
        self.field = field
        self.expected = expected
        super().__init__(f"{self.path}: {field}: {expected}")


class PacsError(ConnectionError):
    """A PACS that cannot be reached or that refused a request; the message names the address and the request."""
