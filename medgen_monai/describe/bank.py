"""Read a description bank: validated descriptions per category, seeded retrieval, statistics, dataset joins.

The bank layout (written by :func:`medgen_monai.describe.describe_dataset`)::

    <bank>/<slug(category)>.jsonl   validated: {"id", "image", "category", "description", "attributes",
                                               "task", "backend", "model"}
    <bank>/rejected.jsonl           rejected:  {"id", "image", "category", "reasons", "raw", ...}
    <bank>/bank.json                {"task", "backend", "model", "vocabulary", "counts", "rejected", "rejection_rate"}
    <bank>/embeddings/<encoder>.safetensors   text embedding cache (medgen_monai.text)

Within a category, records are ordered by image id, so a seeded draw does not depend on the order in
which a (resumed, concurrent) describe run happened to append them.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path
from .run import BANK_FILE, REJECTED_FILE, read_bank_lines, rejection_reasons
from .tasks import category_slug

__all__ = ["DescriptionBank", "attach_descriptions", "exclude_combinations", "training_records"]

_REQUIRED = ("id", "category", "description")


class DescriptionBank:
    """The validated descriptions of a bank folder, by category.

    Args:
        path: the bank folder (per-category ``.jsonl`` files, optional ``rejected.jsonl`` and ``bank.json``).

    Raises:
        ValueError: the folder does not exist or holds no category file, a line lacks ``id``, ``category`` or a
            non-empty ``description``, a record's category does not match its file, or ``bank.json`` is not JSON.
            A truncated final line (a killed describe run) is skipped with a warning.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if not self.path.is_dir():
            raise ValueError(
                f"description bank {self.path}: no such folder; build one with "
                "`medgen-monai describe --images ... --task ... --out BANK`"
            )
        self.meta: dict[str, Any] = {}
        meta_path = self.path / BANK_FILE
        if meta_path.is_file():
            try:
                self.meta = json.loads(meta_path.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ValueError(f"{meta_path}: not valid JSON ({e})") from None
        self.files = sorted(p for p in self.path.glob("*.jsonl") if p.name != REJECTED_FILE)
        if not self.files:
            raise ValueError(
                f"description bank {self.path}: no category file (<category>.jsonl); build the bank with "
                "`medgen-monai describe`, or check the path"
            )
        self._records: dict[str, list[dict[str, Any]]] = {}
        for file in self.files:
            for number, record in enumerate(read_bank_lines(file), 1):
                missing = [k for k in _REQUIRED if k not in record]
                if missing:
                    raise ValueError(f"{file}: record {number} lacks {missing}; every line needs {list(_REQUIRED)}")
                category = str(record["category"])
                if category_slug(category) != file.stem:
                    raise ValueError(
                        f"{file}: record {number} (id {record['id']!r}) has category {category!r}, whose file "
                        f"is {category_slug(category)}.jsonl"
                    )
                if not isinstance(record["description"], str) or not record["description"].strip():
                    raise ValueError(f"{file}: record {number} (id {record['id']!r}) has an empty description")
                self._records.setdefault(category, []).append(record)
        for records in self._records.values():
            records.sort(key=lambda r: str(r["id"]))

    # ---------------------------------------------------------------- access

    @property
    def categories(self) -> list[str]:
        """The categories with at least one validated description, sorted."""
        return sorted(self._records)

    @property
    def task(self) -> str | None:
        """The describe task of the bank (``bank.json``), or None when unknown."""
        return self.meta.get("task")

    def __len__(self) -> int:
        return sum(len(r) for r in self._records.values())

    def __contains__(self, category: object) -> bool:
        return category in self._records

    def file(self, category: str) -> Path:
        """The file that holds (or would hold) ``category``'s descriptions."""
        return self.path / f"{category_slug(category)}.jsonl"

    def _known_empty(self, category: str) -> bool:
        """Whether ``category`` is a valid category of the bank that simply has no validated description."""
        if category in self.meta.get("counts", {}) or self.file(category).is_file():
            return True
        if self.task is None:
            return False
        from .tasks import get_task

        try:
            get_task(self.task).check_category(category)
        except ValueError:
            return False
        return True

    def records(self, category: str) -> list[dict[str, Any]]:
        """The validated records of ``category`` (ordered by id; copies).

        Raises:
            ValueError: an unknown category (the message lists the known ones) or one without validated descriptions.
        """
        if category not in self._records:
            if self._known_empty(category):
                raise ValueError(
                    f"description bank {self.path}: category {category!r} has no validated descriptions "
                    f"(expected in {self.file(category)}); describe more images of it, or check "
                    f"{self.path / REJECTED_FILE} for why its descriptions were rejected"
                )
            raise ValueError(
                f"description bank {self.path}: unknown category {category!r}; known categories: {self.categories}"
            )
        return [dict(r) for r in self._records[category]]

    def descriptions(self, category: str) -> list[str]:
        """The validated description texts of ``category`` (ordered by image id)."""
        return [r["description"] for r in self.records(category)]

    def sample(self, category: str, seed: int) -> dict[str, Any]:
        """One record of ``category`` drawn with ``np.random.default_rng(seed)``: the same seed, the same record.

        Raises:
            ValueError: as :meth:`records`.
        """
        records = self.records(category)
        return records[int(np.random.default_rng(int(seed)).integers(len(records)))]

    def rejected(self) -> list[dict[str, Any]]:
        """The records of ``rejected.jsonl`` (empty when there is none)."""
        path = self.path / REJECTED_FILE
        return read_bank_lines(path) if path.is_file() else []

    def index(self) -> dict[str, dict[str, Any]]:
        """Image id -> validated record, over all categories.

        Raises:
            ValueError: an id appears in two categories (a corrupt or merged bank).
        """
        out: dict[str, dict[str, Any]] = {}
        for category, records in self._records.items():
            for record in records:
                key = str(record["id"])
                if key in out:
                    raise ValueError(
                        f"description bank {self.path}: image id {key!r} is in {out[key]['category']!r} "
                        f"and in {category!r}; an image has one validated description"
                    )
                out[key] = record
        return out

    # ---------------------------------------------------------------- statistics

    def vocabulary(self) -> dict[str, list[str]] | None:
        """Attribute -> allowed values: ``bank.json``'s vocabulary, else the task's, else None."""
        if isinstance(self.meta.get("vocabulary"), Mapping):
            return {str(k): [str(v) for v in values] for k, values in self.meta["vocabulary"].items()}
        if self.task is not None:
            from .tasks import get_task

            try:
                return get_task(self.task).vocabulary()
            except ValueError:
                return None
        return None

    def stats(self) -> dict[str, Any]:
        """Counts and attribute coverage.

        Returns:
            ``{"bank", "task", "backend", "model", "total", "counts": {category: n},
            "rejected", "rejection_rate", "rejection_reasons": {code: n},
            "attributes": {attribute: {value: n}}, "attributes_by_category": {category: {attribute: {value: n}}},
            "coverage": {attribute: {"seen": k, "vocabulary": m, "share": k / m, "unseen": [values]}}}``.
            ``rejected`` and ``rejection_rate`` come from ``bank.json`` when present, else from ``rejected.jsonl``;
            ``coverage`` counts values against the vocabulary (``bank.json``'s, else the task's; without one,
            ``vocabulary`` and ``share`` are None).
        """
        counts = {c: len(self._records[c]) for c in self.categories}
        total = sum(counts.values())
        rejected_lines = self.rejected()
        rejected = int(self.meta.get("rejected", len(rejected_lines)))
        rate = self.meta.get("rejection_rate")
        if rate is None:
            rate = rejected / (rejected + total) if rejected + total else 0.0
        reasons = rejection_reasons(rejected_lines)
        overall: dict[str, Counter[str]] = {}
        by_category: dict[str, dict[str, dict[str, int]]] = {}
        for category in self.categories:
            per: dict[str, Counter[str]] = {}
            for record in self._records[category]:
                for name, value in (record.get("attributes") or {}).items():
                    per.setdefault(str(name), Counter())[str(value)] += 1
                    overall.setdefault(str(name), Counter())[str(value)] += 1
            by_category[category] = {name: dict(sorted(c.items())) for name, c in sorted(per.items())}
        vocabulary = self.vocabulary() or {}
        coverage = {}
        for name in sorted(set(overall) | set(vocabulary)):
            seen = set(overall.get(name, {}))
            values = vocabulary.get(name)
            coverage[name] = {
                "seen": len(seen),
                "vocabulary": None if values is None else len(values),
                "share": None if not values else len(seen & set(values)) / len(values),
                "unseen": None if values is None else [v for v in values if v not in seen],
            }
        return {
            "bank": str(self.path),
            "task": self.meta.get("task"),
            "backend": self.meta.get("backend"),
            "model": self.meta.get("model"),
            "total": total,
            "counts": counts,
            "rejected": rejected,
            "rejection_rate": float(rate),
            "rejection_reasons": reasons,
            "attributes": {name: dict(sorted(c.items())) for name, c in sorted(overall.items())},
            "attributes_by_category": by_category,
            "coverage": coverage,
        }

    def write_stats_plot(self, path: str | Path) -> Path:
        """A PNG bar chart: descriptions per category, then value counts of each attribute (atomic write)."""
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        stats = self.stats()
        panels = [("descriptions per category", stats["counts"])] + list(stats["attributes"].items())
        columns = min(3, len(panels))
        rows = -(-len(panels) // columns)
        fig, axes = plt.subplots(rows, columns, figsize=(4.5 * columns, 3.2 * rows), squeeze=False)
        for ax, (title, values) in zip(axes.flat, panels):
            ax.bar(range(len(values)), list(values.values()), color="tab:blue")
            ax.set_xticks(range(len(values)), list(values), rotation=45, ha="right", fontsize=7)
            ax.set_title(title, fontsize=9)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        fig.suptitle(f"{self.path.name}: {stats['total']} descriptions, rejection rate {stats['rejection_rate']:.2f}")
        fig.tight_layout()
        with atomic_path(path) as tmp:
            fig.savefig(tmp, dpi=80)
        plt.close(fig)
        return Path(path)

    def __repr__(self) -> str:
        return f"DescriptionBank({str(self.path)!r}, categories={len(self._records)}, descriptions={len(self)})"


def attach_descriptions(
    datalist: Sequence[Mapping[str, Any]], bank: DescriptionBank | str | Path, key: str = "description"
) -> list[dict[str, Any]]:
    """Join a dataset datalist to a bank by image id.

    Each kept record (a copy) gets ``key`` (the description), ``"category"`` and ``"description_attributes"``
    (the attributes the description states); ``"attributes"`` is filled from the bank only when the record has
    none (real data: the description's attributes are all there is). When the bank's task is known, each
    record's own class must be the bank's category for its id.

    Args:
        datalist: records with ``"id"`` (e.g. from :func:`medgen_monai.data.read_dataset`).
        bank: a :class:`DescriptionBank` or its folder.
        key: where the description goes.

    Returns:
        the records that have a validated description, in datalist order; the others (rejected or never
        described) are dropped with one warning giving their number.

    Raises:
        ValueError: a record without ``"id"``, a class that contradicts the bank, or no record matches at all.
    """
    bank = bank if isinstance(bank, DescriptionBank) else DescriptionBank(bank)
    index = bank.index()
    task = None
    if bank.task is not None:
        from .tasks import get_task

        task = get_task(bank.task)
    out, dropped = [], 0
    for number, record in enumerate(datalist):
        if "id" not in record:
            raise ValueError(f"datalist record {number}: no 'id' to join with the description bank {bank.path}")
        match = index.get(str(record["id"]))
        if match is None:
            dropped += 1
            continue
        if task is not None and ("label_name" in record or "label" in record):
            own = task.category(record)
            if own != match["category"]:
                raise ValueError(
                    f"datalist record {record['id']!r} is {own!r} but bank {bank.path} describes it as "
                    f"{match['category']!r}: was the bank built from another dataset with the same ids?"
                )
        joined = dict(record)
        joined[key] = match["description"]
        joined["category"] = match["category"]
        joined["description_attributes"] = dict(match.get("attributes") or {})
        if "attributes" not in joined:
            joined["attributes"] = dict(joined["description_attributes"])
        out.append(joined)
    if not out:
        sample = [str(r.get("id")) for r in list(datalist)[:3]]
        raise ValueError(
            f"no datalist record ({len(datalist)} records, ids like {sample}) has a validated description in "
            f"bank {bank.path} (ids like {sorted(index)[:3]}): was the bank built from this dataset?"
        )
    if dropped:
        warnings.warn(
            f"{dropped} of {len(datalist)} datalist records have no validated description in bank {bank.path} "
            "(rejected or not described); they are left out",
            stacklevel=2,
        )
    return out


def exclude_combinations(
    records: Sequence[Mapping[str, Any]], combinations: Sequence[Mapping[str, Any]], key: str = "attributes"
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Split off the records that show a held-out attribute combination.

    Args:
        records: records with an attribute dict under ``key``.
        combinations: each a mapping attribute -> value (or a list of values, any of which matches); a record
            matches a combination when every one of its items matches the record's attributes, and is removed
            when it matches any combination.
        key: the record field holding the attributes.

    Returns:
        ``(kept, removed)``, both in input order (copies).

    Raises:
        ValueError: an empty or non-mapping combination, a record without ``key`` (when there is a combination),
            or an attribute that no record has (a typo would otherwise hold nothing out).
    """
    wanted: list[dict[str, set[str]]] = []
    for number, combination in enumerate(combinations):
        if not isinstance(combination, Mapping) or not combination:
            raise ValueError(
                f"combination {number}: expected a non-empty mapping attribute -> value, got {combination!r}"
            )
        wanted.append(
            {
                str(name): {str(v) for v in value} if isinstance(value, (list, tuple, set)) else {str(value)}
                for name, value in combination.items()
            }
        )
    if not wanted:
        return [dict(r) for r in records], []
    names: set[str] = set()
    for number, record in enumerate(records):
        attributes = record.get(key)
        if not isinstance(attributes, Mapping):
            raise ValueError(
                f"record {record.get('id', number)!r}: no {key!r} mapping to check held-out combinations against"
            )
        names.update(str(n) for n in attributes)
    unknown = sorted({name for combination in wanted for name in combination} - names)
    if unknown and records:
        raise ValueError(
            f"held-out combinations name attribute(s) {unknown} that no record has; known: {sorted(names)}"
        )
    kept, removed = [], []
    for record in records:
        attributes = {str(k): str(v) for k, v in record[key].items()}
        hit = any(all(attributes.get(name) in values for name, values in combination.items()) for combination in wanted)
        (removed if hit else kept).append(dict(record))
    return kept, removed


def training_records(
    records: Sequence[Mapping[str, Any]],
    bank: DescriptionBank | str | Path,
    classes: Sequence[str],
    use_descriptions: bool = True,
    excluded_combinations: Sequence[Mapping[str, Any]] = (),
) -> list[dict[str, Any]]:
    """The diffusion training records of a description-conditioned bundle.

    Each record is joined to its bank description (:func:`attach_descriptions`), loses the held-out attribute
    combinations (:func:`exclude_combinations`: neither their images nor their descriptions are trained on) and
    gets ``label``, its category's index in ``classes``; its ``description`` is emptied when ``use_descriptions`` is
    off (the label-only arm trains on the same records with the empty description).
    """
    classes = list(classes)
    kept, _ = exclude_combinations(attach_descriptions(records, bank), excluded_combinations)
    return [
        dict(r, label=classes.index(r["category"]), description=r["description"] if use_descriptions else "")
        for r in kept
    ]
