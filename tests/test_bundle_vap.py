"""The three VAP-Diffusion bundles end to end: describe phantoms into a bank, train the diffusion stage through the
bundle's own configs (tiny U-Net, 2 iterations), generate by category (a bank description, recorded in the sidecar)
and by an explicit description, with the shipped weights through `python -m monai.bundle run`, and the errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from workflow_helpers import folder_digest, run_train_workflow

from medgen_monai.cli import _run_bundle, main
from medgen_monai.data import read_dataset, write_dataset
from medgen_monai.describe import DescriptionBank, OracleDescriber, describe_dataset, get_task
from medgen_monai.io.weights import WeightsError, file_sha256, load_weights
from medgen_monai.phantoms import get_phantom

ROOT = Path(__file__).parents[1]
MODALITIES = {"derm": ("isic", "MEL", 3), "colon": ("kvasir", "polyps", 3), "cxr": ("mimic_cxr", "Pleural Effusion", 1)}
TINY_UNET = {
    "network_def#channels": [8, 16, 16],
    "network_def#attention_levels": [False, True, True],
    "network_def#num_head_channels": 8,
    "network_def#norm_num_groups": 8,
    "network_def#prototype_heads": 2,
    "network_def#prototype_tokens": 4,
}


def stem(category: str, seed: int) -> str:
    return f"{category.replace(' ', '_')}_{seed:06d}"


def bundle(modality: str) -> Path:
    return ROOT / "bundles" / f"vap_diffusion_{modality}"


@pytest.fixture(scope="module", params=list(MODALITIES))
def trained(request, tmp_path_factory) -> dict:
    """Phantoms -> oracle bank -> 2 training iterations of a tiny U-Net through train_diffusion.json."""
    modality = request.param
    layout = MODALITIES[modality][0]
    root = tmp_path_factory.mktemp(f"vap_{modality}")
    data = write_dataset(layout, get_phantom(modality).generate_many(40, seed=11), root / "data")
    task = get_task(modality)
    summary = describe_dataset(read_dataset(layout, data), task, OracleDescriber(task), root / "bank", progress=False)
    assert summary["rejection_rate"] == 0.0
    weights = root / "diffusion.pt"
    run_train_workflow(
        bundle(modality),
        ["inference.json", "train_common.json", "train_diffusion.json"],
        dataset_dir=str(data),
        bank_dir=str(root / "bank"),
        train_dir=str(root / "train"),
        trained_model_dir=str(root),
        max_iterations=2,
        train_batch_size=4,
        sample_every=2,
        progress=False,
        **TINY_UNET,
    )
    return {"modality": modality, "root": root, "weights": weights, "bank": root / "bank", "data": data}


def generate(trained: dict, out: Path, **overrides) -> None:
    settings = {
        "bank_dir": str(trained["bank"]),
        "diffusion_weights": str(trained["weights"]),
        "output_dir": str(out),
        "num_inference_steps": 2,
        "progress": False,
        **TINY_UNET,
        **overrides,
    }
    _run_bundle(bundle(trained["modality"]), ["inference.json"], **settings)


def test_training_writes_checked_weights_a_sample_grid_and_a_checkpoint(trained):
    modality = trained["modality"]
    extra = load_weights(trained["weights"], bundle=f"vap_diffusion_{modality}", role="diffusion")
    assert extra["scale_factor"] > 0 and extra["prototype"] is True
    assert (trained["root"] / "train" / "checkpoints" / "last.pt").is_file()
    assert (trained["root"] / "train" / "samples" / "iteration_0000002.png").is_file()
    # every description was encoded once and cached in the user cache (never in the bundle), keyed by the encoder
    from safetensors import safe_open

    from medgen_monai.text import user_cache_dir

    (cache,) = (user_cache_dir("text", f"vap_diffusion_{modality}") / "embeddings").glob("*.safetensors")
    with safe_open(str(cache), "pt") as f:
        assert len([k for k in f.keys() if k.endswith(".tokens")]) >= len(DescriptionBank(trained["bank"])) * 0.6


def test_generate_by_category_records_the_bank_description(trained, tmp_path):
    _, category, channels = MODALITIES[trained["modality"]]
    generate(trained, tmp_path, category=category, n=2, seed=5)
    bank = DescriptionBank(trained["bank"])
    sidecars = [json.loads((tmp_path / f"{stem(category, s)}.json").read_text()) for s in (5, 6)]
    for sidecar in sidecars:
        assert sidecar["category"] == category
        assert sidecar["description"] in bank.descriptions(category)  # drawn from the category's bank
        assert bank.index()[sidecar["description_id"]]["description"] == sidecar["description"]
    image = np.asarray(Image.open(tmp_path / f"{stem(category, 5)}.png"))
    assert image.shape == ((64, 64, 3) if channels == 3 else (64, 64))
    again = tmp_path / "again"  # the draw is seeded by the request's seed: the same description every time
    generate(trained, again, category=category, n=1, seed=5)
    assert json.loads((again / f"{stem(category, 5)}.json").read_text())["description"] == sidecars[0]["description"]


def test_generate_by_explicit_description(trained, tmp_path):
    modality, category = trained["modality"], MODALITIES[trained["modality"]][1]
    text = {
        "derm": "A small round red lesion in the upper left with a well-defined border.",
        "colon": "A large pedunculated polyp in the centre of the view, red with a lobulated surface.",
        "cxr": "PA chest X-ray: a large right pleural effusion and a left chest wall pacemaker.",
    }[modality]
    generate(trained, tmp_path, category=category, n=1, seed=2, description=text)
    sidecar = json.loads((tmp_path / f"{stem(category, 2)}.json").read_text())
    assert sidecar["description"] == text and "description_id" not in sidecar


def test_projection_and_label_only_switches_run(trained, tmp_path):
    category = MODALITIES[trained["modality"]][1]
    generate(trained, tmp_path / "projected", category=category, n=1, projection_alpha=0.5, projection_k=3)
    generate(trained, tmp_path / "label_only", category=category, n=1, use_descriptions=False)
    a = np.asarray(Image.open(tmp_path / "projected" / f"{stem(category, 0)}.png"))
    b = np.asarray(Image.open(tmp_path / "label_only" / f"{stem(category, 0)}.png"))
    assert a.shape == b.shape


def test_evaluate_scores_bank_requests_against_the_test_split(trained, tmp_path):
    if trained["modality"] != "cxr":  # the same code; cxr also gives every request its multi-label classes
        pytest.skip("one modality is enough")
    out = tmp_path / "eval"
    _run_bundle(
        bundle("cxr"),
        ["inference.json", "evaluate.json"],
        dataset_dir=str(trained["data"]),
        bank_dir=str(trained["bank"]),
        diffusion_weights=str(trained["weights"]),
        output_dir=str(out),
        split="train",
        n=2,
        num_inference_steps=2,
        progress=False,
        **TINY_UNET,
    )  # 40 phantoms: a test
    report = json.loads((out / "evaluation.json").read_text())  # split too small for diversity per class
    assert report["generated"]["n"] == 12 and 0.0 <= report["generated"]["attribute_accuracy"] <= 1.0
    assert report["reference"]["class_accuracy"] > 0.5  # the test split's real images, read by the audit


def test_bad_inputs_give_one_clear_error(trained, tmp_path):
    with pytest.raises(ValueError, match="unknown category"):
        generate(trained, tmp_path, category="NOT_A_CLASS", n=1)
    empty = tmp_path / "empty_bank"
    empty.mkdir()
    with pytest.raises(ValueError, match=str(empty)):
        generate(trained, tmp_path, bank_dir=str(empty), n=1)
    other = "colon" if trained["modality"] != "colon" else "derm"
    with pytest.raises(WeightsError, match=f"expected 'vap_diffusion_{other}'"):
        load_weights(trained["weights"], bundle=f"vap_diffusion_{other}")


# ---- the shipped bundles ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("modality", list(MODALITIES))
def test_shipped_bundle_generates_by_category_and_by_description(modality, tmp_path):
    root = bundle(modality)
    before = folder_digest(root)
    category = MODALITIES[modality][1]
    relative = root.relative_to(ROOT)  # as a user types it from the repository root
    files = f"['{relative / 'configs' / 'inference.json'}']"
    command = [
        sys.executable,
        "-m",
        "monai.bundle",
        "run",
        "--config_file",
        files,
        "--bundle_root",
        str(relative),
        "--output_dir",
        str(tmp_path / "by_category"),
        "--n",
        "1",
        "--num_inference_steps",
        "3",
        "--progress",
        "False",
    ]
    run = subprocess.run(command, capture_output=True, text=True, cwd=ROOT)
    assert run.returncode == 0, run.stderr[-3000:]
    classes = json.loads((root / "configs" / "inference.json").read_text())["classes"]
    for c in classes:
        sidecar = json.loads((tmp_path / "by_category" / f"{stem(c, 0)}.json").read_text())
        assert sidecar["category"] == c and sidecar["description"]
        assert sidecar["bundle"]["weights_sha256"]["diffusion.pt"] == file_sha256(root / "models" / "diffusion.pt")
    main(
        [
            "generate",
            "--bundle",
            str(root),
            "--out",
            str(tmp_path / "by_description"),
            "--n",
            "1",
            "--steps",
            "3",
            "--category",
            category,
            "--description",
            "a description written by the user",
            "--progress",
            "False",
        ]
    )
    sidecar = json.loads((tmp_path / "by_description" / f"{stem(category, 0)}.json").read_text())
    assert sidecar["description"] == "a description written by the user"
    assert folder_digest(root) == before, "generation wrote into the bundle folder"


def test_description_options_are_refused_for_label_bundles_and_missing_banks(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "medgen_monai",
            "generate",
            "--bundle",
            str(ROOT / "bundles" / "ldm_label_derm"),
            "--out",
            str(tmp_path),
            "--description",
            "a red lesion",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2 and "--description: only for description-conditioned bundles" in run.stderr
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "medgen_monai",
            "generate",
            "--bundle",
            str(bundle("derm")),
            "--out",
            str(tmp_path),
            "--bank",
            str(tmp_path / "nowhere"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2 and "not a description bank folder" in run.stderr
