"""Audit validity and calibration: the shipped networks refuse non-images and their confidences mean something."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from medgen_monai.metrics import attribute_accuracy, audit_units, load_audit
from medgen_monai.metrics.audit import (
    VALIDITY_TARGET,
    WEIGHTS_DIR,
    AuditNet,
    audit_spec,
    calibrate_temperatures,
    expected_calibration_error,
    parse_unit,
)
from medgen_monai.metrics.negatives import NEGATIVE_FAMILIES, NegativeSampler, negative_pools, patch_shuffle
from medgen_monai.metrics.preprocess import preprocess_images
from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.seeds import AUDIT_SEEDS, audit_seed_access


@pytest.mark.parametrize("unit", audit_units())
def test_recorded_validity_meets_the_target(unit):
    """The held-out table written by train-audit: >= 0.99 of real phantoms pass, >= 0.99 of every family is rejected."""
    report = json.loads((WEIGHTS_DIR / f"audit_{unit}.json").read_text())
    validity = report["validity"]
    assert validity["real_pass"] >= VALIDITY_TARGET, validity
    expected = set(NEGATIVE_FAMILIES) - ({"autoencoder_decode"} if unit == "prostate_t2w" else set())
    assert set(validity["rejected"]) == expected
    low = {f: r for f, r in validity["rejected"].items() if r < VALIDITY_TARGET}
    assert not low, f"{unit}: families rejected less often than {VALIDITY_TARGET}: {low}"
    assert validity["n_per_family"] >= 500 and validity["n_real"] >= 300
    # calibrated confidence on what validity rejects stays low, head by head
    assert max(validity["max_confidence"].values()) < 0.1, validity["max_confidence"]


@pytest.mark.parametrize("unit", audit_units())
def test_shipped_validity_on_a_small_fresh_set(unit):
    """The shipped weights, on fresh real phantoms and fresh negatives of every family (the audit's re-check seed)."""
    kind, view = parse_unit(unit)
    phantom = get_phantom(kind)
    audit = load_audit(unit)
    n = 8 if phantom.spatial_dims == 3 else 32
    with audit_seed_access():
        samples = list(phantom.generate_many(n, seed=AUDIT_SEEDS["recheck"]))
        pools = negative_pools(unit, AUDIT_SEEDS["recheck"], n, generator_seed=AUDIT_SEEDS["recheck"])
    real = [s.images[view] for s in samples]
    assessed = audit.assess(real)
    assert np.mean(assessed["valid"]) >= 0.9, assessed["p_valid"]
    x = preprocess_images(real, audit.spec.spatial_dims, audit.spec.in_channels, audit.spec.input_size)
    negatives = NegativeSampler(kind, tuple(x.shape[1:]), x, pools)
    g = torch.Generator().manual_seed(1)
    for family in negatives.families:
        result = audit.assess(negatives.family(family, n, g))
        assert np.mean(result["valid"]) <= 0.1, (family, result["p_valid"])
        # the failure: noise read as a large lesion at confidence 1.00
        assert max(max(c) for c in result["confidence"].values()) < 0.5, family


def test_noise_scores_zero_attribute_accuracy_with_the_shipped_derm_audit():
    """Requests read back from noise: wrong on every attribute, whatever the heads say."""
    noise = np.random.default_rng(0).integers(0, 256, (16, 64, 64, 3), dtype=np.uint8)
    request = {"size": "large", "colour": "blue_grey"}
    result = attribute_accuracy(noise, [request] * 16, unit="derm_image")
    assert result["valid_fraction"] == 0.0 and result["mean"] == 0.0


def test_temperature_scaling_fixes_an_overconfident_head():
    """Logits 8 apart (confidence about 1) on a head that is right 60% of the time: T > 1 and a lower ECE."""
    net = AuditNet(audit_spec("cxr_frontal")).eval()
    g = torch.Generator().manual_seed(0)
    n = 512
    logits, y = {}, {}
    for name, values in net.spec.heads:
        own = torch.randint(len(values), (n,), generator=g)
        logits[name] = 8.0 * torch.nn.functional.one_hot(own, len(values)).float()
        other = torch.randint(len(values), (n,), generator=g)
        y[name] = torch.where(torch.rand(n, generator=g) < 0.6, own, other)
    # the "image" carries its row index, so batched calls get their own rows
    net.outputs = lambda x: ({k: v[x[:, 0, 0, 0].long()] for k, v in logits.items()}, torch.zeros(x.shape[0]))
    before = {k: expected_calibration_error(torch.softmax(v, 1), y[k]) for k, v in logits.items()}
    fitted = calibrate_temperatures(net, torch.arange(n).float().view(n, 1, 1, 1).expand(n, 1, 64, 64), y)
    after = {k: expected_calibration_error(torch.softmax(v / fitted[k], 1), y[k]) for k, v in logits.items()}
    assert all(t > 1.5 for t in fitted.values()), fitted  # overconfident heads are softened
    assert all(after[k] < 0.5 * before[k] for k in logits), (before, after)
    assert torch.allclose(net.temperature, torch.tensor([fitted[k] for k in net.spec.head_names]))


def test_expected_calibration_error_can_fail():
    target = torch.zeros(100, dtype=torch.long)
    confident_and_right = torch.tensor([[0.99, 0.01]]).repeat(100, 1)
    confident_and_wrong = torch.tensor([[0.01, 0.99]]).repeat(100, 1)
    assert expected_calibration_error(confident_and_right, target) == pytest.approx(0.01, abs=1e-6)
    assert expected_calibration_error(confident_and_wrong, target) == pytest.approx(0.99, abs=1e-6)


@pytest.mark.parametrize("unit", audit_units())
def test_recorded_calibration(unit):
    report = json.loads((WEIGHTS_DIR / f"audit_{unit}.json").read_text())
    assert set(report["ece"]) == set(report["accuracy"]) == set(report["temperature"])
    assert max(report["ece"].values()) < 0.1, report["ece"]
    state = torch.load(WEIGHTS_DIR / f"audit_{unit}.pt", weights_only=True)
    assert torch.allclose(state["temperature"], torch.tensor(list(report["temperature"].values())))


def test_patch_shuffle_keeps_pixels_and_breaks_structure():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 64, 64)
    y = patch_shuffle(x, g)
    assert torch.equal(y.flatten(1).sort(1).values, x.flatten(1).sort(1).values)
    assert not torch.equal(x, y)
    volume = torch.rand(2, 1, 64, 64, 32)
    assert torch.equal(patch_shuffle(volume, g).flatten(1).sort(1).values, volume.flatten(1).sort(1).values)


def test_negative_sampler_rejects_bad_arguments():
    with pytest.raises(ValueError, match="unknown kind"):
        NegativeSampler("skin", (3, 64, 64), torch.rand(2, 3, 64, 64), {})
    with pytest.raises(ValueError, match="do not match"):
        NegativeSampler("derm", (3, 64, 64), torch.rand(2, 1, 64, 64), {})
    sampler = NegativeSampler("colon", (3, 64, 64), torch.rand(4, 3, 64, 64), {})
    with pytest.raises(ValueError, match="not available"):
        sampler.family("autoencoder_decode", 2, torch.Generator())
