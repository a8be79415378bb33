"""Errors raised on bad input: one message that names the file, the field and what was expected."""

from __future__ import annotations

from os import PathLike

__all__ = ["InputError", "DatasetError", "DicomError", "PacsError"]


class InputError(ValueError):
    """Bad input on disk: ``"<path>: <field>: <expected>"``.

    Args:
        path: the file or folder at fault.
        field: the column, key, DICOM keyword, view or file name at fault.
        expected: what was expected there (and, where useful, what was found).
    """

    def __init__(self, path: str | PathLike, field: str, expected: str) -> None:
        self.path = str(path)
        self.field = field
        self.expected = expected
        super().__init__(f"{self.path}: {field}: {expected}")


class DatasetError(InputError):
    """A dataset on disk does not match the layout it claims to be in (field: the column, key, view or file name)."""


class DicomError(InputError):
    """A DICOM file, series or study that cannot be used as asked (field: the DICOM keyword such as ``PixelData`` or
    ``ImageOrientationPatient``, ``file meta``, or ``series``)."""


class PacsError(ConnectionError):
    """A PACS that cannot be reached or that refused a request; the message names the address and the request."""
