"""The VAP ablation script end to end in its smoke mode (2 training iterations per arm): every arm trains through
the bundle's configs, generates both splits and is scored; the JSON has the documented shape."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))


@pytest.mark.slow
def test_quick_ablation_writes_the_documented_shape(tmp_path):
    import vap_ablation

    assert vap_ablation.main(["--quick", "--modalities", "derm", "--seeds", "0,1", "--work_dir", str(tmp_path / "work")]) == 0
    out = tmp_path / "work_quick"
    summary = json.loads((out / "vap_ablation.json").read_text())
    assert list(summary) == ["derm"]
    assert list(summary["derm"]) == list(vap_ablation.CONDITIONS)
    for condition in vap_ablation.CONDITIONS:
        assert list(summary["derm"][condition]) == ["seen", "heldout"]
        for split in ("seen", "heldout"):
            for metric in ("attribute_accuracy", "fid", "diversity"):
                cell = summary["derm"][condition][split][metric]
                assert set(cell) == {"mean", "sd"} and cell["mean"] == cell["mean"]  # not NaN
    runs = json.loads((out / "vap_ablation_runs.json").read_text())
    assert runs["heldout_combinations"]["derm"] == vap_ablation.HELDOUT["derm"]
    assert [r["seed"] for r in runs["runs"]["derm"]["runs"]["label"]["seen"]] == [0, 1]
    assert (out / "vap_ablation.png").is_file()
    # held-out combinations never reach training: every held-out request shows one, no training record does
    for request in json.loads((out / "derm" / "requests.json").read_text())["heldout"]:
        assert vap_ablation.matches(request["attributes"], vap_ablation.HELDOUT["derm"])
