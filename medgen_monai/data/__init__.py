"""Readers (and phantom writers) for real dataset layouts -> MONAI datalists.

Every layout module (``isic``, ``kvasir``, ``mimic_cxr``, ``picai``) has
``write(samples, root) -> Path`` and ``read(root) -> list[dict]``. A datalist record has:

- ``"id"``: the layout's image / study / case id; ``"patient_id"``;
- ``"image"``: path of the image (cxr: also ``"frontal"`` and ``"lateral"``);
- ``"label"``: int class index (cxr: a multi-hot list over the kind's classes) and
  ``"label_name"`` (cxr: the list of positive class names);
- ``"text"``: the description or report ("" when there is none);
- ``"attributes"``: the ground-truth attribute dict, only when the optional
  ``phantom_attributes.jsonl`` is present;
- layout-specific extras (age, sex, spacing, ...).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

from .splits import split_datalist, split_of

__all__ = ["LAYOUTS", "read_dataset", "write_dataset", "split_datalist", "split_of", "view_items"]

#: layout name -> the phantom kind written in it
LAYOUTS: dict[str, str] = {"isic": "derm", "kvasir": "colon", "mimic_cxr": "cxr", "picai": "prostate"}


def _module(layout: str):
    if layout not in LAYOUTS:
        by_kind = {k: v for v, k in LAYOUTS.items()}
        if layout in by_kind:
            layout = by_kind[layout]
        else:
            raise ValueError(f"unknown layout {layout!r}; expected one of {list(LAYOUTS)} (or a phantom kind {list(by_kind)})")
    return importlib.import_module(f"medgen_monai.data.{layout}")


def write_dataset(layout: str, samples: Iterable[Any], root: str | Path) -> Path:
    """Write phantom samples under ``root`` in ``layout`` (a layout or phantom kind name)."""
    return _module(layout).write(samples, Path(root))


def read_dataset(layout: str, root: str | Path) -> list[dict[str, Any]]:
    """Read a dataset (phantom or real) in ``layout`` into a MONAI datalist."""
    return _module(layout).read(Path(root))


def view_items(records: Iterable[dict[str, Any]], views: Iterable[str] = ("frontal", "lateral")) -> list[dict[str, Any]]:
    """One item per view of each record, ``{"id": "<record id>_<view>", "image": <the view's path>, "view": view}``
    (an autoencoder shared by several views trains on all of them).

    Raises:
        ValueError: a record without one of ``views``.
    """
    views = list(views)
    items = []
    for record in records:
        missing = [v for v in views if not record.get(v)]
        if missing:
            raise ValueError(f"record {record.get('id')!r} has no {missing} view")
        items.extend({"id": f"{record['id']}_{v}", "image": record[v], "view": v} for v in views)
    return items
