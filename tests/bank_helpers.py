"""A tiny description-bank writer for tests (the fixed layout of medgen_monai.describe, without a describe run)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

__all__ = ["DERM_VOCABULARY", "derm_record", "write_bank"]

DERM_VOCABULARY = {
    "shape": ["round", "oval", "irregular"],
    "size": ["small", "medium", "large"],
    "colour": ["light_brown", "dark_brown", "black", "red", "blue_grey"],
    "border": ["well_defined", "ill_defined"],
    "pattern": ["network", "globules", "homogeneous"],
    "position": ["centre", "upper_left", "upper_right", "lower_left", "lower_right"],
}


def derm_record(image_id: str, category: str, **attributes: str) -> dict[str, Any]:
    """A validated derm bank record whose description states its attributes."""
    attrs = {
        "shape": "round",
        "size": "small",
        "colour": "light_brown",
        "border": "well_defined",
        "pattern": "network",
        "position": "centre",
        **attributes,
    }
    words = {k: v.replace("_", " ") for k, v in attrs.items()}
    text = (
        f"A {words['size']} {words['shape']} {words['colour']} lesion with a {words['border']} border and a "
        f"{words['pattern']} pattern at the {words['position']}."
    )
    return {
        "id": image_id,
        "image": f"/data/{image_id}.jpg",
        "category": category,
        "description": text,
        "attributes": attrs,
        "task": "derm",
        "backend": "oracle",
        "model": "oracle",
    }


def write_bank(
    root: Path,
    records: Sequence[Mapping[str, Any]],
    rejected: Sequence[Mapping[str, Any]] = (),
    task: str | None = "derm",
    vocabulary: Mapping[str, Sequence[str]] | None = None,
    empty_categories: Sequence[str] = (),
) -> Path:
    """Write ``records`` as ``<root>/<slug(category)>.jsonl`` (+ rejected.jsonl, bank.json when ``task``)."""
    root.mkdir(parents=True, exist_ok=True)
    by_file: dict[str, list[Mapping[str, Any]]] = {re.sub(r"[^A-Za-z0-9._-]", "_", c): [] for c in empty_categories}
    for record in records:
        by_file.setdefault(re.sub(r"[^A-Za-z0-9._-]", "_", record["category"]), []).append(record)
    for stem, lines in by_file.items():
        (root / f"{stem}.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines), encoding="utf-8")
    if rejected:
        (root / "rejected.jsonl").write_text("".join(json.dumps(line) + "\n" for line in rejected), encoding="utf-8")
    if task is not None:
        counts: dict[str, int] = {}
        for record in records:
            counts[record["category"]] = counts.get(record["category"], 0) + 1
        total = len(records) + len(rejected)
        meta = {
            "task": task,
            "backend": "oracle",
            "model": "oracle",
            "vocabulary": dict(vocabulary or (DERM_VOCABULARY if task == "derm" else {})),
            "counts": dict(sorted(counts.items())),
            "rejected": len(rejected),
            "rejection_rate": len(rejected) / total if total else 0.0,
        }
        (root / "bank.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
    return root
