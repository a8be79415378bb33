"""The chest X-ray phantom: vocabulary, determinism, overrides, reports; attributes visibly drive both views."""

from __future__ import annotations

from collections import Counter

import numpy as np
import pytest

from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.base import sample_rng
from medgen_monai.phantoms.cxr import CXR_CLASSES, CXRPhantom, label_from_attributes, study_identifiers

NORMAL = {
    "heart_size": "normal",
    "effusion_side": "none",
    "effusion_size": "none",
    "opacity_lobe": "none",
    "opacity_side": "none",
    "pneumothorax": "none",
    "device": "none",
}


@pytest.fixture(scope="module")
def cxr() -> CXRPhantom:
    return get_phantom("cxr")


def pair(cxr: CXRPhantom, index: int = 3, seed: int = 11, **changes: str):
    """The same case (same patient, pose, exposure, noise) with every attribute fixed: normal + ``changes``."""
    return cxr.generate(index, seed=seed, attributes={**NORMAL, **changes})


def as_float(image: np.ndarray) -> np.ndarray:
    return image.astype(np.float64)


# ---- contract ----------------------------------------------------------------------------------


def test_vocabulary_and_registry(cxr):
    assert isinstance(cxr, CXRPhantom)
    assert (cxr.name, cxr.layout, cxr.views, cxr.multilabel, cxr.default_size) == (
        "cxr",
        "mimic_cxr",
        ("frontal", "lateral"),
        True,
        (64, 64),
    )
    assert cxr.classes == CXR_CLASSES and cxr.classes[0] == "No Finding"
    # left / right cannot be told on a lateral projection
    for name in ("effusion_side", "opacity_side", "pneumothorax"):
        assert cxr.attribute(name).views == ("frontal",) and not cxr.attribute(name).visible_in("lateral")
    for name in ("heart_size", "effusion_size", "opacity_lobe", "device"):
        assert cxr.attribute(name).visible_in("lateral") and cxr.attribute(name).visible_in("frontal")


def test_images_masks_meta(cxr):
    sample = cxr.generate(0, seed=0)
    for view in cxr.views:
        image = sample.images[view]
        assert image.dtype == np.uint8 and image.shape == (64, 64)
        assert image.std() > 20  # a picture, not a flat field
        for region in ("lungs", "heart", "effusion", "opacity", "pneumothorax"):
            assert sample.masks[f"{region}_{view}"].shape == (64, 64) and sample.masks[f"{region}_{view}"].dtype == bool
    assert set(sample.meta) >= {"patient_id", "study_id", "dicom_ids", "age", "sex", "study_date", "study_time"}
    assert set(sample.meta["dicom_ids"]) == {"frontal", "lateral"} and 18 <= sample.meta["age"] <= 95
    wide = cxr.generate(0, seed=0, size=(48, 80))
    assert wide.images["frontal"].shape == wide.images["lateral"].shape == (48, 80)
    assert wide.masks["effusion_lateral"].shape == (48, 80)


def test_radiograph_look(cxr):
    """Air outside the body is black, lungs dark, mediastinum and abdomen bright."""
    sample = pair(cxr)
    frontal, lungs = as_float(sample.images["frontal"]), sample.masks["lungs_frontal"]
    assert frontal[:, :2].mean() < 30  # air beside the chest
    assert frontal[lungs].mean() + 40 < frontal[28:40, 30:34].mean()  # lungs darker than the mediastinum
    assert frontal[lungs].mean() + 60 < frontal[-6:, 20:44].mean()  # and than the upper abdomen


def test_deterministic_per_seed_and_index(cxr):
    a, b = cxr.generate(5, seed=2), cxr.generate(5, seed=2)
    for view in cxr.views:
        assert np.array_equal(a.images[view], b.images[view])
    assert (a.attributes, a.label, a.text, a.meta) == (b.attributes, b.label, b.text, b.meta)
    assert np.array_equal(list(cxr.generate_many(6, seed=2))[5].images["lateral"], a.images["lateral"])
    other = cxr.generate(5, seed=3)
    assert not np.array_equal(other.images["frontal"], a.images["frontal"])
    assert other.meta["study_id"] != a.meta["study_id"]


def test_study_identifiers_are_unique_and_mimic_shaped():
    ids = [study_identifiers(4, i) for i in range(3000)]
    assert len({i["study_id"] for i in ids}) == len({i["patient_id"] for i in ids}) == 3000
    assert all(len(i["patient_id"]) == 8 and i["patient_id"][0] == "1" and i["study_id"][0] == "5" for i in ids)
    assert len({i["patient_id"][:2] for i in ids}) == 10  # spread over folders p10 .. p19
    dicom = ids[0]["dicom_ids"]["frontal"]
    assert [len(part) for part in dicom.split("-")] == [8] * 5 and dicom != ids[0]["dicom_ids"]["lateral"]
    with pytest.raises(ValueError, match="seed and index must be >= 0"):
        study_identifiers(-1, 0)


# ---- labels, prevalences, overrides ------------------------------------------------------------


def test_label_is_derived_from_attributes(cxr):
    assert label_from_attributes(NORMAL) == ("No Finding",)
    assert label_from_attributes({**NORMAL, "heart_size": "enlarged", "device": "pacemaker"}) == (
        "Cardiomegaly",
        "Support Devices",
    )
    for index in range(40):
        sample = cxr.generate(index, seed=1)
        assert sample.label == label_from_attributes(sample.attributes)
        assert ("No Finding" in sample.label) == (len(sample.label) == 1 and sample.attributes == NORMAL)


def test_prevalences_and_correlations(cxr):
    draws = [cxr.draw(sample_rng(0, i, 0), None, {}) for i in range(3000)]
    counts = Counter(c for label, _ in draws for c in label)
    assert 0.25 < counts["No Finding"] / 3000 < 0.45
    assert all(counts[c] > 100 for c in CXR_CLASSES)
    enlarged = [a for _, a in draws if a["heart_size"] == "enlarged"]
    normal = [a for _, a in draws if a["heart_size"] == "normal"]
    rate = lambda cases: np.mean([a["effusion_size"] != "none" for a in cases])  # noqa: E731
    assert rate(enlarged) > rate(normal) + 0.15  # cardiomegaly comes with effusions
    # a class does not determine the picture: several attribute values inside one class
    effusions = [a for label, a in draws if label == ("Pleural Effusion",)]
    assert {a["effusion_side"] for a in effusions} == {"left", "right", "bilateral"}
    assert {a["effusion_size"] for a in effusions} == {"small", "large"}


@pytest.mark.parametrize(
    "label",
    [
        ("Pleural Effusion",),
        ("No Finding",),
        ("Cardiomegaly", "Pleural Effusion"),
        ("Pneumothorax", "Support Devices"),
        ("Lung Opacity",),
    ],
)
def test_forced_label_gives_consistent_attributes(cxr, label):
    seen = set()
    for index in range(12):
        sample = cxr.generate(index, seed=4, label=label)
        assert sample.label == label
        assert sample.label == label_from_attributes(sample.attributes)
        seen.add(tuple(sample.attributes.values()))
    if label != ("No Finding",):
        assert len(seen) > 1  # the other attributes still vary


def test_attribute_overrides(cxr):
    sample = cxr.generate(0, seed=0, attributes={"effusion_side": "left"})
    assert sample.attributes["effusion_size"] in ("small", "large") and "Pleural Effusion" in sample.label
    sample = cxr.generate(0, seed=0, attributes={"opacity_lobe": "middle"}, label=("Lung Opacity", "Cardiomegaly"))
    assert sample.attributes["opacity_side"] in ("left", "right") and sample.attributes["heart_size"] == "enlarged"
    assert sample.label == ("Cardiomegaly", "Lung Opacity")
    sample = cxr.generate(0, seed=0, label="Support Devices")  # a single name is a one-class label
    assert sample.label == ("Support Devices",) and sample.attributes["device"] != "none"


@pytest.mark.parametrize(
    ("label", "attributes", "message"),
    [
        (("No Finding", "Cardiomegaly"), {}, "'No Finding' cannot be combined"),
        ((), {}, "label must name at least one class"),
        (None, {"effusion_side": "none", "effusion_size": "large"}, "contradict each other"),
        (("Pleural Effusion",), {"effusion_size": "none"}, "includes 'Pleural Effusion' but attributes"),
        (("Pleural Effusion",), {"device": "pacemaker"}, "excludes 'Support Devices' but attributes"),
        (None, {"device": "stent"}, "unknown value 'stent'"),
        (("Edema",), {}, "unknown class 'Edema'"),
    ],
)
def test_bad_overrides_raise(cxr, label, attributes, message):
    with pytest.raises(ValueError, match=message):
        cxr.generate(0, label=label, attributes=attributes)


def test_bad_size_raises(cxr):
    with pytest.raises(ValueError, match="size must be 2 integers >= 16"):
        cxr.generate(0, size=(64, 8))


# ---- attributes visibly drive the images -------------------------------------------------------


def lower_lateral_zone(lungs: np.ndarray, image_side: str) -> np.ndarray:
    """The lower third and outer half of one lung's silhouette (image_side: the image's 'left' / 'right' half)."""
    rows, cols = np.nonzero(lungs)
    zone = np.zeros_like(lungs)
    bottom = rows.max()
    top = bottom - (bottom - rows.min()) // 3
    width = lungs.shape[1]
    if image_side == "left":
        outer = slice(cols.min(), cols.min() + (width // 2 - cols.min()) // 2)
    else:
        outer = slice(cols.max() - (cols.max() - width // 2) // 2, cols.max() + 1)
    zone[top : bottom + 1, outer] = True
    return zone & lungs


@pytest.mark.parametrize(("side", "image_side", "other_side"), [("left", "right", "left"), ("right", "left", "right")])
def test_effusion_fills_the_costophrenic_region_on_its_side(cxr, side, image_side, other_side):
    none = pair(cxr)
    large = pair(cxr, effusion_side=side, effusion_size="large")
    small = pair(cxr, effusion_side=side, effusion_size="small")
    lungs = none.masks["lungs_frontal"]
    zone, opposite = lower_lateral_zone(lungs, image_side), lower_lateral_zone(lungs, other_side)
    # frontal: the lower lateral zone on the stated side (patient's left = viewer's right) gets brighter ...
    delta_large = as_float(large.images["frontal"]) - as_float(none.images["frontal"])
    delta_small = as_float(small.images["frontal"]) - as_float(none.images["frontal"])
    assert delta_large[zone].mean() > 40
    assert delta_small[zone].mean() > 4  # blunting of the costophrenic angle
    assert delta_large[zone].mean() > 2 * delta_small[zone].mean()
    # ... and the other side does not change at all
    assert np.abs(delta_large[opposite]).max() == 0 and np.abs(delta_small[opposite]).max() == 0
    assert large.masks["effusion_frontal"][zone].mean() > 0.5 and not large.masks["effusion_frontal"][opposite].any()
    # lateral: the posterior costophrenic recess (lower, posterior = viewer's right part of the lungs) fills
    lateral_lungs = none.masks["lungs_lateral"]
    recess = lower_lateral_zone(lateral_lungs, "right")
    delta_lateral = as_float(large.images["lateral"]) - as_float(none.images["lateral"])
    assert delta_lateral[recess].mean() > 20
    small_lateral = as_float(small.images["lateral"]) - as_float(none.images["lateral"])
    assert small_lateral[recess].mean() > 2 and small.masks["effusion_lateral"][recess].any()
    # an effusion layers at the bottom: nothing changes in the upper half of either view
    assert np.abs(delta_large[:24]).max() == 0 and np.abs(delta_lateral[:24]).max() == 0


def heart_width(mask: np.ndarray) -> int:
    return int(mask.sum(axis=1).max())


def test_enlarged_heart_widens_the_cardiac_silhouette(cxr):
    for index in range(3):
        normal, enlarged = pair(cxr, index), pair(cxr, index, heart_size="enlarged")
        assert heart_width(enlarged.masks["heart_frontal"]) >= heart_width(normal.masks["heart_frontal"]) + 6
        assert enlarged.meta["cardiothoracic_ratio"] > 0.5 > normal.meta["cardiothoracic_ratio"]
        # in the image: where only the enlarged heart is, the lung field turns heart-bright
        band = enlarged.masks["heart_frontal"] & ~normal.masks["heart_frontal"] & normal.masks["lungs_frontal"]
        delta = as_float(enlarged.images["frontal"]) - as_float(normal.images["frontal"])
        assert band.sum() > 20 and delta[band].mean() > 25
        # the lateral view shows it too (the heart fills more of the chest)
        assert heart_width(enlarged.masks["heart_lateral"]) > heart_width(normal.masks["heart_lateral"])
        assert (as_float(enlarged.images["lateral"]) - as_float(normal.images["lateral"])).mean() > 1


def centroid(mask: np.ndarray) -> tuple[float, float]:
    rows, cols = np.nonzero(mask)
    return float(rows.mean()), float(cols.mean())


def test_opacity_lobe_and_side(cxr):
    positions = {}
    for lobe in ("upper", "middle", "lower"):
        for side, image_half in (("left", slice(32, 64)), ("right", slice(0, 32))):
            sample = pair(cxr, opacity_lobe=lobe, opacity_side=side)
            delta = as_float(sample.images["frontal"]) - as_float(pair(cxr).images["frontal"])
            mask = sample.masks["opacity_frontal"]
            assert mask.sum() > 30 and delta[mask].mean() > 15
            assert mask[:, image_half].sum() == mask.sum()  # on the stated side of the frontal view
            positions[lobe, side] = centroid(mask), centroid(sample.masks["opacity_lateral"])
    for side in ("left", "right"):
        (upper_f, _), (middle_f, middle_l), (lower_f, lower_l) = (
            positions[lobe, side] for lobe in ("upper", "middle", "lower")
        )
        assert upper_f[0] + 8 < middle_f[0] and upper_f[0] + 8 < lower_f[0]  # upper zone on the frontal
        assert middle_l[1] + 8 < lower_l[1]  # lateral: middle lobe anterior, lower lobe posterior


@pytest.mark.parametrize(
    ("side", "image_half", "other_half"),
    [("left", slice(32, 64), slice(0, 32)), ("right", slice(0, 32), slice(32, 64))],
)
def test_pneumothorax_darkens_its_side(cxr, side, image_half, other_half):
    none, ptx = pair(cxr), pair(cxr, pneumothorax=side)
    rim = ptx.masks["pneumothorax_frontal"]
    delta = as_float(ptx.images["frontal"]) - as_float(none.images["frontal"])
    assert rim.sum() > 40 and rim[:, image_half].sum() == rim.sum()
    assert delta[rim].mean() < -8  # air without lung markings is darker than the lung it replaces
    assert np.abs(delta[:, other_half]).max() == 0


def test_devices_are_bright_and_seen_in_both_views(cxr):
    none = pair(cxr)
    pacemaker, line = pair(cxr, device="pacemaker"), pair(cxr, device="central_line")
    for view in cxr.views:
        assert (pacemaker.images[view] >= 250).sum() >= 3 > (none.images[view] >= 250).sum()  # the metal generator
        assert (as_float(line.images[view]) - as_float(none.images[view]) > 20).sum() > 10  # the catheter
    generator_rows, generator_cols = np.nonzero(pacemaker.images["frontal"] >= 250)
    assert generator_rows.mean() < 24 and generator_cols.mean() > 32  # upper chest, patient's left = viewer's right


# ---- report ------------------------------------------------------------------------------------


def test_report_sections_and_phrasings(cxr):
    texts = [cxr.generate(i, seed=6, attributes=NORMAL).text for i in range(30)]
    assert all(t.startswith("FINDINGS:") and "\n\nIMPRESSION:\n\n" in t for t in texts)
    assert len(set(texts)) > 10  # several phrasings per fact
    assert all("effusion" not in t.lower() or "no " in t.lower() or "sharp" in t.lower() for t in texts)
    sample = cxr.generate(
        0,
        seed=6,
        attributes={
            **NORMAL,
            "effusion_side": "bilateral",
            "effusion_size": "small",
            "pneumothorax": "right",
            "opacity_lobe": "middle",
            "opacity_side": "left",
            "heart_size": "enlarged",
        },
    )
    findings, impression = sample.text.split("IMPRESSION:")
    assert "bilateral" in findings and "right" in findings and "lingula" in findings
    assert "No acute" not in impression and "pneumothorax" in impression.lower()
    reports = {
        cxr.generate(0, seed=s, attributes={**NORMAL, "effusion_side": "left", "effusion_size": "small"}).text
        for s in range(12)
    }
    assert len(reports) > 3 and all("left" in r for r in reports)
