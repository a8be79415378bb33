"""benchmarks/recipes.py: a diffusion recipe trained on a pilot autoencoder gets that autoencoder (re-labelled for
another bundle of the same kind), its config overrides, and ships both when promoted."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from benchmark_helpers import load_benchmark

from medgen_monai.engines.trainer import CHECKPOINT_FORMAT
from medgen_monai.io.weights import load_weights, save_weights

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def recipes():
    return load_benchmark("recipes")


def _trained_autoencoder_copy(recipes, work: Path, bundle: str, iterations: int = 40) -> dict[str, torch.Tensor]:
    """A stand-in for ``recipes.py --recipes ae_down2`` having trained ``bundle``'s autoencoder copy."""
    root = recipes.prepare(ROOT / "bundles" / bundle, "ae_down2", work)
    checkpoints = root / "train" / "autoencoder" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "iteration": iterations}, checkpoints / "last.pt")
    state = {"encoder.weight": torch.arange(6.0).reshape(2, 3)}
    save_weights(root / "models" / "autoencoder.pt", state, bundle, "autoencoder", {"iterations": iterations})
    return state


def test_chained_recipe_carries_the_autoencoder_recipes_overrides(recipes):
    assert recipes.autoencoder_recipe_of("rflow_down2") == "ae_down2"
    assert recipes.autoencoder_recipe_of("rflow") is None
    assert recipes.stage_of("rflow_down2") == "diffusion"
    inference = recipes.overrides_of("rflow_down2")["inference.json"]
    assert inference["autoencoder_def#channels"] == [32, 64]  # the autoencoder recipe's
    assert inference["network_def#channels"] == [16, 32, 64, 96]  # the recipe's own
    assert recipes.AUTOENCODER_KEY not in json.dumps(recipes.overrides_of("rflow_down2"))


def test_chained_recipe_refuses_an_untrained_autoencoder(recipes, tmp_path):
    with pytest.raises(SystemExit, match="train it first"):
        recipes.prepare(ROOT / "bundles" / "vap_diffusion_derm", "rflow_down2", tmp_path)


def test_chained_recipe_shares_one_autoencoder_between_bundles_of_a_kind(recipes, tmp_path):
    state = _trained_autoencoder_copy(recipes, tmp_path, "vap_diffusion_derm")
    root = recipes.prepare(ROOT / "bundles" / "ldm_label_derm", "rflow_down2_label", tmp_path)
    # re-labelled for the bundle that loads it, with the bundle it was trained for on record
    extra = load_weights(root / "models" / "autoencoder.pt", bundle="ldm_label_derm", role="autoencoder")
    assert extra["trained_for"] == "vap_diffusion_derm" and extra["iterations"] == 40
    loaded = torch.load(root / "models" / "autoencoder.pt", weights_only=True)["state_dict"]
    assert torch.equal(loaded["encoder.weight"], state["encoder.weight"])
    inference = json.loads((root / "configs" / "inference.json").read_text())
    assert inference["autoencoder_def"]["channels"] == [32, 64]
    assert inference["network_def"]["channels"] == [16, 48, 96, 128]
    # no autoencoder of another kind is taken
    shutil.rmtree(root)
    with pytest.raises(SystemExit, match="train it first"):
        recipes.prepare(ROOT / "bundles" / "vap_diffusion_colon", "rflow_down2", tmp_path)


def test_promoting_a_chained_recipe_ships_its_autoencoder(recipes, tmp_path):
    _trained_autoencoder_copy(recipes, tmp_path / "work", "vap_diffusion_derm", iterations=40)
    root = recipes.prepare(ROOT / "bundles" / "vap_diffusion_derm", "rflow_down2", tmp_path / "work")
    checkpoints = root / "train" / "diffusion" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save({"format": CHECKPOINT_FORMAT, "iteration": 30}, checkpoints / "last.pt")
    save_weights(root / "models" / "diffusion.pt", {"w": torch.zeros(1)}, "vap_diffusion_derm", "diffusion")
    bundle = tmp_path / "vap_diffusion_derm"
    shutil.copytree(ROOT / "bundles" / "vap_diffusion_derm", bundle)
    written = recipes.promote(root, bundle)
    assert bundle / "models" / "autoencoder.pt" in written and bundle / "models" / "diffusion.pt" in written
    assert json.loads((bundle / "configs" / "train_autoencoder.json").read_text())["max_iterations"] == 40
    assert json.loads((bundle / "configs" / "train_diffusion.json").read_text())["max_iterations"] == 30
    inference = json.loads((bundle / "configs" / "inference.json").read_text())
    assert inference["autoencoder_def"]["channels"] == [32, 64] and inference["eta"] == 0.0
    assert inference["noise_scheduler"]["_target_"].endswith("RFlowScheduler")
