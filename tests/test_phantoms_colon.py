"""The colonoscopy phantom: vocabulary, determinism, overrides, text; every attribute visibly drives the frame."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.base import sample_rng
from medgen_monai.phantoms.colon import (
    CLASS_SUPPORT,
    COLON_CLASSES,
    ColonPhantom,
    image_identifier,
    label_from_attributes,
)

NORMAL = {a: "none" for a in ("finding", "morphology", "size", "surface", "colour", "location")}
POLYP = {
    "finding": "polyp",
    "morphology": "sessile",
    "size": "medium",
    "surface": "smooth",
    "colour": "red",
    "location": "centre",
}
ULCER = {
    "finding": "ulcer",
    "morphology": "none",
    "size": "medium",
    "surface": "ulcerated",
    "colour": "pale",
    "location": "centre",
}


@pytest.fixture(scope="module")
def colon() -> ColonPhantom:
    return get_phantom("colon")


def case(colon: ColonPhantom, base: dict[str, str] = POLYP, index: int = 3, seed: int = 11, **changes: str):
    """The same case (same mucosa, lumen, lighting, noise) with every attribute fixed: ``base`` + ``changes``."""
    return colon.generate(index, seed=seed, attributes={**base, **changes})


def pixels(sample) -> np.ndarray:
    return sample.images["image"].astype(np.float64)


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(rows.mean()), float(cols.mean())


def dilate(mask: np.ndarray, steps: int) -> np.ndarray:
    out = mask.copy()
    for _ in range(steps):
        grown = out.copy()
        grown[1:] |= out[:-1]
        grown[:-1] |= out[1:]
        grown[:, 1:] |= out[:, :-1]
        grown[:, :-1] |= out[:, 1:]
        out = grown
    return out


# ---- contract ----------------------------------------------------------------------------------


def test_vocabulary_and_registry(colon):
    assert isinstance(colon, ColonPhantom)
    assert (colon.name, colon.layout, colon.views, colon.spatial_dims, colon.channels, colon.default_size) == (
        "colon",
        "kvasir",
        ("image",),
        2,
        3,
        (64, 64),
    )
    assert colon.classes == COLON_CLASSES == ("normal-cecum", "polyps", "dyed-lifted-polyps", "ulcerative-colitis")
    assert not colon.multilabel
    vocabulary = colon.vocabulary()["attributes"]
    assert list(vocabulary) == ["finding", "morphology", "size", "surface", "colour", "location"]
    for _name, entry in vocabulary.items():
        assert entry["values"][0] == "none" and entry["doc"] and entry["views"] == ["image"]
    assert set(CLASS_SUPPORT) == set(COLON_CLASSES)


def test_image_mask_meta(colon):
    sample = colon.generate(0, seed=0)
    image = sample.images["image"]
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3) and image.std() > 20
    assert sample.masks["finding"].dtype == bool and sample.masks["finding"].shape == (64, 64)
    for corner in (image[:3, :3], image[:3, -3:], image[-3:, :3], image[-3:, -3:]):
        assert corner.max() == 0  # the circular vignette of endoscopy frames
    assert image[28:36, 28:36].size and image[16:48, 16:48].mean() > 40
    assert sample.meta["patient_id"] == sample.meta["image_id"] == image_identifier(0, 0)
    assert {"lumen_centre", "finding_radius_px"} <= set(sample.meta)
    assert not case(colon, NORMAL).masks["finding"].any() and case(colon, NORMAL).meta["finding_radius_px"] == 0


@pytest.mark.parametrize("size", [(48, 80), (128, 128), (80, 48)])
def test_other_sizes(colon, size):
    sample = colon.generate(2, seed=5, size=size, attributes=POLYP)
    assert sample.images["image"].shape == (*size, 3) and sample.masks["finding"].shape == size
    rows, cols = centroid(sample.masks["finding"])
    assert abs(rows - size[0] / 2) < 0.1 * size[0] and abs(cols - size[1] / 2) < 0.1 * size[1]
    area = sample.masks["finding"].sum() / min(size) ** 2
    assert 0.03 < area < 0.09  # about pi * 0.14^2 of the shorter side squared, whatever the size


def test_image_identifiers():
    ids = {image_identifier(3, i) for i in range(2000)}
    assert len(ids) == 2000
    one = image_identifier(3, 0)
    assert [len(p) for p in one.split("-")] == [8, 4, 4, 4, 12] and one[14] == "4"
    assert image_identifier(4, 0) != one
    with pytest.raises(ValueError, match="seed and index must be >= 0"):
        image_identifier(0, -1)


def test_deterministic_per_seed_and_index(colon):
    a, b = colon.generate(5, seed=2), colon.generate(5, seed=2)
    assert np.array_equal(a.images["image"], b.images["image"])
    assert np.array_equal(a.masks["finding"], b.masks["finding"])
    assert (a.attributes, a.label, a.text, a.meta) == (b.attributes, b.label, b.text, b.meta)
    assert np.array_equal(list(colon.generate_many(6, seed=2))[5].images["image"], a.images["image"])
    assert not np.array_equal(colon.generate(6, seed=2).images["image"], a.images["image"])
    assert not np.array_equal(colon.generate(5, seed=3).images["image"], a.images["image"])


# ---- labels, prevalences, overrides ------------------------------------------------------------


def test_label_is_derived_from_attributes(colon):
    assert label_from_attributes(NORMAL) == "normal-cecum"
    assert label_from_attributes(POLYP) == "polyps"
    assert label_from_attributes({**POLYP, "colour": "blue_dyed"}) == "dyed-lifted-polyps"
    assert label_from_attributes(ULCER) == "ulcerative-colitis"
    with pytest.raises(ValueError, match="not allowed for 'ulcerative-colitis'"):
        label_from_attributes({**ULCER, "morphology": "flat"})
    for index in range(30):
        sample = colon.generate(index, seed=1)
        assert sample.label == label_from_attributes(sample.attributes)


def test_prevalences_and_correlations(colon):
    draws = [colon.draw(sample_rng(0, i, 0), None, {}) for i in range(400)]
    counts = Counter(label for label, _ in draws)
    assert all(70 < counts[c] < 130 for c in COLON_CLASSES)  # Kvasir v2: equal class sizes
    by_class = {c: [a for label, a in draws if label == c] for c in COLON_CLASSES}
    large = lambda cases: np.mean([a["size"] == "large" for a in cases])  # noqa: E731
    assert large(by_class["dyed-lifted-polyps"]) > large(by_class["polyps"]) + 0.05  # lifted polyps are bigger
    flat = lambda cases: np.mean([a["morphology"] == "flat" for a in cases])  # noqa: E731
    assert flat(by_class["dyed-lifted-polyps"]) > flat(by_class["polyps"]) + 0.05
    assert all(a == NORMAL for a in by_class["normal-cecum"])
    # a class does not determine the picture: several values of every finding attribute inside a class
    for name in ("morphology", "size", "surface", "colour", "location"):
        assert len({a[name] for a in by_class["polyps"]}) >= 2
    for name in ("size", "colour", "location"):
        assert len({a[name] for a in by_class["ulcerative-colitis"]}) >= 2
    for name in ("morphology", "size", "surface", "location"):
        assert len({a[name] for a in by_class["dyed-lifted-polyps"]}) >= 2
    # flat plain polyps are mostly pale, the others mostly red
    polyps = by_class["polyps"] + [colon.draw(sample_rng(1, i, 0), "polyps", {})[1] for i in range(300)]
    pale = lambda cases: np.mean([a["colour"] == "pale" for a in cases])  # noqa: E731
    flat_polyps = [a for a in polyps if a["morphology"] == "flat"]
    assert pale(flat_polyps) > pale([a for a in polyps if a["morphology"] != "flat"]) + 0.15


@pytest.mark.parametrize("label", COLON_CLASSES)
def test_forced_label_gives_consistent_attributes(colon, label):
    seen = set()
    for index in range(12):
        sample = colon.generate(index, seed=4, label=label, size=32)
        assert sample.label == label == label_from_attributes(sample.attributes)
        seen.add(tuple(sample.attributes.values()))
    if label != "normal-cecum":
        assert len(seen) > 1  # the other attributes still vary


def test_attribute_overrides(colon):
    sample = colon.generate(0, seed=0, size=32, attributes={"morphology": "pedunculated"})
    assert sample.attributes["finding"] == "polyp" and sample.label in ("polyps", "dyed-lifted-polyps")
    sample = colon.generate(0, seed=0, size=32, attributes={"finding": "ulcer", "size": "large"})
    assert sample.label == "ulcerative-colitis" and sample.attributes["size"] == "large"
    sample = colon.generate(0, seed=0, size=32, label="dyed-lifted-polyps", attributes={"location": "upper_left"})
    assert sample.attributes["colour"] == "blue_dyed" and sample.attributes["location"] == "upper_left"
    # forcing one attribute does not shift the draws of the others
    free = [colon.draw(sample_rng(0, i, 0), "polyps", {}) for i in range(20)]
    forced = [colon.draw(sample_rng(0, i, 0), "polyps", {"location": "lower_right"}) for i in range(20)]
    assert [a["size"] for _, a in free] == [a["size"] for _, a in forced]


@pytest.mark.parametrize(
    ("label", "attributes", "message"),
    [
        ("normal-cecum", {"finding": "polyp"}, "label 'normal-cecum' does not allow finding='polyp'"),
        ("polyps", {"colour": "blue_dyed"}, "label 'polyps' does not allow colour='blue_dyed'"),
        ("ulcerative-colitis", {"morphology": "sessile"}, "does not allow morphology='sessile'"),
        (None, {"finding": "none", "size": "large"}, "contradict each other"),
        (None, {"finding": "ulcer", "colour": "blue_dyed"}, "contradict each other"),
        (None, {"finding": "polyp", "surface": "none"}, "contradict each other"),
        (None, {"colour": "purple"}, "unknown value 'purple'"),
        ("adenoma", {}, "unknown class 'adenoma'"),
    ],
)
def test_bad_overrides_raise(colon, label, attributes, message):
    with pytest.raises(ValueError, match=message):
        colon.generate(0, label=label, attributes=attributes, size=32)


def test_bad_size_raises(colon):
    with pytest.raises(ValueError, match="size must be 2 integers >= 16"):
        colon.generate(0, size=(64, 8))


# ---- attributes visibly drive the image --------------------------------------------------------


def test_size_steps_the_finding_area(colon):
    areas = {}
    for size in ("small", "medium", "large"):
        for finding in (POLYP, ULCER):
            sample = case(colon, finding, size=size)
            areas[size, finding["finding"]] = sample.masks["finding"].sum()
    for finding in ("polyp", "ulcer"):
        small, medium, large = (areas[s, finding] for s in ("small", "medium", "large"))
        assert small > 40 and medium > 2.2 * small and large > 1.8 * medium


@pytest.mark.parametrize(
    ("location", "rows", "cols"),
    [
        ("centre", (24, 40), (24, 40)),
        ("upper_left", (0, 28), (0, 28)),
        ("upper_right", (0, 28), (36, 64)),
        ("lower_left", (36, 64), (0, 28)),
        ("lower_right", (36, 64), (36, 64)),
    ],
)
def test_location_places_the_finding(colon, location, rows, cols):
    for base in (POLYP, ULCER):
        sample = case(colon, base, location=location, size="small")
        row, col = centroid(sample.masks["finding"])
        assert rows[0] <= row < rows[1] and cols[0] <= col < cols[1]
        # the finding is not hidden in the dark lumen
        assert pixels(sample)[sample.masks["finding"]].max(axis=1).mean() > 120


def test_colour_of_the_finding(colon):
    coloured = {colour: case(colon, colour=colour) for colour in ("pale", "red", "blue_dyed")}
    means = {colour: pixels(s)[s.masks["finding"]].mean(axis=0) for colour, s in coloured.items()}
    (_, pg, pb), (rr, rg, rb), (br, bg, bb) = means["pale"], means["red"], means["blue_dyed"]
    assert pg > rg + 80 and pb > rb + 80  # pale is whitish, red is not
    assert rr > 2.5 * rg  # red is red
    assert bb > br + 80 and bb > bg + 50  # indigo carmine is blue
    # the same case with another colour: nothing changes away from the finding (except a dyed cushion)
    red, pale = case(colon, colour="red"), case(colon, colour="pale")
    assert np.array_equal(red.masks["finding"], pale.masks["finding"])
    outside = ~dilate(red.masks["finding"], 1)
    assert np.array_equal(red.images["image"][outside], pale.images["image"][outside])
    dyed = case(colon, colour="blue_dyed")
    ring = dilate(dyed.masks["finding"], 6) & ~dilate(dyed.masks["finding"], 2)
    blueness = lambda s: pixels(s)[ring][:, 2] - pixels(s)[ring][:, 0]  # noqa: E731
    blue_shift = blueness(dyed) - blueness(red)
    assert blue_shift.mean() > 40  # the bluish submucosal cushion


def test_morphology_shapes(colon):
    sessile, flat, stalked = (
        case(colon, morphology=m, location="upper_left") for m in ("sessile", "flat", "pedunculated")
    )
    # pedunculated: the stalk reaches towards the image centre, well beyond the head
    head = sessile.masks["finding"]
    stalk = stalked.masks["finding"] & ~dilate(head, 1)
    assert stalk.sum() > 15
    assert centroid(stalk)[0] > centroid(head)[0] + 4 and centroid(stalk)[1] > centroid(head)[1] + 4

    # flat: an elongated plaque (principal axes ratio) against a round dome
    def elongation(mask):
        rows, cols = np.nonzero(mask)
        eig = np.linalg.eigvalsh(np.cov(np.stack([rows, cols])))
        return float(np.sqrt(eig[1] / eig[0]))

    assert elongation(flat.masks["finding"]) > 1.5 > 1.2 > elongation(head)
    # a raised polyp casts a shadow ring on the mucosa around it; a flat one does not
    for sample, raised in ((sessile, True), (flat, False)):
        mask = sample.masks["finding"]
        inner = dilate(mask, 2) & ~mask
        outer = dilate(mask, 6) & ~dilate(mask, 4)
        contrast = pixels(sample)[outer].mean() - pixels(sample)[inner].mean()
        assert (contrast > 30) if raised else (abs(contrast) < 25)


def test_surface_textures(colon):
    samples = {s: case(colon, size="large", surface=s, colour="pale") for s in ("smooth", "lobulated", "ulcerated")}
    inside = {s: pixels(x)[x.masks["finding"] & ~dilate(~x.masks["finding"], 1)] for s, x in samples.items()}
    luminance = {s: v.mean(axis=1) for s, v in inside.items()}
    # lobulated: dark clefts between lobes; ulcerated: a fibrin centre (yellow: blue well below green) and a dark rim
    dark = lambda v: (v < 0.6 * np.median(v)).mean()  # noqa: E731
    assert dark(luminance["lobulated"]) > 0.08 and dark(luminance["smooth"]) == 0
    yellow = lambda v: ((v[:, 1] - v[:, 2]) > 40) & (v[:, 0] > 170)  # noqa: E731
    assert yellow(inside["ulcerated"]).mean() > 0.15 and yellow(inside["smooth"]).mean() < 0.02
    dark_red = lambda v: (v[:, 0] < 140) & (v[:, 1] < 40)  # noqa: E731
    assert dark_red(inside["ulcerated"]).mean() > 0.1 and dark_red(inside["smooth"]).mean() < 0.02
    # smooth: one specular highlight on the dome
    assert (luminance["smooth"] > 240).sum() >= 2


def test_ulcer_comes_with_inflamed_mucosa(colon):
    """Ulcerative colitis: redder, granular mucosa without the vessel network of normal mucosa."""
    normal, ulcer = case(colon, NORMAL), case(colon, ULCER, location="upper_left", size="small")
    away = ~dilate(ulcer.masks["finding"], 4) & (normal.images["image"].max(axis=2) > 60)
    n, u = pixels(normal)[away], pixels(ulcer)[away]
    assert (u[:, 0] / (u[:, 1] + 1)).mean() > 1.6 * (n[:, 0] / (n[:, 1] + 1)).mean()
    # granularity: pixel-to-pixel differences (red channel) are much larger
    grain = lambda s: np.abs(np.diff(pixels(s)[..., 0], axis=1))[24:40, 8:56].mean()  # noqa: E731
    assert grain(ulcer) > 1.5 * grain(normal)
    for colour in ("pale", "red"):
        sample = case(colon, ULCER, colour=colour, size="large")
        base = pixels(sample)[sample.masks["finding"] & ~dilate(~sample.masks["finding"], 3)]
        assert (base.mean(axis=0)[1] > 150) == (colour == "pale")  # white fibrin or dark haemorrhagic base


# ---- text --------------------------------------------------------------------------------------


def test_text_mentions_the_facts_and_varies(colon):
    texts = [colon.generate(i, seed=6, attributes=POLYP, size=16).text for i in range(30)]
    assert len(set(texts)) > 10  # several phrasings per fact
    for text in texts:
        lowered = text.lower()
        assert "polyp" in lowered and ("sessile" in lowered) and any(w in lowered for w in ("medium", "moderately"))
        assert any(w in lowered for w in ("centre", "central", "middle")) and "smooth" in lowered
        assert any(w in lowered for w in ("red", "erythematous")) and "ulcer" not in lowered and "blue" not in lowered
        assert 1 <= lowered.count(".") <= 3
    stalked = colon.generate(
        0,
        seed=6,
        size=16,
        attributes={
            **POLYP,
            "morphology": "pedunculated",
            "size": "large",
            "surface": "lobulated",
            "colour": "blue_dyed",
            "location": "lower_left",
        },
    ).text.lower()
    assert any(w in stalked for w in ("pedunculated", "stalked")) and any(w in stalked for w in ("large", "big"))
    assert (
        "lobulated" in stalked
        and "blue" in stalked
        and "left" in stalked
        and any(w in stalked for w in ("lower", "bottom"))
        and ("cushion" in stalked or "lift" in stalked)
    )
    ulcer = {colon.generate(i, seed=6, size=16, attributes={**ULCER, "colour": "red"}).text.lower() for i in range(10)}
    assert all("ulcer" in t and "polyp" not in t and any(w in t for w in ("haemorrhagic", "bleeding")) for t in ulcer)
    normal = {colon.generate(i, seed=6, size=16, label="normal-cecum").text for i in range(20)}
    assert len(normal) > 2
    assert all("polyp" not in t.lower() or "no " in t.lower() or "without" in t.lower() for t in normal)
