"""benchmarks/quality.py: references matched to the requests, stand-ins with known answers, the JSON shape."""

from __future__ import annotations

import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
from benchmark_helpers import load_benchmark

ROOT = Path(__file__).resolve().parents[1]


def _quality():
    return load_benchmark("quality")


def test_stratified_half_has_the_requests_class_counts():
    quality = _quality()
    pool_classes = ["a"] * 6 + ["b"] * 4 + ["c"] * 10
    categories = ["a", "a", "b", "c", "c", "c"]
    index = quality._stratified_half(pool_classes, categories, np.random.default_rng(0))
    assert Counter(pool_classes[i] for i in index) == Counter(categories)
    assert len(set(index.tolist())) == len(index)


def test_check_sets_are_what_they_claim():
    quality = _quality()
    rng = np.random.default_rng(0)
    requests = [{"category": c} for c in ["a", "a", "b", "b"]]  # class_requests groups by category
    real = {
        "ceiling": [rng.integers(0, 256, (8, 8, 3), dtype=np.uint8) for _ in range(4)],
        "label_only": [np.full((8, 8, 3), i, dtype=np.uint8) for i in range(4)],
    }
    sets = quality.check_sets(real, requests, n_per_class=2)
    assert set(sets) == {"real_requested", "real_wrong_class", "gaussian_noise", "blank"}
    # the wrong-class stand-in for request i is a real image requested for the other class
    wrong = [int(image[0, 0, 0]) for image in sets["real_wrong_class"]]
    assert [requests[i]["category"] for i in wrong] == ["b", "b", "a", "a"]
    assert all(image.std() == 0 for image in sets["blank"])


def test_cxr_categories_follow_the_bank_not_a_forced_label():
    quality = _quality()
    from medgen_monai.phantoms import get_phantom

    facts = {"kind": "cxr"}
    sample = get_phantom("cxr").generate(0, seed=0, label=("Pleural Effusion", "Pneumothorax"))
    assert quality.category_of(facts, sample) == "Pneumothorax"  # the most acute finding files the study


def test_results_have_no_nan():
    quality = _quality()
    cleaned = quality._finite({"a": float("nan"), "b": [1.0, float("nan")], "c": {"d": 2}})
    assert cleaned == {"a": None, "b": [1.0, None], "c": {"d": 2}}
    json.dumps(cleaned, allow_nan=False)


@pytest.mark.slow
def test_quality_runs_end_to_end_on_the_label_bundle(tmp_path):
    """Generate 2 per class, score, write the documented shape and a contact sheet (make test-slow)."""
    quality = _quality()
    out = tmp_path / "quality.json"
    quality.IMAGES = tmp_path  # the contact sheet goes here, not into docs/
    assert (
        quality.main(
            [
                "--bundles",
                "ldm_label_derm",
                "--settings",
                "ddim25_eta1",
                "--n",
                "14",
                "--work",
                str(tmp_path / "work"),
                "--out",
                str(out),
            ]
        )
        == 0
    )
    bundle = json.loads(out.read_text())["bundles"]["ldm_label_derm"]
    setting = bundle["settings"]["ddim25_eta1"]
    for key in (
        "n",
        "seconds_per_image",
        "valid_fraction",
        "attribute_accuracy",
        "attribute_accuracy_valid",
        "ceiling",
        "label_only",
        "gap_recovered",
        "autoencoder_ceiling",
        "fid",
        "fid_floor",
        "fid_ratio",
        "kid",
        "diversity",
        "diversity_real",
    ):
        assert key in setting, key
    assert setting["n"] == 14 and set(setting["fid_floor"]) == {"mean", "sd"} and len(setting["kid"]["ci95"]) == 2
    checks = bundle["checks"]
    assert checks["gaussian_noise"]["valid_fraction"] == 0.0 and checks["blank"]["attribute_accuracy"] == 0.0
    assert checks["real_requested"]["valid_fraction"] >= 0.9
    assert checks["real_requested"]["attribute_accuracy"] > checks["real_wrong_class"]["attribute_accuracy"]
    assert math.isclose(checks["real_requested"]["gap_recovered"], 1.0)
    assert (tmp_path / "quality_ldm_label_derm.png").stat().st_size > 0


def test_guidance_settings_ride_along_with_the_chosen_ones():
    quality = _quality()
    facts = quality.bundle_facts(ROOT / "bundles" / "vap_diffusion_cxr")
    settings = quality.bundle_settings(facts, ["default"], [1.0, 3.0])
    default = facts["default"]
    assert settings == {
        default: (facts["default_steps"], facts["default_eta"]),
        f"{default}_g1": (facts["default_steps"], facts["default_eta"], 1.0),
        f"{default}_g3": (facts["default_steps"], facts["default_eta"], 3.0),
    }
    with pytest.raises(ValueError, match="unknown"):
        quality.bundle_settings(facts, ["rflow7"])


def test_report_bundle_requests_are_the_reports_of_the_ceiling_phantoms():
    """A report bundle (CCELLA) is asked with the reports of fresh phantoms of each class; the ceiling images are those
    very phantoms, so the attributes it is scored on are what each report describes."""
    quality = _quality()
    facts = quality.bundle_facts(ROOT / "bundles" / "ccella_prostate_mri")
    assert facts["reports"] and not facts["descriptions"] and facts["spatial_dims"] == 3
    requests = quality.report_requests_of(facts, 2, [64, 64, 32])
    assert [r["category"] for r in requests] == ["negative", "negative", "csPCa", "csPCa"]
    assert len({r["id"] for r in requests}) == 4 and [r["seed"] for r in requests] == [0, 1, 2, 3]
    attributes = quality.requested_attributes(facts, requests)
    from medgen_monai.phantoms import get_phantom

    phantom = get_phantom("prostate")
    for i, (request, wanted) in enumerate(zip(requests, attributes)):
        sample = quality._class_phantom(phantom, facts, i, request["category"])
        assert wanted == sample.attributes and request["spacing"] == list(sample.meta["spacing"])
        assert request["report"] == sample.text.strip() or (not sample.text.strip() and request["report"] == "")


def test_kept_images_of_other_sampler_settings_are_refused(tmp_path):
    """A rerun resumes into kept images only when they were made with the same sampler settings (a bundle whose
    shipped guidance changed would otherwise be scored on the old guidance's images)."""
    quality = _quality()
    facts = {"name": "vap_diffusion_cxr", "root": ROOT / "bundles" / "vap_diffusion_cxr"}
    (tmp_path / "a_000000.json").write_text(
        json.dumps({"sampler": "rflow", "steps": 30, "guidance_scale": 2.0, "eta": 0.0})
    )
    same = {"sampler": "rflow", "steps": 30, "guidance_scale": 2.0, "eta": 0.0}
    quality._check_kept_outputs(facts, tmp_path, same)
    with pytest.raises(RuntimeError, match="other sampler settings"):
        quality._check_kept_outputs(facts, tmp_path, {**same, "guidance_scale": 1.0})
