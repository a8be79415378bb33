"""PI-CAI layout (public training data): writer for the ``prostate`` phantom and reader for phantom and real data.

On disk::

    images/<patient_id>/<patient_id>_<study_id>_t2w.mha   the axial T2-weighted volume (MetaImage, float32)
    marksheet.csv                                         PI-CAI's picai_labels/clinical_information/marksheet.csv:
                                                          patient_id,study_id,mri_date,patient_age,psa,psad,
                                                          prostate_volume,histopath_type,lesion_GS,lesion_ISUP,
                                                          case_ISUP,case_csPCa (YES / NO),center
    reports/<patient_id>_<study_id>.txt                   our addition (PI-CAI has no reports): the radiology
                                                          report; a case with an empty report has no file
    phantom_attributes.jsonl                              phantoms only: {"id": "<patient_id>_<study_id>",
                                                          "kind", "seed", "index", "label", "text", "attributes"}

Geometry of the ``.mha`` files: like scanner data they are stored in ITK's LPS frame with an
identity direction (voxel ``i`` towards the patient's Left, ``j`` Posterior, ``k`` Superior),
the phantom's spacing and the origin that centres the field of view on (0, 0, 0). The phantom's
RAS-ordered array is flipped along X and Y on writing, so MONAI's
``LoadImage`` + ``EnsureChannelFirst`` + ``Orientation(axcodes="RAS")`` gives it back unchanged; read
the volumes with :func:`medgen_monai.io.volumes.load_volume`, which does exactly that (``LoadImage``
alone gives the LPS array, the patient's left and right swapped).
Files are written uncompressed, so equal volumes give byte-identical files.

Reader rules (real PI-CAI works too): the marksheet may also sit at
``picai_labels/clinical_information/marksheet.csv`` under the root, and the volumes at
``images/<patient_id>/``, ``<patient_id>/`` or ``picai_public_images_fold<k>/<patient_id>/``.
One record per marksheet row: ``label`` is 1 iff ``case_csPCa`` is ``YES``; ``text`` is the
report or ``""``; ``split`` follows :func:`medgen_monai.data.split_of` on ``patient_id``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DatasetError
from ..io.atomic import atomic_path, atomic_write_text
from ..phantoms.base import PhantomSample
from ..phantoms.prostate import PROSTATE_CLASSES, study_identifiers
from .common import attribute_record, read_attributes, read_csv, write_attributes, write_csv
from .splits import split_of

__all__ = [
    "MARKSHEET_FILE",
    "REAL_MARKSHEET_FILE",
    "MARKSHEET_COLUMNS",
    "REQUIRED_COLUMNS",
    "image_path",
    "report_path",
    "case_id",
    "write_mha",
    "write",
    "read",
]

MARKSHEET_FILE = "marksheet.csv"
#: where the PI-CAI label repository keeps the marksheet (accepted by the reader)
REAL_MARKSHEET_FILE = "picai_labels/clinical_information/marksheet.csv"
MARKSHEET_COLUMNS: tuple[str, ...] = (
    "patient_id",
    "study_id",
    "mri_date",
    "patient_age",
    "psa",
    "psad",
    "prostate_volume",
    "histopath_type",
    "lesion_GS",
    "lesion_ISUP",
    "case_ISUP",
    "case_csPCa",
    "center",
)
REQUIRED_COLUMNS: tuple[str, ...] = ("patient_id", "study_id", "case_csPCa")
_CS_PCA = {"YES": 1, "NO": 0}


def case_id(patient_id: str, study_id: str) -> str:
    """``"<patient_id>_<study_id>"``, PI-CAI's case id."""
    return f"{patient_id}_{study_id}"


def image_path(root: str | Path, patient_id: str, study_id: str) -> Path:
    """``root/images/<patient_id>/<patient_id>_<study_id>_t2w.mha`` (where the writer puts it)."""
    return Path(root) / "images" / str(patient_id) / f"{case_id(patient_id, study_id)}_t2w.mha"


def report_path(root: str | Path, patient_id: str, study_id: str) -> Path:
    """``root/reports/<patient_id>_<study_id>.txt``."""
    return Path(root) / "reports" / f"{case_id(patient_id, study_id)}.txt"


# ---------------------------------------------------------------------------------------------
# writing


def write_mha(volume: np.ndarray, spacing: tuple[float, float, float], path: str | Path) -> Path:
    """Write a RAS-ordered ``(X, Y, Z)`` volume as an uncompressed MetaImage in ITK's LPS frame, atomically.

    Args:
        volume: float ``(X, Y, Z)``; voxel ``i`` towards the patient's Right, ``j`` Anterior, ``k`` Superior.
        spacing: ``(sx, sy, sz)`` mm.
        path: the ``.mha`` file.
    """
    import itk

    if volume.ndim != 3:
        raise ValueError(f"{path}: expected an (X, Y, Z) volume, got shape {volume.shape}")
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"{path}: spacing must be three positive numbers (mm), got {spacing}")
    # RAS order -> LPS order (flip X and Y), then ITK's numpy view is (Z, Y, X)
    lps = np.ascontiguousarray(volume[::-1, ::-1, :].astype(np.float32).transpose(2, 1, 0))
    image = itk.image_from_array(lps)
    image.SetSpacing([float(s) for s in spacing])
    shape = volume.shape
    image.SetOrigin([-(n - 1) / 2 * float(s) for n, s in zip(shape, spacing)])  # centre of the FOV at 0
    path = Path(path)
    with atomic_path(path) as tmp:
        itk.imwrite(image, str(tmp), compression=False)
    return path


def write(samples: Iterable[PhantomSample], root: str | Path) -> Path:
    """Write ``prostate`` phantom samples under ``root`` in the PI-CAI layout (files written atomically).

    Each sample gives one ``.mha`` volume (spacing from ``meta["spacing"]``), one marksheet row
    (``case_csPCa`` YES iff the label is csPCa, plus the clinical fields of ``meta``), a report
    file when its text is not empty, and a ``phantom_attributes.jsonl`` line (with the text).

    Returns:
        ``root``.

    Raises:
        ValueError: a sample is not a ``prostate`` sample, or two samples share a case id.
    """
    root = Path(root)
    marksheet: list[dict[str, Any]] = []
    attribute_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.kind != "prostate":
            raise ValueError(
                f"picai.write: expected 'prostate' samples, got a {sample.kind!r} sample (index {sample.index})"
            )
        meta: Mapping[str, Any] = sample.meta
        ids = study_identifiers(sample.seed, sample.index)
        patient_id, study_id = str(meta.get("patient_id", ids["patient_id"])), str(meta.get("study_id", ids["study_id"]))
        identifier = case_id(patient_id, study_id)
        if identifier in seen:
            raise ValueError(
                f"picai.write: case {identifier} appears twice (sample index {sample.index}); write samples of one "
                "seed, or give them distinct meta['patient_id'] / meta['study_id']"
            )
        seen.add(identifier)
        if "spacing" not in meta:
            raise ValueError(f"picai.write: sample {sample.index} has no meta['spacing'] (sx, sy, sz) mm")
        write_mha(sample.images["t2w"], tuple(meta["spacing"]), image_path(root, patient_id, study_id))
        if sample.text:
            atomic_write_text(report_path(root, patient_id, study_id), sample.text.rstrip("\n") + "\n")
        marksheet.append({
            "patient_id": patient_id,
            "study_id": study_id,
            "mri_date": meta.get("mri_date", ""),
            "patient_age": meta.get("age", ""),
            "psa": meta.get("psa", ""),
            "psad": meta.get("psad", ""),
            "prostate_volume": meta.get("prostate_volume", ""),
            "histopath_type": meta.get("histopath_type", ""),
            "lesion_GS": meta.get("lesion_GS", ""),
            "lesion_ISUP": meta.get("lesion_ISUP", ""),
            "case_ISUP": meta.get("case_ISUP", ""),
            "case_csPCa": "YES" if sample.label == "csPCa" else "NO",
            "center": meta.get("center", ""),
        })
        attribute_rows.append(attribute_record(sample, identifier))
    write_csv(root / MARKSHEET_FILE, MARKSHEET_COLUMNS, marksheet)
    write_attributes(root, attribute_rows)
    return root


# ---------------------------------------------------------------------------------------------
# reading


def _marksheet(root: Path) -> Path:
    for name in (MARKSHEET_FILE, REAL_MARKSHEET_FILE):
        if (root / name).is_file():
            return root / name
    raise DatasetError(root / MARKSHEET_FILE, MARKSHEET_FILE, f"file not found (nor {REAL_MARKSHEET_FILE})")


def _find_image(root: Path, patient_id: str, study_id: str, folds: list[Path]) -> Path:
    name = f"{case_id(patient_id, study_id)}_t2w.mha"
    expected = image_path(root, patient_id, study_id)
    for folder in [root / "images", root, *folds]:
        candidate = folder / patient_id / name
        if candidate.is_file():
            return candidate
    raise DatasetError(expected, "t2w", f"the T2-weighted volume of case {case_id(patient_id, study_id)} (file not found)")


def _number(value: str | None, path: Path, column: str, identifier: str, kind: type) -> int | float | None:
    """An optional numeric marksheet cell: empty / NaN -> None, else ``kind`` (ints may be written as 65.0)."""
    text = (value or "").strip()
    if text == "" or text.lower() in ("nan", "n/a", "na"):
        return None
    try:
        number = float(text)
    except ValueError:
        raise DatasetError(path, column, f"case {identifier}: expected a number or empty, got {value!r}") from None
    return int(round(number)) if kind is int else number


def read(root: str | Path) -> list[dict[str, Any]]:
    """Read a PI-CAI folder (phantom or real) into a datalist, one record per marksheet row.

    Returns:
        records in marksheet order with ``id`` (``<patient_id>_<study_id>``), ``patient_id``,
        ``study_id``, ``image`` (the ``.mha`` path as str; read it with
        :func:`medgen_monai.io.volumes.load_volume` for the RAS array), ``label`` (1 iff ``case_csPCa`` is YES),
        ``label_name`` (``"negative"`` / ``"csPCa"``), ``text`` (the report or ``""``), ``split``,
        ``age`` and ``psa`` (``None`` when the marksheet has no value or no such column), and
        ``attributes`` when ``phantom_attributes.jsonl`` has the case.

    Raises:
        DatasetError: the marksheet or one of its required columns is missing, a volume is missing
            (field ``t2w``), ``case_csPCa`` is not YES / NO, or an age / PSA is not a number.
    """
    root = Path(root)
    path = _marksheet(root)
    rows = read_csv(path, REQUIRED_COLUMNS, field=MARKSHEET_FILE)
    folds = sorted(p for p in root.glob("picai_public_images_fold*") if p.is_dir())
    ground_truth = read_attributes(root)
    records = []
    for row in rows:
        patient_id, study_id = (row["patient_id"] or "").strip(), (row["study_id"] or "").strip()
        identifier = case_id(patient_id, study_id)
        if not patient_id or not study_id:
            raise DatasetError(path, "patient_id" if not patient_id else "study_id", f"a value (case {identifier!r})")
        flag = (row["case_csPCa"] or "").strip().upper()
        if flag not in _CS_PCA:
            raise DatasetError(path, "case_csPCa", f"case {identifier}: expected YES or NO, got {row['case_csPCa']!r}")
        label = _CS_PCA[flag]
        report = report_path(root, patient_id, study_id)
        record: dict[str, Any] = {
            "id": identifier,
            "patient_id": patient_id,
            "study_id": study_id,
            "image": str(_find_image(root, patient_id, study_id, folds)),
            "label": label,
            "label_name": PROSTATE_CLASSES[label],
            "text": report.read_text(encoding="utf-8").strip() if report.is_file() else "",
            "split": split_of(patient_id),
            "age": _number(row.get("patient_age"), path, "patient_age", identifier, int),
            "psa": _number(row.get("psa"), path, "psa", identifier, float),
        }
        if identifier in ground_truth:
            record["attributes"] = dict(ground_truth[identifier]["attributes"])
        records.append(record)
    return records
