"""Fair references, the FID floor and KID (medgen_monai.metrics.reference), and their use in evaluate_generation."""

from __future__ import annotations

import itertools
import json
import os
import random
import shutil
from collections import Counter

import numpy as np
import pytest
import torch

from medgen_monai.metrics import reference as reference_module
from medgen_monai.metrics.fid import fid_from_features
from medgen_monai.metrics.reference import (
    fid_floor,
    kid,
    largest_remainder,
    request_sources,
    stratified_reference,
)

CLASSES = ("normal-cecum", "polyps", "dyed-lifted-polyps", "ulcerative-colitis")


def class_sorted_records(sizes=(368, 12, 10, 10)) -> list[dict]:
    """A datalist sorted by class, the first class dominant (as the Kvasir reader returns it)."""
    return [
        {"id": f"{c}_{i:04d}", "image": f"/data/colon/{c}/{c}_{i:04d}.jpg", "category": c}
        for c, k in zip(CLASSES, sizes)
        for i in range(k)
    ]


def test_largest_remainder_sums_and_breaks_ties_by_name():
    assert largest_remainder({"a": 1, "b": 1, "c": 1}, 10) == {"a": 4, "b": 3, "c": 3}
    assert largest_remainder({"c": 1, "b": 1, "a": 1}, 10) == {"a": 4, "b": 3, "c": 3}  # not by mapping order
    assert largest_remainder({"a": 8, "b": 1, "c": 1}, 7) == {"a": 5, "b": 1, "c": 1}  # 5.6, 0.7, 0.7
    for n in range(0, 50):
        assert sum(largest_remainder({"a": 3, "b": 5, "c": 7}, n).values()) == n
    with pytest.raises(ValueError, match="positive sum"):
        largest_remainder({"a": 0}, 3)


def test_reference_matches_request_proportions_on_a_class_sorted_datalist():
    records = class_sorted_records()
    requests = [c for c in CLASSES for _ in range(8)]  # 8 requests per class
    # the old reference, the first 40 of the sorted list, is one class only
    assert Counter(r["category"] for r in records[:40]) == {"normal-cecum": 40}
    drawn = stratified_reference(records, requests, 40, seed=0)
    assert len(drawn) == 40 and drawn.note is None
    assert Counter(r["category"] for r in drawn.records) == {c: 10 for c in CLASSES}
    assert drawn.classes == [r["category"] for r in drawn.records]
    # shuffled, not grouped by class: halves of it are not class-sorted (grouped, the class would change 3 times)
    assert sum(a != b for a, b in zip(drawn.classes, drawn.classes[1:])) > 15
    # unequal requests: largest-remainder shares of n
    uneven = stratified_reference(records, ["polyps"] * 3 + ["normal-cecum"] * 5, 8, seed=1)
    assert Counter(uneven.classes) == {"normal-cecum": 5, "polyps": 3}
    assert uneven.per_class["polyps"] == {"requests": 3, "quota": 3, "taken": 3, "available": 12}


def test_reference_is_deterministic_per_seed_and_independent_of_input_order():
    records = class_sorted_records()
    requests = list(CLASSES) * 5
    ids = [r["id"] for r in stratified_reference(records, requests, 30, seed=3).records]
    assert ids == [r["id"] for r in stratified_reference(records, requests, 30, seed=3).records]
    shuffled = records.copy()
    random.Random(0).shuffle(shuffled)
    assert ids == [r["id"] for r in stratified_reference(shuffled, requests[::-1], 30, seed=3).records]
    other = [r["id"] for r in stratified_reference(records, requests, 30, seed=4).records]
    assert set(other) != set(ids)
    # the draw is random within a class: over seeds the big class's picks are spread, not its first records
    picked = Counter(
        r["id"]
        for s in range(20)
        for r in stratified_reference(records, requests, 30, seed=s).records
        if r["category"] == "normal-cecum"
    )
    assert len(picked) > 100


def test_reference_excludes_the_requests_source_images_by_id_or_path():
    records = class_sorted_records((20, 20, 20, 20))
    sources = [
        {"category": "polyps", "description_id": "polyps_0003"},
        {"category": "polyps", "source_image": "/data/colon/polyps/../polyps/polyps_0007.jpg"},
        {"category": "normal-cecum", "source": "normal-cecum_0001"},
        {"category": "normal-cecum"},
    ]
    exclude = request_sources(sources)
    assert exclude == {"polyps_0003", "/data/colon/polyps/../polyps/polyps_0007.jpg", "normal-cecum_0001"}
    for seed in range(5):
        drawn = stratified_reference(records, [r["category"] for r in sources], None, seed=seed, exclude=exclude)
        ids = {r["id"] for r in drawn.records}
        assert not ids & {"polyps_0003", "polyps_0007", "normal-cecum_0001"}
        assert drawn.excluded == 3 and len(drawn) == 37  # the pool of the requested classes (19 + 18) in 1:1
    # a relative path matches the absolute one it names
    rel = [
        {"id": "x", "image": "some/dir/x.png", "category": "polyps"},
        {"id": "y", "image": "some/dir/y.png", "category": "polyps"},
    ]
    drawn = stratified_reference(rel, ["polyps"], None, seed=0, exclude=[os.path.abspath("some/dir/x.png")])
    assert [r["id"] for r in drawn.records] == ["y"]


def test_short_classes_raise_shrink_or_are_taken_whole():
    records = class_sorted_records()
    requests = list(CLASSES) * 8
    with pytest.raises(ValueError, match=r"'polyps': share 100, pool 12.*largest n .* is 40"):
        stratified_reference(records, requests, 400, seed=0)
    shrunk = stratified_reference(records, requests, 400, seed=0, on_short="shrink")
    assert len(shrunk) == 40 and "shrunk from 400 to 40" in shrunk.note
    assert max(Counter(shrunk.classes).values()) - min(Counter(shrunk.classes).values()) <= 1
    whole = stratified_reference(records, requests, 400, seed=0, on_short="take_all")
    assert Counter(whole.classes) == {
        "normal-cecum": 100,
        "polyps": 12,
        "dyed-lifted-polyps": 10,
        "ulcerative-colitis": 10,
    }
    assert "under-represented" in whole.note
    # a requested class with no record at all: named, never silently matched
    with pytest.raises(ValueError, match=r"\['unknown'\] have no record"):
        stratified_reference(records, ["polyps", "unknown"], 10, seed=0)
    missing = stratified_reference(records, ["polyps", "unknown"], 10, seed=0, on_short="shrink")
    assert missing.missing == ["unknown"] and set(missing.classes) == {"polyps"} and "unknown" in missing.note
    with pytest.raises(ValueError, match="n must be >= 1"):
        stratified_reference(records, requests, 0, seed=0)
    with pytest.raises(ValueError, match="no request classes"):
        stratified_reference(records, [], 10, seed=0)
    with pytest.raises(ValueError, match="on_short"):
        stratified_reference(records, requests, 10, seed=0, on_short="pad")
    with pytest.raises(ValueError, match="class_of"):
        stratified_reference([{"id": "a", "label": 0}], ["x"], 1, seed=0)


def gaussian(n: int, dim: int = 8, shift: float = 0.0, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(size=(n, dim)) + shift


def test_fid_floor_draws_disjoint_subsets_of_n_at_least_ten_times(monkeypatch):
    features = np.concatenate([np.arange(100)[:, None], gaussian(100, 4)], axis=1)  # column 0: the row's index
    calls = []

    def recording(a, b):
        calls.append((np.asarray(a)[:, 0].astype(int).tolist(), np.asarray(b)[:, 0].astype(int).tolist()))
        return fid_from_features(a, b)

    monkeypatch.setattr(reference_module, "fid_from_features", recording)
    floor = fid_floor(features, n=30, seed=0)
    assert floor["n"] == 30 and floor["repeats"] == 10 and len(calls) == 10
    for a, b in calls:
        assert len(a) == len(b) == 30 and not set(a) & set(b)
    assert len({tuple(sorted(a)) for a, _ in calls}) == 10  # a fresh random draw each time
    assert floor["sd"] > 0
    # stratified: each side takes the given per-class counts
    labels = ["a"] * 60 + ["b"] * 40
    calls.clear()
    fid_floor(features, n=10, repeats=12, seed=1, labels=labels, counts={"a": 7, "b": 3})
    assert len(calls) == 12
    for a, b in calls:
        assert sum(i < 60 for i in a) == sum(i < 60 for i in b) == 7 and not set(a) & set(b)


def test_fid_floor_is_small_for_one_distribution_and_below_a_real_difference():
    real = gaussian(800, seed=0)
    floor = fid_floor(real, n=200, seed=0)
    far = fid_from_features(real[:200], gaussian(200, shift=1.0, seed=1))  # a true distance of 8 (mean shift)
    assert floor["mean"] < 1.0 and far > 8 * floor["mean"]
    # the floor depends on n: FID's small-sample bias grows as n shrinks
    assert fid_floor(real, n=20, seed=0)["mean"] > 3 * floor["mean"]
    # same seed, same floor
    assert fid_floor(real, n=200, seed=0) == floor
    # as documented: n fresh images of the same distribution against a larger reference score below the floor
    reference = gaussian(400, 16, seed=2)
    small_floor = fid_floor(reference, n=32, seed=0)
    perfect = fid_from_features(reference, gaussian(32, 16, seed=3))
    assert perfect < small_floor["mean"]


def test_fid_floor_errors_name_what_is_needed():
    real = gaussian(50)
    with pytest.raises(ValueError, match="needs at least 60 real images"):
        fid_floor(real, n=30)
    with pytest.raises(ValueError, match="repeats must be >= 10"):
        fid_floor(real, n=10, repeats=5)
    with pytest.raises(ValueError, match="n must be >= 2"):
        fid_floor(real, n=1)
    with pytest.raises(ValueError, match="'b' needs 8, has 5"):
        fid_floor(real, n=10, labels=["a"] * 45 + ["b"] * 5, counts={"a": 6, "b": 4})
    with pytest.raises(ValueError, match="sum to 9"):
        fid_floor(real, n=10, labels=["a"] * 50, counts={"a": 9})
    with pytest.raises(ValueError, match=r"\(N, F\)"):
        fid_floor(real[0], n=2)


def _naive_kid(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased MMD^2 with k(a, b) = (a.b / d + 1)^3, written out term by term."""
    d, m, n = x.shape[1], len(x), len(y)
    k = lambda a, b: (float(a @ b) / d + 1) ** 3  # noqa: E731
    xx = sum(k(x[i], x[j]) for i, j in itertools.permutations(range(m), 2)) / (m * (m - 1))
    yy = sum(k(y[i], y[j]) for i, j in itertools.permutations(range(n), 2)) / (n * (n - 1))
    xy = sum(k(a, b) for a in x for b in y) / (m * n)
    return xx + yy - 2 * xy


def test_kid_is_the_unbiased_polynomial_mmd():
    x, y = gaussian(12, 5, seed=0), gaussian(9, 5, shift=0.3, seed=1)
    # subsets of the whole smaller side: every pair of subsets is the whole of y and 9 rows of x
    full = kid(x[:9], y, subsets=10, subset_size=9)
    assert full["mean"] == pytest.approx(_naive_kid(x[:9], y), rel=1e-9)
    assert full["ci95"][0] == pytest.approx(full["ci95"][1], rel=1e-9)
    # unequal halves by default
    halves = kid(x, y, seed=0)
    assert halves["subset_size"] == [6, 4] and halves["subsets"] == 100
    assert kid(torch.as_tensor(x), torch.as_tensor(y), seed=0) == halves


def test_kid_interval_covers_zero_for_one_distribution_and_excludes_it_for_a_shift():
    real = gaussian(400, 16, seed=0)
    same = kid(real, gaussian(48, 16, seed=1), seed=0)
    assert (
        same["ci95"][0] < 0 < same["ci95"][1] and abs(same["mean"]) < 0.1 * (same["ci95"][1] - same["ci95"][0]) + 0.02
    )
    shifted = kid(real, gaussian(48, 16, shift=0.5, seed=1), seed=0)
    assert shifted["ci95"][0] > 0 and shifted["mean"] > 0.3
    # coverage over independent samples of one distribution: the interval errs wide, never narrow
    intervals = [kid(gaussian(200, 16, seed=10 + t), gaussian(32, 16, seed=100 + t), seed=t)["ci95"] for t in range(20)]
    assert sum(low <= 0 <= high for low, high in intervals) >= 18


def test_kid_errors():
    x = gaussian(20)
    with pytest.raises(ValueError, match="subset_size must be in \\[2, 20\\]"):
        kid(x, x, subset_size=21)
    with pytest.raises(ValueError, match="subsets must be >= 10"):
        kid(x, x, subsets=5)
    with pytest.raises(ValueError, match="differ in length"):
        kid(x, gaussian(20, 4))
    with pytest.raises(ValueError, match="at least 2 images"):
        kid(x, x[:1])
    with pytest.raises(ValueError, match="NaN"):
        kid(x, np.full((5, 8), np.nan))


def test_fid_from_features_checks_its_inputs():
    x = gaussian(20)
    assert fid_from_features(x, x) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="differ in length"):
        fid_from_features(x, gaussian(20, 4))
    with pytest.raises(ValueError, match="at least 2"):
        fid_from_features(x, x[:1])


def test_evaluate_generation_draws_a_fair_reference_and_reports_floor_and_kid(tmp_path, monkeypatch):
    """End to end on derm phantoms: generated images are copies of real ones (a perfect generator). The audit network
    is a seeded, untrained one of the derm unit (its features are as good as any for checking the bookkeeping)."""
    from medgen_monai.cli import main
    from medgen_monai.data import read_dataset
    from medgen_monai.metrics import evaluation
    from medgen_monai.metrics.audit import AuditNet, audit_spec
    from medgen_monai.metrics.evaluation import evaluate_generation

    torch.manual_seed(0)
    audit = AuditNet(audit_spec("derm_image", channels=(8, 8, 16, 32))).eval()  # 64 features: a quick FID
    monkeypatch.setattr(evaluation, "load_audit", lambda unit: audit)

    main(["phantoms", "--kind", "derm", "--n", "300", "--out", str(tmp_path / "data"), "--progress", "False"])
    records = read_dataset("isic", tmp_path / "data")
    classes = sorted(
        {r["label_name"] for r in records}, key=lambda c: next(r["label"] for r in records if r["label_name"] == c)
    )
    records.sort(key=lambda r: r["label"])  # class-sorted, as readers may return it
    by_class = {c: [r for r in records if r["label_name"] == c] for c in classes}
    wanted = [c for c in classes if len(by_class[c]) >= 30][:2]
    out = tmp_path / "run"
    out.mkdir()
    requests = []
    for c in wanted:
        for i, source in enumerate(by_class[c][:8]):
            request = {"id": f"{c}_{i}", "category": c, "description_id": source["id"]}
            shutil.copy(source["image"], out / f"{request['id']}.png")
            requests.append(request)
    report = evaluate_generation(out, requests, records, "derm_image", classes, max_reference=40, reference_seed=0)
    sampling = report["reference"]["sampling"]
    assert report["reference"]["n"] == 40 and sampling["excluded"] == 16
    assert {c: v["taken"] for c, v in sampling["per_class"].items()} == {c: 20 for c in wanted}
    floor = report["generated"]["fid_floor"]
    assert floor["n"] == 16 and floor["repeats"] == 10 and floor["sd"] > 0
    assert report["generated"]["fid_ratio"] == pytest.approx(report["generated"]["fid"] / floor["mean"])
    assert set(report["generated"]["kid"]) == {"mean", "ci95", "subsets", "subset_size"}
    assert "fid_split_half" in report["reference"]
    assert json.loads((out / "evaluation.json").read_text())["generated"]["fid_floor"] == floor
    # a reference too small for the floor at this n: the floor is null with the reason, the rest is reported
    small = evaluate_generation(out, requests, records, "derm_image", classes, max_reference=20)
    assert small["generated"]["fid_floor"] is None and "needs" in small["generated"]["fid_floor_note"]
    assert small["generated"]["fid_ratio"] is None and small["generated"]["fid"] >= 0


def test_matched_fid_puts_a_perfect_generator_at_its_floor():
    """Against a large reference FID reads better than the n-vs-n floor; against matched subsets it sits at the
    floor."""
    from medgen_monai.metrics.fid import fid_from_features
    from medgen_monai.metrics.reference import fid_floor, matched_fid

    rng = np.random.default_rng(0)
    real = rng.normal(size=(400, 8))
    labels = ["a"] * 200 + ["b"] * 200
    generated = rng.normal(size=(40, 8))  # same distribution: a perfect generator
    counts = {"a": 20, "b": 20}
    floor = fid_floor(real, 40, labels=labels, counts=counts)["mean"]
    matched = matched_fid(real, generated, labels, counts, repeats=20)
    assert 0.7 < matched["mean"] / floor < 1.3, (matched, floor)
    assert fid_from_features(real, generated) < 0.8 * floor  # the full reference's smaller bias
    shifted = matched_fid(real, generated + 1.0, labels, counts)["mean"]
    assert shifted > 3 * floor
    with pytest.raises(ValueError, match="too few images of 'b'"):
        matched_fid(real[:210], generated, labels[:210], counts)
