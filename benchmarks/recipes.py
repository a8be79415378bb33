"""Pilot training recipes: recipe x iterations -> the quality metrics of ``benchmarks/quality.py``.

Each recipe is a set of config overrides of a bundle's diffusion stage (its scheduler, prediction target,
loss weighting, latent normalisation, sampler). For every recipe and bundle, the bundle is copied to
``--work/<recipe>/<bundle>`` (configs, description bank and the shipped autoencoder; the diffusion model
starts from scratch), its configs are rewritten with the recipe's overrides, and its diffusion stage is
trained with the bundle's own configs (``medgen-monai train``) to each of ``--iterations`` in turn, resuming
exactly from the last checkpoint; after each, ``--n`` images are generated at the recipe's sampler and scored
by the same code as ``benchmarks/quality.py``. Training wall time is the trainer's own (summed over resumed
runs, read from its checkpoint).

Writes ``benchmarks/results/recipes.json`` and ``benchmarks/results/recipes.png``;
``python docs/build_docs.py`` puts the table in docs/engine.md.

    python benchmarks/recipes.py --bundles vap_diffusion_cxr --recipes eps,rflow --iterations 1000,2500 --n 120

Cost on 2 CPU cores: the cxr bundle trains at about one iteration per second on one thread; scoring is
about 3 minutes per point.
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import fcntl
import json
import os
import platform
import shutil
import sys
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

sys.path.insert(0, str(ROOT / "docs"))

import autoencoders  # noqa: E402
import build_docs  # noqa: E402
import quality  # noqa: E402

from medgen_monai import cli  # noqa: E402
from medgen_monai.configs import shared_config_problems  # noqa: E402
from medgen_monai.engines import load_checkpoint  # noqa: E402
from medgen_monai.io.atomic import atomic_path, atomic_write_text  # noqa: E402
from medgen_monai.io.weights import save_weights  # noqa: E402
from medgen_monai.metrics.negatives import bundle_autoencoders  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: generated images per pilot point (ranking only: FID's floor at this n is wide; finalists are scored again at 500)
DEFAULT_N = 120

_RFLOW = {
    "_target_": "monai.networks.schedulers.RFlowScheduler",
    "num_train_timesteps": 1000,
    "use_discrete_timesteps": True,
    "sample_method": "logit-normal",
    "use_timestep_transform": False,
    "spatial_dim": 2,
}

#: the key of a diffusion recipe naming the autoencoder recipe whose copy it trains on (instead of the shipped
#: autoencoder); that recipe's overrides come along, so the copy's configs build the autoencoder it was given
AUTOENCODER_KEY = "autoencoder_recipe"

#: recipe -> {config file -> {config id -> value}}; ``#`` in an id reaches into a nested item.
RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    # the shipped recipe: epsilon prediction on a DDPM schedule, stochastic DDIM sampling (eta 1, 50 steps)
    "eps": {},
    # v prediction with min-SNR-5 loss weighting on the same schedule, same sampler
    "v_min_snr": {
        "train_diffusion.json": {"min_snr_gamma": 5.0},
        "inference.json": {"noise_scheduler#prediction_type": "v_prediction"},
    },
    # rectified flow (MAISI v2's choice): velocity target, logit-normal timesteps, 30 Euler steps
    "rflow": {"inference.json": {"noise_scheduler": _RFLOW, "num_inference_steps": 30}},
    # rectified flow on per-channel normalised latents
    "rflow_per_channel": {
        "train_diffusion.json": {"latent_normalisation": "per_channel"},
        "inference.json": {"noise_scheduler": _RFLOW, "num_inference_steps": 30},
    },
    # rectified flow on latents drawn from a cache of the training set's posteriors (no encoder per iteration)
    "rflow_cache": {
        "train_diffusion.json": {"latent_cache": True},
        "inference.json": {"noise_scheduler": _RFLOW, "num_inference_steps": 30},
    },
    # rectified flow from the latent cache at five times the learning rate (1e-3 after the same 500-step warmup):
    # can the 60-minute budget reach what 2e-4 reaches in twice the iterations?
    "rflow_lr1e3": {
        "train_diffusion.json": {"latent_cache": True, "learning_rate": 1e-3},
        "inference.json": {"noise_scheduler": _RFLOW, "num_inference_steps": 30},
    },
    # rflow_lr1e3 on the half-compression autoencoder (32 x 32 latents): the U-Net gets a narrow 16-channel level
    # at 32 x 32 in front of its three, so the time per iteration stays near the 16 x 16 U-Net's (the same three
    # levels run at 32 x 32 would cost about four times as much)
    "rflow_down2": {
        AUTOENCODER_KEY: "ae_down2",
        "train_diffusion.json": {"latent_cache": True, "learning_rate": 1e-3},
        "inference.json": {
            "noise_scheduler": _RFLOW,
            "num_inference_steps": 30,
            "network_def#channels": [16, 32, 64, 96],
            "network_def#attention_levels": [False, False, True, True],
        },
    },
    # rflow_down2 on the autoencoder whose learning rate was annealed (ae_down2_cosine)
    "rflow_down2_cosine": {
        AUTOENCODER_KEY: "ae_down2_cosine",
        "train_diffusion.json": {"latent_cache": True, "learning_rate": 1e-3},
        # guidance 1.5: 2.0 (the epsilon bundles' value) was measured worse on cxr and derm
        "inference.json": {
            "noise_scheduler": _RFLOW,
            "num_inference_steps": 30,
            "guidance_scale": 1.5,
            "network_def#channels": [16, 32, 64, 96],
            "network_def#attention_levels": [False, False, True, True],
        },
    },
    # the same for the label-only U-Net (its own widths, 48-96-128, behind the 16-channel level)
    "rflow_down2_label": {
        AUTOENCODER_KEY: "ae_down2",
        "train_diffusion.json": {"latent_cache": True, "learning_rate": 1e-3},
        "inference.json": {
            "noise_scheduler": _RFLOW,
            "num_inference_steps": 30,
            "network_def#channels": [16, 48, 96, 128],
            "network_def#attention_levels": [False, False, True, True],
        },
    },
}
#: autoencoder recipes (the autoencoder stage, scored by benchmarks/autoencoders.py): the shipped autoencoder,
#: and the same network with twice the latent channels (the same 4x downsampling, so the diffusion model's
#: cost barely changes; a twice wider autoencoder trained at a quarter of the speed on two cores)
AUTOENCODER_RECIPES: dict[str, dict[str, dict[str, Any]]] = {
    "ae_shipped": {},
    "ae_latent8": {"inference.json": {"latent_channels": 8}},
    # half the compression: one downsampling instead of two (latents 32 x 32 for 64 x 64 images)
    "ae_down2": {
        "inference.json": {"autoencoder_def#channels": [32, 64], "autoencoder_def#attention_levels": [False, False]}
    },
    # ae_down2 with the learning rate annealed to 0 along a cosine over the run (torch's CosineAnnealingLR; the
    # shipped autoencoders keep 1e-3 to the end, where their reconstructions are still noisy step to step)
    "ae_down2_cosine": {
        "inference.json": {"autoencoder_def#channels": [32, 64], "autoencoder_def#attention_levels": [False, False]},
        "train_autoencoder.json": {
            "+lr_scheduler": {
                "_target_": "torch.optim.lr_scheduler.CosineAnnealingLR",
                "optimizer": "@optimizer",
                "T_max": "@max_iterations",
            },
            "train#trainer#lr_scheduler": "@lr_scheduler",
        },
    },
    # and a patch discriminator after 1000 iterations (MONAI's generative tutorials' weights), so that the decoder
    # draws texture instead of averaging it away
    "ae_latent8_adv": {
        "inference.json": {"latent_channels": 8},
        "train_autoencoder.json": {
            "+discriminator": {
                "_target_": "monai.networks.nets.PatchDiscriminator",
                "spatial_dims": 2,
                "num_layers_d": 3,
                "channels": 32,
                "in_channels": "@image_channels",
                "out_channels": 1,
            },
            "+discriminator_optimizer": {
                "_target_": "torch.optim.Adam",
                "params": "$@discriminator.parameters()",
                "lr": "@learning_rate",
            },
            "train#trainer#discriminator": "@discriminator",
            "train#trainer#discriminator_optimizer": "@discriminator_optimizer",
            "train#trainer#adversarial_weight": 0.01,
            "train#trainer#adversarial_start": 1000,
        },
    },
}


def _set(config: dict[str, Any], key: str, value: Any) -> None:
    """Set ``key`` (``#`` reaches into nested items; a file's own ``train#trainer`` key counts as one item); a
    top-level setting must exist unless ``key`` starts with ``+`` (a new object the recipe adds)."""
    if key.startswith("+"):
        config[key[1:]] = copy.deepcopy(value)
        return
    parts = key.split("#")
    node, i = config, 0
    while i < len(parts) - 1:
        # the longest run of parts that names an item here (MONAI config files may hold "train#trainer" literally)
        for j in range(len(parts) - 1, i, -1):
            if "#".join(parts[i:j]) in node:
                node, i = node["#".join(parts[i:j])], j
                break
        else:
            raise KeyError(f"config has no {key!r}")
    last = "#".join(parts[i:])
    if last not in node and node is config:  # a top-level setting must exist; a constructor argument may be new
        raise KeyError(f"config has no {key!r}")
    node[last] = copy.deepcopy(value)


def current_overrides(overrides: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """A copy's recorded overrides in today's config ids: the trainer moved to ``train#trainer`` (MONAI's train
    properties) and the training schedule is the inference ``noise_scheduler`` (``train_scheduler`` is gone)."""
    current: dict[str, dict[str, Any]] = {}
    for name, values in overrides.items():
        for key, value in values.items():
            if key == "train_scheduler" or key.startswith("train_scheduler#"):
                continue
            if key.startswith("trainer#"):
                key = "train#" + key
            current.setdefault(name, {})[key] = value
    return current


def _stale(root: Path) -> bool:
    """Whether a copy's configs predate MONAI's workflow properties (then they are written again)."""
    return "evaluator" not in json.loads((root / "configs" / "inference.json").read_text())


def _write_configs(bundle: Path, target: Path, overrides: Mapping[str, Mapping[str, Any]]) -> None:
    """``bundle``'s configs into ``target/configs`` with ``overrides`` applied."""
    if (target / "configs").exists():
        shutil.rmtree(target / "configs")
    shutil.copytree(bundle / "configs", target / "configs")
    for name, values in overrides.items():
        path = target / "configs" / name
        config = json.loads(path.read_text())
        for key, value in values.items():
            _set(config, key, value)
        path.write_text(json.dumps(config, indent=4) + "\n")


def stage_of(recipe: str) -> str:
    return "autoencoder" if recipe in AUTOENCODER_RECIPES else "diffusion"


def autoencoder_recipe_of(recipe: str) -> str | None:
    """The autoencoder recipe a diffusion recipe trains on (``None``: the bundle's shipped autoencoder)."""
    return RECIPES.get(recipe, {}).get(AUTOENCODER_KEY)


def overrides_of(recipe: str) -> dict[str, dict[str, Any]]:
    """config file -> {config id -> value}: the recipe's own, after those of the autoencoder recipe it trains on."""
    own = {**RECIPES, **AUTOENCODER_RECIPES}[recipe]
    merged: dict[str, dict[str, Any]] = {}
    base = autoencoder_recipe_of(recipe)
    for overrides in ([AUTOENCODER_RECIPES[base]] if base else []) + [own]:
        for name, values in overrides.items():
            if name != AUTOENCODER_KEY:
                merged.setdefault(name, {}).update(values)
    return merged


def autoencoder_source(bundle: Path, recipe: str, work: Path) -> Path:
    """The autoencoder weights a diffusion recipe's copy of ``bundle`` starts from: the shipped ones, or the trained
    copy of its autoencoder recipe, this bundle's or, failing that, another bundle's of the same kind and
    autoencoder config (both derm bundles share one autoencoder)."""
    base = autoencoder_recipe_of(recipe)
    if base is None:
        return bundle / "models" / "autoencoder.pt"
    kind = quality.bundle_facts(bundle)["kind"]

    def autoencoder_def(root: Path) -> dict[str, Any]:  # as the autoencoder recipe builds it
        config = json.loads((root / "configs" / "inference.json").read_text())
        for key, value in AUTOENCODER_RECIPES[base].get("inference.json", {}).items():
            _set(config, key, value)
        return config["autoencoder_def"]

    mine = autoencoder_def(bundle)
    candidates = [work / base / bundle.name] + sorted(p for p in (work / base).glob("*") if p.name != bundle.name)
    for root in candidates:
        if not (root / "recipe.json").is_file() or trained_to(root, "autoencoder") == 0:
            continue
        if quality.bundle_facts(root)["kind"] == kind and autoencoder_def(root) == mine:
            return root / "models" / "autoencoder.pt"
    raise SystemExit(
        f"recipe {recipe!r} trains on autoencoder recipe {base!r}: train it first "
        f"(python benchmarks/recipes.py --bundles {bundle.name} --recipes {base} --iterations ...)"
    )


def prepare(bundle: Path, recipe: str, work: Path, overrides: Mapping[str, Mapping[str, Any]] | None = None) -> Path:
    """The recipe's copy of ``bundle`` under ``work`` (made once; an existing copy must carry the same recipe).

    A diffusion recipe gets the shipped autoencoder; an autoencoder recipe gets the shipped diffusion weights
    file only for its latent normalisation record (its autoencoder is trained from scratch). ``overrides``
    (config file -> {config id -> value}) names a diffusion variant that is not in :data:`RECIPES` (another
    benchmark's arms, e.g. benchmarks/ccella.py's ablation)."""
    target = work / recipe / bundle.name
    stamp = target / "recipe.json"
    overrides = overrides_of(recipe) if overrides is None else {k: dict(v) for k, v in overrides.items()}
    wanted = {"bundle": bundle.name, "recipe": recipe, "overrides": overrides}
    if stamp.is_file():
        made = json.loads(stamp.read_text())
        made["overrides"] = current_overrides(made["overrides"])
        if made != json.loads(json.dumps(wanted)):
            raise RuntimeError(f"{target} was made for another recipe; delete it or use another --work")
        if _stale(target):  # the trained state stays; the configs are the bundle's of today, same recipe
            _write_configs(bundle, target, overrides)
            atomic_write_text(stamp, json.dumps(wanted, indent=2) + "\n")
        return target
    if target.exists():
        shutil.rmtree(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))  # renamed into place when complete
    try:
        _write_configs(bundle, tmp, overrides)
        if (bundle / "bank").is_dir():
            shutil.copytree(bundle / "bank", tmp / "bank")
        (tmp / "models").mkdir()
        if stage_of(recipe) == "autoencoder":
            shutil.copy2(bundle / "models" / "diffusion.pt", tmp / "models" / "diffusion.pt")
        else:
            name = json.loads((bundle / "configs" / "inference.json").read_text())["bundle_name"]
            _copy_autoencoder(autoencoder_source(bundle, recipe, work), tmp / "models" / "autoencoder.pt", name)
        (tmp / "recipe.json").write_text(json.dumps(wanted, indent=2) + "\n")
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


def _copy_autoencoder(source: Path, target: Path, bundle_name: str) -> None:
    """Copy autoencoder weights into a bundle (copy), re-labelled with its name when they come from another bundle
    (the weights file names its bundle; the record says where it was trained)."""
    payload = torch.load(source, map_location="cpu", weights_only=True)
    if payload["bundle"] == bundle_name:
        shutil.copy2(source, target)
        return
    extra = dict(payload.get("extra") or {}, trained_for=payload["bundle"])
    save_weights(target, payload["state_dict"], bundle_name, "autoencoder", extra)


def promote(copy_root: Path, bundle: Path) -> list[Path]:
    """Make a pilot the bundle's own: write the recipe's overrides into the bundle's configs and copy the stage's
    weights (with their training record) and its last sample grid into the bundle. The configs the copy was
    trained with are then the bundle's, so its weights are what the bundle's configs train.

    Returns:
        the files written.
    """
    stamp = json.loads((copy_root / "recipe.json").read_text())
    if stamp["bundle"] != bundle.name:
        raise ValueError(f"{copy_root} is a copy of {stamp['bundle']}, not {bundle.name}")
    stage = stage_of(stamp["recipe"])
    written = []
    for name, overrides in current_overrides(stamp["overrides"]).items():  # exactly what the copy was trained with
        path = bundle / "configs" / name
        config = json.loads(path.read_text())
        for key, value in overrides.items():
            _set(config, key, value)
        if name == "inference.json" and "RFlowScheduler" in str(config["noise_scheduler"].get("_target_")):
            config["eta"] = 0.0  # DDIM's stochasticity: rectified flow's Euler steps have none
        atomic_write_text(path, json.dumps(config, indent=4) + "\n")
        written.append(path)
    # the length the copy was trained to becomes the config's
    train_config = bundle / "configs" / f"train_{stage}.json"
    config = json.loads(train_config.read_text())
    config["max_iterations"] = trained_to(copy_root, stage)
    atomic_write_text(train_config, json.dumps(config, indent=4) + "\n")
    if train_config not in written:
        written.append(train_config)
    # this bundle's copies of shared configs (other bundles' folders may be absent: a test's single copy)
    drift = [p for p in shared_config_problems(bundle.parent) if p.startswith(f"{bundle}/") and "missing" not in p]
    if drift:  # a config shared by several bundles: the recipe belongs in its one source (and then in every copy)
        raise RuntimeError(
            f"promoting {stamp['recipe']} made a shared config drift: {drift}; put the recipe's "
            "settings into medgen_monai/configs and run python -m medgen_monai.configs"
        )
    weights = bundle / "models" / f"{stage}.pt"
    shutil.copy2(copy_root / "models" / f"{stage}.pt", weights)
    written.append(weights)
    grids = sorted((copy_root / "train" / stage / "samples").glob("iteration_*.png"))
    if grids:
        target = bundle / "docs" / f"{stage}_samples_{grids[-1].name}"
        shutil.copy2(grids[-1], target)
        written.append(target)
    if autoencoder_recipe_of(stamp["recipe"]) is not None:
        # the pilot autoencoder the diffusion model was trained on ships with it, at the length it was trained to
        weights = bundle / "models" / "autoencoder.pt"
        shutil.copy2(copy_root / "models" / "autoencoder.pt", weights)
        record = torch.load(weights, map_location="cpu", weights_only=True)["extra"]
        train_config = bundle / "configs" / "train_autoencoder.json"
        config = json.loads(train_config.read_text())
        config["max_iterations"] = int(record["iterations"])
        atomic_write_text(train_config, json.dumps(config, indent=4) + "\n")
        written += [weights, train_config]
    return written


def trained_to(copy_root: Path, stage: str) -> int:
    """The iteration of the copy's last checkpoint of ``stage`` (0 when none)."""
    path = copy_root / "train" / stage / "checkpoints" / "last.pt"
    return int(load_checkpoint(path)["iteration"]) if path.is_file() else 0


def train_to(copy_root: Path, stage: str, iterations: int, dataset_dir: str) -> float:
    """Train the copy's ``stage`` to ``iterations`` (resuming); its training wall time so far, in seconds.

    A stage already trained that far is left alone: running its config again would rewrite the weights file
    (same weights, a new record), and the images kept for scoring would no longer match it."""
    if trained_to(copy_root, stage) < iterations:
        # the copy is its own bundle folder: checkpoints in <copy>/train/<stage>, weights in <copy>/models
        cli.train(
            str(copy_root),
            stage,
            dataset_dir=dataset_dir,
            max_iterations=iterations,
            progress=False,
            train_dir=str(copy_root / "train" / stage),
            train_root=str(copy_root),
        )
    return float(load_checkpoint(copy_root / "train" / stage / "checkpoints" / "last.pt").get("train_seconds", 0.0))


#: the metrics of a point, as quality.py names them
METRICS = (
    "valid_fraction",
    "attribute_accuracy",
    "gap_recovered",
    "fid",
    "fid_ratio",
    "diversity",
    "diversity_real",
    "class_accuracy",
    "class_accuracy_ceiling",
)


def score_autoencoder(copy_root: Path, n: int) -> dict[str, Any]:
    """benchmarks/autoencoders.py's measurement of the copy's autoencoder."""
    (entry,) = [
        e
        for e in bundle_autoencoders(quality.bundle_facts(copy_root)["kind"], copy_root.parent)
        if e["bundle"] == copy_root.name
    ]
    return autoencoders.measure(entry, n)


def score(copy_root: Path, iterations: int, n: int) -> dict[str, Any]:
    """quality.py's scoring of the copy at its default sampler setting."""
    facts = quality.bundle_facts(copy_root)
    settings = quality.bundle_settings(facts, ["default"])
    report = quality.run_bundle(
        facts,
        settings,
        n,
        copy_root / "quality" / f"it{iterations}",
        sheet=copy_root / "quality" / f"it{iterations}.png",
    )
    result = report["settings"][facts["default"]]
    point = {k: result.get(k) for k in METRICS}
    point["setting"] = facts["default"]
    point["gate_failures"] = build_docs.gate_failures(result, facts["descriptions"] or facts["reports"])
    return point


def plot(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    results = {
        "recipes": {
            recipe: {
                b: e
                for b, e in per_bundle.items()
                if all(p.get("stage", "diffusion") == "diffusion" for p in e["points"].values())
            }
            for recipe, per_bundle in results["recipes"].items()
        }
    }
    bundles = sorted({b for r in results["recipes"].values() for b in r})
    if not bundles:
        return
    fig, axes = plt.subplots(len(bundles), 3, figsize=(12, 3.2 * len(bundles)), squeeze=False)
    for row, bundle in enumerate(bundles):
        for col, (metric, label) in enumerate(
            (
                ("valid_fraction", "valid fraction"),
                ("fid_ratio", f"FID / real floor (n = {DEFAULT_N}: not the gate's n)"),
                ("gap_recovered", "gap recovered (or class accuracy)"),
            )
        ):
            ax = axes[row][col]
            for recipe, per_bundle in results["recipes"].items():
                points = sorted(
                    (
                        p
                        for p in per_bundle.get(bundle, {}).get("points", {}).values()
                        if p.get("n", DEFAULT_N) == DEFAULT_N
                    ),
                    key=lambda p: p["iterations"],
                )
                if not points:
                    continue
                # a class-only bundle is asked for no attributes: its gap is not a measure of it, its class accuracy is
                class_only = not (ROOT / "bundles" / bundle / "bank").is_dir()
                values = [
                    p["class_accuracy"]
                    if metric == "gap_recovered" and (class_only or p[metric] is None)
                    else p[metric]
                    for p in points
                ]
                ax.plot([p["iterations"] for p in points], values, marker="o", label=recipe)
            ax.set_title(f"{bundle}: {label}", fontsize=9)
            ax.set_xlabel("training iterations")
            if metric == "fid_ratio":
                ax.axhline(2.0, color="grey", ls="--", lw=0.8)
                ax.set_yscale("log")
            elif metric == "valid_fraction":
                ax.axhline(0.95, color="grey", ls="--", lw=0.8)
            ax.legend(fontsize=7)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default="vap_diffusion_cxr", help="comma-separated bundle names")
    parser.add_argument(
        "--recipes",
        default=",".join(r for r in RECIPES if autoencoder_recipe_of(r) is None),
        help=f"comma-separated, of {list(RECIPES) + list(AUTOENCODER_RECIPES)}",
    )
    parser.add_argument("--iterations", default="1000,2500", help="comma-separated training lengths, ascending")
    parser.add_argument("--n", type=int, default=DEFAULT_N, help="generated images per point")
    parser.add_argument("--work", default=str(ROOT / "runs" / "recipes"))
    parser.add_argument("--data", default=str(ROOT / "data"), help="phantom datasets: <data>/<kind>")
    parser.add_argument("--out", default=str(RESULTS / "recipes.json"))
    parser.add_argument(
        "--promote",
        default=None,
        metavar="RECIPE",
        help="make the copy of RECIPE (trained to the last --iterations) the bundle's own: its config "
        "overrides and weights go into bundles/<bundle>; nothing is trained or scored",
    )
    parser.add_argument(
        "--score-only",
        action="store_true",
        help="train nothing: score the copies already trained to an --iterations value, at --n "
        "(e.g. the pilots' finalists at the gate's n)",
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    recipes = [r.strip() for r in args.recipes.split(",") if r.strip()]
    unknown = [r for r in recipes if r not in {**RECIPES, **AUTOENCODER_RECIPES}]
    if unknown:
        raise SystemExit(f"--recipes: unknown {unknown}; expected some of {list(RECIPES) + list(AUTOENCODER_RECIPES)}")
    stages = sorted(int(i) for i in args.iterations.split(","))
    out, work = Path(args.out), Path(args.work)
    if args.promote is not None:
        for name in [b.strip() for b in args.bundles.split(",") if b.strip()]:
            copy_root = work / args.promote / name
            if trained_to(copy_root, stage_of(args.promote)) != stages[-1]:
                raise SystemExit(f"--promote: {copy_root} is not trained to {stages[-1]} iterations")
            for path in promote(copy_root, ROOT / "bundles" / name):
                print(f"wrote {path}")
        return 0
    command = "python benchmarks/recipes.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for name in [b.strip() for b in args.bundles.split(",") if b.strip()]:
        bundle = ROOT / "bundles" / name
        if not (bundle / "configs" / "inference.json").is_file():
            raise SystemExit(f"--bundles: {bundle} is not a bundle")
        kind = quality.bundle_facts(bundle)["kind"]
        for recipe in recipes:
            copy_root = prepare(bundle, recipe, work)
            stage = stage_of(recipe)
            for iterations in stages:
                done = trained_to(copy_root, stage)
                if args.score_only and done != iterations:
                    continue
                if done > iterations:
                    print(
                        f"{recipe} {name}: already trained to {done} > {iterations}; no score at {iterations}",
                        flush=True,
                    )
                    continue
                print(f"{recipe} {name}: training to {iterations} (from {done})", flush=True)
                seconds = train_to(copy_root, stage, iterations, str(Path(args.data) / kind))
                scores = (
                    score(copy_root, iterations, args.n)
                    if stage == "diffusion"
                    else score_autoencoder(copy_root, args.n)
                )
                point = {
                    "iterations": iterations,
                    "train_seconds": round(seconds, 1),
                    "threads": torch.get_num_threads(),
                    "stage": stage,
                    "n": args.n,
                    **scores,
                }
                print(f"{recipe} {name} @ {iterations}: {json.dumps(point)}", flush=True)
                with _locked(out):  # several runs (one per core) write the same file
                    _record(out, recipe, name, iterations, point, args.n, command)
    return 0


@contextlib.contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def _record(out: Path, recipe: str, name: str, iterations: int, point: Mapping[str, Any], n: int, command: str) -> None:
    """Read-merge-write one point into the results, and redraw the plot."""
    results = json.loads(out.read_text()) if out.is_file() else {"recipes": {}}
    entry = results["recipes"].setdefault(recipe, {}).setdefault(name, {"points": {}})
    entry["overrides"] = overrides_of(recipe)
    if autoencoder_recipe_of(recipe) is not None:
        entry["autoencoder_recipe"] = autoencoder_recipe_of(recipe)
    # a point is one training length scored at one n (the pilots' n; the finalists also at the gate's)
    entry["points"][str(iterations) if n == DEFAULT_N else f"{iterations}/n{n}"] = dict(point)
    entry["command"] = command.strip()
    results["n"] = DEFAULT_N
    results["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}
    atomic_write_text(out, json.dumps(quality._finite(results), indent=2, allow_nan=False) + "\n")
    plot(results, out.with_suffix(".png"))


if __name__ == "__main__":
    raise SystemExit(main())
