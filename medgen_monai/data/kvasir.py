"""Kvasir v2 layout: writer for the ``colon`` phantom and reader for phantom and real data.

On disk (as Simula distributes ``kvasir-dataset-v2``: one folder per class, no CSV)::

    normal-cecum/<image id>.jpg           one JPEG per image; the stem is a UUID-like id
    polyps/<image id>.jpg
    dyed-lifted-polyps/<image id>.jpg
    ulcerative-colitis/<image id>.jpg
    phantom_attributes.jsonl              phantoms only: {"id", "kind", "seed", "index", "label", "text", "attributes"}

Real Kvasir images have no description; the phantom's reference text lives in
``phantom_attributes.jsonl`` (key ``text``) and the reader returns it as ``"text"`` ("" otherwise).

Reader rules:

- one record per ``.jpg`` / ``.jpeg`` file (any letter case) in a class folder, sorted by
  (class order of :data:`KVASIR_CLASSES`, id); other files in a class folder (``.DS_Store``, ...) are
  ignored and images are not decoded;
- the four other Kvasir v2 classes (:data:`OTHER_KVASIR_CLASSES`: dyed-resection-margins,
  esophagitis, normal-pylorus, normal-z-line) are not modelled by the phantom, so their folders
  are skipped, which makes the full real dataset readable as is; any other folder (hidden ones
  aside) raises :class:`~medgen_monai.errors.DatasetError` listing the known classes;
- Kvasir has no patient ids: ``patient_id`` is the image id and the split is
  :func:`medgen_monai.data.split_of` of it.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from ..errors import DatasetError
from ..phantoms.base import PhantomSample
from ..phantoms.colon import COLON_CLASSES, image_identifier
from .common import ATTRIBUTES_FILE, attribute_record, read_attributes, save_image_2d, write_attributes
from .splits import split_of

__all__ = ["KVASIR_CLASSES", "OTHER_KVASIR_CLASSES", "IMAGE_SUFFIXES", "image_path", "write", "read"]

#: the class folders read (the phantom's classes, in label order)
KVASIR_CLASSES: tuple[str, ...] = COLON_CLASSES
#: the remaining Kvasir v2 class folders, skipped by the reader
OTHER_KVASIR_CLASSES: tuple[str, ...] = ("dyed-resection-margins", "esophagitis", "normal-pylorus", "normal-z-line")
IMAGE_SUFFIXES: tuple[str, ...] = (".jpg", ".jpeg")


def image_path(root: str | Path, label: str, image_id: str) -> Path:
    """``root/<class folder>/<image_id>.jpg``."""
    return Path(root) / label / f"{image_id}.jpg"


def write(samples: Iterable[PhantomSample], root: str | Path) -> Path:
    """Write ``colon`` phantom samples under ``root`` in the Kvasir v2 layout (files are written atomically).

    Each sample becomes ``<label>/<image id>.jpg`` (the id is ``meta["image_id"]``, or
    :func:`~medgen_monai.phantoms.colon.image_identifier` of its seed and index) and one line of
    ``phantom_attributes.jsonl``, in sample order; rewriting the same samples gives the same bytes.

    Returns:
        ``root``.

    Raises:
        ValueError: a sample is not a ``colon`` sample, has a label outside :data:`KVASIR_CLASSES`,
            or two samples share an image id.
    """
    root = Path(root)
    rows: list[dict[str, Any]] = []
    seen: set[str] = set()
    for sample in samples:
        if sample.kind != "colon":
            raise ValueError(
                f"kvasir.write: expected 'colon' samples, got a {sample.kind!r} sample (index {sample.index})"
            )
        if sample.label not in KVASIR_CLASSES:
            raise ValueError(
                f"kvasir.write: sample {sample.index} has label {sample.label!r}; "
                f"expected one of {list(KVASIR_CLASSES)}"
            )
        image_id = str(sample.meta.get("image_id") or image_identifier(sample.seed, sample.index))
        if image_id in seen:
            raise ValueError(
                f"kvasir.write: image id {image_id} appears twice (sample index {sample.index}); "
                "write samples of one seed, or give them distinct meta['image_id']"
            )
        seen.add(image_id)
        save_image_2d(sample.images["image"], image_path(root, sample.label, image_id))
        rows.append(attribute_record(sample, image_id))
    write_attributes(root, rows)
    return root


def read(root: str | Path) -> list[dict[str, Any]]:
    """Read a Kvasir v2 folder (phantom or real) into a datalist, one record per image.

    Args:
        root: the dataset root, holding one folder per class (``kvasir-dataset-v2`` for the real data).

    Returns:
        records sorted by (class order, id) with ``id`` (the file stem), ``patient_id`` (= ``id``),
        ``image`` (path as str), ``label`` (index into :data:`KVASIR_CLASSES`), ``label_name``,
        ``text`` (from ``phantom_attributes.jsonl``, else ""), ``split``, and ``attributes`` when
        ``phantom_attributes.jsonl`` has the id.

    Raises:
        DatasetError: ``root`` is missing or holds no images of a known class, a folder is not a
            Kvasir class, one id appears in two class folders, or the ground-truth file is malformed
            or gives an image a label other than its folder.
    """
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(root, "root", "a Kvasir v2 folder with one sub-folder per class (folder not found)")
    ground_truth = read_attributes(root)
    attributes_path = root / ATTRIBUTES_FILE
    found: dict[str, Path] = {}
    records: list[dict[str, Any]] = []
    folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith((".", "__")))
    for folder in folders:
        if folder.name in OTHER_KVASIR_CLASSES:
            continue
        if folder.name not in KVASIR_CLASSES:
            raise DatasetError(
                folder,
                "class folder",
                f"one of {list(KVASIR_CLASSES)} (or a skipped Kvasir class {list(OTHER_KVASIR_CLASSES)}), "
                f"got {folder.name!r}",
            )
    for label, class_name in enumerate(KVASIR_CLASSES):
        folder = root / class_name
        if not folder.is_dir():
            continue
        images = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        for path in images:
            image_id = path.stem
            if image_id in found:
                raise DatasetError(path, "id", f"a unique image id; {image_id} is also in {found[image_id]}")
            found[image_id] = path
            record: dict[str, Any] = {
                "id": image_id,
                "patient_id": image_id,
                "image": str(path),
                "label": label,
                "label_name": class_name,
                "text": "",
                "split": split_of(image_id),
            }
            truth = ground_truth.get(image_id)
            if truth is not None:
                if "label" in truth and truth["label"] != class_name:
                    raise DatasetError(
                        attributes_path,
                        "label",
                        f"image {image_id} is in folder {class_name!r} but its label is {truth['label']!r}",
                    )
                record["text"] = str(truth.get("text") or "")
                record["attributes"] = dict(truth["attributes"])
            records.append(record)
    if not records:
        raise DatasetError(
            root, "images", f"at least one .jpg image in a class folder {list(KVASIR_CLASSES)} (none found)"
        )
    return records
