"""The shipped audit networks read attributes back from fresh phantoms (slow: make test-slow)."""

from __future__ import annotations

import pytest

from medgen_monai.metrics import attribute_accuracy, audit_units, load_audit
from medgen_monai.metrics.audit import BELOW_TARGET, parse_unit
from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.seeds import AUDIT_SEEDS, audit_seed_access

#: the audit's own re-check seed: used neither for training, calibration nor the recorded held-out figures.
FRESH_SEED = AUDIT_SEEDS["recheck"]


@pytest.mark.slow
@pytest.mark.parametrize("unit", audit_units())
def test_shipped_audit_reads_fresh_phantoms(unit):
    kind, view = parse_unit(unit)
    phantom = get_phantom(kind)
    n = 120 if phantom.spatial_dims == 3 else 400
    with audit_seed_access():
        samples = list(phantom.generate_many(n, seed=FRESH_SEED))
    result = attribute_accuracy(  # an image the validity output rejects counts as wrong
        [s.images[view] for s in samples],
        [s.attributes for s in samples],
        labels=[s.label for s in samples],
        audit=load_audit(unit),
    )
    # 0.9 is the target on the recorded held-out set; 0.87 leaves room for sampling error at this n.
    # The class heads are reported, not held to it: a derm class is not fully determined by what it shows.
    # Documented shortfalls (BELOW_TARGET) are held to their floor less the same 0.03.
    floors = {head: BELOW_TARGET.get(unit, {}).get(head, 0.9) - 0.03 for head in result["per_attribute"]}
    low = {
        head: acc
        for head, acc in result["per_attribute"].items()
        if acc < floors[head] and not head.startswith("label")
    }
    assert not low, f"{unit}: accuracy below the floor on fresh phantoms: {low}"
    assert result["valid_fraction"] >= 0.98, (
        f"{unit}: validity rejects {1 - result['valid_fraction']:.3f} of fresh real phantoms"
    )
