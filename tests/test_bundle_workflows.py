"""Every shipped bundle through MONAI's workflow API: ``create_workflow(workflow_type="infer")`` finds every inference
property (``bundle_root``, ``device``, ``dataset_dir``, ``dataset``, ``evaluator``, ``network_def``, ``inferer``) and
running the workflow writes one output per request. (The bundles in development run the same check on their tiny
trained copies in their own test modules.)"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from monai.data import Dataset
from workflow_helpers import run_infer_workflow

from medgen_monai.engines import GenerationEvaluator, GenerationInferer, shipped_bundles

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


TRAINING = [
    (root, p.stem[len("train_") :])
    for root in sorted((ROOT / "bundles").glob("*"))
    if (root / "configs").is_dir()
    for p in sorted((root / "configs").glob("train_*.json"))
    if p.stem != "train_common"
]


@pytest.mark.parametrize("root, stage", TRAINING, ids=[f"{r.name}-{s}" for r, s in TRAINING])
def test_every_training_stage_defines_monais_train_properties(root, stage):
    """Every id of MONAI's ``TrainProperties`` marked required is in the merged configs: ``train#trainer`` (with
    ``max_epochs``), ``train#dataset``, ``train#inferer``, ``dataset_dir``, ``device``, ``bundle_root``; optional ones
    that are referenced are referenced by their own id (``train#preprocessing``). MONAI's ``check_properties`` needs
    the stage built, so it runs where each bundle's stages train on tiny data (``run_train_workflow``)."""
    from monai.bundle import ConfigParser
    from monai.bundle.properties import TrainProperties

    configs = [str(root / "configs" / name) for name in ("inference.json", "train_common.json", f"train_{stage}.json")]
    parser = ConfigParser(ConfigParser.load_config_files(configs))
    missing = [
        name for name, p in TrainProperties.items() if p["required"] and p["id"].replace("::", "#") not in parser
    ]
    assert missing == []
    assert parser["train#dataset#transform"] == "@train#preprocessing"
    assert parser["train#trainer#max_epochs"] is None  # max_iterations rules unless max_epochs is set
    assert not str(parser["train_dir"]).startswith("$@bundle_root")  # training never writes into the bundle


def test_the_vap_bundles_train_diffusion_from_one_shared_config(tmp_path):
    """medgen_monai/configs holds the VAP diffusion training config once; each bundle ships a copy (bundles stand
    alone) that differs only in its own training length, and a copy that drifts is reported."""
    import shutil

    from medgen_monai.configs import shared_config_problems, sync_shared_configs

    assert shared_config_problems(ROOT / "bundles") == []
    bundles = tmp_path / "bundles"
    for kind in ("derm", "colon", "cxr"):
        shutil.copytree(
            ROOT / "bundles" / f"vap_diffusion_{kind}" / "configs", bundles / f"vap_diffusion_{kind}" / "configs"
        )
    derm = bundles / "vap_diffusion_derm" / "configs" / "train_diffusion.json"
    config = json.loads(derm.read_text())
    iterations = config["max_iterations"]
    config["learning_rate"] = 0.5
    derm.write_text(json.dumps(config))
    assert [p.split(":")[0] for p in shared_config_problems(bundles)] == [str(derm)]
    assert sync_shared_configs(bundles) == [derm] and shared_config_problems(bundles) == []
    synced = json.loads(derm.read_text())
    assert synced["max_iterations"] == iterations and synced["learning_rate"] != 0.5
