"""The prostate MRI phantom: vocabulary, RAS geometry, determinism, overrides, reports; attributes visibly drive the
volume."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.base import sample_rng
from medgen_monai.phantoms.prostate import (
    PROSTATE_CLASSES,
    SIZE_BINS_MM,
    ProstatePhantom,
    label_from_attributes,
    study_identifiers,
)

LESION = {"lesion": "present", "zone": "peripheral", "side": "left", "level": "mid", "size": "medium", "pirads": "4"}
NO_LESION = {"lesion": "absent", "zone": "none", "side": "none", "level": "none", "size": "none", "pirads": "none"}


@pytest.fixture(scope="module")
def prostate() -> ProstatePhantom:
    return get_phantom("prostate")


def case(prostate: ProstatePhantom, index: int = 2, seed: int = 5, **changes: str):
    """The same patient (anatomy, spacing, noise) with every attribute fixed: LESION + ``changes``."""
    return prostate.generate(index, seed=seed, attributes={**LESION, **changes})


def centroid(mask: np.ndarray) -> np.ndarray:
    return np.argwhere(mask).mean(axis=0)


# ---- contract ----------------------------------------------------------------------------------


def test_vocabulary_and_registry(prostate):
    assert isinstance(prostate, ProstatePhantom)
    assert (prostate.name, prostate.layout, prostate.views, prostate.spatial_dims, prostate.channels) == (
        "prostate",
        "picai",
        ("t2w",),
        3,
        1,
    )
    assert prostate.default_size == (64, 64, 32) and prostate.classes == PROSTATE_CLASSES == ("negative", "csPCa")
    vocab = prostate.vocabulary()["attributes"]
    assert list(vocab) == ["lesion", "zone", "side", "level", "size", "pirads"]
    assert vocab["pirads"]["values"] == ["none", "2", "3", "4", "5"] and vocab["level"]["values"][1:] == [
        "apex",
        "mid",
        "base",
    ]
    assert all(a.doc.strip() for a in prostate.attributes)


def test_volume_masks_meta(prostate):
    sample = prostate.generate(0, seed=0)
    volume = sample.images["t2w"]
    assert volume.dtype == np.float32 and volume.shape == (64, 64, 32) and volume.min() >= 0
    assert volume.std() > 0.1
    for name in ("gland", "peripheral_zone", "transition_zone", "lesion", "bladder", "rectum"):
        assert sample.masks[name].dtype == bool and sample.masks[name].shape == (64, 64, 32)
    assert sample.masks["gland"].sum() > 1000
    assert set(sample.meta) >= {
        "patient_id",
        "study_id",
        "spacing",
        "diameter_mm",
        "age",
        "psa",
        "psad",
        "prostate_volume",
        "mri_date",
        "case_ISUP",
        "extraprostatic_extension",
    }
    assert len(sample.meta["patient_id"]) == 5 and len(sample.meta["study_id"]) == 7
    sx, sy, sz = sample.meta["spacing"]
    assert 1.05 <= sx <= 1.20 and sx == sy and 2.2 <= sz <= 2.8
    # the gland's physical size does not depend on the grid: its extent in mm is the same at 128x128x64
    fine = prostate.generate(0, seed=0, size=(128, 128, 64))
    assert fine.meta["spacing"] == pytest.approx((sx / 2, sy / 2, sz / 2), abs=1e-4)
    mm3 = lambda s: s.masks["gland"].sum() * np.prod(s.meta["spacing"])  # noqa: E731
    assert mm3(fine) == pytest.approx(mm3(sample), rel=0.08)


@pytest.mark.parametrize("size", [(48, 80, 24), (96, 96, 40), (16, 16, 16)])
def test_other_sizes(prostate, size):
    sample = prostate.generate(1, seed=0, size=size, attributes=LESION)
    assert sample.images["t2w"].shape == size and sample.masks["lesion"].shape == size
    assert sample.masks["lesion"].any() and sample.masks["gland"].any()


def test_ras_anatomy(prostate):
    """RAS voxel order: rectum posterior (low j) of the gland, bladder superior (high k), left lesion at low i."""
    sample = case(prostate)
    gland, rectum, bladder = (centroid(sample.masks[n]) for n in ("gland", "rectum", "bladder"))
    assert rectum[1] < gland[1] - 8 and bladder[2] > gland[2] + 4 and bladder[1] > gland[1]
    assert centroid(sample.masks["lesion"])[0] < gland[0] - 3  # patient's left = -x in RAS
    volume, masks = sample.images["t2w"], sample.masks
    pz = masks["peripheral_zone"] & ~masks["lesion"]
    tz = masks["transition_zone"] & ~masks["lesion"]
    assert volume[masks["bladder"]].mean() > volume[pz].mean() > volume[tz].mean() + 0.15
    assert volume[masks["rectum"]].mean() < volume[tz].mean()


def test_deterministic_per_seed_and_index(prostate):
    a, b = prostate.generate(4, seed=2), prostate.generate(4, seed=2)
    assert np.array_equal(a.images["t2w"], b.images["t2w"])
    assert (a.attributes, a.label, a.text, a.meta) == (b.attributes, b.label, b.text, b.meta)
    assert np.array_equal(list(prostate.generate_many(5, seed=2))[4].images["t2w"], a.images["t2w"])
    other = prostate.generate(5, seed=2)
    assert not np.array_equal(other.images["t2w"], a.images["t2w"]) and other.meta["patient_id"] != a.meta["patient_id"]


def test_study_identifiers_unique_and_picai_shaped():
    ids = [study_identifiers(3, i) for i in range(5000)]
    assert len({i["patient_id"] for i in ids}) == len({i["study_id"] for i in ids}) == 5000
    assert all(10000 <= int(i["patient_id"]) <= 99999 and 1000000 <= int(i["study_id"]) <= 9999999 for i in ids)
    with pytest.raises(ValueError, match="seed and index must be >= 0"):
        study_identifiers(0, -1)


# ---- labels, prevalences, overrides ------------------------------------------------------------


def test_prevalences_and_correlations(prostate):
    draws = [prostate.draw(sample_rng(0, i, 0), None, {}) for i in range(600)]
    labels = Counter(label for label, _ in draws)
    assert 0.28 < labels["csPCa"] / 600 < 0.46
    assert all(label == label_from_attributes(a) for label, a in draws)
    lesions = [a for _, a in draws if a["lesion"] == "present"]
    assert 0.6 < np.mean([a["zone"] == "peripheral" for a in lesions]) < 0.8
    by_pirads = {p: [a["size"] for a in lesions if a["pirads"] == p] for p in "2345"}
    assert "large" not in by_pirads["4"]
    assert np.mean([s == "large" for s in by_pirads["5"]]) > 0.55 > np.mean([s == "large" for s in by_pirads["3"]])
    # a class does not determine the volume: several values of every lesion attribute inside csPCa
    cancer = [a for label, a in draws if label == "csPCa"]
    for name, values in (
        ("pirads", {"3", "4", "5"}),
        ("zone", {"peripheral", "transition"}),
        ("level", {"apex", "mid", "base"}),
        ("side", {"left", "right"}),
        ("size", {"small", "medium", "large"}),
    ):
        assert {a[name] for a in cancer} == values
    assert {a["lesion"] for label, a in draws if label == "negative"} == {"absent", "present"}  # PI-RADS 2


def test_forced_label_and_attributes(prostate):
    for index in range(15):
        assert prostate.generate(index, seed=1, size=16, label="csPCa").attributes["pirads"] in ("3", "4", "5")
        negative = prostate.generate(index, seed=1, size=16, label="negative").attributes
        assert negative["pirads"] in ("none", "2")
    forced = prostate.draw(sample_rng(0, 3, 0), None, {"zone": "transition"})[1]
    assert forced["lesion"] == "present" and forced["side"] != "none" and forced["zone"] == "transition"
    assert prostate.draw(sample_rng(0, 3, 0), None, {"lesion": "absent"})[1] == NO_LESION
    large = [prostate.draw(sample_rng(0, i, 0), None, {"size": "large"})[1]["pirads"] for i in range(100)]
    assert "4" not in large and Counter(large).most_common(1)[0][0] == "5"
    # forcing one attribute leaves the draws of the others aligned
    free = prostate.draw(sample_rng(0, 7, 0), "csPCa", {})[1]
    assert prostate.draw(sample_rng(0, 7, 0), "csPCa", {"side": free["side"]})[1] == free


@pytest.mark.parametrize(
    ("label", "fixed", "message"),
    [
        ("csPCa", {"lesion": "absent"}, "needs a lesion"),
        ("csPCa", {"pirads": "2"}, "contradicts pirads='2'"),
        ("negative", {"pirads": "4"}, "contradicts pirads='4'"),
        (None, {"lesion": "absent", "zone": "peripheral"}, "contradict each other"),
        (None, {"lesion": "present", "size": "none"}, "contradict each other"),
        (None, {"pirads": "4", "size": "large"}, "cannot have size='large'"),
    ],
)
def test_contradictions_are_rejected(prostate, label, fixed, message):
    with pytest.raises(ValueError, match=message):
        prostate.generate(0, seed=0, size=16, label=label, attributes=fixed)


def test_unknown_values_are_rejected(prostate):
    with pytest.raises(ValueError, match="unknown value '6'"):
        prostate.generate(0, attributes={"pirads": "6"})
    with pytest.raises(ValueError, match="unknown class 'benign'"):
        prostate.generate(0, label="benign")


# ---- attributes drive the volume (same case, one attribute changed) ----------------------------


def test_lesion_presence(prostate):
    with_lesion, without = case(prostate), prostate.generate(2, seed=5, attributes=NO_LESION)
    mask = with_lesion.masks["lesion"]
    assert mask.sum() > 20 and not without.masks["lesion"].any()
    assert with_lesion.images["t2w"][mask].mean() < 0.6 * without.images["t2w"][mask].mean()
    assert with_lesion.meta["diameter_mm"] is not None and without.meta["diameter_mm"] is None


def test_zone_side_level_positions(prostate):
    gland = centroid(case(prostate).masks["gland"])
    for zone, region in (("peripheral", "peripheral_zone"), ("transition", "transition_zone")):
        sample = case(prostate, zone=zone)
        mask = sample.masks["lesion"]
        assert (mask & sample.masks[region]).sum() > 0.6 * mask.sum()
    assert (
        centroid(case(prostate, zone="peripheral").masks["lesion"])[1]
        < centroid(case(prostate, zone="transition").masks["lesion"])[1] - 4
    )  # PZ posterior of TZ
    left, right = (centroid(case(prostate, side=s).masks["lesion"])[0] for s in ("left", "right"))
    assert left < gland[0] - 3 and right > gland[0] + 3
    z = [centroid(case(prostate, level=level).masks["lesion"])[2] for level in ("apex", "mid", "base")]
    assert z[0] + 2 < z[1] < z[2] - 2


def test_size_bins(prostate):
    counts = []
    for size in ("small", "medium", "large"):
        sample = case(prostate, size=size, pirads="5" if size == "large" else "4")
        low, high = SIZE_BINS_MM[size]
        assert low <= sample.meta["diameter_mm"] <= high
        counts.append(sample.masks["lesion"].sum())
    assert counts[0] * 2 < counts[1] and counts[1] * 2 < counts[2]


def test_pirads_contrast_steps(prostate):
    """Lesion signal relative to its zone falls in clear steps from PI-RADS 2 to 5 (same case, same size)."""
    background = prostate.generate(2, seed=5, attributes=NO_LESION).images["t2w"]
    ratios = []
    for pirads in ("2", "3", "4", "5"):
        sample = case(prostate, pirads=pirads, size="medium")
        mask = sample.masks["lesion"]
        ratios.append(sample.images["t2w"][mask].mean() / background[mask].mean())
    assert all(a - b > 0.1 for a, b in zip(ratios, ratios[1:])), ratios
    # PI-RADS 5 below 15 mm bulges through the capsule into the fat
    bulge = case(prostate, pirads="5", size="medium")
    assert bulge.meta["extraprostatic_extension"] and (bulge.masks["lesion"] & ~bulge.masks["gland"]).sum() > 5
    assert not case(prostate).meta["extraprostatic_extension"]
    assert not (case(prostate).masks["lesion"] & ~case(prostate).masks["gland"]).any()


# ---- reports -----------------------------------------------------------------------------------


def test_report_mentions_true_facts_and_varies(prostate):
    sample = case(prostate, side="right", level="base", zone="transition", pirads="3", size="small")
    texts = [prostate.describe(sample_rng(0, i, 2), "csPCa", sample.attributes, sample.meta) for i in range(200)]
    empty = sum(t == "" for t in texts)
    assert 10 < empty < 55  # about 15 % of PI-CAI cases have no report
    written = [t for t in texts if t]
    assert len(set(written)) > 20
    for text in written:
        assert "FINDINGS:" in text and "IMPRESSION:" in text
        assert "right" in text and "left" not in text
        assert "transition zone" in text or "TZ" in text
        assert "base" in text or "basal" in text
        assert "PI-RADS 3" in text or "category 3" in text
        assert f"{sample.meta['diameter_mm']:.0f} mm" in text
        assert "extraprostatic extension is present" not in text and "PI-RADS 4" not in text
    negative = prostate.generate(0, seed=0, attributes=NO_LESION)
    texts = [prostate.describe(sample_rng(1, i, 2), "negative", negative.attributes, negative.meta) for i in range(40)]
    assert all("PI-RADS 1" in t or "assessment 1" in t for t in texts if t)
    assert not any("left" in t or "right" in t for t in texts)
