"""ISIC 2019 layout: writer for the ``derm`` phantom and reader for phantom and real data.

On disk (as the ISIC archive distributes the 2019 challenge training set)::

    ISIC_2019_Training_Input/ISIC_0000000.jpg   one JPEG per image
    ISIC_2019_Training_GroundTruth.csv          image,MEL,NV,BCC,AK,BKL,DF,VASC,SCC,UNK (one-hot, 1.0 / 0.0)
    ISIC_2019_Training_Metadata.csv             image,age_approx,anatom_site_general,lesion_id,sex
    phantom_attributes.jsonl                    phantoms only: {"id": image, "label", "text", "attributes", ...}

The reference description of a phantom image is in ``phantom_attributes.jsonl`` (key ``text``):
real ISIC images have no description (VAP-Diffusion makes them with an MLLM).

Reader rules (one datalist record per ground-truth row):

- the label is the one column with value 1 among the nine; the phantom models the seven
  classes of :data:`medgen_monai.phantoms.derm.DERM_CLASSES`, so a row positive for ``SCC``
  or ``UNK`` raises :class:`~medgen_monai.errors.DatasetError` unless ``skip_other_classes=True``
  (real ISIC 2019 has 628 SCC images);
- the split groups images of one lesion: ``patient_id`` is ``lesion_id`` from the metadata CSV,
  or the image id where the metadata has no lesion id (many ISIC 2019 rows) or no metadata file exists.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..phantoms.base import PhantomSample
from ..phantoms.derm import DERM_CLASSES, image_identifiers
from .common import attribute_record, read_attributes, read_csv, require_file, save_image_2d, write_attributes, write_csv
from .splits import split_of

__all__ = [
    "IMAGE_FOLDER",
    "GROUND_TRUTH_FILE",
    "METADATA_FILE",
    "GROUND_TRUTH_COLUMNS",
    "METADATA_COLUMNS",
    "image_path",
    "write",
    "read",
]

IMAGE_FOLDER = "ISIC_2019_Training_Input"
GROUND_TRUTH_FILE = "ISIC_2019_Training_GroundTruth.csv"
METADATA_FILE = "ISIC_2019_Training_Metadata.csv"
#: the ground-truth columns of ISIC 2019, in the order of the real file
GROUND_TRUTH_COLUMNS: tuple[str, ...] = ("image", "MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC", "SCC", "UNK")
METADATA_COLUMNS: tuple[str, ...] = ("image", "age_approx", "anatom_site_general", "lesion_id", "sex")
_ONE_HOT = {"1.0": 1, "1": 1, "0.0": 0, "0": 0}


def image_path(root: str | Path, image_id: str) -> Path:
    """``root/ISIC_2019_Training_Input/<image_id>.jpg``."""
    return Path(root) / IMAGE_FOLDER / f"{image_id}.jpg"


def write(samples: Iterable[PhantomSample], root: str | Path) -> Path:
    """Write ``derm`` phantom samples under ``root`` in the ISIC 2019 layout (atomic, byte-deterministic).

    Returns:
        ``root``.

    Raises:
        ValueError: a sample is not a ``derm`` sample, or two samples share an image id.
    """
    root = Path(root)
    truth_rows: list[dict[str, Any]] = []
    metadata_rows: list[dict[str, Any]] = []
    attribute_rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.kind != "derm":
            raise ValueError(f"isic.write: expected 'derm' samples, got a {sample.kind!r} sample (index {sample.index})")
        ids = {**image_identifiers(sample.seed, sample.index), **sample.meta}
        image_id = str(ids["image_id"])
        if image_id in seen:
            raise ValueError(
                f"isic.write: image id {image_id} appears twice (sample index {sample.index}); "
                "write samples of one seed, or give them distinct meta['image_id']"
            )
        seen.add(image_id)
        save_image_2d(sample.images["image"], image_path(root, image_id))
        truth_rows.append({"image": image_id, **{c: "1.0" if c == sample.label else "0.0" for c in GROUND_TRUTH_COLUMNS[1:]}})
        metadata_rows.append({
            "image": image_id,
            "age_approx": f"{float(ids.get('age_approx', '')):.1f}" if ids.get("age_approx", "") != "" else "",
            "anatom_site_general": ids.get("anatom_site_general", ""),
            "lesion_id": ids.get("lesion_id", ""),
            "sex": ids.get("sex", ""),
        })
        attribute_rows.append(attribute_record(sample, image_id))
    write_csv(root / GROUND_TRUTH_FILE, GROUND_TRUTH_COLUMNS, truth_rows)
    write_csv(root / METADATA_FILE, METADATA_COLUMNS, metadata_rows)
    write_attributes(root, attribute_rows)
    return root


def _label(row: dict[str, str], path: Path) -> str:
    """The one positive class of a ground-truth row."""
    image_id = row["image"]
    positive = []
    for column in GROUND_TRUTH_COLUMNS[1:]:
        value = (row[column] or "").strip()
        if value not in _ONE_HOT:
            raise DatasetError(path, column, f"image {image_id}: expected 1.0 or 0.0, got {row[column]!r}")
        if _ONE_HOT[value]:
            positive.append(column)
    if len(positive) != 1:
        raise DatasetError(path, "image", f"image {image_id}: exactly one class column equal to 1.0, found {positive}")
    return positive[0]


def read(root: str | Path, skip_other_classes: bool = False) -> list[dict[str, Any]]:
    """Read an ISIC 2019 folder (phantom or real) into a datalist, one record per image.

    Args:
        root: the dataset root (holding ``ISIC_2019_Training_Input/`` and the CSVs).
        skip_other_classes: leave out images whose class is not modelled (``SCC``, ``UNK``)
            instead of raising.

    Returns:
        records in ground-truth CSV order with ``id`` (image id), ``patient_id`` (lesion id, or the
        image id), ``image`` (path as str), ``label`` (index into ``DERM_CLASSES``), ``label_name``,
        ``text`` (the phantom description, or ""), ``split``, ``age_approx``, ``sex``,
        ``anatom_site_general`` (when the metadata CSV has them), and ``attributes`` when
        ``phantom_attributes.jsonl`` has the image.

    Raises:
        DatasetError: the ground-truth CSV or a column is missing, a value is not 1.0 / 0.0, a row
            has no or several positive classes or an unmodelled one, or an image file is missing.
    """
    root = Path(root)
    truth_path = root / GROUND_TRUTH_FILE
    truth = read_csv(truth_path, GROUND_TRUTH_COLUMNS, field=GROUND_TRUTH_FILE)
    metadata: dict[str, dict[str, str]] = {}
    metadata_path = root / METADATA_FILE
    if metadata_path.is_file():
        metadata = {row["image"]: row for row in read_csv(metadata_path, ("image", "lesion_id"), field=METADATA_FILE)}
    ground_truth = read_attributes(root)

    records = []
    for row in truth:
        image_id = row["image"]
        label = _label(row, truth_path)
        if label not in DERM_CLASSES:
            if skip_other_classes:
                continue
            raise DatasetError(
                truth_path, label, f"image {image_id} is {label}, a class the derm kind does not model (classes "
                f"{list(DERM_CLASSES)}); pass skip_other_classes=True to leave such images out"
            )
        path = require_file(image_path(root, image_id), "image")
        meta = metadata.get(image_id, {})
        patient_id = (meta.get("lesion_id") or "").strip() or image_id
        record: dict[str, Any] = {
            "id": image_id,
            "patient_id": patient_id,
            "image": str(path),
            "label": DERM_CLASSES.index(label),
            "label_name": label,
            "text": "",
            "split": split_of(patient_id),
        }
        for key in ("sex", "anatom_site_general"):
            if meta.get(key):
                record[key] = meta[key]
        if (meta.get("age_approx") or "").strip():
            try:
                record["age_approx"] = float(meta["age_approx"])
            except ValueError:
                raise DatasetError(metadata_path, "age_approx", f"image {image_id}: a number, got {meta['age_approx']!r}") from None
        if image_id in ground_truth:
            record["attributes"] = dict(ground_truth[image_id]["attributes"])
            record["text"] = str(ground_truth[image_id].get("text", ""))
        records.append(record)
    return records
