"""Describe tasks: what an MLLM is asked about one imaging task, and what its answer must satisfy.

A :class:`DescribeTask` ties one imaging task (``derm``, ``colon``, ``cxr``) to the fixed attribute
vocabulary of its phantom kind (:mod:`medgen_monai.phantoms`), to the bank *category* of a datalist
record, to the attribute values a category allows, and to the oracle's description writer.

Categories (the keys of a description bank):

- ``derm``: one of :data:`~medgen_monai.phantoms.derm.DERM_CLASSES` (``"MEL"``, ``"NV"``, ...);
- ``colon``: one of :data:`~medgen_monai.phantoms.colon.COLON_CLASSES` (Kvasir folder names);
- ``cxr`` (frontal view only): the study's most acute positive class (:func:`cxr_category`, in the
  order of :data:`CXR_PRIORITY`), e.g. ``"Pleural Effusion"`` for a study with cardiomegaly and an effusion.
"""

from __future__ import annotations

import abc
import functools
import re
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

import numpy as np

from ..io.writers import safe_id
from ..phantoms.base import Attribute, pick
from ..phantoms.colon import CLASS_SUPPORT, COLON_ATTRIBUTES, COLON_CLASSES
from ..phantoms.cxr import CLASS_ATTRIBUTES, CXR_ATTRIBUTES, CXR_CLASSES, absent_value, label_from_attributes
from ..phantoms.derm import DERM_ATTRIBUTES, DERM_CLASS_NAMES, DERM_CLASSES

__all__ = [
    "TASKS",
    "DescribeTask",
    "DermTask",
    "ColonTask",
    "CXRTask",
    "get_task",
    "cxr_category",
    "cxr_check_category",
    "CXR_PRIORITY",
    "category_slug",
    "CXR_FINDING_ATTRIBUTES",
]

#: task name -> the dataset layout its real data comes in (``medgen_monai.data.read_dataset``)
TASKS: dict[str, str] = {"derm": "isic", "colon": "kvasir", "cxr": "mimic_cxr"}

#: CheXpert class -> the cxr attributes that show it; a class is present iff its attributes are not absent
#: (:func:`~medgen_monai.phantoms.cxr.absent_value`), as in :func:`~medgen_monai.phantoms.cxr.label_from_attributes`.
CXR_FINDING_ATTRIBUTES = CLASS_ATTRIBUTES


def category_slug(category: str) -> str:
    """The bank file stem of a category: every character outside ``[A-Za-z0-9._-]`` becomes ``_``."""
    return safe_id(category)


#: a study with several findings is filed under its most acute one, in this order; the description carries the rest
CXR_PRIORITY: tuple[str, ...] = (
    "Pneumothorax",
    "Pleural Effusion",
    "Lung Opacity",
    "Cardiomegaly",
    "Support Devices",
    "No Finding",
)


def cxr_category(label_names: Sequence[str] | str) -> str:
    """The bank category of a chest X-ray: its most acute positive class in :data:`CXR_PRIORITY` order.

    One class per study keeps the categories few and well populated (the phantom's 5000 studies hold 32
    label combinations, many with a handful of studies) and gives each class enough images for its
    prototypes; the findings below the first (an effusion beside a pneumothorax, a device) are in the
    description, which is what VAP-Diffusion conditions on.

    Args:
        label_names: the positive class names (a datalist record's ``label_name``), in any order; a
            single string is one class or several joined with ``"+"``.

    Raises:
        ValueError: an unknown class, a repeated class, no class at all, or "No Finding" with another class.
    """
    names = label_names.split("+") if isinstance(label_names, str) else list(label_names)
    unknown = [n for n in names if n not in CXR_CLASSES]
    if unknown:
        raise ValueError(f"cxr: unknown class(es) {unknown}; expected names from {list(CXR_CLASSES)}")
    if len(set(names)) != len(names):
        raise ValueError(f"cxr: repeated class in {names}")
    if not names:
        raise ValueError(
            f"cxr: no positive class; a study needs at least one of {list(CXR_CLASSES)} "
            "('No Finding' for a normal study)"
        )
    if "No Finding" in names and len(names) > 1:
        raise ValueError(f"cxr: 'No Finding' cannot be combined with other classes, got {names}")
    return next(c for c in CXR_PRIORITY if c in names)


def cxr_check_category(category: str) -> str:
    """``category`` if it is a cxr category (one class name); ``ValueError`` naming the classes otherwise."""
    if category not in CXR_CLASSES:
        raise ValueError(
            f"cxr: unknown category {category!r}; expected one class of {list(CXR_PRIORITY)} "
            "(a study is filed under its most acute finding)"
        )
    return category


def _words(value: str) -> str:
    """An attribute value as prose (``light_brown`` -> ``light brown``)."""
    return value.replace("_", " ")


def _article(phrase: str) -> str:
    return "an" if phrase[:1].lower() in "aeiou" else "a"


def _capital(text: str) -> str:
    return text[:1].upper() + text[1:]


class DescribeTask(abc.ABC):
    """One imaging task of the describe step.

    Subclasses fix the vocabulary (``attributes``, from the phantom kind), the classes, the expected
    modality and view, and implement :meth:`category`, :meth:`class_constraints` and :meth:`compose`.
    """

    name: ClassVar[str]
    #: the dataset layout real data of this task is read in
    layout: ClassVar[str]
    #: the modality the oracle writes and the prompt's step 1 is checked against
    modality: ClassVar[str]
    #: the view the oracle writes
    view: ClassVar[str]
    #: lower-case fragments one of which an answer's "modality" (or "view") must contain to match the task
    modality_keywords: ClassVar[tuple[str, ...]]
    #: the record key holding the image to describe
    image_key: ClassVar[str] = "image"
    attributes: ClassVar[tuple[Attribute, ...]]
    classes: ClassVar[tuple[str, ...]]

    # ---- vocabulary ---------------------------------------------------------------------------
    @property
    def attribute_names(self) -> tuple[str, ...]:
        return tuple(a.name for a in self.attributes)

    def attribute(self, name: str) -> Attribute:
        for attribute in self.attributes:
            if attribute.name == name:
                return attribute
        raise ValueError(f"{self.name}: unknown attribute {name!r}; expected one of {list(self.attribute_names)}")

    def vocabulary(self) -> dict[str, list[str]]:
        """Attribute name -> allowed values, in vocabulary order (``bank.json`` stores it)."""
        return {a.name: list(a.values) for a in self.attributes}

    def check_attributes(self, attributes: Any, where: str = "attributes") -> dict[str, str]:
        """A complete, in-vocabulary attribute dict in vocabulary order, else ``ValueError`` naming ``where``."""
        if not isinstance(attributes, Mapping):
            raise ValueError(
                f"{where}: expected a dict of {list(self.attribute_names)}, got {type(attributes).__name__}"
            )
        missing = [n for n in self.attribute_names if n not in attributes]
        if missing:
            raise ValueError(
                f"{where}: attributes {missing} missing; the {self.name} task needs {list(self.attribute_names)}"
            )
        for name in self.attribute_names:
            value = attributes[name]
            if value not in self.attribute(name).values:
                raise ValueError(
                    f"{where}: attribute {name!r} has value {value!r}; expected one of "
                    f"{list(self.attribute(name).values)}"
                )
        return {n: str(attributes[n]) for n in self.attribute_names}

    # ---- categories ---------------------------------------------------------------------------
    def check_category(self, category: str) -> str:
        """``category`` if it is a category of this task, else ``ValueError`` listing the valid ones."""
        if category not in self.classes:
            raise ValueError(f"{self.name}: unknown category {category!r}; expected one of {list(self.classes)}")
        return category

    def category(self, record: Mapping[str, Any]) -> str:
        """The bank category of a datalist record (``label_name``, or the class at index ``label``).

        Raises:
            ValueError: the record has neither key, or names a class this task does not model.
        """
        where = f"record {record.get('id', '?')!r}"
        if record.get("label_name") is not None:
            name = record["label_name"]
        elif record.get("label") is not None:
            label = record["label"]
            if not isinstance(label, (int, np.integer)) or not 0 <= int(label) < len(self.classes):
                raise ValueError(f"{where}: 'label' {label!r} is not a class index in [0, {len(self.classes)})")
            name = self.classes[int(label)]
        else:
            raise ValueError(
                f"{where}: no 'label_name' or 'label'; the {self.name} task needs the class of every image"
            )
        if name not in self.classes:
            raise ValueError(
                f"{where}: unknown class {name!r} for the {self.name} task; expected one of {list(self.classes)}"
            )
        return str(name)

    def class_text(self, category: str) -> str:
        """The category in words, for the prompt (``reveal_class``) and the oracle's text."""
        return self.check_category(category)

    @abc.abstractmethod
    def class_constraints(self, category: str) -> dict[str, tuple[str, ...]]:
        """Attribute name -> the values the category allows (every attribute is a key)."""

    def consistent(self, category: str, attributes: Mapping[str, str]) -> list[str]:
        """Why a complete, in-vocabulary attribute dict contradicts ``category`` (empty: consistent)."""
        allowed = self.class_constraints(category)
        return [
            f"{name} {attributes[name]!r} contradicts class {category!r} (allowed: {list(values)})"
            for name, values in allowed.items()
            if name in attributes and attributes[name] not in values
        ]

    def shown_classes(self, category: str, attributes: Mapping[str, str]) -> tuple[str, ...]:
        """The classes a description of an image of ``category`` with these validated attributes may name (default:
        its own class; multi-label tasks: every class the attributes show)."""
        return (category,)

    def modality_matches(self, text: str) -> bool:
        """Whether a free-text modality names this task's modality (a keyword match, case-insensitive)."""
        text = text.lower()
        return any(k in text for k in self.modality_keywords)

    def view_reasons(self, view: str) -> list[str]:
        """Why a free-text view does not fit the task (default: any view fits)."""
        return []

    # ---- the oracle's writer ----------------------------------------------------------------
    @abc.abstractmethod
    def compose(self, attributes: Mapping[str, str], rng: np.random.Generator, category: str | None = None) -> str:
        """A 1-3 sentence description written only from ``attributes`` (and the class, when given).

        Several phrasings per fact, chosen with ``rng``; every attribute value can be read back from the
        text (two different attribute dicts never give the same text), and no sentence names a value of an
        attribute other than the one chosen (see :func:`medgen_monai.describe.validation.validate`).
        """

    # ---- what a description may say -------------------------------------------------------------
    def lexicon(self) -> frozenset[str]:
        """The words a description of this task may use (lower case, letters only): the vocabulary's values and
        names, the classes' names, the modality and view, and every word the oracle's phrasings use
        (:func:`medgen_monai.describe.validation.validate` adds the common words)."""
        return _lexicon(self.name)

    @property
    def max_description_chars(self) -> int:
        """Twice the longest description the oracle writes: the default bound on a description's length."""
        return 2 * _longest_oracle_description(self.name)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


_LEXICON_DRAWS = 300  # oracle descriptions per category: every phrasing is drawn many times over


def _oracle_descriptions(name: str) -> list[str]:
    task = get_task(name)
    rng = np.random.default_rng(0)
    texts = []
    for category in task.classes:
        allowed = task.class_constraints(category)
        drawn = 0
        while drawn < _LEXICON_DRAWS:
            attributes = {a: str(rng.choice(values)) for a, values in allowed.items()}
            if task.consistent(category, attributes):  # e.g. an opacity with a lobe but no side
                continue
            texts.append(task.compose(attributes, rng, category if rng.random() < 0.5 else None))
            drawn += 1
    return texts


@functools.cache
def _lexicon(name: str) -> frozenset[str]:
    task = get_task(name)
    words: set[str] = set()
    sources = [task.modality, task.view, *task.classes, *(task.class_text(c) for c in task.classes)]
    for attribute in task.attributes:
        sources += [attribute.name, *attribute.values]
    for text in sources + _oracle_descriptions(name):
        words.update(re.findall(r"[a-z]+", text.lower().replace("_", " ")))
    return frozenset(words)


@functools.cache
def _longest_oracle_description(name: str) -> int:
    return max(len(t) for t in _oracle_descriptions(name))


# ---- dermoscopy ----------------------------------------------------------------------------------
_DERM_SHAPE = {
    "round": ("round", "circular", "symmetric round"),
    "oval": ("oval", "ovoid", "elongated oval"),
    "irregular": ("irregular", "irregularly shaped", "notched irregular"),
}
_DERM_SIZE = {"small": ("small", "small-diameter"), "medium": ("medium-sized", "medium"), "large": ("large", "broad")}
_DERM_COLOUR = {
    "light_brown": ("light brown", "tan, light brown"),
    "dark_brown": ("dark brown", "deep brown"),
    "black": ("black", "jet-black"),
    "red": ("red", "pinkish red"),
    "blue_grey": ("blue-grey", "bluish grey"),
}
_DERM_BORDER = {
    "well_defined": ("a well-defined border", "a sharp, well-defined edge", "a crisply demarcated border"),
    "ill_defined": ("an ill-defined border", "a blurred, ill-defined edge", "pigment fading gradually into the skin"),
}
_DERM_PATTERN = {
    "network": ("a reticular pigment network", "a network of dark lines", "a pigment network"),
    "globules": ("scattered dark dots and globules", "multiple globules", "clustered globules"),
    "homogeneous": (
        "a structureless, homogeneous pattern",
        "homogeneous pigmentation",
        "a homogeneous area without structures",
    ),
}
_DERM_POSITION = {
    "centre": ("in the centre of the field", "centrally in the field", "at the centre of the image"),
    "upper_left": ("in the upper left of the field", "towards the upper left", "in the upper-left quadrant"),
    "upper_right": ("in the upper right of the field", "towards the upper right", "in the upper-right quadrant"),
    "lower_left": ("in the lower left of the field", "towards the lower left", "in the lower-left quadrant"),
    "lower_right": ("in the lower right of the field", "towards the lower right", "in the lower-right quadrant"),
}


class DermTask(DescribeTask):
    """Dermoscopy (ISIC): the ``derm`` phantom's attributes (shape, size, colour, border, pattern, position).

    No hard class constraint: every attribute value has a non-zero probability in every class by design
    (the phantom draws attributes *conditionally* on the class, as real lesions vary inside a class), so
    :meth:`class_constraints` allows the full vocabulary and validation cannot catch a derm hallucination
    by the class; the vocabulary and the description checks still apply.
    """

    name = "derm"
    layout = "isic"
    modality = "dermoscopy"
    view = "dermoscopy image of a skin lesion"
    modality_keywords = ("dermoscop", "dermatoscop", "epiluminescence", "skin")
    attributes = DERM_ATTRIBUTES
    classes = DERM_CLASSES

    def class_text(self, category: str) -> str:
        return DERM_CLASS_NAMES[self.check_category(category)]

    def class_constraints(self, category: str) -> dict[str, tuple[str, ...]]:
        self.check_category(category)
        return {a.name: a.values for a in self.attributes}

    def compose(self, attributes: Mapping[str, str], rng: np.random.Generator, category: str | None = None) -> str:
        a = self.check_attributes(attributes)
        size, shape = pick(rng, _DERM_SIZE[a["size"]]), pick(rng, _DERM_SHAPE[a["shape"]])
        colour, where = pick(rng, _DERM_COLOUR[a["colour"]]), pick(rng, _DERM_POSITION[a["position"]])
        border, pattern = pick(rng, _DERM_BORDER[a["border"]]), pick(rng, _DERM_PATTERN[a["pattern"]])
        if category is not None:
            diagnosis = self.class_text(category)
            first = pick(
                rng,
                (
                    f"Dermoscopy of {_article(diagnosis)} {diagnosis}: {_article(size)} {size}, {shape}, {colour} "
                    f"lesion {where}.",
                    f"{_capital(_article(size))} {size}, {shape} {colour} {diagnosis} lies {where}.",
                    f"{_capital(where)}, {_article(size)} {size}, {shape}, {colour} lesion consistent with "
                    f"{_article(diagnosis)} {diagnosis}.",
                ),
            )
        else:
            first = pick(
                rng,
                (
                    f"Dermoscopy of {_article(size)} {size}, {shape}, {colour} skin lesion {where}.",
                    f"{_capital(_article(size))} {size}, {shape} {colour} skin lesion lies {where}.",
                    f"{_capital(where)}, {_article(size)} {size}, {shape}, {colour} skin lesion.",
                ),
            )
        second = pick(
            rng,
            (
                f"It has {border} and shows {pattern}.",
                f"The lesion shows {pattern}, with {border}.",
                f"Its dermoscopic structure is {pattern}, and it has {border}.",
            ),
        )
        return f"{first} {second}"


# ---- colonoscopy ---------------------------------------------------------------------------------
_COLON_CLASS_TEXT = {
    "normal-cecum": "normal cecum",
    "polyps": "polyp",
    "dyed-lifted-polyps": "dyed and lifted polyp",
    "ulcerative-colitis": "ulcerative colitis",
}
_COLON_SIZE = {"small": ("small", "diminutive"), "medium": ("medium-sized", "medium"), "large": ("large", "bulky")}
_COLON_MORPHOLOGY = {
    "sessile": ("sessile", "broad-based sessile"),
    "pedunculated": ("pedunculated", "stalked, pedunculated"),
    "flat": ("flat", "flat, plaque-like"),
}
_COLON_SURFACE = {
    "smooth": ("a smooth surface", "a smooth, glistening surface"),
    "lobulated": ("a lobulated surface", "a nodular, lobulated surface"),
    "ulcerated": ("an ulcerated surface", "a surface with central ulceration"),
}
_COLON_COLOUR = {
    "pale": ("pale", "whitish pink"),
    "red": ("red", "deep red"),
    "blue_dyed": ("blue-dyed", "stained blue"),
}
_COLON_ULCER_BASE = {
    "pale": ("a pale, fibrin-covered base", "a whitish fibrin-coated base"),
    "red": ("a red, haemorrhagic base", "a deep red, bleeding base"),
}
_COLON_LOCATION = {
    "centre": ("in the centre of the view", "centrally in the view", "at the centre of the frame"),
    "upper_left": ("in the upper left of the view", "towards the upper left", "in the upper-left quadrant"),
    "upper_right": ("in the upper right of the view", "towards the upper right", "in the upper-right quadrant"),
    "lower_left": ("in the lower left of the view", "towards the lower left", "in the lower-left quadrant"),
    "lower_right": ("in the lower right of the view", "towards the lower right", "in the lower-right quadrant"),
}
_COLON_NORMAL = (
    "Colonoscopy frame of a normal cecum: healthy pink mucosa with a regular vessel pattern and no lesion in view.",
    "Normal cecum at colonoscopy, with intact pink mucosa and a fine vascular pattern; no lesion is seen.",
    "Colonoscopy view of a normal cecum showing unremarkable mucosa and a clear vessel pattern without any lesion.",
)


class ColonTask(DescribeTask):
    """Colonoscopy (Kvasir): the ``colon`` phantom's attributes (finding, morphology, size, surface, colour,
    location). The class fixes the allowed values (:data:`~medgen_monai.phantoms.colon.CLASS_SUPPORT`): a
    normal cecum has every attribute ``none``, a dyed-lifted polyp is ``blue_dyed``, an ulcer has no morphology."""

    name = "colon"
    layout = "kvasir"
    modality = "colonoscopy"
    view = "colonoscopy frame"
    modality_keywords = ("colonoscop", "endoscop", "colon", "sigmoidoscop", "gastrointestinal", "bowel")
    attributes = COLON_ATTRIBUTES
    classes = COLON_CLASSES

    def class_text(self, category: str) -> str:
        return _COLON_CLASS_TEXT[self.check_category(category)]

    def class_constraints(self, category: str) -> dict[str, tuple[str, ...]]:
        return dict(CLASS_SUPPORT[self.check_category(category)])

    def compose(self, attributes: Mapping[str, str], rng: np.random.Generator, category: str | None = None) -> str:
        a = self.check_attributes(attributes)
        if a["finding"] == "none":
            return pick(rng, _COLON_NORMAL)
        size, where = pick(rng, _COLON_SIZE[a["size"]]), pick(rng, _COLON_LOCATION[a["location"]])
        if a["finding"] == "ulcer":
            base = pick(rng, _COLON_ULCER_BASE[a["colour"]])
            first = pick(
                rng,
                (
                    f"Colonoscopy frame with {_article(size)} {size} ulcer {where}, with {base}.",
                    f"{_capital(_article(size))} {size} ulcer with {base} lies {where}.",
                    f"{_capital(where)}, {_article(size)} {size} ulcer with {base}.",
                ),
            )
            second = pick(
                rng,
                (
                    "The surrounding mucosa is inflamed and granular without a visible vessel pattern, "
                    "consistent with ulcerative colitis.",
                    "Diffusely inflamed, granular mucosa with loss of the vessel pattern suggests ulcerative colitis.",
                ),
            )
            return f"{first} {second}"
        morphology = pick(rng, _COLON_MORPHOLOGY[a["morphology"]])
        surface, colour = pick(rng, _COLON_SURFACE[a["surface"]]), pick(rng, _COLON_COLOUR[a["colour"]])
        first = pick(
            rng,
            (
                f"Colonoscopy frame with {_article(size)} {size} {morphology} polyp {where}.",
                f"{_capital(_article(size))} {size} {morphology} polyp is seen {where}.",
                f"{_capital(where)}, {_article(size)} {size} {morphology} polyp.",
            ),
        )
        second = pick(
            rng,
            (
                f"It is {colour} with {surface}.",
                f"The polyp looks {colour} and has {surface}.",
            ),
        )
        sentences = [first, second]
        if a["colour"] == "blue_dyed":
            sentences.append(
                pick(
                    rng,
                    (
                        "It is a dyed and lifted polyp on a submucosal cushion of injected indigo carmine.",
                        "The polyp is lifted on a bluish submucosal cushion, ready for resection.",
                    ),
                )
            )
        return " ".join(sentences)


# ---- chest X-ray ---------------------------------------------------------------------------------
_CXR_LOBE = {
    ("upper", "right"): "right upper lobe",
    ("upper", "left"): "left upper lobe",
    ("middle", "right"): "right middle lobe",
    ("middle", "left"): "lingula",
    ("lower", "right"): "right lower lobe",
    ("lower", "left"): "left lower lobe",
}
_CXR_HEART = {
    "normal": ("the heart size is normal", "the cardiac silhouette is of normal size"),
    "enlarged": ("the heart is enlarged", "the cardiac silhouette is enlarged"),
}
_CXR_DEVICE = {
    "pacemaker": ("a left chest wall pacemaker is in place", "a pacemaker projects over the left chest wall"),
    "central_line": (
        "a right internal jugular central line ends in the superior vena cava",
        "a right-sided central line is in place",
    ),
}
_CXR_IMPRESSION = {
    "Cardiomegaly": "cardiomegaly",
    "Pleural Effusion": "pleural effusion",
    "Lung Opacity": "lung opacity",
    "Pneumothorax": "pneumothorax",
    "Support Devices": "support device in place",
}


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]


class CXRTask(DescribeTask):
    """Frontal (PA) chest X-ray (MIMIC-CXR-JPG ``frontal`` image): the ``cxr`` phantom's attributes that the
    frontal view shows (all of them: heart size, effusion side and size, opacity lobe and side,
    pneumothorax, device). The category is the most acute finding (:func:`cxr_category`): an attribute dict
    is consistent with category ``c`` iff it shows ``c``, shows none of the findings before ``c`` in
    :data:`CXR_PRIORITY` (``No Finding``: none at all), and paired attributes agree (an effusion has both a
    side and a size, an opacity both a lobe and a side)."""

    name = "cxr"
    layout = "mimic_cxr"
    modality = "chest X-ray"
    view = "frontal (PA) chest X-ray"
    modality_keywords = ("x-ray", "xray", "x ray", "radiograph", "cxr", "roentgen", "chest film")
    image_key = "frontal"
    attributes = tuple(a for a in CXR_ATTRIBUTES if a.visible_in("frontal"))
    classes = CXR_CLASSES

    _FRONTAL = re.compile(r"\b(frontal|pa|ap|posteroanterior|postero-anterior|anteroposterior|antero-posterior)\b")

    def check_category(self, category: str) -> str:
        return cxr_check_category(category)

    def category(self, record: Mapping[str, Any]) -> str:
        """``cxr_category(record["label_name"])`` (or of the multi-hot ``label``)."""
        where = f"record {record.get('id', '?')!r}"
        names = record.get("label_name")
        if names is None and record.get("label") is not None:
            label = record["label"]
            if not isinstance(label, Sequence) or len(label) != len(CXR_CLASSES):
                raise ValueError(f"{where}: 'label' must be a multi-hot list over {list(CXR_CLASSES)}, got {label!r}")
            names = [c for c, positive in zip(CXR_CLASSES, label) if positive]
        if names is None:
            raise ValueError(f"{where}: no 'label_name' or 'label'; the cxr task needs the classes of every study")
        try:
            return cxr_category([names] if isinstance(names, str) else names)
        except ValueError as e:
            raise ValueError(f"{where}: {e}") from None

    def class_text(self, category: str) -> str:
        return cxr_check_category(category).lower()

    def class_constraints(self, category: str) -> dict[str, tuple[str, ...]]:
        rank = CXR_PRIORITY.index(cxr_check_category(category))
        allowed: dict[str, tuple[str, ...]] = {}
        for cls, names in CXR_FINDING_ATTRIBUTES.items():
            before = CXR_PRIORITY.index(cls) < rank or category == "No Finding"
            for name in names:
                absent = absent_value(name)
                values = self.attribute(name).values
                if cls == category:
                    allowed[name] = tuple(v for v in values if v != absent)
                elif before:
                    allowed[name] = (absent,)
                else:
                    allowed[name] = values
        return {a.name: allowed[a.name] for a in self.attributes}

    def consistent(self, category: str, attributes: Mapping[str, str]) -> list[str]:
        reasons = super().consistent(category, attributes)
        if all(n in attributes for n in self.attribute_names):
            for (
                cls,
                names,
            ) in CXR_FINDING_ATTRIBUTES.items():  # an effusion has a side and a size, an opacity a lobe and a side
                present = [attributes[n] != absent_value(n) for n in names]
                if len(set(present)) > 1:
                    reasons.append(f"{cls}: {', '.join(f'{n}={attributes[n]!r}' for n in names)} disagree")
            if reasons:
                implied = cxr_category(label_from_attributes(attributes))
                reasons.append(f"the attributes imply {implied!r}, the image is filed under {category!r}")
        return reasons

    def shown_classes(self, category: str, attributes: Mapping[str, str]) -> tuple[str, ...]:
        if all(n in attributes for n in self.attribute_names):
            return tuple(label_from_attributes(attributes)) + (category,)
        return (category,)

    def view_reasons(self, view: str) -> list[str]:
        text = view.lower()
        if "lateral" in text or not self._FRONTAL.search(text):
            return [f"view {view!r} is not a frontal (PA/AP) view; the cxr task describes frontal images only"]
        return []

    def compose(self, attributes: Mapping[str, str], rng: np.random.Generator, category: str | None = None) -> str:
        a = self.check_attributes(attributes)
        heart = pick(rng, _CXR_HEART[a["heart_size"]])
        first = pick(rng, ("Frontal (PA) chest radiograph: ", "PA chest X-ray: ", "On the frontal view, "))
        first += heart if a["device"] == "none" else f"{heart} and {pick(rng, _CXR_DEVICE[a['device']])}"
        positive, negative = [], []
        if a["opacity_lobe"] != "none":
            lobe = _CXR_LOBE[(a["opacity_lobe"], a["opacity_side"])]
            positive.append(pick(rng, (f"an airspace opacity in the {lobe}", f"consolidation in the {lobe}")))
        if a["effusion_size"] != "none":
            if a["effusion_side"] == "bilateral":
                positive.append(f"{a['effusion_size']} bilateral pleural effusions")
            else:
                positive.append(
                    f"{_article(a['effusion_size'])} {a['effusion_size']} {a['effusion_side']} pleural effusion"
                )
        else:
            negative.append("pleural effusion")
        if a["pneumothorax"] != "none":
            positive.append(
                pick(rng, (f"a {a['pneumothorax']} pneumothorax", f"a {a['pneumothorax']}-sided pneumothorax"))
            )
        else:
            negative.append("pneumothorax")
        if positive:
            second = f"There is {_join(positive)}"
            if negative:
                second += f", with no {' or '.join(negative)}"
        else:
            # no positive finding: effusion and pneumothorax are both absent
            second = pick(
                rng,
                (
                    "The lungs are clear, with no pleural effusion or pneumothorax",
                    "There is no focal airspace opacity, pleural effusion or pneumothorax",
                ),
            )
        labels = label_from_attributes(a)
        if labels == ("No Finding",):
            third = pick(
                rng, ("Impression: no acute cardiopulmonary abnormality.", "Impression: normal chest radiograph.")
            )
        else:
            third = f"Impression: {_join([_CXR_IMPRESSION[c] for c in labels])}."
        return f"{first}. {second}. {third}"


_TASKS: dict[str, type[DescribeTask]] = {"derm": DermTask, "colon": ColonTask, "cxr": CXRTask}


def get_task(name: str | DescribeTask) -> DescribeTask:
    """The :class:`DescribeTask` called ``name`` (``derm``, ``colon`` or ``cxr``); a task passes through."""
    if isinstance(name, DescribeTask):
        return name
    if name not in _TASKS:
        raise ValueError(f"unknown describe task {name!r}; expected one of {list(_TASKS)}")
    return _TASKS[name]()
