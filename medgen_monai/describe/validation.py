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
``unsupported_text``       the description uses words outside the task's lexicon (see below)
``unprintable_text``       the description holds control, format or unpaired surrogate characters
``too_long``               the description is longer than ``max_chars`` characters
``request_failed``         (set by the backends) the model gave no answer, e.g. a client error; a transient
                           failure (server error, timeout, lost connection) is not recorded, and is asked again
                           by the next run
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

**A description may only say what its attributes say.** Its words must come from the task's lexicon
(:meth:`~medgen_monai.describe.tasks.DescribeTask.lexicon`: every word of the task's vocabulary, class names
and the phrasings the oracle writes, plus a short list of function words and the common words of a
finding's description); a class named in it must be the image's class (every task, also derm, whose
attributes do not constrain the class). Text that is not a description of these attributes, an
instruction to a later reader ("ignore previous instructions ...") or an unrelated sentence, fails by
construction, whatever its wording. The cost: a model that phrases a finding in words outside the lexicon
is rejected too (``unsupported_text`` names the words); extend :data:`COMMON_WORDS` for such a model.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from .tasks import DescribeTask, get_task

__all__ = [
    "ValidationResult",
    "validate",
    "extract_json",
    "normalise_value",
    "count_sentences",
    "printable_text",
    "REQUIRED_KEYS",
    "MAX_SENTENCES",
    "COMMON_WORDS",
]

REQUIRED_KEYS: tuple[str, ...] = ("modality", "view", "attributes", "description")
MAX_SENTENCES = 3
#: words any task's description may use besides its own lexicon: function words and the plain words of a
#: finding's description
COMMON_WORDS: frozenset[str] = frozenset(
    """
a an the and or but with without of in on at to from by for as is are was were be been being has have had
it its this that these those there here which who whose where while also both either neither nor no not
none any each every all some one two three several single multiple more most less few many much very
than then so such same other another only just about around near over under above below between within
into onto across along through up down left right upper lower middle central centre center side sided
seen see shows show showing shown visible appears appear appearing noted note present presence absent
absence image images picture view frame field photo photograph area region part portion zone
lesion lesions finding findings feature features structure structures pattern colour color shape size
border edge margin surface appearance consistent suggestive suggests suggest likely possibly probably
compatible typical characteristic overall mostly mainly slightly mildly moderately markedly clearly
well ill defined demarcated sharp smooth regular irregular fairly rather relatively
""".split()
)
_WORD = re.compile(r"[a-z]+")
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
            closing = _closing_brace(raw, position)
            if closing is None:
                # the object never closes (a cut-off answer): what follows is inside it, so a complete inner
                # object (its "attributes") is not the answer
                return (
                    None,
                    f"malformed_json: the JSON object starting at character {position} is cut off ({first_error})",
                )
            position = raw.find("{", position + 1)
            continue
        if isinstance(value, dict):
            found = value
        # objects nested in a decoded one are part of it: continue after its end
        position = raw.find("{", end)
    if found is None:
        return None, f"malformed_json: no complete JSON object could be decoded ({first_error})"
    return found, None


def _closing_brace(text: str, start: int) -> int | None:
    """The index of the brace closing the one at ``start`` (braces in JSON strings ignored), or None."""
    depth, in_string, escaped = 0, False, False
    for index in range(start, len(text)):
        char = text[index]
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char == "{":
            depth += 1
        elif char == "}":
            depth -= 1
            if depth == 0:
                return index
    return None


def printable_text(text: str) -> str | None:
    """Why ``text`` is not plain printable text (control, format, private-use, unassigned or unpaired surrogate
    characters), or None; ordinary spaces are fine."""
    bad = sorted(
        {f"U+{ord(c):04X}" for c in text if c != " " and unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co", "Cn")}
    )
    if bad:
        return f"the description holds {len(bad)} kind(s) of non-printable character ({', '.join(bad[:5])})"
    return None


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
    """Whether ``phrase`` occurs in ``prose`` as whole words and not negated: a negation word earlier in its clause
    (the words since the last ``.``, ``;``, ``:``, "but" or "however", at most eight) negates it, so "no
    opacity, pleural effusion or pneumothorax" negates all three and "no effusion but a pneumothorax" only the
    first."""
    for match in re.finditer(rf"\b{re.escape(phrase)}\b", prose):
        clause = re.split(r"[.;:]|\bbut\b|\bhowever\b", prose[: match.start()])[-1]
        if not _NEGATIONS.intersection(re.findall(r"[a-z]+", clause)[-8:]):
            return True
    return False


def _description_reasons(
    task: DescribeTask, attributes: Mapping[str, str], description: str, category: str, max_chars: int
) -> list[str]:
    reasons = []
    if len(description) > max_chars:
        reasons.append(f"too_long: the description has {len(description)} characters (at most {max_chars})")
        return reasons  # the other checks would only repeat what is wrong with a text this long
    unprintable = printable_text(description)
    if unprintable:
        reasons.append(f"unprintable_text: {unprintable}")
        return reasons
    words = set(_WORD.findall(unicodedata.normalize("NFKD", description).encode("ascii", "ignore").decode().lower()))
    unsupported = sorted(words - task.lexicon() - COMMON_WORDS)
    if unsupported:
        shown = ", ".join(repr(w) for w in unsupported[:8]) + (" ..." if len(unsupported) > 8 else "")
        reasons.append(f"unsupported_text: {len(unsupported)} word(s) outside the {task.name} lexicon: {shown}")
    prose_text = _prose(description)
    shown = task.shown_classes(category, attributes)
    own = " | ".join(_prose(task.class_text(c)) for c in shown)
    for other in task.classes:
        name = _prose(task.class_text(other))
        # a class whose name is part of a shown one ("polyp" in "dyed and lifted polyp") is not another class
        if other not in shown and not re.search(rf"\b{re.escape(name)}\b", own) and _mentions(prose_text, name):
            reasons.append(
                f"class_contradiction: the description names {task.class_text(other)!r}; the image is "
                f"{task.class_text(category)!r}"
            )
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
                reasons.append(
                    f"description_contradiction: the description mentions {value!r} but {name} is {chosen!r}"
                )
    return reasons


def validate(
    task: DescribeTask | str, raw_answer: str, category: str, max_chars: int | None = None
) -> ValidationResult:
    """Check one raw model answer against the task's vocabulary and the image's known class.

    Args:
        task: the describe task (or its name).
        raw_answer: the model's full text answer.
        category: the image's bank category (its class; cxr: :func:`~medgen_monai.describe.tasks.cxr_category`).
        max_chars: the longest description accepted (default: the task's, twice its longest oracle description).

    Returns:
        a :class:`ValidationResult`; ``ok`` only when no check fails. Every failing check adds a reason.

    Raises:
        ValueError: ``category`` is not a category of the task (a data error, not a model error).
    """
    task = get_task(task)
    task.check_category(category)
    max_chars = task.max_description_chars if max_chars is None else int(max_chars)
    if max_chars < 1:
        raise ValueError(f"max_chars must be >= 1, got {max_chars}")
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
        reasons.append(
            f"wrong_modality: {answer['modality']!r} does not match the {task.name} task (expected {task.modality!r})"
        )
    if isinstance(answer.get("view"), str):
        reasons.extend(f"wrong_view: {r}" for r in task.view_reasons(answer["view"]))

    attributes: dict[str, str] = {}
    given = answer.get("attributes")
    if "attributes" in answer and not isinstance(given, Mapping):
        reasons.append(
            f"bad_type: 'attributes' must be an object of {list(task.attribute_names)}, got {type(given).__name__}"
        )
    elif isinstance(given, Mapping):
        names = {normalise_value(k) if isinstance(k, str) else k: k for k in given}
        for key, original in names.items():
            if key not in task.attribute_names:
                reasons.append(
                    f"unknown_attribute: {original!r} is not an attribute of the {task.name} task "
                    f"(expected {list(task.attribute_names)})"
                )
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
        reasons.extend(_description_reasons(task, attributes, description, category, max_chars))
    return ValidationResult(not reasons, attributes, description, reasons, answer)
