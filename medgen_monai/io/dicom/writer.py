"""Synthetic DICOM out: 2D images as Secondary Capture (ConversionType SYN), 3D volumes as an MR Image Storage
series (one file per slice, geometry from the NIfTI affine), report text as Basic Text SR.

Every file gets the patient, study, series, equipment and SOP common modules from one place
(:func:`_new_instance`, through highdicom), the synthetic marking of :mod:`.marking`, fresh UIDs (unless a
:class:`DicomStudyIds` says which study and series to join), and is written to a temporary name and renamed
(an MR series: a temporary folder renamed), so nothing is ever half-written.

Geometry of :func:`write_mr_series`: ``volume`` is ``(X, Y, Z)`` in the affine's voxel order and the affine maps voxel
indices to RAS millimetres (NIfTI). DICOM uses LPS, so ``affine_lps = diag(-1, -1, 1, 1) @ affine``. Slice ``k`` holds
``volume[:, :, k]`` transposed: pixel row ``r``, column ``c`` is ``volume[c, r, k]``, so DICOM columns run along the
first array axis. Then ``ImageOrientationPatient`` = (unit first axis, unit second axis) of ``affine_lps``,
``PixelSpacing`` = (second-axis spacing, first-axis spacing) (between rows, between columns),
``ImagePositionPatient`` of slice ``k`` = ``affine_lps @ (0, 0, k, 1)``, ``SliceThickness`` =
``SpacingBetweenSlices`` = the third-axis spacing. The axes must be orthogonal (DICOM slices cannot be sheared).
A left-handed affine (third axis against row x column) is written exactly, but readers that sort slices by position
along the normal give it back with the slice order reversed (the same voxels in space).
"""

from __future__ import annotations

import datetime
import os
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
from pydicom.sr.coding import Code
from pydicom.uid import ExplicitVRLittleEndian
from pydicom.valuerep import format_number_as_ds

from ..atomic import atomic_folder, atomic_path
from .marking import (
    ALLOWED_FROM_INPUT,
    SOFTWARE,
    SYNTHETIC_PATIENT_KEYWORDS,
    Provenance,
    apply_marking,
    synthetic_patient,
)

__all__ = [
    "SECONDARY_CAPTURE_STORAGE",
    "MR_IMAGE_STORAGE",
    "BASIC_TEXT_SR_STORAGE",
    "DicomStudyIds",
    "new_uid",
    "write_secondary_capture",
    "write_mr_series",
    "write_basic_text_sr",
]

SECONDARY_CAPTURE_STORAGE = "1.2.840.10008.5.1.4.1.1.7"
MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
BASIC_TEXT_SR_STORAGE = "1.2.840.10008.5.1.4.1.1.88.11"

_UINT16_MAX = 65535
_LPS_FROM_RAS = np.diag([-1.0, -1.0, 1.0, 1.0])


def new_uid() -> str:
    """A fresh UID (highdicom's root)."""
    import highdicom as hd

    return str(hd.UID())


@dataclass(frozen=True)
class DicomStudyIds:
    """The study and series an output joins (one run's study: :meth:`new`).

    Args:
        study_uid: StudyInstanceUID.
        series_uid: SeriesInstanceUID.
        series_number: SeriesNumber.
        study_date: StudyDate ``YYYYMMDD`` (empty: today).
        study_time: StudyTime ``HHMMSS`` (empty: now).
        study_id: StudyID (SH, at most 16 characters).
    """

    study_uid: str
    series_uid: str
    series_number: int = 1
    study_date: str = ""
    study_time: str = ""
    study_id: str = ""

    def __post_init__(self) -> None:
        for name in ("study_uid", "series_uid"):
            value = getattr(self, name)
            if not isinstance(value, str) or not pydicom.uid.UID(value).is_valid:
                raise ValueError(f"DicomStudyIds.{name}: expected a valid UID, got {value!r}")
        if len(self.study_id) > 16:
            raise ValueError(f"DicomStudyIds.study_id: at most 16 characters, got {self.study_id!r}")

    @classmethod
    def new(cls, series_number: int = 1) -> DicomStudyIds:
        """Fresh study and series UIDs, dated now."""
        now = datetime.datetime.now()
        study_uid = new_uid()
        return cls(
            study_uid,
            new_uid(),
            int(series_number),
            now.strftime("%Y%m%d"),
            now.strftime("%H%M%S"),
            "SYN" + study_uid[-8:].replace(".", ""),
        )

    def new_series(self, series_number: int) -> DicomStudyIds:
        """The same study, a fresh series."""
        return DicomStudyIds(
            self.study_uid, new_uid(), int(series_number), self.study_date, self.study_time, self.study_id
        )

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> DicomStudyIds:
        return cls(
            **{
                k: data[k]
                for k in ("study_uid", "series_uid", "series_number", "study_date", "study_time", "study_id")
                if k in data
            }
        )


def _new_instance(
    cls: type,
    *,
    provenance: Provenance,
    patient: Mapping[str, str] | None,
    study: DicomStudyIds | None,
    instance_number: int,
    series_description: str,
    image: bool,
    **extra: Any,
) -> pydicom.Dataset:
    """The one place every writer builds its dataset: patient, general study, general series, general equipment
    and SOP common modules (through highdicom ``cls``: ``hd.SOPClass``, given ``sop_class_uid`` and ``modality`` in
    ``extra``, or ``hd.sc.SCImage``), the allow-listed reference attributes, and the synthetic marking."""
    if not isinstance(provenance, Provenance):
        raise ValueError(f"provenance: expected a medgen_monai.io.dicom.Provenance, got {type(provenance).__name__}")
    patient = dict(synthetic_patient() if patient is None else patient)
    unknown = sorted(set(patient) - set(SYNTHETIC_PATIENT_KEYWORDS) - set(ALLOWED_FROM_INPUT))
    if unknown:
        raise ValueError(
            f"patient: {unknown} may not be written; expected keywords of synthetic_patient() "
            f"{list(SYNTHETIC_PATIENT_KEYWORDS)} or the allow-list {list(ALLOWED_FROM_INPUT)}"
        )
    if not str(patient.get("PatientName", "")).startswith("SYNTHETIC"):
        raise ValueError(f"patient: PatientName must start with SYNTHETIC, got {patient.get('PatientName')!r}")
    if int(instance_number) < 1:
        raise ValueError(f"instance_number: expected >= 1, got {instance_number}")
    study = study or DicomStudyIds.new()
    now = datetime.datetime.now()
    # a shifted StudyDate of a conditioning input (deidentified_reference) wins over the run's own date
    study_date = patient.get("StudyDate") or study.study_date or now.strftime("%Y%m%d")
    study_time = study.study_time or now.strftime("%H%M%S")
    ds = cls(
        study_instance_uid=study.study_uid,
        series_instance_uid=study.series_uid,
        series_number=study.series_number,
        sop_instance_uid=new_uid(),
        instance_number=int(instance_number),
        manufacturer=SOFTWARE,
        manufacturer_model_name=provenance.bundle[:64],
        software_versions=list(provenance.software_versions),
        transfer_syntax_uid=ExplicitVRLittleEndian,
        patient_id=patient.get("PatientID") or None,
        patient_name=patient.get("PatientName"),
        patient_birth_date=patient.get("PatientBirthDate") or None,
        patient_sex=patient.get("PatientSex") or None,
        accession_number=None,
        study_id=study.study_id or None,
        study_date=study_date,
        study_time=study_time,
        referring_physician_name=None,
        series_description=series_description,
        # series-level: the same for every instance of the series, whenever it is written
        series_date=study.study_date or study_date,
        series_time=study_time,
        content_date=now.date(),
        content_time=now.time(),
        **extra,
    )
    if patient.get("PatientAge"):
        ds.PatientAge = patient["PatientAge"]
    if image:  # General Series; an SR document series has neither body part nor laterality
        if patient.get("BodyPartExamined"):
            ds.BodyPartExamined = patient["BodyPartExamined"]
        # Laterality (type 2C) is required for a paired or unknown body part and forbidden for an unpaired one:
        # the input's (deidentified_reference) when given; none for an input's body part that had none; empty
        # (unknown) for a generated image of no stated body part
        if "Laterality" in patient:
            ds.Laterality = patient["Laterality"] or None
        elif not patient.get("BodyPartExamined"):
            ds.Laterality = None
    apply_marking(ds, provenance, series_description, image=image)
    return ds


def _save(ds: pydicom.Dataset, path: str | os.PathLike) -> Path:
    with atomic_path(path) as tmp:
        ds.save_as(tmp, enforce_file_format=True)
    return Path(path)


def _ds(value: float) -> str:
    """A float as a DS string (at most 16 characters)."""
    return format_number_as_ds(float(value))


def write_secondary_capture(
    image: np.ndarray,
    path: str | os.PathLike,
    provenance: Provenance,
    patient: Mapping[str, str] | None = None,
    *,
    study: DicomStudyIds | None = None,
    instance_number: int = 1,
    series_description: str = "SYNTHETIC image",
    patient_orientation: Sequence[str] | None = None,
    view_position: str | None = None,
) -> Path:
    """Write a synthetic 2D image as a Secondary Capture Image (highdicom ``SCImage``, ConversionType SYN).

    Args:
        image: uint8 ``(H, W)`` (MONOCHROME2) or ``(H, W, 3)`` (RGB); stored as is.
        path: the ``.dcm`` file (written atomically).
        provenance: bundle, version, seed.
        patient: :func:`synthetic_patient` keywords plus allow-listed reference attributes (default: a fresh
            synthetic patient).
        study: the study and series to join (default: fresh ones).
        instance_number: InstanceNumber within the series.
        series_description: SeriesDescription (``SYNTHETIC`` is put in front when missing).
        patient_orientation: the image's row and column directions (PatientOrientation, e.g. ``("L", "F")`` for a
            PA chest view), when the generator knows them; ``None``: empty (unknown).
        view_position: ViewPosition (``"PA"``, ``"AP"``, ``"LL"``, ...) of a generated radiograph view, as the
            DX/CR modules name it (the SC IOD has no slot for it, so it is an extra standard attribute).

    Returns:
        ``path``.
    """
    import highdicom as hd

    if patient_orientation is not None and (
        len(patient_orientation) != 2 or not all(isinstance(v, str) and v for v in patient_orientation)
    ):
        raise ValueError(
            f"{path}: patient_orientation: expected two direction codes such as ('L', 'F'), got {patient_orientation!r}"
        )
    if view_position is not None and (
        not isinstance(view_position, str) or not view_position.strip() or len(view_position) > 16
    ):
        raise ValueError(f"{path}: view_position: expected a short code such as 'PA' or 'LL', got {view_position!r}")
    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)) or image.size == 0:
        raise ValueError(f"{path}: image: expected uint8 (H, W) or (H, W, 3), got {image.dtype} {image.shape}")
    ds = _new_instance(
        hd.sc.SCImage,
        provenance=provenance,
        patient=patient,
        study=study,
        instance_number=instance_number,
        series_description=series_description,
        image=True,
        pixel_array=np.ascontiguousarray(image),
        photometric_interpretation="MONOCHROME2" if image.ndim == 2 else "RGB",
        bits_allocated=8,
        coordinate_system="PATIENT",
        # highdicom insists on an orientation for PATIENT images; a generated picture has none, so it is
        # emptied below (PatientOrientation is type 2C: present, empty when unknown)
        patient_orientation=tuple(patient_orientation or ("L", "F")),
    )
    if patient_orientation is None:
        ds.PatientOrientation = None
    if view_position is not None:
        ds.ViewPosition = view_position
    ds.ConversionType = "SYN"
    return _save(ds, path)


def write_mr_series(
    volume: np.ndarray,
    affine: np.ndarray | Sequence[Sequence[float]],
    folder: str | os.PathLike,
    provenance: Provenance,
    patient: Mapping[str, str] | None = None,
    *,
    study: DicomStudyIds | None = None,
    value_range: Sequence[float] = (0.0, 1.0),
    series_description: str = "SYNTHETIC MR",
) -> list[Path]:
    """Write a synthetic volume as an MR Image Storage series, one file per slice (see the module docstring for the
    geometry).

    Args:
        volume: ``(X, Y, Z)`` float in RAS voxel order; values are clipped to ``value_range``.
        affine: ``(4, 4)`` voxel -> RAS (mm), orthogonal axes.
        folder: the series folder (written as a whole: a temporary folder renamed; an existing one is replaced).
        provenance: bundle, version, seed.
        patient: as in :func:`write_secondary_capture`.
        study: the study and series (one series per volume; default: fresh ones).
        value_range: ``(low, high)`` mapped onto uint16 0..65535 with RescaleSlope/RescaleIntercept, so reading
            back gives ``volume`` within one quantum ``(high - low) / 65535``.
        series_description: SeriesDescription (``SYNTHETIC`` is put in front when missing).

    Returns:
        the slice files, slice ``k`` (``k = 0 .. Z - 1``) at index ``k``.
    """
    import highdicom as hd

    folder = Path(folder)
    volume = np.asarray(volume, dtype=np.float64)
    if volume.ndim != 3 or volume.size == 0:
        raise ValueError(f"{folder}: volume: expected a non-empty (X, Y, Z) array, got shape {volume.shape}")
    affine = np.asarray(affine, dtype=np.float64)
    if affine.shape != (4, 4) or not np.all(np.isfinite(affine)):
        raise ValueError(f"{folder}: affine: expected a finite 4x4 voxel -> RAS matrix, got shape {affine.shape}")
    if len(value_range) != 2 or not float(value_range[0]) < float(value_range[1]):
        raise ValueError(f"{folder}: value_range: expected (low, high) with low < high, got {value_range}")
    lps = _LPS_FROM_RAS @ affine
    spacing = np.linalg.norm(lps[:3, :3], axis=0)
    if np.any(spacing <= 0):
        raise ValueError(f"{folder}: affine: voxel spacing must be positive, got {spacing.tolist()}")
    axes = lps[:3, :3] / spacing
    if not np.allclose(axes.T @ axes, np.eye(3), atol=1e-4):
        raise ValueError(f"{folder}: affine: the voxel axes must be orthogonal (DICOM slices cannot be sheared)")
    normal = np.cross(axes[:, 0], axes[:, 1])

    # the stored DS strings are what readers use: quantise with them so that reading back is within one quantum
    low, high = float(value_range[0]), float(value_range[1])
    slope_text, intercept_text = _ds((high - low) / _UINT16_MAX), _ds(low)
    slope, intercept = float(slope_text), float(intercept_text)
    stored = np.clip(np.round((np.clip(volume, low, high) - intercept) / slope), 0, _UINT16_MAX).astype("<u2")

    # one patient and one study for every slice
    patient = synthetic_patient() if patient is None else patient
    study = study or DicomStudyIds.new()
    frame_of_reference = new_uid()
    width = max(4, len(str(volume.shape[2])))
    names = [f"slice_{k + 1:0{width}d}.dcm" for k in range(volume.shape[2])]
    with atomic_folder(folder) as tmp:
        for k, name in enumerate(names):
            ds = _new_instance(
                hd.SOPClass,
                sop_class_uid=MR_IMAGE_STORAGE,
                modality="MR",
                provenance=provenance,
                patient=patient,
                study=study,
                instance_number=k + 1,
                series_description=series_description,
                image=True,
            )
            position = lps[:3, 3] + k * lps[:3, 2]
            # Frame of Reference
            ds.FrameOfReferenceUID = frame_of_reference
            ds.PositionReferenceIndicator = None
            # General Series: PatientPosition is type 2C for MR; a generated volume has no known position
            ds.PatientPosition = None
            # Image Plane
            ds.ImagePositionPatient = [_ds(v) for v in position]
            ds.ImageOrientationPatient = [_ds(v) for v in (*axes[:, 0], *axes[:, 1])]
            ds.PixelSpacing = [_ds(spacing[1]), _ds(spacing[0])]
            ds.SliceThickness = _ds(spacing[2])
            ds.SliceLocation = _ds(float(position @ normal))
            # MR Image: a synthetic volume has no pulse sequence; RM = research mode, type 2 timings empty
            ds.ScanningSequence = "RM"
            ds.SequenceVariant = "NONE"
            ds.ScanOptions = None
            ds.MRAcquisitionType = None
            ds.RepetitionTime = None
            ds.EchoTime = None
            ds.EchoTrainLength = None
            ds.SpacingBetweenSlices = _ds(spacing[2])
            # Image Pixel
            ds.SamplesPerPixel = 1
            ds.PhotometricInterpretation = "MONOCHROME2"
            ds.Rows, ds.Columns = volume.shape[1], volume.shape[0]
            ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
            ds.RescaleIntercept, ds.RescaleSlope = intercept_text, slope_text
            # VOI LUT: show the whole value range
            ds.WindowCenter, ds.WindowWidth = _ds((low + high) / 2), _ds(high - low)
            ds.PixelData = np.ascontiguousarray(stored[:, :, k].T).tobytes()
            ds.save_as(tmp / name, enforce_file_format=True)
    return [folder / name for name in names]


def write_basic_text_sr(
    text: str,
    path: str | os.PathLike,
    provenance: Provenance,
    patient: Mapping[str, str] | None = None,
    *,
    study: DicomStudyIds | None = None,
    title: Code | None = None,
    instance_number: int = 1,
    series_description: str = "SYNTHETIC report",
) -> Path:
    """Write a synthetic report as a Basic Text SR: a CONTAINER root (``title``) holding one TEXT item (DCM 121070
    "Findings") with ``text``.

    Args:
        text: the report (non-empty; UTF-8 is declared when it is not ASCII).
        path: the ``.dcm`` file (written atomically).
        provenance: bundle, version, seed.
        patient: as in :func:`write_secondary_capture`.
        study: the study and series to join (an SR series of its own; default: fresh ones).
        title: document title code (default LOINC 18748-4 "Diagnostic Imaging Report", CID 7000).
        instance_number: InstanceNumber within the series.
        series_description: SeriesDescription (``SYNTHETIC`` is put in front when missing).

    Returns:
        ``path``.
    """
    import highdicom as hd
    from pydicom.sr.codedict import codes

    if not isinstance(text, str) or not text.strip():
        raise ValueError(f"{path}: text: expected a non-empty report string, got {text!r}")
    title = codes.LN.DiagnosticImagingReport if title is None else title
    ds = _new_instance(
        hd.SOPClass,
        sop_class_uid=BASIC_TEXT_SR_STORAGE,
        modality="SR",
        provenance=provenance,
        patient=patient,
        study=study,
        instance_number=instance_number,
        series_description=series_description,
        image=False,
        specific_character_set=None if text.isascii() else "ISO_IR 192",
    )
    # SR Document Series / General: nothing was performed or verified
    ds.ReferencedPerformedProcedureStepSequence = []
    ds.CompletionFlag = "COMPLETE"
    ds.VerificationFlag = "UNVERIFIED"
    ds.PerformedProcedureCodeSequence = []
    # SR Document Content: the root container and its one TEXT item
    ds.ValueType = "CONTAINER"
    ds.ConceptNameCodeSequence = [hd.sr.CodedConcept.from_code(title)]
    ds.ContinuityOfContent = "SEPARATE"
    ds.ContentSequence = [hd.sr.TextContentItem(name=codes.DCM.Findings, value=text, relationship_type="CONTAINS")]
    return _save(ds, path)
