"""The contract every phantom kind follows.

A phantom kind is a deterministic, procedural stand-in for a real medical dataset. It
draws a class label and a dictionary of categorical attributes from a fixed vocabulary,
renders one image per view from them, and writes reference text (a description or a
radiology report). Everything is a function of ``(seed, index)`` only, so sample ``i`` is
the same whether it is generated alone, in a batch, or in a different process.
"""

from __future__ import annotations

import abc
import functools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from .seeds import check_dataset_seed

__all__ = ["Attribute", "PhantomSample", "Phantom", "sample_rng", "choice", "pick", "interp_matrix"]


@dataclass(frozen=True)
class Attribute:
    """One categorical attribute of a phantom's fixed vocabulary.

    Args:
        name: attribute name, e.g. ``"size"``.
        values: the closed set of allowed values, in a fixed order (the audit networks
            predict the index into this tuple).
        doc: one sentence saying what the attribute means in the image.
        views: the views in which the attribute is visible; ``None`` means every view of
            the kind. (A lateral chest X-ray cannot tell left from right, for example.)
    """

    name: str
    values: tuple[str, ...]
    doc: str
    views: tuple[str, ...] | None = None

    def __post_init__(self) -> None:
        if len(self.values) < 2:
            raise ValueError(f"attribute {self.name!r} needs at least two values, got {self.values!r}")
        if len(set(self.values)) != len(self.values):
            raise ValueError(f"attribute {self.name!r} has repeated values: {self.values!r}")

    def index(self, value: str) -> int:
        """Index of ``value`` in :attr:`values`; ``ValueError`` naming the vocabulary if absent."""
        try:
            return self.values.index(value)
        except ValueError:
            raise ValueError(
                f"attribute {self.name!r}: unknown value {value!r}; expected one of {list(self.values)}"
            ) from None

    def visible_in(self, view: str) -> bool:
        return self.views is None or view in self.views


@dataclass
class PhantomSample:
    """One generated case.

    Attributes:
        kind: the phantom kind's name (``"derm"``, ``"colon"``, ``"cxr"``, ``"prostate"``).
        index: the case index inside its seed's stream.
        seed: the dataset seed.
        images: view name -> array. 2D RGB: ``(H, W, 3)`` uint8; 2D grayscale: ``(H, W)``
            uint8; 3D: ``(X, Y, Z)`` float32 in RAS voxel order.
        label: class name for single-label kinds; for multi-label kinds (``cxr``) the
            tuple of positive class names (possibly empty).
        attributes: attribute name -> value, every attribute of the kind's vocabulary.
        text: the reference description or report (may be empty for ``prostate``).
        meta: everything else a real dataset records (patient id, age, sex, spacing, ...).
        masks: optional ground-truth masks (view or structure name -> bool array), used
            by tests and never written to the real layouts.
    """

    kind: str
    index: int
    seed: int
    images: dict[str, np.ndarray]
    label: str | tuple[str, ...]
    attributes: dict[str, str]
    text: str
    meta: dict[str, Any] = field(default_factory=dict)
    masks: dict[str, np.ndarray] = field(default_factory=dict)


def sample_rng(seed: int, index: int, stream: int = 0) -> np.random.Generator:
    """The random generator of case ``index`` of dataset ``seed``.

    ``stream`` separates independent draws of the same case (attributes, rendering,
    text) so that changing how one is drawn does not shift the others.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    return np.random.default_rng([int(seed), int(index), int(stream)])


def choice(u: float, values: Sequence[str], probabilities: Sequence[float]) -> str:
    """The value whose cumulative-probability bin holds ``u`` in [0, 1).

    Drawing every attribute from its own pre-drawn uniform keeps the draws aligned when some
    attributes are forced: forcing one never shifts the others.
    """
    p = np.asarray(probabilities, dtype=float)
    cumulative = np.cumsum(p / p.sum())
    return values[min(int(np.searchsorted(cumulative, u, side="right")), len(values) - 1)]


def pick(rng: np.random.Generator, options: Sequence[str]) -> str:
    """One of several phrasings of a fact, uniformly."""
    return options[int(rng.integers(len(options)))]


@functools.lru_cache(maxsize=32)
def interp_matrix(n_out: int, n_in: int) -> np.ndarray:
    """Linear interpolation from ``n_in`` cell centres to ``n_out`` cell centres on the same interval
    (cached: phantoms upsample coarse grids and projections with it every case).

    Returns:
        ``(n_out, n_in)`` float32 matrix ``M`` so that ``M @ signal`` resamples a signal.
    """
    position = (np.arange(n_out) + 0.5) * n_in / n_out - 0.5
    position = np.clip(position, 0, n_in - 1)
    low = np.floor(position).astype(int)
    high = np.minimum(low + 1, n_in - 1)
    weight = position - low
    matrix = np.zeros((n_out, n_in), dtype=np.float32)
    rows = np.arange(n_out)
    np.add.at(matrix, (rows, low), 1 - weight)
    np.add.at(matrix, (rows, high), weight)
    return matrix


class Phantom(abc.ABC):
    """Base class of the phantom kinds. Subclasses set the class variables and implement
    :meth:`draw`, :meth:`render` and :meth:`describe`; the base class does seeding,
    overrides and validation.
    """

    name: ClassVar[str]
    #: class names in a fixed order (the index is the integer label).
    classes: ClassVar[tuple[str, ...]]
    #: the fixed attribute vocabulary.
    attributes: ClassVar[tuple[Attribute, ...]]
    #: view names; single-view kinds use ``("image",)`` (2D) or ``("t2w",)`` (3D).
    views: ClassVar[tuple[str, ...]]
    spatial_dims: ClassVar[int]
    #: number of image channels per view (3 for RGB, 1 for grayscale / MRI).
    channels: ClassVar[int]
    default_size: ClassVar[tuple[int, ...]]
    multilabel: ClassVar[bool] = False
    #: the name of the real dataset layout it is written in (a module of ``medgen_monai.data``).
    layout: ClassVar[str]

    # ---- to implement -------------------------------------------------------------------
    @abc.abstractmethod
    def draw(self, rng: np.random.Generator, label: str | None, fixed: Mapping[str, str]) -> tuple[Any, dict[str, str]]:
        """Draw ``(label, attributes)``. ``label`` and ``fixed`` are user overrides that
        must be respected; the other attributes are drawn conditionally on them with the
        kind's class-attribute correlations."""

    @abc.abstractmethod
    def render(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], size: tuple[int, ...]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        """Render ``(images, masks, meta)`` for the given label and attributes."""

    @abc.abstractmethod
    def describe(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], meta: Mapping[str, Any]
    ) -> str:
        """Write the reference text, choosing among several phrasings per fact."""

    def identifiers(self, seed: int, index: int) -> dict[str, Any]:
        """The real dataset's ids of case ``index`` of dataset ``seed`` (patient, image or study ids),
        unique within a seed; :meth:`generate` puts them first in ``meta``. The base class has none."""
        return {}

    # ---- shared ---------------------------------------------------------------------------
    @classmethod
    def attribute(cls, name: str) -> Attribute:
        for attribute in cls.attributes:
            if attribute.name == name:
                return attribute
        raise ValueError(f"{cls.name}: unknown attribute {name!r}; expected one of {[a.name for a in cls.attributes]}")

    @classmethod
    def check_label(cls, label: str | Sequence[str]) -> None:
        names = [label] if isinstance(label, str) else list(label)
        for name in names:
            if name not in cls.classes:
                raise ValueError(f"{cls.name}: unknown class {name!r}; expected one of {list(cls.classes)}")

    @classmethod
    def check_attributes(cls, attributes: Mapping[str, str], complete: bool = False) -> None:
        for name, value in attributes.items():
            cls.attribute(name).index(value)
        if complete:
            missing = [a.name for a in cls.attributes if a.name not in attributes]
            if missing:
                raise ValueError(f"{cls.name}: attributes missing: {missing}")

    def check_size(self, size: Sequence[int] | int | None) -> tuple[int, ...]:
        if size is None:
            return tuple(self.default_size)
        if isinstance(size, int):
            size = (size,) * self.spatial_dims
        size = tuple(int(s) for s in size)
        if len(size) != self.spatial_dims or min(size) < 16:
            raise ValueError(
                f"{self.name}: size must be {self.spatial_dims} integers >= 16 (default {self.default_size}), "
                f"got {size}"
            )
        return size

    def generate(
        self,
        index: int,
        seed: int = 0,
        size: Sequence[int] | int | None = None,
        label: str | Sequence[str] | None = None,
        attributes: Mapping[str, str] | None = None,
    ) -> PhantomSample:
        """Generate case ``index`` of dataset ``seed``.

        Args:
            index: case index (>= 0).
            seed: dataset seed (>= 0); the audit networks' seeds are refused outside
                :func:`~medgen_monai.phantoms.seeds.audit_seed_access` (:mod:`medgen_monai.phantoms.seeds`).
            size: spatial size, ``(H, W)`` for 2D or ``(X, Y, Z)`` for 3D; default
                :attr:`default_size`.
            label: force the class (a class name; a sequence of names for multi-label kinds).
            attributes: force some attributes; the rest are drawn conditionally.
        """
        check_dataset_seed(seed)
        size = self.check_size(size)
        fixed = dict(attributes or {})
        self.check_attributes(fixed)
        if label is not None:
            self.check_label(label)
            if self.multilabel and isinstance(label, str):
                label = (label,)
        label, attrs = self.draw(sample_rng(seed, index, 0), label, fixed)
        self.check_attributes(attrs, complete=True)
        images, masks, meta = self.render(sample_rng(seed, index, 1), label, attrs, size)
        text = self.describe(sample_rng(seed, index, 2), label, attrs, meta)
        meta = {**self.identifiers(seed, index), **meta}
        return PhantomSample(self.name, index, seed, images, label, attrs, text, meta, masks)

    def generate_many(
        self, n: int, seed: int = 0, size: Sequence[int] | int | None = None, start: int = 0
    ) -> Iterator[PhantomSample]:
        """Yield cases ``start .. start + n - 1`` of dataset ``seed``."""
        if n < 0:
            raise ValueError(f"n must be >= 0, got {n}")
        for index in range(start, start + n):
            yield self.generate(index, seed=seed, size=size)

    @classmethod
    def vocabulary(cls) -> dict[str, Any]:
        """The documented vocabulary as plain data (for docs and JSON)."""
        return {
            "kind": cls.name,
            "classes": list(cls.classes),
            "multilabel": cls.multilabel,
            "views": list(cls.views),
            "attributes": {
                a.name: {"values": list(a.values), "doc": a.doc, "views": list(a.views or cls.views)}
                for a in cls.attributes
            },
        }
