"""Fair references for generation metrics: stratified random reference sets, the FID floor, KID with a 95% CI.

Three rules make a FID (or KID) against real images worth reading:

* **The reference matches the requests.** :func:`stratified_reference` draws the reference at random (seeded,
  independent of the datalist's order) with the requests' class proportions (largest-remainder rounding), and
  leaves out the requests' own source images. Taking the first ``N`` records of a datalist sorted by class gave
  a colon reference that was 92% one class.
* **A FID comes with its floor.** FID is biased upwards at small sample sizes, and the bias depends on ``n``:
  :func:`fid_floor` is the real-vs-real FID of two disjoint random subsets of ``n`` real images each (at least
  10 repetitions, mean and sd), computed at the generated set's ``n``; a generator is only as far from the data
  as its FID exceeds that floor.
* **KID comes with an interval.** :func:`kid` is the unbiased kernel inception distance averaged over random
  subsets, with a 95% interval from the subsets' spread (:func:`kid` says how it is drawn and how it errs).

Every function works on precomputed features ``(N, F)`` (e.g. ``FeatureExtractor(images)``), so the feature
network runs once per image set.
"""

from __future__ import annotations

import math
import os
from collections import Counter
from collections.abc import Callable, Hashable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .fid import fid_from_features

__all__ = [
    "StratifiedReference",
    "SOURCE_KEYS",
    "record_class",
    "request_sources",
    "largest_remainder",
    "stratified_reference",
    "fid_floor",
    "matched_fid",
    "kid",
]

SHORT_POLICIES = ("raise", "shrink", "take_all")

#: request fields naming the request's source image: a path (``source_image``) or the image's id, which is the
#: dataset record's ``"id"``: description banks key their records by it, ``RetrieveDescriptiond`` writes the drawn
#: record's id to ``description_id`` and ``benchmarks/vap_ablation.py`` writes it to ``source``.
SOURCE_KEYS: tuple[str, ...] = ("source_image", "source", "description_id")


def record_class(record: Mapping[str, Any]) -> str:
    """The class of a datalist record: its ``"category"``, else its ``"label_name"``.

    Raises:
        ValueError: the record has neither (pass ``class_of``, e.g. ``lambda r: classes[int(r["label"])]``).
    """
    for key in ("category", "label_name"):
        if record.get(key) is not None:
            return str(record[key])
    raise ValueError(
        f"record {record.get('id', record.get('image'))!r} has neither 'category' nor 'label_name'; pass "
        "class_of=..., e.g. lambda r: classes[int(r['label'])]"
    )


def request_sources(requests: Iterable[Mapping[str, Any]], keys: Sequence[str] = SOURCE_KEYS) -> set[str]:
    """The source images named by generation requests (ids and paths), for ``stratified_reference(exclude=...)``.

    A description-conditioned request carries the id of the image its description was written for
    (``description_id``, the description bank's id, which is the dataset record's ``"id"``); that image must not be
    in the reference it is compared with. Requests without any of ``keys`` contribute nothing. Ids are matched
    against the reference records' ``"id"``: a bank that describes another dataset whose ids happen to coincide
    would leave those records out too (the reference only gets smaller, and ``excluded`` counts them).

    Args:
        requests: generation requests.
        keys: the request fields to read (default :data:`SOURCE_KEYS`).

    Returns:
        the set of non-empty values, as strings.
    """
    return {str(r[k]) for r in requests for k in keys if r.get(k) not in (None, "")}


def largest_remainder(weights: Mapping[Hashable, float], n: int) -> dict[Hashable, int]:
    """Split ``n`` into integer shares proportional to ``weights`` (largest-remainder / Hamilton rounding).

    Every key gets ``floor(n * w / sum(w))``; the units left over go to the largest fractional remainders, ties
    broken by ``str(key)`` so the result does not depend on the mapping's order.

    Args:
        weights: key -> non-negative weight (e.g. the number of requests of a class); the sum must be positive.
        n: the total (>= 0).

    Returns:
        key -> share, summing to ``n``.
    """
    if n < 0:
        raise ValueError(f"largest_remainder: n must be >= 0, got {n}")
    if any(w < 0 for w in weights.values()) or sum(weights.values()) <= 0:
        raise ValueError(f"largest_remainder: weights must be non-negative with a positive sum, got {dict(weights)}")
    total = float(sum(weights.values()))
    exact = {k: n * w / total for k, w in weights.items()}
    shares = {k: int(math.floor(v)) for k, v in exact.items()}
    left = n - sum(shares.values())
    for k in sorted(exact, key=lambda k: (-(exact[k] - shares[k]), str(k)))[:left]:
        shares[k] += 1
    return shares


@dataclass
class StratifiedReference:
    """A reference drawn by :func:`stratified_reference`.

    Attributes:
        records: the drawn records (copies), in random order (so a split into halves is not class-sorted).
        classes: the class of each record, in the same order.
        seed: the draw seed.
        n_requested: the ``n`` asked for (the pool size of the requested classes when ``n`` was ``None``).
        per_class: class -> ``{"requests", "quota", "taken", "available"}``: requests of that class, its share of
            the reference by largest-remainder rounding, records drawn, records in the pool after exclusion.
        excluded: pool records left out because their id or image path was in ``exclude``.
        missing: requested classes without a single record in the pool.
        note: what departed from "``n`` records in the requests' proportions" (``None`` when nothing did).
    """

    records: list[dict[str, Any]]
    classes: list[str]
    seed: int
    n_requested: int
    per_class: dict[str, dict[str, int]]
    excluded: int = 0
    missing: list[str] = field(default_factory=list)
    note: str | None = None

    def __len__(self) -> int:
        return len(self.records)

    def summary(self) -> dict[str, Any]:
        """JSON-ready description of the draw (everything but the records)."""
        return {
            "n": len(self.records),
            "n_requested": self.n_requested,
            "seed": self.seed,
            "per_class": self.per_class,
            "excluded": self.excluded,
            "missing": list(self.missing),
            "note": self.note,
        }


def _path_keys(value: str | Path) -> set[str]:
    text = str(value)
    return {text, os.path.normpath(text), os.path.abspath(text)}


def _record_keys(record: Mapping[str, Any]) -> set[str]:
    keys = {str(record["id"])} if record.get("id") is not None else set()
    if record.get("image") is not None and isinstance(record["image"], (str, Path)):
        keys |= _path_keys(record["image"])
    return keys


def _largest_fitting(counts: Mapping[str, int], available: Mapping[str, int], n: int) -> int:
    """The largest ``m <= n`` whose largest-remainder quotas of ``counts`` fit ``available`` (0 when none does)."""
    total = sum(counts.values())
    # quota_c >= floor(m * p_c), so a fitting m has m * p_c < available_c + 1
    upper = min([n] + [math.ceil((available[c] + 1) * total / counts[c]) for c in counts])
    for m in range(upper, 0, -1):
        quotas = largest_remainder(counts, m)
        if all(quotas[c] <= available[c] for c in counts):
            return m
    return 0


def stratified_reference(
    records: Iterable[Mapping[str, Any]],
    request_classes: Sequence[Hashable],
    n: int | None,
    seed: int,
    class_of: Callable[[Mapping[str, Any]], Hashable] = record_class,
    exclude: Iterable[str | Path] = (),
    on_short: str = "raise",
) -> StratifiedReference:
    """A random reference of ``n`` records whose class proportions are the requests' class proportions.

    The pool is the records of the requested classes, less those whose ``"id"`` or ``"image"`` path is in
    ``exclude`` (e.g. the source images whose descriptions conditioned the requests). Each class gets its
    largest-remainder share of ``n`` (:func:`largest_remainder` over the requests' class counts), drawn without
    replacement with ``np.random.default_rng(seed)``; the result is shuffled. The pool is put in a canonical order
    (class, id, image) before drawing, so the draw depends on the seed and the set of records, never on the order
    of ``records`` (records with neither id nor image are the exception: they keep their relative order).

    When a class has fewer pool records than its share, ``on_short`` decides:

    * ``"raise"`` (default): a ``ValueError`` naming the classes, their shares and pool sizes, and the largest
      ``n`` that fits.
    * ``"shrink"``: ``n`` is lowered to the largest size whose shares fit, so the proportions stay the requests';
      requested classes with no record at all cannot be matched at any size: they are left out and named in
      ``missing`` and ``note``.
    * ``"take_all"``: a short class gives all its records (maybe none); the reference is smaller than ``n`` and
      under-represents it, as ``note`` says.

    Args:
        records: datalist records (``"id"``, ``"image"`` and whatever ``class_of`` reads).
        request_classes: the class of each generation request (one entry per request).
        n: reference size; ``None``: every pool record of the requested classes (then shrunk to the requests'
            proportions as far as ``on_short`` allows).
        seed: the draw seed.
        class_of: record -> class, compared with ``request_classes`` as strings (default :func:`record_class`:
            ``"category"`` or ``"label_name"``).
        exclude: image ids and/or image paths to leave out (paths are compared as given, normalised and absolute).
        on_short: ``"raise"``, ``"shrink"`` or ``"take_all"``.

    Returns:
        a :class:`StratifiedReference` (``.records`` in random order, ``.classes``, ``.per_class``, ``.note``).

    Raises:
        ValueError: ``n < 1``, no requests, an unknown ``on_short``, or (``"raise"``) a class short of its share.
    """
    if on_short not in SHORT_POLICIES:
        raise ValueError(f"on_short must be one of {SHORT_POLICIES}, got {on_short!r}")
    if n is not None and int(n) < 1:
        raise ValueError(f"stratified_reference: n must be >= 1 (or None for the whole pool), got {n}")
    counts: dict[str, int] = dict(Counter(str(c) for c in request_classes))
    if not counts:
        raise ValueError("stratified_reference: no request classes; the reference is stratified to match the requests")
    excluded_keys: set[str] = set()
    for item in exclude:
        excluded_keys |= _path_keys(item)

    pool: dict[str, list[dict[str, Any]]] = {c: [] for c in counts}
    excluded = 0
    for record in records:
        if excluded_keys and _record_keys(record) & excluded_keys:
            excluded += 1
            continue
        c = str(class_of(record))
        if c in pool:
            pool[c].append(dict(record))
    for members in pool.values():
        members.sort(key=lambda r: (str(r.get("id", "")), str(r.get("image", ""))))
    available = {c: len(pool[c]) for c in counts}
    n_requested = int(n) if n is not None else sum(available.values())
    if n_requested < 1:
        raise ValueError(
            f"stratified_reference: no record of the requested classes {sorted(counts)} is left in the "
            f"pool ({excluded} excluded)"
        )
    missing = sorted(c for c in counts if available[c] == 0)
    quotas = largest_remainder(counts, n_requested)
    short = {c: (quotas[c], available[c]) for c in sorted(counts) if quotas[c] > available[c]}
    notes = []
    if short and on_short == "raise":
        detail = ", ".join(f"{c!r}: share {q}, pool {a}" for c, (q, a) in short.items())
        fits = 0 if missing else _largest_fitting(counts, available, n_requested)
        hint = (
            f"classes {missing} have no record in the pool ({excluded} records excluded)"
            if missing
            else f"the largest n that keeps the requests' proportions is {fits}"
        )
        raise ValueError(
            f"stratified_reference: too few records for a reference of {n_requested} in the requests' "
            f"proportions ({detail}); {hint}; lower n, or pass on_short='shrink' or 'take_all'"
        )
    taken = dict(quotas)
    if short and on_short == "shrink":
        present = {c: k for c, k in counts.items() if available[c] > 0}
        if not present:
            raise ValueError(f"stratified_reference: no record of the requested classes {sorted(counts)} in the pool")
        size = _largest_fitting(present, available, n_requested)
        taken = {c: 0 for c in counts} | largest_remainder(present, size)
        if size < n_requested:
            target = largest_remainder(present, n_requested)
            lacking = ", ".join(
                f"{c} {available[c]} < {target[c]}" for c in sorted(present) if target[c] > available[c]
            )
            notes.append(
                f"shrunk from {n_requested} to {size} records to keep the requests' class proportions "
                f"(short: {lacking})"
            )
    elif short:  # take_all
        taken = {c: min(quotas[c], available[c]) for c in counts}
        notes.append(
            f"short classes taken whole, so under-represented: "
            f"{', '.join(f'{c} {a} of {q}' for c, (q, a) in short.items())}"
        )
    if missing:
        notes.append(f"no reference record for the requested classes {missing}")

    rng = np.random.default_rng(int(seed))
    chosen: list[dict[str, Any]] = []
    chosen_classes: list[str] = []
    for c in sorted(counts):
        if taken[c]:
            for i in rng.choice(available[c], size=taken[c], replace=False):
                chosen.append(pool[c][int(i)])
                chosen_classes.append(c)
    order = rng.permutation(len(chosen))
    per_class = {
        c: {"requests": counts[c], "quota": quotas[c], "taken": taken[c], "available": available[c]}
        for c in sorted(counts)
    }
    return StratifiedReference(
        records=[chosen[i] for i in order],
        classes=[chosen_classes[i] for i in order],
        seed=int(seed),
        n_requested=n_requested,
        per_class=per_class,
        excluded=excluded,
        missing=missing,
        note="; ".join(notes) or None,
    )


def _features(name: str, features: Any) -> np.ndarray:
    """``(N, F)`` float64 array from a tensor or array (checked)."""
    if isinstance(features, torch.Tensor):
        features = features.detach().cpu().numpy()
    x = np.asarray(features, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"{name} features must be a (N, F) matrix, got shape {tuple(x.shape)}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} features contain NaN or inf; check the extractor's input scaling")
    return x


def fid_floor(
    features: torch.Tensor | np.ndarray,
    n: int,
    repeats: int = 10,
    seed: int = 0,
    labels: Sequence[Hashable] | None = None,
    counts: Mapping[Hashable, int] | None = None,
) -> dict[str, Any]:
    """Real-vs-real FID at ``n`` images per side: the value a perfect generator of ``n`` images would reach.

    Each repetition draws two disjoint random subsets of ``n`` rows from ``features`` and computes their FID
    (:func:`~medgen_monai.metrics.fid.fid_from_features`). With ``labels`` both subsets are stratified: class ``c``
    contributes ``counts[c]`` rows to each (default: the largest-remainder shares of ``n`` in the labels' own
    proportions), so a floor for a generated set with fixed class counts has the same counts.

    The floor pairs ``n`` real images with ``n`` others; a generated FID computed against a larger reference has a
    smaller small-sample bias, so a perfect generator scores at or below the floor (``fid / floor <= ~1``).

    Args:
        features: ``(N, F)`` features of real images.
        n: images per side (the generated set's size), >= 2.
        repeats: repetitions (>= 10).
        seed: seed of ``np.random.default_rng`` for the subsets.
        labels: optional class of each row (``N`` entries) for stratified subsets.
        counts: optional class -> rows per subset (sums to ``n``); needs ``labels``.

    Returns:
        ``{"mean", "sd", "n", "repeats"}`` (``sd`` over repetitions, ``ddof=1``).

    Raises:
        ValueError: ``n < 2``, ``repeats < 10``, ``N < 2 n`` (saying how many real images are needed), a class with
            fewer than ``2 counts[c]`` rows, or ``counts`` not summing to ``n``.
    """
    x = _features("fid_floor: real", features)
    n, repeats = int(n), int(repeats)
    if n < 2:
        raise ValueError(f"fid_floor: n must be >= 2 (a covariance needs two images per side), got {n}")
    if repeats < 10:
        raise ValueError(
            f"fid_floor: repeats must be >= 10 (the floor is a mean and sd over repetitions), got {repeats}"
        )
    total = x.shape[0]
    if total < 2 * n:
        raise ValueError(
            f"fid_floor: a floor at n={n} per side needs at least {2 * n} real images (two disjoint "
            f"subsets of {n}), got {total}; use a larger reference or compare fewer generated images"
        )
    strata: dict[str, np.ndarray] | None = None
    if counts is not None and labels is None:
        raise ValueError("fid_floor: counts needs labels (the class of each feature row)")
    if labels is not None:
        if len(labels) != total:
            raise ValueError(f"fid_floor: {len(labels)} labels for {total} feature rows")
        names = np.asarray([str(c) for c in labels])
        present = Counter(names.tolist())
        per_side = (
            {str(c): int(k) for c, k in counts.items() if int(k) > 0}
            if counts is not None
            else {c: k for c, k in largest_remainder(present, n).items() if k > 0}
        )
        if sum(per_side.values()) != n:
            raise ValueError(f"fid_floor: counts sum to {sum(per_side.values())}, not n={n}")
        short = {c: (2 * k, present.get(c, 0)) for c, k in sorted(per_side.items()) if 2 * k > present.get(c, 0)}
        if short:
            raise ValueError(
                "fid_floor: stratified subsets need 2 x the per-class count of real images: "
                + ", ".join(f"{c!r} needs {need}, has {have}" for c, (need, have) in short.items())
            )
        strata = {c: np.flatnonzero(names == c) for c in sorted(per_side)}
    rng = np.random.default_rng(int(seed))
    values = []
    for _ in range(repeats):
        if strata is None:
            order = rng.permutation(total)
            a, b = order[:n], order[n : 2 * n]
        else:
            parts_a, parts_b = [], []
            for c, rows in strata.items():
                k = per_side[c]
                picked = rng.permutation(rows)
                parts_a.append(picked[:k])
                parts_b.append(picked[k : 2 * k])
            a, b = np.concatenate(parts_a), np.concatenate(parts_b)
        values.append(fid_from_features(x[a], x[b]))
    return {"mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)), "n": n, "repeats": repeats}


def matched_fid(
    reference_features: torch.Tensor | np.ndarray,
    generated_features: torch.Tensor | np.ndarray,
    labels: Sequence[Hashable],
    counts: Mapping[Hashable, int],
    repeats: int = 10,
    seed: int = 0,
) -> dict[str, Any]:
    """FID of the generated set against reference subsets of its own size and class counts: the same footing as
    :func:`fid_floor` (whose two sides are also that size), so ``fid / floor`` is about 1 for a perfect generator.

    A FID against a larger reference has a smaller small-sample bias than the floor at ``n`` against ``n``, and so
    reads better than it is; averaging over ``repeats`` random matched subsets uses the whole reference without it.

    Args:
        reference_features: ``(N, F)`` real features.
        generated_features: ``(n, F)`` generated features.
        labels: the class of each reference row (``N`` entries).
        counts: class -> generated images of that class (sums to ``n``).
        repeats: subsets (>= 1).
        seed: seed of ``np.random.default_rng`` for the subsets.

    Returns:
        ``{"mean", "sd", "n", "repeats"}``.

    Raises:
        ValueError: a class with fewer reference rows than generated images, or counts that do not sum to ``n``.
    """
    x = _features("matched_fid: reference", reference_features)
    y = _features("matched_fid: generated", generated_features)
    if len(labels) != x.shape[0]:
        raise ValueError(f"matched_fid: {len(labels)} labels for {x.shape[0]} reference rows")
    per_class = {str(c): int(k) for c, k in counts.items() if int(k) > 0}
    if sum(per_class.values()) != y.shape[0]:
        raise ValueError(f"matched_fid: counts sum to {sum(per_class.values())}, not the {y.shape[0]} generated rows")
    if int(repeats) < 1:
        raise ValueError(f"matched_fid: repeats must be >= 1, got {repeats}")
    names = np.asarray([str(c) for c in labels])
    strata = {c: np.flatnonzero(names == c) for c in sorted(per_class)}
    short = {c: (k, len(strata[c])) for c, k in per_class.items() if len(strata[c]) < k}
    if short:
        raise ValueError(
            "matched_fid: the reference has too few images of "
            + ", ".join(f"{c!r} (needs {k}, has {have})" for c, (k, have) in short.items())
        )
    rng = np.random.default_rng(int(seed))
    values = [
        fid_from_features(x[np.concatenate([rng.permutation(strata[c])[:k] for c, k in sorted(per_class.items())])], y)
        for _ in range(int(repeats))
    ]
    return {
        "mean": float(np.mean(values)),
        "sd": float(np.std(values, ddof=1)) if len(values) > 1 else 0.0,
        "n": int(y.shape[0]),
        "repeats": int(repeats),
    }


def _polynomial_mmd(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 between ``x (m, F)`` and ``y (g, F)`` with the kernel ``k(a, b) = (a.b / F + 1)^3``."""
    d = x.shape[1]
    k_xx = (x @ x.T / d + 1) ** 3
    k_yy = (y @ y.T / d + 1) ** 3
    k_xy = (x @ y.T / d + 1) ** 3
    m, g = x.shape[0], y.shape[0]
    xx = (k_xx.sum() - np.trace(k_xx)) / (m * (m - 1))
    yy = (k_yy.sum() - np.trace(k_yy)) / (g * (g - 1))
    return float(xx + yy - 2 * k_xy.sum() / (m * g))


def kid(
    real_features: torch.Tensor | np.ndarray,
    generated_features: torch.Tensor | np.ndarray,
    subsets: int = 100,
    subset_size: int | None = None,
    seed: int = 0,
) -> dict[str, Any]:
    """Kernel inception distance with a 95% interval.

    KID (Bińkowski et al., "Demystifying MMD GANs", ICLR 2018) is the unbiased estimate of the squared maximum mean
    discrepancy with the cubic polynomial kernel ``k(x, y) = (x.y / F + 1)^3``; for ``m`` real rows ``x`` and ``g``
    generated rows ``y``:

        MMD^2_u = sum_{i!=j} k(x_i, x_j) / (m (m-1)) + sum_{i!=j} k(y_i, y_j) / (g (g-1))
                  - 2 sum_{i,j} k(x_i, y_j) / (m g)

    It is computed on ``subsets`` pairs of random subsets (drawn without replacement) and averaged, as torchmetrics'
    ``KernelInceptionDistance`` and clean-fid's ``kernel_distance`` do (same kernel, 100 subsets, at most 1000 rows
    per subset). MONAI's ``MMDMetric`` uses a linear kernel on equal-size inputs, so it is not KID. The estimate is
    unbiased at any subset size (unlike FID), so it may be slightly negative when the distributions match.

    The 95% interval is the 2.5th-97.5th percentile of the per-subset estimates, not ``mean +- 1.96 sd / sqrt(k)``:
    the subsets are drawn from the same images, so they are not independent and that interval would shrink without
    bound as ``subsets`` grows. By default each subset is a random half of its side (half-sampling): a half-sample
    without replacement varies about as much as an estimate on the whole sample does (finite-population correction,
    ``(1 / m) (N - m) / (N - 1) ~= 1 / N`` at ``m = N / 2``), so the interval reflects both sides' sample sizes. On
    Gaussian features it is about right when the distributions differ and about 1.5x too wide when they match
    (tests/test_reference.py); it errs wide, never narrow. A fixed ``subset_size`` (the torchmetrics convention) gives
    the spread at that size instead: wider when it is smaller than half a side.

    Args:
        real_features: ``(N_real, F)``.
        generated_features: ``(N_generated, F)``, same ``F``.
        subsets: number of subset pairs (>= 10).
        subset_size: rows per subset on both sides, ``2 <= subset_size <= min(N_real, N_generated)``; ``None``: half
            of each side (at least 2, at most 1000).
        seed: seed of ``np.random.default_rng`` for the subsets.

    Returns:
        ``{"mean", "ci95": [low, high], "subsets", "subset_size": [real rows, generated rows]}``.

    Raises:
        ValueError: not (N, F) matrices with the same F, fewer than 2 rows on a side, ``subsets < 10``, or a
            ``subset_size`` outside ``[2, min(N_real, N_generated)]``.
    """
    x, y = _features("kid: real", real_features), _features("kid: generated", generated_features)
    if x.shape[1] != y.shape[1]:
        raise ValueError(
            f"kid: real and generated features differ in length ({x.shape[1]} vs {y.shape[1]}); extract "
            "both with the same extractor"
        )
    smaller = min(x.shape[0], y.shape[0])
    if smaller < 2:
        raise ValueError(f"kid: needs at least 2 images per side, got {x.shape[0]} real and {y.shape[0]} generated")
    if int(subsets) < 10:
        raise ValueError(f"kid: subsets must be >= 10 (the interval is a percentile over subsets), got {subsets}")
    if subset_size is None:
        sizes = [min(1000, max(2, x.shape[0] // 2)), min(1000, max(2, y.shape[0] // 2))]
    elif 2 <= int(subset_size) <= smaller:
        sizes = [int(subset_size)] * 2
    else:
        raise ValueError(
            f"kid: subset_size must be in [2, {smaller}] (the smaller side's size) or None, got {subset_size}"
        )
    rng = np.random.default_rng(int(seed))
    values = np.asarray(
        [
            _polynomial_mmd(
                x[rng.choice(x.shape[0], sizes[0], replace=False)], y[rng.choice(y.shape[0], sizes[1], replace=False)]
            )
            for _ in range(int(subsets))
        ]
    )
    low, high = np.percentile(values, [2.5, 97.5])
    return {
        "mean": float(values.mean()),
        "ci95": [float(low), float(high)],
        "subsets": int(subsets),
        "subset_size": sizes,
    }
