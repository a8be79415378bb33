"""The dermoscopy phantom: vocabulary, determinism, overrides, text; attributes visibly drive the image."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.derm import DERM_ATTRIBUTES, DERM_CLASSES, DermPhantom, image_identifiers

BASE = {
    "shape": "round",
    "size": "medium",
    "colour": "dark_brown",
    "border": "well_defined",
    "pattern": "homogeneous",
    "position": "centre",
}


@pytest.fixture(scope="module")
def derm() -> DermPhantom:
    return get_phantom("derm")


def case(derm: DermPhantom, index: int = 7, seed: int = 3, label: str = "NV", **changes: str):
    """The same case (skin, hair, noise) with every attribute fixed: ``BASE`` + ``changes``."""
    return derm.generate(index, seed=seed, label=label, attributes={**BASE, **changes})


def test_vocabulary_and_registry(derm):
    assert isinstance(derm, DermPhantom)
    assert (derm.name, derm.layout, derm.views, derm.channels, derm.default_size, derm.multilabel) == (
        "derm",
        "isic",
        ("image",),
        3,
        (64, 64),
        False,
    )
    assert derm.classes == DERM_CLASSES == ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC")
    assert [a.name for a in DERM_ATTRIBUTES] == ["shape", "size", "colour", "border", "pattern", "position"]
    assert set(derm.attribute("pattern").values) == {"network", "globules", "homogeneous"}
    assert all(a.doc for a in DERM_ATTRIBUTES)


def test_image_masks_meta(derm):
    sample = derm.generate(0, seed=0)
    image = sample.images["image"]
    assert image.dtype == np.uint8 and image.shape == (64, 64, 3) and image.std() > 10
    assert sample.masks["lesion"].shape == (64, 64) and sample.masks["lesion"].dtype == bool
    assert sample.masks["lesion"].any()
    assert sample.label in DERM_CLASSES
    assert set(sample.meta) >= {"image_id", "lesion_id", "patient_id", "age_approx", "sex", "anatom_site_general"}
    assert sample.meta["image_id"].startswith("ISIC_") and len(sample.meta["image_id"]) == 12
    for size in ((48, 80), (128, 128)):
        other = derm.generate(0, seed=0, size=size)
        assert other.images["image"].shape == (*size, 3) and other.masks["lesion"].shape == size


def test_identifiers_unique_and_checked():
    ids = [image_identifiers(1, i)["image_id"] for i in range(3000)]
    assert len(set(ids)) == len(ids)
    with pytest.raises(ValueError, match="seed and index"):
        image_identifiers(-1, 0)


def test_deterministic_per_seed_and_index(derm):
    a, b = derm.generate(5, seed=2), derm.generate(5, seed=2)
    assert np.array_equal(a.images["image"], b.images["image"]) and a.text == b.text and a.attributes == b.attributes
    c = derm.generate(6, seed=2)
    assert not np.array_equal(a.images["image"], c.images["image"])


def test_overrides_are_respected(derm):
    sample = derm.generate(1, seed=1, label="VASC", attributes={"colour": "black", "pattern": "network"})
    assert (
        sample.label == "VASC" and sample.attributes["colour"] == "black" and sample.attributes["pattern"] == "network"
    )
    with pytest.raises(ValueError, match="unknown class 'SCC'"):
        derm.generate(1, label="SCC")
    with pytest.raises(ValueError, match="unknown value 'purple'"):
        derm.generate(1, attributes={"colour": "purple"})
    with pytest.raises(ValueError, match="unknown attribute 'hue'"):
        derm.generate(1, attributes={"hue": "red"})


def test_forced_attributes_shift_the_class_posterior(derm):
    rng_draws = [
        derm.draw(np.random.default_rng(i), None, {"colour": "red", "pattern": "globules"})[0] for i in range(300)
    ]
    counts = Counter(rng_draws)
    assert counts["VASC"] + counts["BCC"] + counts["AK"] > counts["MEL"]  # red globules: vascular / inflamed lesions


def test_class_attribute_correlations_without_determinism(derm):
    draws = [derm.draw(np.random.default_rng(i), None, {}) for i in range(3000)]
    by_class = {c: [a for label, a in draws if label == c] for c in DERM_CLASSES}
    assert Counter(label for label, _ in draws).most_common(1)[0][0] == "NV"

    def share(c, name, value):
        return np.mean([a[name] == value for a in by_class[c]])

    assert share("MEL", "shape", "irregular") > 0.5 > share("NV", "shape", "irregular")
    assert share("MEL", "size", "large") > 2 * share("NV", "size", "large")
    assert share("VASC", "colour", "red") > 0.4
    # the label alone does not determine the image: every attribute varies inside the commonest classes
    for c in ("MEL", "NV"):
        for a in DERM_ATTRIBUTES:
            assert len({x[a.name] for x in by_class[c]}) >= 2, (c, a.name)


@pytest.mark.parametrize("size", [(64, 64), (96, 128)])
def test_lesion_area_grows_with_size(derm, size):
    areas = [
        derm.generate(7, seed=3, size=size, label="NV", attributes={**BASE, "size": s}).masks["lesion"].sum()
        for s in ("small", "medium", "large")
    ]
    assert areas[0] * 1.8 < areas[1] and areas[1] * 1.6 < areas[2], areas


def test_position_moves_the_centroid(derm):
    for position, (sign_r, sign_c) in {
        "upper_left": (-1, -1),
        "upper_right": (-1, 1),
        "lower_left": (1, -1),
        "lower_right": (1, 1),
        "centre": (0, 0),
    }.items():
        rows, cols = np.nonzero(case(derm, position=position).masks["lesion"])
        dr, dc = rows.mean() - 31.5, cols.mean() - 31.5
        if sign_r == 0:
            assert abs(dr) < 5 and abs(dc) < 5, (position, dr, dc)
        else:
            assert dr * sign_r > 6 and dc * sign_c > 6, (position, dr, dc)


def test_colour_is_the_lesion_pigment(derm):
    def mean_rgb(colour):
        sample = case(derm, colour=colour)
        return sample.images["image"][sample.masks["lesion"]].astype(float).mean(axis=0)

    red, black, blue, light = mean_rgb("red"), mean_rgb("black"), mean_rgb("blue_grey"), mean_rgb("light_brown")
    assert red[0] > red[1] + 40  # red dominates
    assert black.mean() + 60 < light.mean()
    assert blue[2] > blue[0]  # blue-grey: more blue than red, unlike skin
    assert light[0] > light[2] + 40


def test_shape_border_and_pattern_are_visible(derm):
    def outline_ratio(shape):
        mask = case(derm, shape=shape, size="large").masks["lesion"]
        rows, cols = np.nonzero(mask)
        cov = np.cov(np.stack([rows, cols]))
        eig = np.linalg.eigvalsh(cov)
        boundary = mask ^ np.roll(mask, 1, 0) | mask ^ np.roll(mask, 1, 1)
        return eig[1] / eig[0], boundary.sum() / np.sqrt(mask.sum())

    (round_aspect, round_perimeter), (oval_aspect, _), (_, irregular_perimeter) = map(
        outline_ratio, ("round", "oval", "irregular")
    )
    assert round_aspect < 1.3 < 2.0 < oval_aspect
    assert irregular_perimeter > 1.1 * round_perimeter

    def edge_width(border):
        image = case(derm, border=border, colour="black").images["image"].astype(float).mean(axis=2)
        profile = image[32, 32:]  # from the lesion centre to the right edge
        dark, bright = profile.min(), np.median(profile[-8:])
        return np.sum((profile > dark + 0.1 * (bright - dark)) & (profile < bright - 0.1 * (bright - dark)))

    assert edge_width("ill_defined") > 2 * edge_width("well_defined")

    def texture(pattern):
        sample = case(derm, pattern=pattern, colour="light_brown", size="large")
        grey = sample.images["image"].astype(float).mean(axis=2)
        inner = sample.masks["lesion"] & np.roll(sample.masks["lesion"], 4, 0) & np.roll(sample.masks["lesion"], -4, 1)
        return grey[inner].std()

    assert texture("network") > 2 * texture("homogeneous") and texture("globules") > 1.5 * texture("homogeneous")


def test_description_states_the_attributes_in_varied_words(derm):
    samples = [derm.generate(i, seed=9) for i in range(40)]
    for s in samples[:10]:
        text = s.text.lower()
        position = s.attributes["position"]
        assert (position.split("_")[-1] in text) if position != "centre" else ("centr" in text)
        assert {"network": "network", "globules": "glob", "homogeneous": "homogeneous"}[s.attributes["pattern"]] in text
    assert len({s.text.split(" ")[0] for s in samples}) >= 3  # several sentence openings
    assert len({s.text for s in samples}) == len(samples)
