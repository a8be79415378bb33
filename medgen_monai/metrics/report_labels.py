"""Findings read from chest X-ray report text (a rule-based labeller, as CheXpert's is), and the clinical label
agreement of generated reports.

MedCoDi-M's report metrics need the findings a generated report states, to compare them with the study it was
generated for (clinical label F1, as CheXbert-based scores do for MIMIC-CXR). :func:`cxr_report_attributes` reads
the cxr phantom's attributes back from report text: the devices, the lobe of an opacity, the side and size of an
effusion, the side of a pneumothorax and the heart size, with the phrasings radiologists (and the phantom) use,
case-insensitively and negation-aware ("no pneumothorax", "no focal consolidation" state absence). It reads
lower-cased, re-flowed text too (what an uncased report decoder writes).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..phantoms.cxr import CLASS_ATTRIBUTES, label_from_attributes

__all__ = ["attribute_agreement", "cxr_report_attributes", "cxr_report_labels", "label_f1"]

_LOBES = {
    "right upper lobe": ("upper", "right"),
    "left upper lobe": ("upper", "left"),
    "right middle lobe": ("middle", "right"),
    "lingula": ("middle", "left"),
    "right lower lobe": ("lower", "right"),
    "left lower lobe": ("lower", "left"),
}
_EFFUSION = re.compile(r"\b(small|large)\s+(bilateral|left|right)\s+(?:pleural\s+)?effusions?\b")
_PNEUMOTHORAX = re.compile(r"\b(left|right)(?:[\s-]+sided|\s+apical)?\s+pneumothorax\b")
_ENLARGED = re.compile(
    r"\b(cardiomegaly|heart is enlarged|heart size is enlarged|cardiac silhouette is enlarged|"
    r"enlarged cardiac silhouette)\b"
)
_PACEMAKER = re.compile(r"\b(pacemaker|pacing device)\b")
_CENTRAL_LINE = re.compile(r"\b(internal jugular|ij line|central venous catheter)\b")


def cxr_report_attributes(text: str) -> dict[str, str]:
    """The cxr attributes a report states (absent findings get their absent value).

    Raises:
        ValueError: ``text`` is not a string.
    """
    if not isinstance(text, str):
        raise ValueError(f"report must be text, got {type(text).__name__}")
    t = re.sub(r"\s+", " ", text.lower())
    attributes = {
        "heart_size": "enlarged" if _ENLARGED.search(t) else "normal",
        "effusion_side": "none",
        "effusion_size": "none",
        "opacity_lobe": "none",
        "opacity_side": "none",
        "pneumothorax": "none",
        "device": "pacemaker" if _PACEMAKER.search(t) else "central_line" if _CENTRAL_LINE.search(t) else "none",
    }
    effusion = _EFFUSION.search(t)
    if effusion:
        attributes["effusion_size"], attributes["effusion_side"] = effusion.group(1), effusion.group(2)
    pneumothorax = _PNEUMOTHORAX.search(t)
    if pneumothorax:
        attributes["pneumothorax"] = pneumothorax.group(1)
    for name, (lobe, side) in _LOBES.items():  # a named lobe is only ever mentioned for an opacity in it
        if name in t:
            attributes["opacity_lobe"], attributes["opacity_side"] = lobe, side
            break
    return attributes


def cxr_report_labels(text: str) -> tuple[str, ...]:
    """The CheXpert-style classes a report states (``("No Finding",)`` when none)."""
    return label_from_attributes(cxr_report_attributes(text))


def label_f1(
    predicted: Sequence[Sequence[str]], truth: Sequence[Sequence[str]], classes: Sequence[str] = tuple(CLASS_ATTRIBUTES)
) -> dict[str, Any]:
    """Clinical label agreement: per-class F1 and their macro and micro averages over ``classes`` (the findings;
    "No Finding" is their absence), for label sets of the same studies.

    Raises:
        ValueError: the two lists differ in length or are empty.
    """
    if len(predicted) != len(truth) or not truth:
        raise ValueError(f"predicted ({len(predicted)}) and truth ({len(truth)}) must be the same, non-zero length")
    per_class: dict[str, float] = {}
    tp_all = fp_all = fn_all = 0
    for c in classes:
        p = np.array([c in set(x) for x in predicted])
        y = np.array([c in set(x) for x in truth])
        tp, fp, fn = int((p & y).sum()), int((p & ~y).sum()), int((~p & y).sum())
        tp_all, fp_all, fn_all = tp_all + tp, fp_all + fp, fn_all + fn
        per_class[c] = 2 * tp / (2 * tp + fp + fn) if (2 * tp + fp + fn) else 1.0
    micro = 2 * tp_all / (2 * tp_all + fp_all + fn_all) if (2 * tp_all + fp_all + fn_all) else 1.0
    exact = float(np.mean([set(a) == set(b) for a, b in zip(predicted, truth)]))
    return {
        "per_class": per_class,
        "macro_f1": float(np.mean(list(per_class.values()))),
        "micro_f1": float(micro),
        "exact_match": exact,
        "n": len(truth),
    }


def attribute_agreement(predicted: Sequence[Mapping[str, str]], truth: Sequence[Mapping[str, str]]) -> dict[str, float]:
    """Per attribute, how often two readings of the same studies agree."""
    if len(predicted) != len(truth) or not truth:
        raise ValueError(f"predicted ({len(predicted)}) and truth ({len(truth)}) must be the same, non-zero length")
    names = sorted(set(truth[0]) & set(predicted[0]))
    return {n: float(np.mean([p[n] == t[n] for p, t in zip(predicted, truth)])) for n in names}
