"""Procedural phantom datasets with known ground truth (docs/phantoms.md)."""

from __future__ import annotations

import importlib

from .base import Attribute, Phantom, PhantomSample, sample_rng

__all__ = ["Attribute", "Phantom", "PhantomSample", "sample_rng", "KINDS", "get_phantom"]

#: kind name -> "module:class" (imported on first use so that one kind's import cost is not paid by others)
_REGISTRY = {
    "derm": "medgen_monai.phantoms.derm:DermPhantom",
    "colon": "medgen_monai.phantoms.colon:ColonPhantom",
    "cxr": "medgen_monai.phantoms.cxr:CXRPhantom",
    "prostate": "medgen_monai.phantoms.prostate:ProstatePhantom",
}
KINDS: tuple[str, ...] = tuple(_REGISTRY)


def get_phantom(kind: str) -> Phantom:
    """The phantom generator of ``kind`` (one of :data:`KINDS`)."""
    if kind not in _REGISTRY:
        raise ValueError(f"unknown phantom kind {kind!r}; expected one of {list(KINDS)}")
    module, cls = _REGISTRY[kind].split(":")
    return getattr(importlib.import_module(module), cls)()
