"""Dataset seed independence: nothing but the audit code draws phantoms from the audit networks' seeds."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from medgen_monai.metrics.audit import WEIGHTS_DIR, audit_units
from medgen_monai.phantoms import KINDS, get_phantom
from medgen_monai.phantoms.seeds import AUDIT_SEEDS, QUALITY_SEEDS, SEED_RANGES, audit_seed_access, seed_use

ROOT = Path(__file__).resolve().parents[1]
AUDIT_FIRST, AUDIT_LAST, _ = SEED_RANGES["audit"]


def test_ranges_are_disjoint_and_named_seeds_lie_in_theirs():
    spans = sorted((first, last) for first, last, _ in SEED_RANGES.values())
    assert all(a_last < b_first for (_, a_last), (b_first, _) in zip(spans, spans[1:]))
    assert all(seed_use(s) == "audit" for s in AUDIT_SEEDS.values())
    assert all(seed_use(s) == "quality" for s in QUALITY_SEEDS.values())
    assert len(set(AUDIT_SEEDS.values())) == len(AUDIT_SEEDS)


@pytest.mark.parametrize("kind", KINDS)
def test_phantoms_refuse_audit_seeds_outside_the_audit_code(kind):
    phantom = get_phantom(kind)
    with pytest.raises(ValueError, match="reserved for the audit networks"):
        phantom.generate(0, seed=AUDIT_SEEDS["test"])
    with pytest.raises(ValueError, match="reserved"):
        next(phantom.generate_many(1, seed=AUDIT_FIRST))
    if kind == "derm":
        with pytest.raises(ValueError, match="reserved"):
            phantom.skin_only(0, seed=AUDIT_SEEDS["train"])
    phantom.generate(0, seed=AUDIT_LAST + 1)  # just outside the range: allowed
    if kind != "prostate":  # the 3D phantom is slower; one kind shows the access works
        with audit_seed_access():
            phantom.generate(0, seed=AUDIT_SEEDS["test"])
    with pytest.raises(ValueError):  # access ends with the block
        phantom.generate(0, seed=AUDIT_SEEDS["test"])


def test_cli_phantoms_refuses_an_audit_seed(tmp_path):
    from medgen_monai.cli import phantoms

    with pytest.raises(ValueError, match="reserved"):
        phantoms("derm", 1, str(tmp_path / "d"), seed=AUDIT_SEEDS["train"], progress=False)


def _integers(text: str) -> set[int]:
    return {int(m.replace("_", "")) for m in re.findall(r"(?<![\w.])\d[\d_]*(?![\w.])", text)}


def test_no_config_or_benchmark_names_an_audit_seed():
    """Static guard beside the runtime one: a bundle config or benchmark that even names an audit seed fails here."""
    files = sorted(ROOT.glob("bundles/*/configs/*.json")) + sorted(ROOT.glob("benchmarks/*.py"))
    assert files, "no bundle configs or benchmarks found"
    offending = {
        str(f.relative_to(ROOT)): sorted(i for i in _integers(f.read_text()) if AUDIT_FIRST <= i <= AUDIT_LAST)
        for f in files
    }
    assert not {f: s for f, s in offending.items() if s}, f"audit seeds used outside the audit code: {offending}"
    # the scan sees integers written with underscores or inside JSON
    assert _integers('{"seed": 900_001, "x": 900002}') == {900001, 900002}


@pytest.mark.parametrize("unit", audit_units())
def test_shipped_audit_weights_were_trained_and_tested_on_audit_seeds(unit):
    report = json.loads((WEIGHTS_DIR / f"audit_{unit}.json").read_text())
    assert report["seed"] == AUDIT_SEEDS["train"]
    assert report["val_seed"] == AUDIT_SEEDS["test"]
    assert report["calibration_seed"] == AUDIT_SEEDS["calibration"]
