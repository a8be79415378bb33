"""Every shipped bundle through MONAI's workflow API: ``create_workflow(workflow_type="infer")`` finds every inference
property (``bundle_root``, ``device``, ``dataset_dir``, ``dataset``, ``evaluator``, ``network_def``, ``inferer``) and
running the workflow writes one output per request. (The bundles in development run the same check on their tiny
trained copies in their own test modules.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.data import Dataset

from medgen_monai.engines import GenerationEvaluator, GenerationInferer, shipped_bundles
from workflow_helpers import run_infer_workflow

ROOT = Path(__file__).parents[1]
SHIPPED = shipped_bundles(ROOT / "bundles")


@pytest.mark.parametrize("root", SHIPPED, ids=[p.name for p in SHIPPED])
def test_the_inference_workflow_has_monais_properties_and_runs(root, tmp_path):
    out = tmp_path / "out"
    workflow = run_infer_workflow(root, output_dir=str(out), n=1, num_inference_steps=2, progress=False)
    assert isinstance(workflow.dataset, Dataset)
    assert isinstance(workflow.inferer, GenerationInferer)
    assert isinstance(workflow.evaluator, GenerationEvaluator)
    requests = [workflow.dataset[i] for i in range(len(workflow.dataset))]
    sidecars = {p.stem: json.loads(p.read_text()) for p in out.glob("*.json")}
    assert sorted(sidecars) == sorted(r["id"] for r in requests)
    assert all((out / f"{r['id']}.png").is_file() for r in requests)
    assert all(s["steps"] == 2 for s in sidecars.values())


def test_the_evaluator_generates_only_what_is_missing(tmp_path):
    root = ROOT / "bundles" / "ldm_label_derm"
    out = tmp_path / "out"
    first = run_infer_workflow(root, output_dir=str(out), n=1, num_inference_steps=2, progress=False)
    assert len(first.evaluator.written) == len(first.dataset)
    (out / f"{first.dataset[0]['id']}.png").unlink()
    again = run_infer_workflow(root, output_dir=str(out), n=1, num_inference_steps=2, progress=False)
    assert [r["id"] for r in again.evaluator.written] == [first.dataset[0]["id"]]


def test_evaluator_and_inferer_reject_bad_arguments():
    with pytest.raises(ValueError, match="batch_size"):
        GenerationEvaluator([{"id": "a", "seed": 0}], None, None, None, batch_size=0)
    with pytest.raises(ValueError, match="dataset is empty"):
        GenerationEvaluator([], None, None, None)
    with pytest.raises(ValueError, match="latent_shape"):
        GenerationInferer(None, None, [4, 0, 8])
