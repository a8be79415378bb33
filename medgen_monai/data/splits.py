"""Patient-level train/val/test splits by a seeded hash rule."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["split_of", "split_datalist"]

DEFAULT_FRACTIONS: dict[str, float] = {"train": 0.8, "val": 0.1, "test": 0.1}


def split_of(key: str, seed: int = 0, fractions: Mapping[str, float] = DEFAULT_FRACTIONS) -> str:
    """The split a patient belongs to.

    A hash of ``(seed, key)`` places the patient on [0, 1); the fractions cut that
    interval in order. The rule depends on nothing but the patient's key, so adding
    cases never moves an existing patient to another split, and every image of one
    patient lands in the same split.
    """
    total = sum(fractions.values())
    if not fractions or any(v < 0 for v in fractions.values()) or abs(total - 1.0) > 1e-6:
        raise ValueError(f"fractions must be non-negative and sum to 1, got {dict(fractions)}")
    digest = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    u = int.from_bytes(digest[:8], "big") / 2**64
    edge = 0.0
    for name, fraction in fractions.items():
        edge += fraction
        if u < edge:
            return name
    return list(fractions)[-1]


def split_datalist(
    datalist: Sequence[Mapping[str, Any]],
    seed: int = 0,
    fractions: Mapping[str, float] = DEFAULT_FRACTIONS,
    key: str = "patient_id",
) -> dict[str, list[dict[str, Any]]]:
    """Split a datalist by patient.

    Args:
        datalist: records as returned by the ``medgen_monai.data`` readers.
        seed: the split seed.
        fractions: split name -> fraction, summing to 1.
        key: the record field that identifies the patient.

    Returns:
        split name -> records (in input order).
    """
    out: dict[str, list[dict[str, Any]]] = {name: [] for name in fractions}
    for i, record in enumerate(datalist):
        if key not in record:
            raise ValueError(f"datalist record {i} has no field {key!r} to split by (fields: {sorted(record)})")
        out[split_of(str(record[key]), seed, fractions)].append(dict(record))
    return out
