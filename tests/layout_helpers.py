"""Helpers shared by the dataset-layout tests: read and rewrite CSV tables, snapshot a folder's bytes."""

from __future__ import annotations

import csv
from pathlib import Path

__all__ = ["rows", "rewrite", "files"]


def rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def rewrite(path: Path, table: list[dict[str, str]], fieldnames: list[str] | None = None) -> None:
    """Write ``table`` back (optionally with fewer columns, to damage a dataset on purpose)."""
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fieldnames or list(table[0]), lineterminator="\n", extrasaction="ignore")
        writer.writeheader()
        writer.writerows(table)


def files(root: Path) -> dict[str, bytes]:
    """Relative path -> bytes of every file under ``root``."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
