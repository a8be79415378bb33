"""MIMIC-CXR-JPG layout (v2.0.0): writer for the ``cxr`` phantom and reader for phantom and real data.

On disk (as PhysioNet distributes it, plus the reports of MIMIC-CXR)::

    files/p10/p10000032/s50414267/<dicom_id>.jpg   one JPEG per image; one PA frontal and one lateral per study
    files/p10/p10000032/s50414267.txt              the free-text report (FINDINGS: / IMPRESSION: sections)
    mimic-cxr-2.0.0-metadata.csv                   dicom_id,subject_id,study_id,...,ViewPosition,Rows,Columns,...
    mimic-cxr-2.0.0-chexpert.csv                   subject_id,study_id + 14 CheXpert columns (1.0 / 0.0 / -1.0 / empty)
    mimic-cxr-2.0.0-split.csv                      dicom_id,study_id,subject_id,split (train / validate / test)
    phantom_attributes.jsonl                       phantoms only: {"id": study_id, "label", "attributes", ...}

The folder ``p10`` holds the subjects whose ``subject_id`` starts with ``10``. The real CSVs ship
gzipped (``*.csv.gz``); the reader accepts either form.

Reader rules (one datalist record per study):

- frontal image: a ``ViewPosition`` of ``PA`` or ``AP``; lateral: ``LATERAL`` or ``LL``. Real
  studies may hold several of either: the first by ``dicom_id`` (string order) is used. Images
  with other view positions (``AP AXIAL``, ``LAO``, empty, ...) are ignored.
- label: multi-hot over :data:`medgen_monai.phantoms.cxr.CXR_CLASSES`; a CheXpert value of
  ``1.0`` is positive, while ``0.0`` (negative), ``-1.0`` (uncertain) and empty (not mentioned)
  all count as 0 (the "U-Zeros" policy).
- a study without a frontal or a lateral image, or without a CheXpert row, raises
  :class:`~medgen_monai.errors.DatasetError` (about a third of real MIMIC studies have a single
  view: pass ``skip_incomplete=True`` to leave those studies out instead).
"""

from __future__ import annotations

import csv
import gzip
import io
import re
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..io.atomic import atomic_write_text
from ..phantoms.base import PhantomSample
from ..phantoms.cxr import CXR_CLASSES, study_identifiers
from .common import attribute_record, read_attributes, read_csv, save_image_2d, write_attributes, write_csv
from .splits import split_of

__all__ = [
    "METADATA_FILE",
    "CHEXPERT_FILE",
    "SPLIT_FILE",
    "METADATA_COLUMNS",
    "CHEXPERT_COLUMNS",
    "FRONTAL_VIEW_POSITIONS",
    "LATERAL_VIEW_POSITIONS",
    "image_path",
    "report_path",
    "report_sections",
    "write",
    "read",
]

METADATA_FILE = "mimic-cxr-2.0.0-metadata.csv"
CHEXPERT_FILE = "mimic-cxr-2.0.0-chexpert.csv"
SPLIT_FILE = "mimic-cxr-2.0.0-split.csv"

METADATA_COLUMNS: tuple[str, ...] = (
    "dicom_id",
    "subject_id",
    "study_id",
    "PerformedProcedureStepDescription",
    "ViewPosition",
    "Rows",
    "Columns",
    "StudyDate",
    "StudyTime",
    "ProcedureCodeSequence_CodeMeaning",
    "ViewCodeSequence_CodeMeaning",
    "PatientOrientationCodeSequence_CodeMeaning",
)
#: the 14 CheXpert labeller columns, in the order of the real file
CHEXPERT_COLUMNS: tuple[str, ...] = (
    "Atelectasis",
    "Cardiomegaly",
    "Consolidation",
    "Edema",
    "Enlarged Cardiomediastinum",
    "Fracture",
    "Lung Lesion",
    "Lung Opacity",
    "No Finding",
    "Pleural Effusion",
    "Pleural Other",
    "Pneumonia",
    "Pneumothorax",
    "Support Devices",
)
FRONTAL_VIEW_POSITIONS: tuple[str, ...] = ("PA", "AP")
LATERAL_VIEW_POSITIONS: tuple[str, ...] = ("LATERAL", "LL")

_SPLIT_FILE_COLUMNS = ("dicom_id", "study_id", "subject_id", "split")
#: our split names -> MIMIC's
_SPLIT_NAMES = {"train": "train", "val": "validate", "test": "test"}
#: what the phantom writes for each view: ViewPosition, ViewCodeSequence_CodeMeaning
_VIEW_CODES = {"frontal": ("PA", "postero-anterior"), "lateral": ("LL", "left lateral")}
_PROCEDURE = "CHEST (PA AND LAT)"
_LABEL_VALUES = {"1.0": 1, "1": 1, "0.0": 0, "0": 0, "-1.0": 0, "-1": 0, "": 0}


def _subject_folder(root: Path, subject_id: str) -> Path:
    return root / "files" / f"p{subject_id[:2]}" / f"p{subject_id}"


def image_path(root: str | Path, subject_id: str, study_id: str, dicom_id: str) -> Path:
    """``root/files/p<XX>/p<subject_id>/s<study_id>/<dicom_id>.jpg`` (``XX``: the first two digits)."""
    return _subject_folder(Path(root), str(subject_id)) / f"s{study_id}" / f"{dicom_id}.jpg"


def report_path(root: str | Path, subject_id: str, study_id: str) -> Path:
    """``root/files/p<XX>/p<subject_id>/s<study_id>.txt``, where MIMIC-CXR keeps the report."""
    return _subject_folder(Path(root), str(subject_id)) / f"s{study_id}.txt"


def report_sections(text: str) -> dict[str, str]:
    """The sections of a report: upper-case heading (``FINDINGS``, ``IMPRESSION``, ...) -> its text.

    Headings are lines that start with upper-case words followed by a colon, as in MIMIC-CXR
    reports; text before the first heading is dropped. Whitespace inside a section is collapsed.
    """
    sections: dict[str, str] = {}
    parts = re.split(r"(?m)^\s*([A-Z][A-Z /&()-]*[A-Z)]):", text)
    for heading, body in zip(parts[1::2], parts[2::2]):
        sections[heading.strip()] = " ".join(body.split())
    return sections


# ---------------------------------------------------------------------------------------------
# writing


def _identifiers(sample: PhantomSample) -> tuple[str, str, dict[str, str]]:
    meta = sample.meta
    if {"patient_id", "study_id", "dicom_ids"} <= set(meta):
        return str(meta["patient_id"]), str(meta["study_id"]), dict(meta["dicom_ids"])
    ids = study_identifiers(sample.seed, sample.index)
    return ids["patient_id"], ids["study_id"], ids["dicom_ids"]


def write(samples: Iterable[PhantomSample], root: str | Path) -> Path:
    """Write ``cxr`` phantom samples under ``root`` in the MIMIC-CXR-JPG layout (files are written atomically).

    Each sample is a study with a PA and a lateral (``LL``) JPEG, its report, a row per image in
    the metadata and split CSVs, and a CheXpert row whose six modelled columns are ``1.0`` /
    ``0.0`` from the label (the other eight are left empty: the phantom does not model them).
    The split follows :func:`medgen_monai.data.split_of` on ``subject_id`` (seed 0), named
    ``train`` / ``validate`` / ``test`` as in MIMIC.

    Returns:
        ``root``.

    Raises:
        ValueError: a sample is not a ``cxr`` sample, or two samples share a study id.
    """
    root = Path(root)
    metadata_rows: list[dict[str, Any]] = []
    chexpert_rows: list[dict[str, Any]] = []
    split_rows: list[dict[str, Any]] = []
    attribute_rows: list[dict[str, Any]] = []
    studies: set[str] = set()
    for sample in samples:
        if sample.kind != "cxr":
            raise ValueError(
                f"mimic_cxr.write: expected 'cxr' samples, got a {sample.kind!r} sample (index {sample.index})"
            )
        subject_id, study_id, dicom_ids = _identifiers(sample)
        if study_id in studies:
            raise ValueError(
                f"mimic_cxr.write: study id {study_id} appears twice (sample index {sample.index}); "
                "write samples of one seed, or give them distinct meta['study_id']"
            )
        studies.add(study_id)
        split = _SPLIT_NAMES[split_of(subject_id)]
        for view, (position, code_meaning) in _VIEW_CODES.items():
            image = sample.images[view]
            save_image_2d(image, image_path(root, subject_id, study_id, dicom_ids[view]))
            metadata_rows.append({
                "dicom_id": dicom_ids[view],
                "subject_id": subject_id,
                "study_id": study_id,
                "PerformedProcedureStepDescription": _PROCEDURE,
                "ViewPosition": position,
                "Rows": image.shape[0],
                "Columns": image.shape[1],
                "StudyDate": sample.meta.get("study_date", ""),
                "StudyTime": sample.meta.get("study_time", ""),
                "ProcedureCodeSequence_CodeMeaning": _PROCEDURE,
                "ViewCodeSequence_CodeMeaning": code_meaning,
                "PatientOrientationCodeSequence_CodeMeaning": "Erect",
            })
            split_rows.append(
                {"dicom_id": dicom_ids[view], "study_id": study_id, "subject_id": subject_id, "split": split}
            )
        atomic_write_text(report_path(root, subject_id, study_id), sample.text.rstrip("\n") + "\n")
        positive = set(sample.label)
        chexpert_rows.append({
            "subject_id": subject_id,
            "study_id": study_id,
            **{c: ("1.0" if c in positive else "0.0") if c in CXR_CLASSES else "" for c in CHEXPERT_COLUMNS},
        })
        attribute_rows.append(attribute_record(sample, study_id, with_text=False))
    write_csv(root / METADATA_FILE, METADATA_COLUMNS, metadata_rows)
    write_csv(root / CHEXPERT_FILE, ("subject_id", "study_id", *CHEXPERT_COLUMNS), chexpert_rows)
    write_csv(root / SPLIT_FILE, _SPLIT_FILE_COLUMNS, split_rows)
    write_attributes(root, attribute_rows)
    return root


# ---------------------------------------------------------------------------------------------
# reading


def _read_table(root: Path, name: str, required: Sequence[str]) -> tuple[Path, list[dict[str, str]]]:
    """``root/name`` or, as PhysioNet ships it, ``root/name.gz``; the required columns must be present."""
    path = root / name
    if path.is_file():
        return path, read_csv(path, required, field=name)
    gz_path = root / f"{name}.gz"
    if not gz_path.is_file():
        raise DatasetError(path, name, f"file not found (nor {gz_path.name})")
    with gzip.open(gz_path, "rt", encoding="utf-8", newline="") as f:
        reader = csv.DictReader(io.StringIO(f.read()))
    header = reader.fieldnames or []
    missing = [c for c in required if c not in header]
    if missing:
        raise DatasetError(gz_path, missing[0], f"required column missing (columns found: {header})")
    return gz_path, list(reader)


def _label_value(value: str | None, path: Path, column: str, study_id: str) -> int:
    key = (value or "").strip()
    if key not in _LABEL_VALUES:
        raise DatasetError(path, column, f"study {study_id}: expected 1.0, 0.0, -1.0 or empty, got {value!r}")
    return _LABEL_VALUES[key]


def _pick_view(images: Sequence[tuple[str, str]], positions: Sequence[str]) -> tuple[str, str] | None:
    """The first ``(dicom_id, ViewPosition)`` by dicom_id among ``positions``; None if there is none."""
    candidates = sorted((dicom, position) for dicom, position in images if position in positions)
    return candidates[0] if candidates else None


def read(root: str | Path, skip_incomplete: bool = False) -> list[dict[str, Any]]:
    """Read a MIMIC-CXR-JPG folder (phantom or real) into a datalist, one record per study.

    Args:
        root: the dataset root (holding ``files/`` and the CSVs).
        skip_incomplete: leave out studies without a frontal or lateral image or without a
            CheXpert row instead of raising (useful on real MIMIC, where many studies have one view).

    Returns:
        records in the order studies first appear in the metadata CSV, with ``id`` (study_id),
        ``patient_id`` (subject_id), ``image`` (= ``frontal``), ``frontal``, ``lateral`` (paths as
        str), ``label`` (multi-hot list over ``CXR_CLASSES``), ``label_name``, ``text`` (the report),
        ``split``, ``frontal_dicom_id``, ``lateral_dicom_id``, ``frontal_view_position``,
        ``lateral_view_position``, and ``attributes`` when ``phantom_attributes.jsonl`` has the study.

    Raises:
        DatasetError: a CSV, column, image or report is missing, a study lacks a view (field
            ``ViewPosition``) or a CheXpert row, a dicom_id is not in the split CSV, or a CheXpert
            value is not 1.0 / 0.0 / -1.0 / empty.
    """
    root = Path(root)
    metadata_path, metadata = _read_table(root, METADATA_FILE, ("dicom_id", "subject_id", "study_id", "ViewPosition"))
    chexpert_path, chexpert = _read_table(root, CHEXPERT_FILE, ("subject_id", "study_id", *CXR_CLASSES))
    split_path, splits = _read_table(root, SPLIT_FILE, _SPLIT_FILE_COLUMNS)
    labels = {row["study_id"]: row for row in chexpert}
    split_by_dicom = {row["dicom_id"]: row["split"] for row in splits}
    ground_truth = read_attributes(root)

    studies: dict[str, dict[str, Any]] = {}
    for row in metadata:
        study = studies.setdefault(row["study_id"], {"subject_id": row["subject_id"], "images": []})
        study["images"].append((row["dicom_id"], (row["ViewPosition"] or "").strip().upper()))

    records = []
    for study_id, study in studies.items():
        subject_id = study["subject_id"]
        frontal = _pick_view(study["images"], FRONTAL_VIEW_POSITIONS)
        lateral = _pick_view(study["images"], LATERAL_VIEW_POSITIONS)
        label_row = labels.get(study_id)
        if frontal is None or lateral is None or label_row is None:
            if skip_incomplete:
                continue
            if label_row is None:
                raise DatasetError(chexpert_path, "study_id", f"a row for study {study_id} (subject {subject_id})")
            if frontal is None:
                missing, accepted = "frontal", FRONTAL_VIEW_POSITIONS
            else:
                missing, accepted = "lateral", LATERAL_VIEW_POSITIONS
            found = sorted({position for _, position in study["images"]})
            raise DatasetError(
                metadata_path,
                "ViewPosition",
                f"study {study_id} (subject {subject_id}) has no {missing} image (ViewPosition in {list(accepted)}); "
                f"found {found}",
            )
        paths = {}
        for view, (dicom_id, _) in (("frontal", frontal), ("lateral", lateral)):
            path = image_path(root, subject_id, study_id, dicom_id)
            if not path.is_file():
                raise DatasetError(
                    path, "dicom_id", f"the {view} image {dicom_id} of study {study_id} (file not found)"
                )
            paths[view] = str(path)
        report = report_path(root, subject_id, study_id)
        if not report.is_file():
            raise DatasetError(report, "report", f"the report of study {study_id} (file not found)")
        if frontal[0] not in split_by_dicom:
            raise DatasetError(split_path, "dicom_id", f"a row for dicom_id {frontal[0]} (study {study_id})")
        label = [_label_value(label_row[c], chexpert_path, c, study_id) for c in CXR_CLASSES]
        record: dict[str, Any] = {
            "id": study_id,
            "patient_id": subject_id,
            "image": paths["frontal"],
            "frontal": paths["frontal"],
            "lateral": paths["lateral"],
            "label": label,
            "label_name": [c for c, positive in zip(CXR_CLASSES, label) if positive],
            "text": report.read_text(encoding="utf-8").strip(),
            "split": split_by_dicom[frontal[0]],
            "frontal_dicom_id": frontal[0],
            "lateral_dicom_id": lateral[0],
            "frontal_view_position": frontal[1],
            "lateral_view_position": lateral[1],
        }
        if study_id in ground_truth:
            record["attributes"] = dict(ground_truth[study_id]["attributes"])
        records.append(record)
    return records
