"""The baseline bundle end to end: `python -m monai.bundle run` with the shipped weights, `medgen-monai generate`
through the same config, reruns that fill only what is missing, its training configs, and its error messages."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from medgen_monai.cli import main
from medgen_monai.io.weights import WeightsError, file_sha256, load_weights, save_weights

ROOT = Path(__file__).parents[1]
BUNDLE = ROOT / "bundles" / "ldm_label_derm"
CLASSES = ["MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC"]


def bundle_run(*configs: str, cwd: Path = ROOT, **overrides) -> subprocess.CompletedProcess:
    files = "[" + ",".join(f"'{BUNDLE / 'configs' / c}'" for c in configs) + "]"
    command = [sys.executable, "-m", "monai.bundle", "run", "--config_file", files, "--bundle_root", str(BUNDLE)]
    for key, value in overrides.items():
        command += [f"--{key}", str(value)]
    return subprocess.run(command, capture_output=True, text=True, cwd=cwd)


@pytest.fixture(scope="module")
def generated(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bundle") / "out"
    run = bundle_run("inference.json", output_dir=out, n=1, num_inference_steps=3, seed=7, progress=False)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def test_monai_bundle_run_writes_every_class_with_sidecars(generated):
    for c in CLASSES:
        image = np.asarray(Image.open(generated / f"{c}_000007.png"))
        assert image.shape == (64, 64, 3) and image.std() > 3
        sidecar = json.loads((generated / f"{c}_000007.json").read_text())
        assert sidecar["category"] == c and sidecar["seed"] == 7
        assert sidecar["sampler"] == "ddim" and sidecar["steps"] == 3 and sidecar["guidance_scale"] == 2.0
        assert sidecar["bundle"]["name"] == "ldm_label_derm" and sidecar["bundle"]["version"]
        assert sidecar["bundle"]["weights_sha256"]["diffusion.pt"] == file_sha256(BUNDLE / "models" / "diffusion.pt")
    assert (generated / "grid.png").is_file()


def test_cli_generate_goes_through_the_same_config_and_reruns_fill_only_the_missing(generated, tmp_path):
    out = tmp_path / "cli"
    main(
        [
            "generate",
            "--bundle",
            str(BUNDLE),
            "--out",
            str(out),
            "--n",
            "1",
            "--steps",
            "3",
            "--seed",
            "7",
            "--category",
            "MEL,DF",
            "--progress",
            "False",
        ]
    )
    for c in ("MEL", "DF"):  # per-sample seeds: the same image alone or in a batch of seven
        alone = np.asarray(Image.open(out / f"{c}_000007.png")).astype(int)
        batched = np.asarray(Image.open(generated / f"{c}_000007.png")).astype(int)
        # up to rounding: on an AMX Xeon the batch size changes the CPU kernels' summation order, and 0.04% of the
        # pixels moved by one level; another seed's noise would change almost every pixel
        assert np.abs(alone - batched).max() <= 1 and (alone != batched).mean() < 0.01
    assert not (out / "NV_000007.png").exists()
    kept = (out / "MEL_000007.png").stat().st_mtime_ns
    (out / "DF_000007.json").unlink()  # an interrupted output: the sidecar is written last
    main(
        [
            "generate",
            "--bundle",
            str(BUNDLE),
            "--out",
            str(out),
            "--n",
            "1",
            "--steps",
            "3",
            "--seed",
            "7",
            "--category",
            "MEL,DF",
            "--progress",
            "False",
        ]
    )
    assert (out / "DF_000007.json").is_file() and (out / "MEL_000007.png").stat().st_mtime_ns == kept


def test_unknown_category_is_one_clear_error(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "medgen_monai",
            "generate",
            "--bundle",
            str(BUNDLE),
            "--out",
            str(tmp_path),
            "--category",
            "SCC",
            "--steps",
            "2",
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2
    assert "unknown category ['SCC']; expected some of ['MEL', 'NV', 'BCC', 'AK', 'BKL', 'DF', 'VASC']" in run.stderr
    run = subprocess.run(
        [sys.executable, "-m", "medgen_monai", "generate", "--bundle", str(tmp_path), "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        cwd=ROOT,
    )
    assert run.returncode == 2 and "is not a bundle folder (no configs/inference.json)" in run.stderr


def test_weights_are_checked(tmp_path):
    extra = load_weights(BUNDLE / "models" / "diffusion.pt", bundle="ldm_label_derm", role="diffusion")
    assert extra["scale_factor"] > 0
    with pytest.raises(WeightsError, match="weights of bundle 'ldm_label_derm', expected 'vap_diffusion_derm'"):
        load_weights(BUNDLE / "models" / "diffusion.pt", bundle="vap_diffusion_derm")
    with pytest.raises(WeightsError, match="'autoencoder' weights, expected 'diffusion' weights"):
        load_weights(BUNDLE / "models" / "autoencoder.pt", role="diffusion")
    wrong = save_weights(tmp_path / "wrong.pt", torch.nn.Linear(2, 2), "ldm_label_derm", "diffusion")
    with pytest.raises(WeightsError, match="weights do not fit Linear"):
        load_weights(wrong, torch.nn.Linear(3, 2))
    (tmp_path / "broken.pt").write_bytes(b"not a zip")
    with pytest.raises(WeightsError, match="broken.pt: not a readable weights file"):
        load_weights(tmp_path / "broken.pt")


def test_training_configs_run_end_to_end(tmp_path):
    """Both training stages through the bundle's own configs on a tiny phantom set, writing where the shipped configs
    write (``train/<bundle>`` under the working directory, never the bundle folder), then inference on the result."""
    from workflow_helpers import folder_digest

    main(["phantoms", "--kind", "derm", "--n", "40", "--out", str(tmp_path / "data"), "--progress", "False"])
    before = folder_digest(BUNDLE)
    common = dict(
        dataset_dir=tmp_path / "data",
        max_iterations=2,
        train_batch_size=4,
        checkpoint_every=1,
        sample_every=2,
        progress=False,
        cwd=tmp_path,
    )
    run = bundle_run("inference.json", "train_common.json", "train_autoencoder.json", **common)
    assert run.returncode == 0, run.stderr[-3000:]
    trained = tmp_path / "train" / "ldm_label_derm"
    models = trained / "models"
    run = bundle_run("inference.json", "train_common.json", "train_diffusion.json", model_dir=models, **common)
    assert run.returncode == 0, run.stderr[-3000:]
    assert folder_digest(BUNDLE) == before, "training wrote into the bundle folder"
    assert (trained / "diffusion" / "samples" / "iteration_0000002.png").is_file()
    assert (trained / "autoencoder" / "checkpoints" / "last.pt").is_file()
    assert load_weights(models / "diffusion.pt", role="diffusion")["scale_factor"] > 0
    run = bundle_run(
        "inference.json",
        output_dir=tmp_path / "out",
        n=1,
        num_inference_steps=2,
        category="NV",
        progress=False,
        model_dir=models,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "out" / "NV_000000.png").is_file()
    run = bundle_run(
        "inference.json",
        "evaluate.json",
        output_dir=tmp_path / "eval",
        n=2,
        num_inference_steps=2,
        progress=False,
        dataset_dir=tmp_path / "data",
        split="train",
        model_dir=models,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert report["generated"]["n"] == 14 and 0 <= report["generated"]["class_accuracy"] <= 1
    assert {"fid", "diversity", "attribute_distance"} <= set(report["generated"]) and (
        tmp_path / "eval" / "evaluation.png"
    ).is_file()
