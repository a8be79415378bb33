"""Pieces shared by the dataset-layout modules: checked CSV reading, atomic CSV/JSONL/image writing,
and the optional ground-truth attribute file that phantoms add beside a real layout."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any


from ..errors import DatasetError
from ..io.atomic import atomic_write_text
from ..io.writers import save_image_2d  # re-exported: the layout writers use it

__all__ = [
    "ATTRIBUTES_FILE",
    "read_csv",
    "write_csv",
    "require_file",
    "read_attributes",
    "write_attributes",
    "attribute_record",
    "save_image_2d",
]

#: ground-truth attributes of phantoms, one JSON object per line: {"id", "kind", "label", "attributes"}.
#: Real datasets do not have it; readers treat it as optional.
ATTRIBUTES_FILE = "phantom_attributes.jsonl"


def require_file(path: str | Path, field: str) -> Path:
    """``path`` as a Path if it is an existing file, else a :class:`DatasetError` naming ``field``."""
    path = Path(path)
    if not path.is_file():
        raise DatasetError(path, field, "file not found")
    return path


def read_csv(path: str | Path, required: Sequence[str], field: str = "csv") -> list[dict[str, str]]:
    """Read a CSV with a header; every column in ``required`` must be present.

    Raises:
        DatasetError: the file is missing, empty, or lacks a required column.
    """
    path = require_file(path, field)
    with path.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        header = reader.fieldnames or []
        missing = [c for c in required if c not in header]
        if missing:
            raise DatasetError(path, missing[0], f"required column missing (columns found: {header})")
        return list(reader)


def write_csv(path: str | Path, fieldnames: Sequence[str], rows: Iterable[Mapping[str, Any]]) -> Path:
    """Write ``rows`` under header ``fieldnames`` atomically (``\\n`` line ends, deterministic)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(fieldnames), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow(row)
    return atomic_write_text(path, buffer.getvalue())


def attribute_record(sample: Any, record_id: str, with_text: bool = True) -> dict[str, Any]:
    """The ground-truth line of one phantom sample: id, kind, seed, index, label, attributes (and text, for
    layouts whose real files have no place for it)."""
    label = sample.label if isinstance(sample.label, str) else list(sample.label)
    record = {"id": record_id, "kind": sample.kind, "seed": sample.seed, "index": sample.index, "label": label,
              "attributes": dict(sample.attributes)}
    if with_text:
        record["text"] = sample.text
    return record


def write_attributes(root: str | Path, records: Iterable[Mapping[str, Any]]) -> Path:
    """Write the optional ground-truth attribute file under ``root``."""
    lines = [json.dumps(dict(r), sort_keys=True) for r in records]
    return atomic_write_text(Path(root) / ATTRIBUTES_FILE, "\n".join(lines) + ("\n" if lines else ""))


def read_attributes(root: str | Path) -> dict[str, dict[str, Any]]:
    """id -> record from the optional ground-truth attribute file; empty if the file is absent."""
    path = Path(root) / ATTRIBUTES_FILE
    if not path.is_file():
        return {}
    records: dict[str, dict[str, Any]] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DatasetError(path, f"line {lineno}", f"a JSON object ({e.msg})") from None
        if not isinstance(record, dict) or "id" not in record or "attributes" not in record:
            raise DatasetError(path, f"line {lineno}", "a JSON object with keys 'id' and 'attributes'")
        records[str(record["id"])] = record
    return records


