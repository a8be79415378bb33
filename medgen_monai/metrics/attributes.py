"""Attribute accuracy: does a generated image show what was asked?

The audit network of the image's unit (:mod:`medgen_monai.metrics.audit`) first says whether the image
is of its kind at all (its validity output), then reads every attribute and the class back; the score
is the fraction of requests it reads back as requested, an invalid image counting as wrong on every
attribute (``mean``). The same fraction over the valid images only (``mean_valid``) and the valid
fraction are reported beside it. Its held-out accuracy on real phantoms (docs/audit.md) bounds what a
generator can reach; benchmarks/quality.py measures the ceilings per request set.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .audit import AuditNet, load_audit, sample_targets
from .preprocess import ImageInput

__all__ = ["attribute_accuracy"]


def attribute_accuracy(
    images: ImageInput,
    requested_attributes: Sequence[Mapping[str, str]],
    unit: str | None = None,
    labels: Sequence[Any] | None = None,
    audit: AuditNet | None = None,
    batch_size: int = 64,
) -> dict[str, Any]:
    """Fraction of requested attribute values (and classes) the audit network reads back.

    Args:
        images: ``N`` images in any layout the shared preprocessing accepts (uint8 phantom
            layout, float channel-first generator output in ``[0, 1]``, volumes).
        requested_attributes: ``N`` dicts attribute -> requested value. Only the attributes a request
            names and the unit can see are scored, so partial requests are fine.
        unit: audit unit (``"derm_image"``, ``"cxr_frontal"``, ...); not needed when ``audit`` is given.
        labels: optional ``N`` requested classes (multi-label kinds: sequences of positive classes),
            scored as the head ``"label"`` (per-class heads ``"label:<class>"`` for multi-label kinds).
        audit: an already loaded audit network (default: the shipped one of ``unit``).
        batch_size: images per forward.

    Returns:
        ``{"mean": mean over scored heads (invalid images wrong on every head), "per_attribute": {head: accuracy},
        "support": {head: count}, "valid_fraction": share of images the validity output accepts,
        "mean_valid": the mean over the valid images only (``None`` when none is valid), "per_attribute_valid",
        "n": N, "unit": unit}``. Means are unweighted over heads, so a rare attribute counts as much as a
        frequent one.

    Raises:
        ValueError: lengths differ, a value outside the vocabulary, or nothing to score.
    """
    if audit is None:
        if unit is None:
            raise ValueError("attribute_accuracy: give the audit unit (e.g. unit='derm_image') or an audit network")
        audit = load_audit(unit)
    assessed = audit.assess(images, batch_size=batch_size)
    predictions, valid = assessed["values"], assessed["valid"]
    n = len(valid)
    if len(requested_attributes) != n:
        raise ValueError(f"requested_attributes: got {len(requested_attributes)} requests for {n} images")
    if labels is not None and len(labels) != n:
        raise ValueError(f"labels: got {len(labels)} labels for {n} images")
    values = dict(audit.spec.heads)
    hits: dict[str, list[bool]] = {}
    hits_valid: dict[str, list[bool]] = {}
    for i, request in enumerate(requested_attributes):
        targets = sample_targets(audit.spec, request, None if labels is None else labels[i])
        for head, target in targets.items():
            read_back = predictions[head][i] == values[head][target]
            hits.setdefault(head, []).append(bool(valid[i] and read_back))
            if valid[i]:
                hits_valid.setdefault(head, []).append(bool(read_back))
    if not hits:
        raise ValueError(
            f"attribute_accuracy: no request names an attribute that {audit.unit} scores "
            f"({[h for h in audit.spec.head_names if not h.startswith('label')]})"
        )
    per_attribute = {head: float(np.mean(h)) for head, h in hits.items()}
    per_attribute_valid = {head: float(np.mean(h)) for head, h in hits_valid.items()}
    return {
        "mean": float(np.mean(list(per_attribute.values()))),
        "per_attribute": per_attribute,
        "support": {head: len(h) for head, h in hits.items()},
        "valid_fraction": float(np.mean(valid)),
        "mean_valid": float(np.mean(list(per_attribute_valid.values()))) if per_attribute_valid else None,
        "per_attribute_valid": per_attribute_valid,
        "n": n,
        "unit": audit.unit,
    }
