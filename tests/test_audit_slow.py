"""The shipped audit networks read attributes back from fresh phantoms (slow: make test-slow)."""

from __future__ import annotations

import pytest

from medgen_monai.metrics import attribute_accuracy, audit_units, load_audit
from medgen_monai.metrics.audit import BELOW_TARGET, parse_unit
from medgen_monai.phantoms import get_phantom

#: a dataset seed used neither for training (0) nor for the recorded held-out figures (10000).
FRESH_SEED = 20_000


@pytest.mark.slow
@pytest.mark.parametrize("unit", audit_units())
def test_shipped_audit_reads_fresh_phantoms(unit):
    kind, view = parse_unit(unit)
    phantom = get_phantom(kind)
    n = 120 if phantom.spatial_dims == 3 else 400
    samples = list(phantom.generate_many(n, seed=FRESH_SEED))
    result = attribute_accuracy(
        [s.images[view] for s in samples], [s.attributes for s in samples], labels=[s.label for s in samples],
        audit=load_audit(unit),
    )
    # 0.9 is the target on the recorded held-out set; 0.87 leaves room for sampling error at this n.
    # The class heads are reported, not held to it: a derm class is not fully determined by what it shows.
    # Documented shortfalls (BELOW_TARGET) are held to their floor less the same 0.03.
    floors = {head: BELOW_TARGET.get(unit, {}).get(head, 0.9) - 0.03 for head in result["per_attribute"]}
    low = {head: acc for head, acc in result["per_attribute"].items() if acc < floors[head] and not head.startswith("label")}
    assert not low, f"{unit}: accuracy below the floor on fresh phantoms: {low}"
