"""The one volume loader: NIfTI, MetaImage and DICOM series read into RAS voxel order.

Every 3D volume the project reads from disk (evaluation references and generated outputs through
:func:`medgen_monai.metrics.evaluation.load_images`, PI-CAI ``.mha`` volumes listed by
:func:`medgen_monai.data.picai.read`, the NIfTI and DICOM MR series written by
:class:`medgen_monai.io.OutputWriter`) goes through :func:`load_volume`, so that a voxel means the
same place in the patient whatever the file format and however the file stores its axes.

Convention (the same as the in-memory phantoms, see :mod:`medgen_monai.phantoms.prostate`):

* the array is float32 ``(X, Y, Z)`` in RAS voxel order, as MONAI's ``Orientation(axcodes="RAS")``
  returns it (nibabel's RAS+): index ``i`` grows towards the patient's **Right**, ``j`` towards
  **Anterior**, ``k`` towards **Superior**; a left-sided structure lies at *low* ``i``;
* the affine maps voxel indices ``(i, j, k, 1)`` to RAS millimetres (the NIfTI convention), so its
  diagonal is positive for an axis-aligned volume.

Files keep their own orientation: a PI-CAI ``.mha`` is stored in ITK's LPS frame with an identity
direction (its raw array runs towards the patient's Left and Posterior), a scanner's axial DICOM
series has ``ImageOrientationPatient`` ``(1, 0, 0, 0, 1, 0)`` (columns towards the Left, rows towards
Posterior), a NIfTI file has whatever its affine says. Reading any of them without reorienting
swaps the patient's left and right; :func:`load_volume` permutes and flips the axes to RAS (the
closest canonical axes of an oblique volume; the voxel values are never resampled) and returns the
affine that goes with the reoriented array.
"""

from __future__ import annotations

from os import PathLike
from pathlib import Path

import numpy as np

from ..errors import InputError

__all__ = ["VOLUME_SUFFIXES", "RAS_LABELS", "volume_format", "load_volume"]

#: file suffixes :func:`load_volume` reads (a DICOM series is a folder).
VOLUME_SUFFIXES: tuple[str, ...] = (".nii", ".nii.gz", ".mha", ".mhd")

#: (beginning, end) labels of the array axes in RAS space, passed to MONAI's ``Orientation`` so that
#: ``axcodes="RAS"`` means index ``i`` runs from the patient's Left to Right, ``j`` Posterior to Anterior,
#: ``k`` Inferior to Superior.
RAS_LABELS: tuple[tuple[str, str], ...] = (("L", "R"), ("P", "A"), ("I", "S"))

_EXPECTED = f"a volume file ({', '.join(VOLUME_SUFFIXES)}) or a DICOM series folder"


def volume_format(path: str | PathLike) -> str:
    """The format :func:`load_volume` reads ``path`` as: ``"nifti"``, ``"metaimage"`` or ``"dicom"`` (a folder).

    Raises:
        InputError: ``path`` does not exist, or it is a file with another suffix.
    """
    path = Path(path)
    if path.is_dir():
        return "dicom"
    if not path.is_file():
        raise InputError(path, "volume", f"{_EXPECTED}; the path does not exist")
    name = path.name.lower()
    if name.endswith((".nii", ".nii.gz")):
        return "nifti"
    if name.endswith((".mha", ".mhd")):
        return "metaimage"
    raise InputError(path, "volume", f"{_EXPECTED}, got a file ending in {''.join(path.suffixes) or '(no suffix)'!r}")


def _reader(fmt: str):
    """The MONAI reader of a format; every one of them gives a voxel -> RAS affine (``meta["space"] == "RAS"``)."""
    if fmt == "nifti":
        from monai.data import NibabelReader

        return NibabelReader()
    if fmt == "metaimage":
        from monai.data import ITKReader

        return ITKReader(affine_lps_to_ras=True)
    from .dicom import DicomSeriesReader

    return DicomSeriesReader()


def load_volume(path: str | PathLike) -> tuple[np.ndarray, np.ndarray]:
    """Read one volume into RAS voxel order.

    Args:
        path: a NIfTI file (``.nii``, ``.nii.gz``), a MetaImage (``.mha``, ``.mhd``; PI-CAI's format) or a DICOM
            series folder (read by :class:`medgen_monai.io.dicom.DicomSeriesReader`: slices sorted by position,
            geometry checked).

    Returns:
        ``(array, affine)``: float32 ``(X, Y, Z)`` with index ``i`` towards the patient's Right, ``j`` Anterior,
        ``k`` Superior (MONAI's ``Orientation(axcodes="RAS")``), and its ``(4, 4)`` float64 voxel -> RAS (mm) affine.
        A file with one trailing channel (``(X, Y, Z, 1)``) is read as ``(X, Y, Z)``.

    Raises:
        InputError: naming the file and what was expected: the path is missing or not a volume format, the file
            cannot be read, it is not a single-channel 3D volume, or its affine is not invertible
            (:class:`~medgen_monai.errors.DicomError`, a subclass, for a DICOM series the reader refuses).
    """
    import torch
    from monai.data import MetaTensor
    from monai.transforms import Orientation

    path = Path(path)
    fmt = volume_format(path)
    reader = _reader(fmt)
    try:
        array, meta = reader.get_data(reader.read(str(path)))
    except InputError:
        raise
    except Exception as e:  # the readers' own errors (nibabel, ITK) name neither the file nor what was expected
        raise InputError(path, fmt, f"a readable {fmt} volume, the reader failed: {type(e).__name__}: {e}") from e
    array = np.asarray(array)
    if array.ndim == 4 and array.shape[-1] == 1:
        array = array[..., 0]
    if array.ndim != 3 or array.size == 0:
        raise InputError(path, fmt, f"a single-channel 3D volume (X, Y, Z), found an array of shape {array.shape}")
    if meta.get("space", "RAS") != "RAS":
        raise InputError(path, fmt, f"a voxel -> RAS affine from the reader, got space {meta.get('space')!r}")
    affine = np.asarray(meta["affine"], dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)) or abs(np.linalg.det(affine[:3, :3])) < 1e-12:
        raise InputError(path, "affine", f"a finite, invertible 4x4 voxel -> world matrix, got {affine.tolist()}")

    voxels = torch.as_tensor(np.ascontiguousarray(array, dtype=np.float32))[None]  # (1, X, Y, Z): channel first
    image = MetaTensor(voxels, affine=torch.as_tensor(affine))
    ras = Orientation(axcodes="RAS", labels=RAS_LABELS)(image)
    return np.ascontiguousarray(ras.as_tensor()[0].numpy(), dtype=np.float32), np.asarray(ras.affine, dtype=np.float64)
