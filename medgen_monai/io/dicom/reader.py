"""DICOM in: one file, a series (sorted by position, geometry checked), a study, and the conditioning it carries.

Conventions (shared with :mod:`.writer`):

* a volume is a float32 array ``(X, Y, Z)`` where ``array[c, r, k]`` is column ``c``, row ``r`` of slice ``k``,
  so DICOM columns run along the first axis, as in NIfTI and in MONAI's ITK/pydicom readers;
* its affine maps voxel indices ``(c, r, k, 1)`` to RAS millimetres (the NIfTI convention); DICOM's patient
  coordinates are LPS, so the first two rows are negated;
* slices are ordered by their position along the slice normal (``ImageOrientationPatient`` row x column cosines),
  never by ``InstanceNumber`` or file name, which scanners and PACS do not keep in any reliable order;
* ``RescaleSlope`` / ``RescaleIntercept`` are applied, so values are in the modality's units.

Reading headers (:func:`read_dicom`) is kept apart from needing pixels (:func:`read_image_2d`, :func:`read_series`):
an RT plan or a JPEG Lossless file without its decoder is a valid DICOM file, but not an image this environment can
use. Every refusal is one :class:`~medgen_monai.errors.DicomError` that names the file (or folder), the attribute and
what was expected.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from monai.data import ImageReader
from pydicom.dataset import Dataset

from ...errors import DicomError

__all__ = [
    "DicomVolume",
    "DicomStudy",
    "DicomSeriesReader",
    "read_dicom",
    "read_image_2d",
    "read_series",
    "read_study",
    "report_text",
    "patient_age",
    "patient_sex",
    "conditioning_from_study",
    "study_views",
    "VIEW_POSITIONS",
]

#: SOP classes of structured reports start with this root (Basic/Enhanced/Comprehensive SR, ...).
_SR_ROOT = "1.2.840.10008.5.1.4.1.1.88."
_DICOMDIR = "1.2.840.10008.1.3.10"
_PIXEL_KEYWORDS = ("PixelData", "FloatPixelData", "DoubleFloatPixelData")
#: first bytes of formats people mistake for DICOM, to say what was found instead.
_MAGIC = (
    (b"\x89PNG", "a PNG image"),
    (b"\xff\xd8\xff", "a JPEG image"),
    (b"\x1f\x8b", "gzip data (a .nii.gz?)"),
    (b"%PDF", "a PDF document"),
    (b"PK\x03\x04", "a zip archive"),
)
#: two orientations are the same when their direction cosines agree this closely (scanners write ~6 decimals).
ORIENTATION_TOLERANCE = 1e-3


class _NotPart10(DicomError):
    """The file is not a DICOM Part 10 file at all (folder scans skip these; direct reads raise them)."""


@dataclass
class DicomVolume:
    """A series read as one volume.

    Attributes:
        array: float32 ``(X, Y, Z)``; ``array[c, r, k]`` is column ``c``, row ``r`` of slice ``k`` (rescale applied).
        affine: float64 ``(4, 4)`` voxel -> RAS (mm).
        series_uid: the SeriesInstanceUID.
        first: the first slice's dataset (after sorting), pixel data dropped.
        files: the slice files in array order (``files[k]`` is slice ``k``).
    """

    array: np.ndarray
    affine: np.ndarray
    series_uid: str
    first: Dataset
    files: list[Path]

    @property
    def spacing(self) -> tuple[float, float, float]:
        """Voxel size in mm along the three array axes (column spacing, row spacing, slice step)."""
        return tuple(float(v) for v in np.linalg.norm(self.affine[:3, :3], axis=0))  # type: ignore[return-value]


@dataclass
class DicomStudy:
    """A study folder, read as headers (pixels are read when asked for, by :func:`conditioning_from_study`).

    Attributes:
        study_uid: the StudyInstanceUID shared by every instance.
        series: SeriesInstanceUID -> the files of that series (sorted by name), every series of the study.
        images: the image series among them (instances with Rows and Columns), same mapping.
        reports: the texts of the structured reports (:func:`report_text`), in (SeriesNumber, InstanceNumber,
            SOPInstanceUID) order.
        patient: the dataset (pixel data not read) that patient and study attributes are read from: the first image
            instance in (SeriesNumber, InstanceNumber, SOPInstanceUID) order, whatever the files are called and
            the order they come in (a report is only used when the study has no image).
        folder: the folder read.
        identifiers: the identifying values of every instance (names and their parts, IDs, accession number,
            institution: :func:`medgen_monai.text.deid.identifying_strings`), to scrub from the reports.
    """

    study_uid: str
    series: dict[str, list[Path]]
    images: dict[str, list[Path]]
    reports: list[str]
    patient: Dataset
    folder: Path = field(default_factory=Path)
    identifiers: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------------- one file


def _sop_name(ds: Dataset) -> str:
    uid = ds.get("SOPClassUID") or getattr(ds, "file_meta", Dataset()).get("MediaStorageSOPClassUID")
    if not uid:
        return "an instance without SOPClassUID"
    name = pydicom.uid.UID(str(uid)).name
    return f"{name} ({uid})" if name != str(uid) else f"SOP class {uid}"


def _what_is(path: Path) -> str:
    head = path.read_bytes()[:132] if path.stat().st_size else b""
    for magic, what in _MAGIC:
        if head.startswith(magic):
            return f"found {what}"
    if not head:
        return "found an empty file"
    return "found no 'DICM' prefix at byte 128 (a raw dataset without file meta, or not DICOM at all)"


def _check_elements(ds: Dataset, path: Path, where: str = "") -> None:
    """Convert every element's value, so that a bad value (``IS '1A'``) fails here, naming its tag."""
    for tag in list(ds.keys()):
        try:
            elem = ds[tag]
            value = elem.value
        except Exception as err:  # pydicom raises ValueError/TypeError/KeyError for broken values
            keyword = pydicom.datadict.keyword_for_tag(tag) or str(tag)
            raise DicomError(
                path, f"{where}{keyword}", f"a valid value for {tag}, got an unreadable one ({err})"
            ) from None
        if elem.VR == "SQ":
            for i, item in enumerate(value):
                _check_elements(item, path, f"{where}{elem.keyword or tag}[{i}].")
        elif (
            elem.VR == "IS"
            and value not in (None, "")
            and not isinstance(value, (int, list, pydicom.multival.MultiValue))
        ):
            # pydicom only warns for an invalid IS (e.g. NumberOfFrames '1A') and keeps the text; every later
            # int() on it fails far from here, so refuse now
            raise DicomError(path, f"{where}{elem.keyword or tag}", f"an integer string (VR IS), got {value!r}")
        elif elem.VR == "IS" and isinstance(value, pydicom.multival.MultiValue):
            bad = [v for v in value if v not in (None, "") and not isinstance(v, int)]
            if bad:
                raise DicomError(path, f"{where}{elem.keyword or tag}", f"integer strings (VR IS), got {bad[0]!r}")


def _check_pixel_length(ds: Dataset, path: Path) -> None:
    """Native (uncompressed) pixel data must hold Rows x Columns x samples x frames x bits; truncated files don't."""
    if "PixelData" not in ds or ds.file_meta.TransferSyntaxUID.is_compressed:
        return
    from pydicom.pixels.utils import get_expected_length

    try:
        expected = get_expected_length(ds, unit="bytes")
    except Exception as err:  # a missing Rows/BitsAllocated, caught again when pixels are needed
        raise DicomError(
            path, "PixelData", f"the image pixel attributes (Rows, Columns, BitsAllocated...): {err}"
        ) from None
    found = len(ds.PixelData)
    if found < expected:
        raise DicomError(
            path,
            "PixelData",
            f"{expected} bytes for {ds.Rows} x {ds.Columns} pixels x {ds.get('SamplesPerPixel', 1)} "
            f"samples x {ds.get('NumberOfFrames', 1)} frames at {ds.BitsAllocated} bits, found {found}: "
            "the file is truncated",
        )


def _check_image(ds: Dataset, path: Path) -> None:
    """The instance is an image and its pixels can be decoded here (checked without decoding)."""
    if not any(k in ds for k in _PIXEL_KEYWORDS) or "Rows" not in ds or "Columns" not in ds:
        raise DicomError(path, "PixelData", f"an image, found {_sop_name(ds)}, which has no pixel data")
    syntax = ds.file_meta.TransferSyntaxUID
    if syntax.is_compressed:
        from pydicom.pixels import get_decoder

        try:
            decoder = get_decoder(syntax)
        except NotImplementedError:
            raise DicomError(
                path, "TransferSyntaxUID", f"a transfer syntax pydicom can decode, got {syntax.name} ({syntax})"
            ) from None
        if not decoder.is_available:
            needs = "; ".join(decoder.missing_dependencies) or "a decoder plugin"
            raise DicomError(
                path,
                "TransferSyntaxUID",
                f"pixel data in {syntax.name} ({syntax}), which no installed package decodes: install one of: {needs}",
            )


def read_dicom(path: str | PathLike, *, image: bool = False, headers_only: bool = False) -> Dataset:
    """Read one DICOM Part 10 file and check it.

    Only Part 10 files are accepted (128-byte preamble, ``DICM``, a file meta group with ``TransferSyntaxUID``).
    pydicom can read a bare dataset with ``force=True``, but then it must guess the transfer syntax, and a wrong
    guess misreads the values without any error (pydicom's own ``no_meta.dcm`` reads as one meaningless element);
    PACS, DICOMweb and our writer always give Part 10 files, so a file without file meta is refused with that reason
    rather than read on a guess. MONAI behaves the same way: its PydicomReader calls ``dcmread`` without ``force``
    and keeps only ``pydicom.misc.is_dicom`` files (the ``DICM`` prefix) from a series folder.

    Checks: the file exists and is Part 10; every element value converts (``badVR.dcm``'s ``NumberOfFrames`` '1A'
    fails here); native pixel data is as long as the image attributes say (``MR_truncated.dcm`` fails here).
    With ``image=True`` also: the instance is an image (``rtplan.dcm`` fails, naming its SOP class) and an installed
    package decodes its transfer syntax (names the packages that would). Pixels are not decoded here.

    Args:
        path: the file.
        image: also require a decodable image.
        headers_only: stop before the pixel data (faster; skips the pixel checks, so not with ``image``).

    Returns:
        The dataset (pixel data not decoded; absent with ``headers_only``).

    Raises:
        DicomError: naming the file, the attribute and what was expected.
    """
    path = Path(path)
    if image and headers_only:
        raise ValueError("read_dicom: image=True needs the pixel data; do not combine it with headers_only=True")
    if not path.exists():
        raise DicomError(path, "file", "an existing DICOM file, the path does not exist")
    if not path.is_file():
        raise DicomError(path, "file", "a DICOM file, found a folder (use read_series or read_study for folders)")
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=headers_only)
    except pydicom.errors.InvalidDicomError:
        raise _NotPart10(
            path,
            "file meta",
            f"a DICOM Part 10 file (128-byte preamble, 'DICM', file meta with TransferSyntaxUID), {_what_is(path)}",
        ) from None
    except Exception as err:  # EOF inside a header, a broken length...
        raise DicomError(path, "file", f"a readable DICOM file, parsing failed: {type(err).__name__}: {err}") from None
    if not ds.file_meta.get("TransferSyntaxUID"):
        raise DicomError(path, "TransferSyntaxUID", "a file meta group naming the transfer syntax, found none")
    _check_elements(ds, path)
    if not headers_only:
        _check_pixel_length(ds, path)
    if image:
        _check_image(ds, path)
    return ds


def _pixels(ds: Dataset, path: Path) -> np.ndarray:
    """Decoded pixels with the modality rescale applied: (H, W), (H, W, 3) or with frames first. One DicomError."""
    _check_image(ds, path)
    try:
        array = ds.pixel_array
    except Exception as err:  # the decoders raise ValueError/RuntimeError/... with their own wording
        raise DicomError(path, "PixelData", f"decodable pixel data, decoding failed: {err}") from None
    if ds.get("SamplesPerPixel", 1) == 1 and ("RescaleSlope" in ds or "RescaleIntercept" in ds):
        from pydicom.pixels import apply_rescale

        array = apply_rescale(array, ds).astype(np.float32)
    return array


def read_image_2d(path: str | PathLike) -> np.ndarray:
    """One single-frame image file as stored: ``(H, W)`` or ``(H, W, 3)`` (rows first, rescale applied).

    The stored dtype is kept unless a RescaleSlope/Intercept is present (then float32). RGB comes out RGB (pydicom
    converts YBR colour spaces of compressed files).

    Raises:
        DicomError: not Part 10, not an image, no decoder, truncated or undecodable pixels, more than one frame.
    """
    path = Path(path)
    ds = read_dicom(path, image=True)
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames != 1:
        raise DicomError(path, "NumberOfFrames", f"a single-frame image, found {frames} frames")
    return _pixels(ds, path)


# ------------------------------------------------------------------------------------------------- a series


def _folder_files(folder: Path, recursive: bool = False) -> list[Path]:
    pattern = folder.rglob("*") if recursive else folder.iterdir()
    return sorted(p for p in pattern if p.is_file() and not p.name.startswith("."))  # .name.tmp: atomic writes


def _floats(ds: Dataset, path: Path, keyword: str, count: int) -> np.ndarray:
    value = ds.get(keyword)
    try:
        array = np.asarray([float(v) for v in value], dtype=np.float64) if value is not None else None
    except (TypeError, ValueError):
        array = None
    if array is None or array.shape != (count,) or not np.all(np.isfinite(array)):
        raise DicomError(path, keyword, f"{count} finite numbers, got {value!r}")
    return array


def _geometry(ds: Dataset, path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(orientation (6,), position (3,), pixel spacing (2,)) in LPS; orientation checked to be orthonormal."""
    orientation = _floats(ds, path, "ImageOrientationPatient", 6)
    position = _floats(ds, path, "ImagePositionPatient", 3)
    spacing = _floats(ds, path, "PixelSpacing", 2)
    row, col = orientation[:3], orientation[3:]
    if (
        abs(np.linalg.norm(row) - 1) > ORIENTATION_TOLERANCE
        or abs(np.linalg.norm(col) - 1) > ORIENTATION_TOLERANCE
        or abs(row @ col) > ORIENTATION_TOLERANCE
    ):
        raise DicomError(path, "ImageOrientationPatient", f"two orthogonal unit vectors, got {orientation.tolist()}")
    if np.any(spacing <= 0):
        raise DicomError(path, "PixelSpacing", f"two positive spacings (mm), got {spacing.tolist()}")
    return orientation, position, spacing


def _collect_images(
    source: str | PathLike | Sequence[str | PathLike],
) -> tuple[list[tuple[Path, Dataset]], Path | None]:
    """The image instances of ``source``: every listed file must be one; a folder's other files are skipped."""
    if isinstance(source, (str, PathLike)):
        folder = Path(source)
        if not folder.exists():
            raise DicomError(folder, "series", "an existing folder or file, the path does not exist")
        if folder.is_file():
            return [(folder, read_dicom(folder, image=True))], None
        found: list[tuple[Path, Dataset]] = []
        skipped: list[str] = []
        for path in _folder_files(folder):
            try:
                ds = read_dicom(path)
            except _NotPart10:
                skipped.append(f"{path.name} (not DICOM)")
                continue
            if ds.file_meta.get("MediaStorageSOPClassUID") == _DICOMDIR:
                continue
            if not any(k in ds for k in _PIXEL_KEYWORDS):
                skipped.append(f"{path.name} ({_sop_name(ds)})")
                continue
            found.append((path, ds))
        if not found:
            what = f"; skipped {len(skipped)}: {', '.join(skipped[:5])}" if skipped else ", the folder has no files"
            raise DicomError(folder, "series", f"DICOM image files{what}")
        return found, folder
    paths = [Path(p) for p in source]
    if not paths:
        raise DicomError("<empty list>", "series", "at least one DICOM image file")
    return [(p, read_dicom(p, image=True)) for p in paths], None


def read_series(source: str | PathLike | Sequence[str | PathLike], *, spacing_tolerance: float = 0.1) -> DicomVolume:
    """Read one series as a volume, sorted by position along the slice normal.

    A folder: every regular file in it (not sub-folders); files that are not DICOM and non-image instances (an SR, a
    DICOMDIR) are skipped. A list of files: each must be an image.

    Refused with the reason: no image files; more than one SeriesInstanceUID; differing Rows, Columns, PixelSpacing or
    ImageOrientationPatient; multi-frame or colour images; two slices at one position; uneven slice spacing (a
    missing slice), naming the two positions around the gap. The slice step is computed from the positions, so an
    oblique stack keeps its exact geometry; one slice is accepted with SliceThickness (else SpacingBetweenSlices,
    else 1 mm) as its step along the normal.

    Args:
        source: a series folder, one file, or a list of files.
        spacing_tolerance: allowed deviation of a gap from the median slice step, as a fraction of it.

    Returns:
        A :class:`DicomVolume` with ``array`` float32 ``(X, Y, Z)`` and a voxel -> RAS ``affine``.

    Raises:
        DicomError: naming the file or folder and the reason.
    """
    if not 0 < spacing_tolerance < 1:
        raise ValueError(
            f"read_series: spacing_tolerance must be in (0, 1) (a fraction of the slice step), got {spacing_tolerance}"
        )
    items, folder = _collect_images(source)
    where = folder if folder is not None else items[0][0]

    series = {}
    for path, ds in items:
        series.setdefault(str(ds.get("SeriesInstanceUID", "")), []).append(path)
    if len(series) > 1:
        listing = "; ".join(f"{uid or '<none>'}: {len(p)} files (e.g. {p[0].name})" for uid, p in series.items())
        raise DicomError(
            where,
            "SeriesInstanceUID",
            f"one series, found {len(series)}: {listing} (pass the files of one series, or use read_study)",
        )
    series_uid = next(iter(series))

    path0, ds0 = items[0]
    orientation0, _, spacing0 = _geometry(ds0, path0)
    positions = []
    for path, ds in items:
        for keyword in ("Rows", "Columns", "SamplesPerPixel"):
            if ds.get(keyword, 1) != ds0.get(keyword, 1):
                raise DicomError(
                    path,
                    keyword,
                    f"{ds0.get(keyword, 1)} as in {path0.name} (one series, one grid), got {ds.get(keyword, 1)}",
                )
        if ds.get("SamplesPerPixel", 1) != 1:
            raise DicomError(path, "SamplesPerPixel", f"1 (a grayscale volume), got {ds.SamplesPerPixel}")
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        if frames != 1:
            raise DicomError(
                path,
                "NumberOfFrames",
                f"single-frame slices, found {frames} frames (multi-frame "
                "enhanced objects are not read as series here)",
            )
        orientation, position, spacing = _geometry(ds, path)
        if np.max(np.abs(orientation - orientation0)) > ORIENTATION_TOLERANCE:
            raise DicomError(
                path,
                "ImageOrientationPatient",
                f"{np.round(orientation0, 6).tolist()} as in {path0.name}: mixed orientations in one "
                f"series, got {np.round(orientation, 6).tolist()}",
            )
        if np.max(np.abs(spacing - spacing0)) > 1e-4 * max(1.0, float(spacing0.max())):
            raise DicomError(path, "PixelSpacing", f"{spacing0.tolist()} as in {path0.name}, got {spacing.tolist()}")
        positions.append(position)

    row_dir, col_dir = orientation0[:3], orientation0[3:]
    normal = np.cross(row_dir, col_dir)
    distance = np.array([p @ normal for p in positions])
    order = np.argsort(distance, kind="stable")
    items = [items[i] for i in order]
    positions = [positions[i] for i in order]
    distance = distance[order]

    if len(items) == 1:
        ds = items[0][1]
        thickness = ds.get("SliceThickness") or ds.get("SpacingBetweenSlices") or 1.0
        step = normal * float(thickness)
    else:
        gaps = np.diff(distance)
        median = float(np.median(gaps))
        for k, gap in enumerate(gaps):
            if gap < 1e-3 * max(median, 1e-3):
                raise DicomError(
                    where,
                    "ImagePositionPatient",
                    f"one slice per position, found {items[k][0].name} and {items[k + 1][0].name} both at "
                    f"{distance[k]:.4g} mm along the normal (several echoes, phases or series?)",
                )
        for k, gap in enumerate(gaps):
            if abs(gap - median) > spacing_tolerance * median:
                raise DicomError(
                    where,
                    "ImagePositionPatient",
                    f"evenly spaced slices ({median:.4g} mm apart), found a {gap:.4g} mm gap between "
                    f"{np.round(positions[k], 3).tolist()} ({items[k][0].name}) and "
                    f"{np.round(positions[k + 1], 3).tolist()} ({items[k + 1][0].name}): missing slices?",
                )
        step = (positions[-1] - positions[0]) / (len(items) - 1)
        # every slice must sit on the line first + k * step (a sheared or jittered stack is not one grid)
        for k, position in enumerate(positions):
            off = np.linalg.norm(position - (positions[0] + k * step))
            if off > spacing_tolerance * median:
                raise DicomError(
                    items[k][0],
                    "ImagePositionPatient",
                    f"a position on the stack's line ({np.round(positions[0] + k * step, 3).tolist()}), "
                    f"found {np.round(position, 3).tolist()} ({off:.3g} mm off)",
                )

    # (H, W) slices -> array[c, r, k]: columns along the first axis
    slices = [_pixels(ds, path).astype(np.float32, copy=False).T for path, ds in items]
    array = np.ascontiguousarray(np.stack(slices, axis=-1), dtype=np.float32)

    affine_lps = np.eye(4)
    affine_lps[:3, 0] = row_dir * spacing0[1]  # along a row = increasing column index, PixelSpacing[1] apart
    affine_lps[:3, 1] = col_dir * spacing0[0]  # along a column = increasing row index, PixelSpacing[0] apart
    affine_lps[:3, 2] = step
    affine_lps[:3, 3] = positions[0]
    affine = np.diag([-1.0, -1.0, 1.0, 1.0]) @ affine_lps  # LPS -> RAS

    first = items[0][1].copy()
    for keyword in _PIXEL_KEYWORDS:
        if keyword in first:
            delattr(first, keyword)
    return DicomVolume(array=array, affine=affine, series_uid=series_uid, first=first, files=[p for p, _ in items])


# -------------------------------------------------------------------------------------------- study, reports


def report_text(ds: Dataset) -> str:
    """The text of a structured report: the TextValue of every TEXT content item, depth first, one per line.

    Raises:
        DicomError: ``ds`` is not an SR document.
    """
    path = getattr(ds, "filename", None) or "<dataset>"
    sop = str(ds.get("SOPClassUID", ""))
    if not sop.startswith(_SR_ROOT) and ds.get("Modality") != "SR":
        raise DicomError(path, "SOPClassUID", f"a structured report (SR, {_SR_ROOT}*), found {_sop_name(ds)}")
    texts: list[str] = []

    def walk(items: Sequence[Dataset]) -> None:
        for item in items:
            if item.get("ValueType") == "TEXT" and item.get("TextValue"):
                texts.append(str(item.TextValue))
            walk(item.get("ContentSequence", []))

    walk(ds.get("ContentSequence", []))
    return "\n".join(texts)


_AGE = re.compile(r"^(\d{3})([DWMY])$")
_AGE_UNIT_YEARS = {"D": 1 / 365.25, "W": 7 / 365.25, "M": 1 / 12, "Y": 1.0}


def _date(ds: Dataset, keyword: str) -> datetime.date | None:
    value = str(ds.get(keyword, "") or "").strip()
    if not value:
        return None
    try:
        return datetime.datetime.strptime(value[:8], "%Y%m%d").date()
    except ValueError:
        raise DicomError(
            getattr(ds, "filename", None) or "<dataset>", keyword, f"a date YYYYMMDD, got {value!r}"
        ) from None


def patient_age(ds: Dataset) -> float | None:
    """The patient's age in years: from PatientAge (``045Y``, ``006M``, ``010W``, ``003D``), else from
    PatientBirthDate and StudyDate (or SeriesDate, AcquisitionDate, ContentDate); None when neither is there.

    Raises:
        DicomError: a PatientAge or date that is present but malformed (silently dropping it would change the
            conditioning without a word).
    """
    path = getattr(ds, "filename", None) or "<dataset>"
    age = str(ds.get("PatientAge", "") or "").strip().upper()
    if age:
        match = _AGE.match(age)
        if not match:
            raise DicomError(path, "PatientAge", f"nnnD, nnnW, nnnM or nnnY (VR AS, e.g. 045Y), got {age!r}")
        return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2)]
    birth = _date(ds, "PatientBirthDate")
    if birth is None:
        return None
    for keyword in ("StudyDate", "SeriesDate", "AcquisitionDate", "ContentDate"):
        when = _date(ds, keyword)
        if when is not None:
            if when < birth:
                raise DicomError(path, "PatientBirthDate", f"a date before {keyword} {when:%Y%m%d}, got {birth:%Y%m%d}")
            return (when - birth).days / 365.25
    return None


def patient_sex(ds: Dataset) -> str | None:
    """PatientSex as ``"M"``, ``"F"`` or ``"O"``; None when empty, absent or ``U`` (unknown).

    Raises:
        DicomError: any other value.
    """
    sex = str(ds.get("PatientSex", "") or "").strip().upper()
    if sex in ("", "U"):
        return None
    if sex not in ("M", "F", "O"):
        raise DicomError(getattr(ds, "filename", None) or "<dataset>", "PatientSex", f"M, F or O, got {sex!r}")
    return sex


def read_study(folder: str | PathLike) -> DicomStudy:
    """Read a study folder (sub-folders included) as headers: series, image series, report texts, patient.

    Files that are not DICOM and DICOMDIR files are skipped; a broken DICOM file is an error.

    Raises:
        DicomError: no DICOM instances, more than one StudyInstanceUID, or a broken file.
    """
    folder = Path(folder)
    if not folder.is_dir():
        raise DicomError(folder, "study", "an existing folder with the study's DICOM files")
    instances: list[tuple[Path, Dataset]] = []
    for path in _folder_files(folder, recursive=True):
        try:
            ds = read_dicom(path, headers_only=True)
        except _NotPart10:
            continue
        if ds.file_meta.get("MediaStorageSOPClassUID") != _DICOMDIR:
            for keyword in ("SOPClassUID", "SOPInstanceUID", "StudyInstanceUID", "SeriesInstanceUID"):
                if not str(ds.get(keyword, "") or "").strip():  # a cut-off or hand-made file
                    raise DicomError(
                        path,
                        keyword,
                        "a study instance with a SOP class and instance, study and series UIDs; the file has none",
                    )
            instances.append((path, ds))
    if not instances:
        raise DicomError(folder, "study", "DICOM files, found none")
    studies = sorted({str(ds.get("StudyInstanceUID", "")) for _, ds in instances})
    if len(studies) > 1:
        raise DicomError(folder, "StudyInstanceUID", f"one study, found {len(studies)}: {', '.join(studies)}")
    series: dict[str, list[Path]] = {}
    images: dict[str, list[Path]] = {}
    reports: list[tuple[tuple[int, int, str], str]] = []
    for path, ds in instances:
        uid = str(ds.get("SeriesInstanceUID", ""))
        series.setdefault(uid, []).append(path)
        if "Rows" in ds and "Columns" in ds:
            images.setdefault(uid, []).append(path)
        elif str(ds.get("SOPClassUID", "")).startswith(_SR_ROOT):
            reports.append((_order(ds), report_text(ds)))
    # the reference dataset: an image instance, chosen by content, not by file name or order
    image_instances = [(p, ds) for p, ds in instances if "Rows" in ds and "Columns" in ds] or instances
    patient = min(image_instances, key=lambda item: _order(item[1]))[1]
    from ...text.deid import identifying_strings

    identifiers = sorted({value for _, ds in instances for value in identifying_strings(ds)})
    return DicomStudy(
        study_uid=studies[0],
        series=series,
        images=images,
        reports=[text for _, text in sorted(reports)],
        patient=patient,
        folder=folder,
        identifiers=identifiers,
    )


def _order(ds: Dataset) -> tuple[int, int, str]:
    """(SeriesNumber, InstanceNumber, SOPInstanceUID): an instance's place whatever its file is called."""
    return _number(ds, "SeriesNumber"), _number(ds, "InstanceNumber"), str(ds.get("SOPInstanceUID", ""))


def _number(ds: Dataset, keyword: str) -> int:
    """An IS attribute as an int for ordering (absent or malformed: after every numbered one)."""
    try:
        return int(str(ds.get(keyword, "")).strip())
    except ValueError:
        return 2**31


def _is_stack(paths: Sequence[Path]) -> bool:
    """A cross-sectional series (every instance has a position and orientation), read as a volume."""
    for path in paths:
        ds = read_dicom(path, headers_only=True)
        if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds or ds.get("SamplesPerPixel", 1) != 1:
            return False
    return True


#: ViewPosition values of a frontal and of a lateral chest radiograph (MIMIC-CXR's PA / AP and LATERAL / LL, and a
#: right lateral RL, which MIMIC does not hold but a PACS may)
VIEW_POSITIONS: dict[str, tuple[str, ...]] = {"frontal": ("PA", "AP"), "lateral": ("LATERAL", "LL", "RL")}


def study_views(study: DicomStudy) -> dict[str, Path]:
    """The study's radiograph views by ViewPosition: ``{"frontal": file, "lateral": file}`` (each the first in file
    order among the images whose ViewPosition names it; a view the study lacks is absent)."""
    views: dict[str, Path] = {}
    for paths in study.images.values():
        for path in paths:
            position = str(read_dicom(path, headers_only=True).get("ViewPosition", "")).strip().upper()
            for view, positions in VIEW_POSITIONS.items():
                if position in positions and view not in views:
                    views[view] = path
    return views


def conditioning_from_study(study: DicomStudy) -> dict[str, Any]:
    """What a study offers a conditioned generator.

    Returns:
        ``{"report": str | None`` (the SR texts joined by blank lines, de-identified by
        :func:`medgen_monai.text.deid.scrub_text` with the study's own identifying values: the raw report never
        leaves this function), ``"age": float | None`` (years),
        ``"sex": "M" | "F" | "O" | None``, ``"images"``: per image series, a :class:`DicomVolume` for a
        cross-sectional stack, else each file's ``(H, W)`` / ``(H, W, 3)`` array; ``"reference"``: the allow-listed,
        de-identified attributes of the first instance (:func:`.marking.deidentified_reference`)}.
    """
    from .marking import deidentified_reference  # imported here: the writer side may be imported without the reader

    images: list[np.ndarray | DicomVolume] = []
    for paths in study.images.values():
        if _is_stack(paths):
            images.append(read_series(paths))
        else:
            images.extend(read_image_2d(p) for p in paths)
    from ...text.deid import scrub_text

    reports = [scrub_text(text, study.identifiers)[0] for text in study.reports if text.strip()]
    return {
        "report": "\n\n".join(reports) if reports else None,
        "age": patient_age(study.patient),
        "sex": patient_sex(study.patient),
        "images": images,
        "reference": deidentified_reference(study.patient),
    }


# ---------------------------------------------------------------------------------------------------- MONAI


@dataclass
class _Loaded:
    array: np.ndarray
    meta: dict


class DicomSeriesReader(ImageReader):
    """A MONAI reader for DICOM series folders and ``.dcm`` files, with the geometry of :func:`read_series`.

    ``LoadImage(reader=DicomSeriesReader(), image_only=True)(folder)`` gives a MetaTensor ``(X, Y, Z)`` whose
    ``affine`` is :attr:`DicomVolume.affine` (voxel -> RAS), like MONAI's ITKReader. A single file with a position
    and orientation is a one-slice volume ``(X, Y, 1)``; one without (a Secondary Capture) is a 2D image ``(W, H)``
    or ``(W, H, 3)`` (MONAI's spatial-first order, as PILReader gives) with a PixelSpacing-scaled affine. Several
    inputs are stacked as channels (MONAI's convention for a list of files).

    Args:
        spacing_tolerance: passed to :func:`read_series`.
    """

    def __init__(self, spacing_tolerance: float = 0.1) -> None:
        super().__init__()
        if not 0 < spacing_tolerance < 1:
            raise ValueError(f"DicomSeriesReader: spacing_tolerance must be in (0, 1), got {spacing_tolerance}")
        self.spacing_tolerance = spacing_tolerance

    def verify_suffix(self, filename: Sequence[PathLike] | PathLike) -> bool:
        """True when every name is a folder (a series) or ends with ``.dcm``."""
        names = [filename] if isinstance(filename, (str, PathLike)) else list(filename)
        return bool(names) and all(Path(n).is_dir() or Path(n).suffix.lower() == ".dcm" for n in names)

    def read(self, data: Sequence[PathLike] | PathLike, **kwargs) -> _Loaded | list[_Loaded]:
        """Read each folder or file (no extra kwargs are used); returns one object per input."""
        names = [data] if isinstance(data, (str, PathLike)) else list(data)
        loaded = [self._read_one(Path(n)) for n in names]
        return loaded[0] if len(loaded) == 1 else loaded

    def _read_one(self, path: Path) -> _Loaded:
        if path.is_file():
            ds = read_dicom(path, headers_only=True)
            if "ImagePositionPatient" not in ds or "ImageOrientationPatient" not in ds:
                pixels = read_image_2d(path)
                array = np.ascontiguousarray(np.swapaxes(pixels, 0, 1))  # (H, W[, 3]) -> (W, H[, 3])
                affine = np.eye(4)
                if "PixelSpacing" in ds:
                    affine[0, 0], affine[1, 1] = (float(v) for v in ds.PixelSpacing[::-1])
                meta = {
                    "spatial_shape": np.asarray(array.shape[:2]),
                    "original_channel_dim": -1 if array.ndim == 3 else float("nan"),
                }
                return _Loaded(array, self._meta(meta, affine, ds))
        volume = read_series(path, spacing_tolerance=self.spacing_tolerance)
        meta = {"spatial_shape": np.asarray(volume.array.shape), "original_channel_dim": float("nan")}
        return _Loaded(volume.array, self._meta(meta, volume.affine, volume.first))

    @staticmethod
    def _meta(meta: dict, affine: np.ndarray, ds: Dataset) -> dict:
        meta["affine"] = affine.copy()
        meta["original_affine"] = affine.copy()
        meta["space"] = "RAS"
        meta["spacing"] = np.linalg.norm(affine[:3, : len(meta["spatial_shape"])], axis=0)
        for keyword in ("Modality", "StudyInstanceUID", "SeriesInstanceUID", "SeriesDescription"):
            if keyword in ds:
                meta[keyword] = str(ds.get(keyword))
        return meta

    def get_data(self, img: _Loaded | list[_Loaded]) -> tuple[np.ndarray, dict]:
        """``(array, meta)``; several inputs -> stacked on a new first (channel) axis, which must share a grid."""
        items = img if isinstance(img, list) else [img]
        meta = dict(items[0].meta)
        for other in items[1:]:
            if other.array.shape != items[0].array.shape or not np.allclose(other.meta["affine"], meta["affine"]):
                raise ValueError(
                    "DicomSeriesReader: inputs stacked as channels need one shape and affine, got "
                    f"{items[0].array.shape} and {other.array.shape}"
                )
        if len(items) == 1:
            return items[0].array, meta
        meta["original_channel_dim"] = 0
        return np.stack([i.array for i in items], axis=0), meta
