"""Validation of an MLLM's answer: only answers that pass every check enter the description bank.

:func:`validate` parses the final JSON object of a raw answer and collects *every* reason to reject it
(not only the first), each reason a string ``"<code>: <detail>"``. The codes:

=========================  =====================================================================
``no_json``                the answer holds no ``{...}`` object at all
``malformed_json``         it holds ``{`` but no complete JSON object can be decoded
``missing_key``            one of ``modality``, ``view``, ``attributes``, ``description`` is absent
``bad_type``               a key has the wrong type (``attributes`` not an object, a value not a string)
``wrong_modality``         ``modality`` names no modality of the task (keyword match, e.g. "dermoscop")
``wrong_view``             cxr only: the view is not frontal (PA/AP) or says lateral
``unknown_attribute``      an attribute name outside the task's vocabulary
``out_of_vocabulary``      a value outside the attribute's allowed values
``missing_attribute``      an attribute of the vocabulary is not answered
``class_contradiction``    the attributes contradict what the image's known class implies
``empty_description``      the description is empty or blank
``too_many_sentences``     the description has more than 3 sentences
``description_contradiction``  the description names a value its own attributes did not choose
``request_failed``         (set by the backends) the model could not be asked, e.g. a server error
=========================  =====================================================================

Tolerances, on purpose: code fences and text around the JSON (a chain of thought) are ignored, the
**last** complete JSON object is the answer; attribute values are matched case-insensitively with spaces
and hyphens read as underscores (``"Light brown"`` -> ``light_brown``).

The description check is deliberately simple: for every attribute, a value the answer did *not* choose
is looked for as a whole phrase in the description (underscores as spaces, case and hyphens ignored),
but only when that value belongs to this attribute alone in the task's vocabulary (``"none"``,
``"left"`` and ``"right"`` are shared, so they are never searched) and only when none of ``no``,
``not``, ``without``, ``nor`` occurs in the three words before it ("no pleural effusion" does not
contradict ``effusion_size: none``). So "a large oval lesion" with ``shape: round`` is rejected.
Sentences are counted by splitting after ``.``, ``!`` or ``?`` followed by a space (abbreviations such
as "e.g." count as sentence ends).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .tasks import DescribeTask, get_task

__all__ = ["ValidationResult", "validate", "extract_json", "normalise_value", "count_sentences", "REQUIRED_KEYS",
           "MAX_SENTENCES"]

REQUIRED_KEYS: tuple[str, ...] = ("modality", "view", "attributes", "description")
MAX_SENTENCES = 3
_NEGATIONS = frozenset({"no", "not", "without", "nor", "neither"})


@dataclass
class ValidationResult:
    """The verdict on one answer.

    Attributes:
        ok: True iff ``reasons`` is empty.
        attributes: the answer's attributes in vocabulary order, values normalised (possibly partial
            or empty when the answer is rejected).
        description: the answer's description (stripped; "" when absent).
        reasons: every reason for rejection, each ``"<code>: <detail>"``.
        answer: the decoded JSON object (None when none could be decoded).
    """

    ok: bool
    attributes: dict[str, str] = field(default_factory=dict)
    description: str = ""
    reasons: list[str] = field(default_factory=list)
    answer: dict[str, Any] | None = None


def extract_json(raw: str) -> tuple[dict[str, Any] | None, str | None]:
    """The last complete top-level JSON object in ``raw`` (text, code fences and reasoning around it allowed).

    Returns:
        ``(object, None)``, or ``(None, reason)`` with reason ``"no_json: ..."`` or ``"malformed_json: ..."``.
    """
    decoder = json.JSONDecoder()
    found: dict[str, Any] | None = None
    first_error: str | None = None
    position = raw.find("{")
    if position < 0:
        return None, "no_json: the answer holds no JSON object"
    while position >= 0:
        try:
            value, end = decoder.raw_decode(raw, position)
        except json.JSONDecodeError as e:
            first_error = first_error or f"{e.msg} at character {e.pos}"
            position = raw.find("{", position + 1)
            continue
        if isinstance(value, dict):
            found = value
        # objects nested in a decoded one are part of it: continue after its end
        position = raw.find("{", end)
    if found is None:
        return None, f"malformed_json: no complete JSON object could be decoded ({first_error})"
    return found, None


def normalise_value(value: Any) -> Any:
    """Lower-case, trimmed, with spaces and hyphens as underscores (non-strings are returned unchanged)."""
    if not isinstance(value, str):
        return value
    return re.sub(r"[\s\-]+", "_", value.strip().lower())


def count_sentences(text: str) -> int:
    """Sentences in ``text``: pieces after splitting at ``.``/``!``/``?`` followed by white space."""
    return len([s for s in re.split(r"(?<=[.!?])\s+", text.strip()) if s.strip()])


def _prose(text: str) -> str:
    """Lower case, underscores and hyphens as spaces, single spaces."""
    return re.sub(r"\s+", " ", re.sub(r"[_\-]", " ", text.lower())).strip()


def _mentions(prose: str, phrase: str) -> bool:
    """Whether ``phrase`` occurs in ``prose`` as whole words and not right after a negation."""
    for match in re.finditer(rf"\b{re.escape(phrase)}\b", prose):
        before = re.findall(r"[a-z]+", prose[: match.start()])[-3:]
        if not _NEGATIONS.intersection(before):
            return True
    return False


def _description_reasons(task: DescribeTask, attributes: Mapping[str, str], description: str) -> list[str]:
    reasons = []
    sentences = count_sentences(description)
    if sentences > MAX_SENTENCES:
        reasons.append(f"too_many_sentences: the description has {sentences} sentences (at most {MAX_SENTENCES})")
    owners: dict[str, int] = {}
    for attribute in task.attributes:
        for value in attribute.values:
            owners[value] = owners.get(value, 0) + 1
    prose = _prose(description)
    for name, chosen in attributes.items():
        for value in task.attribute(name).values:
            if value != chosen and owners[value] == 1 and _mentions(prose, _prose(value)):
                reasons.append(f"description_contradiction: the description mentions {value!r} but {name} is {chosen!r}")
    return reasons


def validate(task: DescribeTask | str, raw_answer: str, category: str) -> ValidationResult:
    """Check one raw model answer against the task's vocabulary and the image's known class.

    Args:
        task: the describe task (or its name).
        raw_answer: the model's full text answer.
        category: the image's bank category (its class; cxr: :func:`~medgen_monai.describe.tasks.cxr_category`).

    Returns:
        a :class:`ValidationResult`; ``ok`` only when no check fails. Every failing check adds a reason.

    Raises:
        ValueError: ``category`` is not a category of the task (a data error, not a model error).
    """
    task = get_task(task)
    task.check_category(category)
    answer, error = extract_json(raw_answer if isinstance(raw_answer, str) else "")
    if answer is None:
        return ValidationResult(False, reasons=[str(error)])
    reasons: list[str] = []
    for key in REQUIRED_KEYS:
        if key not in answer:
            reasons.append(f"missing_key: the answer has no {key!r} (keys found: {sorted(answer)})")

    for key in ("modality", "view"):
        if key in answer and not isinstance(answer[key], str):
            reasons.append(f"bad_type: {key!r} must be a string, got {type(answer[key]).__name__}")
    if isinstance(answer.get("modality"), str) and not task.modality_matches(answer["modality"]):
        reasons.append(f"wrong_modality: {answer['modality']!r} does not match the {task.name} task "
                       f"(expected {task.modality!r})")
    if isinstance(answer.get("view"), str):
        reasons.extend(f"wrong_view: {r}" for r in task.view_reasons(answer["view"]))

    attributes: dict[str, str] = {}
    given = answer.get("attributes")
    if "attributes" in answer and not isinstance(given, Mapping):
        reasons.append(f"bad_type: 'attributes' must be an object of {list(task.attribute_names)}, "
                       f"got {type(given).__name__}")
    elif isinstance(given, Mapping):
        names = {normalise_value(k) if isinstance(k, str) else k: k for k in given}
        for key, original in names.items():
            if key not in task.attribute_names:
                reasons.append(f"unknown_attribute: {original!r} is not an attribute of the {task.name} task "
                               f"(expected {list(task.attribute_names)})")
        for attribute in task.attributes:
            if attribute.name not in names:
                reasons.append(f"missing_attribute: {attribute.name!r} is not answered")
                continue
            value = given[names[attribute.name]]
            normalised = normalise_value(value)
            if normalised not in attribute.values:
                reasons.append(f"out_of_vocabulary: {attribute.name} {value!r} is not one of {list(attribute.values)}")
                continue
            attributes[attribute.name] = normalised
        reasons.extend(f"class_contradiction: {r}" for r in task.consistent(category, attributes))

    description = answer.get("description")
    if "description" in answer and not isinstance(description, str):
        reasons.append(f"bad_type: 'description' must be a string, got {type(description).__name__}")
        description = ""
    description = (description or "").strip()
    if "description" in answer and isinstance(answer.get("description"), str) and not description:
        reasons.append("empty_description: the description is empty")
    if description:
        reasons.extend(_description_reasons(task, attributes, description))
    return ValidationResult(not reasons, attributes, description, reasons, answer)
