"""Metrics: audit network contract, attribute accuracy, FID with pluggable extractors, diversity."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn as nn

from medgen_monai.metrics import attribute_accuracy, diversity, feature_extractor, fid, load_audit, train_audit
from medgen_monai.metrics.audit import (
    BELOW_TARGET,
    WEIGHTS_DIR,
    AuditNet,
    AuditSpec,
    audit_spec,
    audit_units,
    parse_unit,
)
from medgen_monai.metrics.diversity import ms_ssim_settings
from medgen_monai.metrics.fid import resnet50_extractor
from medgen_monai.metrics.negatives import NEGATIVE_FAMILIES
from medgen_monai.phantoms import get_phantom

HEADS = (("size", ("small", "large")), ("label", ("a", "b", "c")))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"spatial_dims": 4}, "spatial_dims"),
        ({"input_size": (16,)}, "input_size"),
        ({"channels": (8,), "strides": (2,)}, "same length"),
        ({"heads": (("size", ("small",)),)}, ">= 2 values"),
        ({"heads": HEADS + (("size", ("x", "y")),)}, "unique"),
        ({"dropout": 1.0}, "dropout"),
    ],
)
def test_audit_spec_rejects_bad_arguments(kwargs, message):
    args = {"unit": "derm_image", "spatial_dims": 2, "in_channels": 3, "input_size": (16, 16), "heads": HEADS}
    with pytest.raises(ValueError, match=message):
        AuditSpec(**{**args, **kwargs})


@pytest.mark.parametrize("spatial_dims, size", [(2, (16, 16)), (3, (16, 16, 16))])
def test_audit_net_shapes(spatial_dims, size):
    spec = AuditSpec("derm_image", spatial_dims, 1, size, HEADS, channels=(4, 8), strides=(2, 2))
    net = AuditNet(spec).eval()
    x = torch.rand(2, 1, *size)
    assert net.features(x).shape == (2, spec.feature_dim)
    out = net(x)
    assert list(out) == ["size", "label"] and out["size"].shape == (2, 2) and out["label"].shape == (2, 3)
    with pytest.raises(ValueError, match="expected input"):
        net(torch.rand(2, 1, *[s + 1 for s in size]))


def test_units_and_bad_unit():
    assert {"cxr_frontal", "cxr_lateral"} <= set(audit_units("cxr"))
    assert parse_unit("cxr_lateral") == ("cxr", "lateral")
    with pytest.raises(ValueError, match="unknown audit unit"):
        parse_unit("cxr_oblique")
    spec = audit_spec("cxr_lateral")
    frontal_only = [a.name for a in get_phantom("cxr").attributes if a.views == ("frontal",)]
    assert frontal_only and not set(frontal_only) & set(spec.head_names)  # laterality is not asked of the lateral


@pytest.fixture(scope="module")
def quick_weights(tmp_path_factory):
    out = tmp_path_factory.mktemp("audit")
    reports = train_audit("cxr", n_train=16, n_val=8, epochs=1, out_dir=out, validity_n=8, progress=False)
    return out, reports


def net_heads(unit: str) -> list[str]:
    return audit_spec(unit).head_names


def test_train_audit_writes_loadable_weights(quick_weights):
    out, reports = quick_weights
    assert set(reports) == {"cxr_frontal", "cxr_lateral"}
    for unit, _report in reports.items():
        weights = out / f"audit_{unit}.pt"
        assert weights.stat().st_size < 5_000_000
        assert (out / f"audit_{unit}.png").stat().st_size > 0
        recorded = json.loads((out / f"audit_{unit}.json").read_text())
        assert recorded["n_val"] == 8
        # the validity table covers every family, and the calibration every head
        assert set(recorded["validity"]["rejected"]) == set(NEGATIVE_FAMILIES)
        assert set(recorded["temperature"]) == set(recorded["ece"]) == set(net_heads(unit))
        state = torch.load(weights, weights_only=True)
        net = load_audit(unit, out)
        for key, value in net.state_dict().items():
            assert torch.equal(value, state[key])
        image = get_phantom("cxr").generate(0, seed=5).images[unit.split("_")[1]]
        predicted = net.predict(image)
        assert set(predicted) == set(net.spec.head_names) and all(len(v) == 1 for v in predicted.values())


def test_load_audit_refuses_foreign_weights(quick_weights, tmp_path):
    out, _ = quick_weights
    with pytest.raises(FileNotFoundError, match="train-audit"):
        load_audit("cxr_frontal", tmp_path)
    shutil.copy(out / "audit_cxr_lateral.pt", tmp_path / "audit_cxr_frontal.pt")
    with pytest.raises(ValueError, match="cxr_lateral"):
        load_audit("cxr_frontal", tmp_path)
    torch.save({"model": nn.Linear(2, 2)}, tmp_path / "audit_cxr_frontal.pt")
    with pytest.raises(ValueError, match="weights_only"):
        load_audit("cxr_frontal", tmp_path)
    torch.save({"conv.weight": torch.zeros(2)}, tmp_path / "audit_cxr_frontal.pt")
    with pytest.raises(ValueError, match="do not fit"):
        load_audit("cxr_frontal", tmp_path)


def _constant_audit(index: int, valid: bool = True) -> AuditNet:
    """An audit network that predicts value ``index`` of every head, and validity ``valid``, whatever the image."""
    net = AuditNet(audit_spec("cxr_frontal")).eval()
    with torch.no_grad():
        net.validity_head.weight.zero_()
        net.validity_head.bias.fill_(10.0 if valid else -10.0)
        net.head.weight.zero_()
        net.head.bias.fill_(-10.0)
        offset = 0
        for _, values in net.spec.heads:
            net.head.bias[offset + index] = 10.0
            offset += len(values)
    return net


def test_attribute_accuracy_counts_what_the_audit_reads_back():
    net = _constant_audit(1)
    spec = dict(net.spec.heads)
    images = np.zeros((4, 64, 64), dtype=np.uint8)
    hit, miss = spec["heart_size"][1], spec["heart_size"][0]
    result = attribute_accuracy(images, [{"heart_size": hit}, {"heart_size": miss}, {"heart_size": hit}, {}], audit=net)
    assert result["per_attribute"] == {"heart_size": pytest.approx(2 / 3)}
    assert result["support"] == {"heart_size": 3} and result["n"] == 4
    # multi-label kind: value 1 of every per-class head is "present"
    result = attribute_accuracy(
        images[:2], [{}, {}], labels=[("Cardiomegaly",), ("Cardiomegaly", "Pleural Effusion")], audit=net
    )
    assert result["per_attribute"]["label:Cardiomegaly"] == 1.0
    assert result["per_attribute"]["label:Pleural Effusion"] == 0.5
    assert result["per_attribute"]["label:No Finding"] == 0.0
    with pytest.raises(ValueError, match="unknown value"):
        attribute_accuracy(images[:1], [{"heart_size": "huge"}], audit=net)
    with pytest.raises(ValueError, match="3 requests for 4 images"):
        attribute_accuracy(images, [{}, {}, {}], audit=net)
    with pytest.raises(ValueError, match="no request"):
        attribute_accuracy(images[:1], [{"colour": "red"}], audit=net)


def test_attribute_accuracy_counts_invalid_images_as_wrong():
    """An image the validity output rejects is wrong on every attribute; the valid-only mean is reported beside."""
    spec = dict(_constant_audit(1).spec.heads)
    images = np.zeros((2, 64, 64), dtype=np.uint8)
    requests = [{"heart_size": spec["heart_size"][1]}] * 2
    valid = attribute_accuracy(images, requests, audit=_constant_audit(1))
    assert valid["mean"] == 1.0 and valid["valid_fraction"] == 1.0 and valid["mean_valid"] == 1.0
    invalid = attribute_accuracy(images, requests, audit=_constant_audit(1, valid=False))
    assert invalid["mean"] == 0.0 and invalid["valid_fraction"] == 0.0 and invalid["mean_valid"] is None
    # calibrated confidence is gated by validity: no head is confident about a rejected image
    confidence = _constant_audit(1, valid=False).assess(images)["confidence"]
    assert max(max(c) for c in confidence.values()) < 0.01


class _Mean(nn.Module):
    """Features = per-channel means and standard deviations (a transparent test extractor)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        flat = x.flatten(2)
        return torch.cat([flat.mean(2), flat.std(2)], dim=1)


def test_fid_zero_for_same_distribution_and_grows_with_shift(tmp_path):
    rng = np.random.default_rng(0)
    real = rng.integers(0, 200, size=(64, 32, 32, 3), dtype=np.uint8)
    shifted = (real.astype(np.int16) + 40).clip(0, 255).astype(np.uint8)
    assert fid(real, real, extractor=_Mean(), size=(32, 32)) == pytest.approx(0.0, abs=1e-6)
    near = fid(real, (real.astype(np.int16) + 5).clip(0, 255).astype(np.uint8), extractor=_Mean())
    far = fid(real, shifted, extractor=_Mean())
    assert 0 < near < far
    scripted = tmp_path / "extractor.pt"
    torch.jit.script(_Mean()).save(str(scripted))
    assert fid(real, shifted, extractor=scripted) == pytest.approx(far, rel=1e-5)
    with pytest.raises(ValueError, match="at least 2"):
        fid(real[:1], real, extractor=_Mean())


def test_fid_extractor_from_resnet50_state_dict(tmp_path):
    from monai.networks.nets import resnet50

    weights = tmp_path / "resnet50.pt"
    torch.save(
        {f"module.{k}": v for k, v in resnet50(spatial_dims=2, n_input_channels=3).state_dict().items()}, weights
    )
    extract = feature_extractor(weights, size=(32, 32))
    grey = np.random.default_rng(1).integers(0, 255, size=(3, 40, 40), dtype=np.uint8)
    assert extract(grey).shape == (3, 2048)  # grey repeated to the 3 channels the ResNet expects
    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not a 2D ResNet-50"):
        resnet50_extractor(tmp_path / "other.pt")
    with pytest.raises(ValueError, match="not found"):
        feature_extractor(tmp_path / "missing.pt")


@pytest.mark.parametrize("size, scales", [((64, 64), 5), ((64, 64, 32), 4), ((16, 16), 3)])
def test_ms_ssim_settings_fit_monai(size, scales):
    settings = ms_ssim_settings(size)
    assert len(settings["weights"]) == scales and sum(settings["weights"]) == pytest.approx(1.0)
    x = torch.rand(2, 1, *size)
    from medgen_monai.metrics.diversity import pairwise_ms_ssim

    assert pairwise_ms_ssim(x, np.array([[0, 0]]))[0] == pytest.approx(1.0, abs=1e-4)


def test_diversity_within_class():
    rng = np.random.default_rng(0)
    same = np.repeat(rng.integers(0, 255, size=(1, 64, 64, 3), dtype=np.uint8), 4, axis=0)
    varied = rng.integers(0, 255, size=(4, 64, 64, 3), dtype=np.uint8)
    result = diversity(np.concatenate([same, varied]), labels=["a"] * 4 + ["b"] * 4)
    assert result["per_class"]["a"] == pytest.approx(0.0, abs=1e-4)
    assert result["per_class"]["b"] > 0.5
    assert result["pairs"] == {"a": 6, "b": 6}
    assert result["diversity"] == pytest.approx((result["per_class"]["a"] + result["per_class"]["b"]) / 2)
    assert diversity(varied, max_pairs=2)["pairs"] == {"all": 2}
    volumes = rng.random((3, 64, 64, 32)).astype(np.float32)
    assert 0 < diversity(volumes, spatial_dims=3, channels=1)["diversity"] <= 2
    with pytest.raises(ValueError, match="labels"):
        diversity(varied, labels=["a"])
    with pytest.raises(ValueError, match="two or more"):
        diversity(varied, labels=["a", "b", "c", "d"])


def test_shipped_weights_load_and_meet_the_target():
    """Every shipped audit network loads with weights_only, is < 5 MB and recorded >= 0.9 held-out accuracy per
    attribute, except the documented shortfalls of BELOW_TARGET, which must keep their floor."""
    units = [u for u in audit_units() if (WEIGHTS_DIR / f"audit_{u}.pt").is_file()]
    if not units:
        pytest.fail(f"no audit weights shipped in {WEIGHTS_DIR}")
    for unit in units:
        assert (WEIGHTS_DIR / f"audit_{unit}.pt").stat().st_size < 5_000_000
        load_audit(unit)
        report = json.loads((WEIGHTS_DIR / f"audit_{unit}.json").read_text())
        attributes = {h: a for h, a in report["accuracy"].items() if not h.startswith("label")}
        floors = {h: BELOW_TARGET.get(unit, {}).get(h, 0.9) for h in attributes}  # documented shortfalls keep a floor
        assert all(attributes[h] >= floors[h] for h in attributes), (unit, attributes, floors)
    assert set(BELOW_TARGET) <= set(units)


def test_evaluation_inputs_get_labels_and_the_drawn_descriptions_attributes():
    from medgen_monai.describe import get_task
    from medgen_monai.metrics.evaluation import labelled_reference, with_bank_attributes
    from medgen_monai.phantoms.cxr import label_from_attributes

    class Bank:
        def index(self):
            return {"d1": {"attributes": {"effusion": "left"}}}

    requests = [{"id": "a", "description_id": "d1"}, {"id": "b", "description": "own text"}]
    scored = with_bank_attributes(requests, Bank(), labels_from_attributes=lambda a: ("Pleural Effusion",))
    assert scored[0]["attributes"] == {"effusion": "left"} and scored[0]["labels"] == ("Pleural Effusion",)
    assert scored[1] == requests[1] and "attributes" not in requests[0]  # the inputs are not changed
    assert "labels" not in with_bank_attributes(requests, Bank())[0]
    assert label_from_attributes  # the cxr phantom's function the cxr bundle passes

    task = get_task("cxr")
    records = [{"image": "x.jpg", "label_name": ["Cardiomegaly", "Pleural Effusion"]}]
    classes = ["No Finding", "Cardiomegaly", "Pleural Effusion"]
    reference = labelled_reference(records, classes, task)
    assert reference[0]["label"] == 2 and "labels" not in reference[0]  # filed under its most acute finding
    assert labelled_reference(records, classes, task, multi_label=True)[0]["labels"] == records[0]["label_name"]
