"""The CCELLA bundle's own studies (issue 15), written to ``benchmarks/results/ccella.json``.

Stages (``--stages``, comma-separated):

- ``class``: the class the connector's heads read from held-out reports (fresh prostate phantoms of the ``ccella``
  seed range, which no bundle trains on): accuracy, sensitivity and specificity for csPCa, ROC AUC (MONAI's
  ``compute_roc_auc``), on the non-empty reports (the goal: accuracy >= 0.95) and, separately, what the heads say
  for an empty report (the class prior they learned). The heads are read at timestep 0, as the sidecars record them
  (``CCELLAUNet.predict_class``).
- ``ablation``: the paper's arms on one budget, each a copy of the bundle whose diffusion stage is trained from
  scratch on the shipped autoencoder with ``--seeds`` training seeds (the machinery of ``benchmarks/recipes.py``),
  then scored by the code of ``benchmarks/quality.py`` at the default sampler: FID over its matched floor, valid
  fraction, the audit's reading of lesion, side, zone, size and PI-RADS against what each report describes, and the
  class agreement between the report and the generated volume (the audit's class head; csPCa iff PI-RADS >= 3).
  Arms (:data:`ARMS`): ``spacing_only`` (MAISI: no text), ``text_only`` (ELLA: no class path), ``ccella`` (text and
  the class predicted from it) and ``decoupled`` (text and the true class). Mean and sd over seeds.

    python benchmarks/ccella.py --stages class [--bundle-dir bundles/ccella_prostate_mri] [--n 400]
    python benchmarks/ccella.py --stages ablation --seeds 0,1,2 [--iterations N] [--n 200]

- ``classifier``: the low-data study. A small MONAI 3D classifier (``monai.networks.nets.Classifier``; the authors
  used EfficientNet-B0, too slow for two CPU cores) learns csPCa from ``N`` real training volumes, from the same
  ``N`` plus ``M`` volumes the bundle generates from other training cases' reports, and from the ``M`` synthetic
  volumes alone, for each of ``--real-sizes`` and ``--seeds`` (the subset draw, the synthetic draw and the
  initialisation); tested on held-out real phantoms of the ``ccella`` range. Accuracy and ROC AUC, mean and sd.
  A synthetic volume's label is the class of the case whose report made it. The paper's anchor: +5 points of
  accuracy from adding synthetic volumes.

    python benchmarks/ccella.py --stages classifier --real-sizes 25,100 --synthetic 200 --seeds 0,1,2

Cost on 2 CPU cores: the ``class`` stage takes well under a minute (one connector pass per report); an ablation arm
costs one diffusion training (the bundle's, by default) and one quality scoring.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT / "docs"))  # recipes.py reads the gate from docs/build_docs.py

from medgen_monai.engines import inference_parser  # noqa: E402
from medgen_monai.io.atomic import atomic_write_text  # noqa: E402
from medgen_monai.phantoms import get_phantom  # noqa: E402
from medgen_monai.phantoms.seeds import CCELLA_SEEDS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
STAGES = ("class", "ablation", "classifier")
#: the paper's ablation arms: inference.json overrides of the bundle (the diffusion stage trains with them)
ARMS: dict[str, dict[str, Any]] = {
    "spacing_only": {"network_def#connector": None, "class_path": "none"},  # MAISI
    "text_only": {"class_path": "none", "class_heads": "none"},  # ELLA
    "ccella": {},  # text and the class predicted from it
    "decoupled": {"class_path": "true", "class_heads": "none"},  # text and the true class
}
#: what the ablation reads from each generated volume
ABLATION_ATTRIBUTES = ("lesion", "side", "zone", "size", "pirads")


def binary_scores(probabilities: np.ndarray, labels: np.ndarray) -> dict[str, Any]:
    """Accuracy, sensitivity, specificity (class 1 positive, argmax decision) and ROC AUC of ``(N, 2)``
    probabilities against ``(N,)`` labels in {0, 1}."""
    from monai.metrics import compute_roc_auc

    if probabilities.ndim != 2 or probabilities.shape[1] != 2 or len(probabilities) != len(labels):
        raise ValueError(f"probabilities must be (N, 2) for N = {len(labels)} labels, got {probabilities.shape}")
    predicted = probabilities.argmax(axis=1)
    positive, negative = labels == 1, labels == 0
    both = bool(positive.any() and negative.any())
    return {
        "n": int(len(labels)),
        "positives": int(positive.sum()),
        "accuracy": float((predicted == labels).mean()),
        "sensitivity": float((predicted[positive] == 1).mean()) if positive.any() else None,
        "specificity": float((predicted[negative] == 0).mean()) if negative.any() else None,
        "auc": float(compute_roc_auc(torch.as_tensor(probabilities[:, 1]), torch.as_tensor(labels))) if both else None,
    }


def class_from_report(root: Path, n: int, batch: int = 64) -> dict[str, Any]:
    """The connector's class reading of ``n`` held-out phantom reports."""
    parser = inference_parser(root, progress=False)
    parser.get_parsed_content("load_diffusion")  # loads the diffusion weights into the network
    network = parser.get_parsed_content("network").eval()
    encoder = parser.get_parsed_content("text_encoder")
    classes = list(parser.get_parsed_content("classes"))
    samples = list(get_phantom("prostate").generate_many(n, seed=CCELLA_SEEDS["reports"]))
    reports = [s.text.strip() for s in samples]
    labels = np.asarray([classes.index(str(s.label)) for s in samples])
    probabilities = []
    with torch.inference_mode():
        for start in range(0, n, batch):
            tokens = encoder.encode(reports[start : start + batch]).tokens
            probabilities.append(network.predict_class(tokens).numpy())
    probabilities = np.concatenate(probabilities)
    written = np.asarray([bool(r) for r in reports])
    empty = probabilities[~written]
    return {
        "seed": CCELLA_SEEDS["reports"],
        "classes": classes,
        "reports": binary_scores(probabilities[written], labels[written]),
        "empty_reports": {
            "n": int((~written).sum()),
            "positives": int(labels[~written].sum()),
            "mean_probability": [float(v) for v in empty.mean(axis=0)] if len(empty) else None,
        },
        "goal": {"accuracy": 0.95},
    }


def _mean_sd(values: Sequence[float | None]) -> dict[str, float | None]:
    kept = [float(v) for v in values if v is not None]
    if not kept:
        return {"mean": None, "sd": None, "n": 0}
    return {"mean": float(np.mean(kept)), "sd": float(np.std(kept, ddof=1)) if len(kept) > 1 else 0.0, "n": len(kept)}


def ablation(
    root: Path, arms: Sequence[str], seeds: Sequence[int], iterations: int | None, n: int, work: Path, dataset_dir: Path
) -> dict[str, Any]:
    """Train and score every arm at every training seed; per arm, each seed's scores and their mean and sd."""
    import quality
    import recipes

    results: dict[str, Any] = {}
    for arm in arms:
        runs = {}
        for seed in seeds:
            train_overrides: dict[str, Any] = {"training_seed": int(seed)}
            if iterations is not None:
                train_overrides["max_iterations"] = int(iterations)
            copy_root = recipes.prepare(
                root,
                f"{arm}_seed{seed}",
                work,
                overrides={"inference.json": ARMS[arm], "train_diffusion.json": train_overrides},
            )
            length = iterations or json.loads((root / "configs" / "train_diffusion.json").read_text())["max_iterations"]
            seconds = recipes.train_to(copy_root, "diffusion", int(length), str(dataset_dir))
            facts = quality.bundle_facts(copy_root)
            report = quality.run_bundle(
                facts,
                quality.bundle_settings(facts, ["default"]),
                n,
                copy_root / "quality",
                sheet=copy_root / "quality" / "sheet.png",
            )
            scores = report["settings"][facts["default"]]
            runs[str(seed)] = {
                "train_seconds": round(seconds, 1),
                "iterations": int(length),
                "valid_fraction": scores["valid_fraction"],
                "fid_ratio": scores["fid_ratio"],
                "fid": scores["fid"],
                "fid_floor": scores["fid_floor"],
                "class_agreement": scores["class_accuracy"],
                "attribute_accuracy": {a: scores["per_attribute"].get(a) for a in ABLATION_ATTRIBUTES},
            }
            print(f"ablation {arm} seed {seed}: {json.dumps(runs[str(seed)])}", flush=True)
        summary = {
            metric: _mean_sd([r[metric] for r in runs.values()])
            for metric in ("valid_fraction", "fid_ratio", "class_agreement")
        }
        summary["attribute_accuracy"] = {
            a: _mean_sd([r["attribute_accuracy"][a] for r in runs.values()]) for a in ABLATION_ATTRIBUTES
        }
        results[arm] = {"overrides": ARMS[arm], "seeds": runs, "summary": summary}
    return results


def train_classifier(
    volumes: torch.Tensor,
    labels: torch.Tensor,
    test_volumes: torch.Tensor,
    test_labels: torch.Tensor,
    seed: int,
    epochs: int = 30,
    batch: int = 16,
) -> dict[str, Any]:
    """Train MONAI's ``Classifier`` on ``(N, 1, X, Y, Z)`` volumes in [0, 1] and ``(N,)`` labels; test it."""
    from monai.networks.nets import Classifier

    if len(volumes) < 2 or len(volumes) != len(labels):
        raise ValueError(
            f"need at least two training volumes with one label each, got {len(volumes)} and {len(labels)}"
        )
    generator = torch.Generator().manual_seed(int(seed))
    torch.manual_seed(int(seed))
    # four halvings at 64 x 64 x 32; fewer for smaller volumes, so the last level keeps at least 2 voxels a side
    levels = max(1, min(4, int(np.log2(min(volumes.shape[2:]))) - 1))
    network = Classifier(
        in_shape=tuple(volumes.shape[1:]), classes=2, channels=(8, 16, 32, 64)[:levels], strides=(2,) * levels
    )
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    network.train()
    for _ in range(int(epochs)):
        order = torch.randperm(len(volumes), generator=generator)
        for start in range(0, len(order), batch):
            index = order[start : start + batch]
            loss = torch.nn.functional.cross_entropy(network(volumes[index]), labels[index])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    network.eval()
    with torch.inference_mode():
        probabilities = torch.cat(
            [network(test_volumes[s : s + 64]).softmax(dim=1) for s in range(0, len(test_volumes), 64)]
        ).numpy()
    return binary_scores(probabilities, test_labels.numpy())


def _volumes(arrays: Sequence[np.ndarray], size: Sequence[int]) -> torch.Tensor:
    """Volumes -> ``(N, 1, *size)`` percentile-scaled to [0, 1] (as the bundle and the audit see them), resized
    (trilinear) to the bundle's volume size where they differ."""
    from medgen_monai.metrics.preprocess import percentile_scale

    out = []
    for array in arrays:
        volume = percentile_scale(torch.as_tensor(np.asarray(array, dtype=np.float32))[None, None])
        if tuple(volume.shape[2:]) != tuple(size):
            volume = torch.nn.functional.interpolate(volume, size=tuple(int(s) for s in size), mode="trilinear")
        out.append(volume[0])
    return torch.stack(out)


def synthesize(root: Path, records: Sequence[dict[str, Any]], seed: int, out: Path) -> list[np.ndarray]:
    """One volume per record, generated by the bundle from the record's report at the bundle's spacing (resumable)."""
    from medgen_monai.engines import report_requests
    from medgen_monai.io.volumes import load_volume

    parser = inference_parser(root, output_dir=str(out), formats="nifti", progress=False)
    evaluator = parser.get_parsed_content("evaluator")
    spacing, size = parser.get_parsed_content("spacing"), parser.get_parsed_content("image_size")
    evaluator.dataset = report_requests(1, seed, [r["text"] for r in records], spacing, size)
    evaluator.run()
    return [load_volume(out / f"{r['id']}.nii.gz")[0] for r in evaluator.dataset]


def classifier_study(
    root: Path,
    data: Path,
    real_sizes: Sequence[int],
    synthetic: int,
    seeds: Sequence[int],
    n_test: int,
    epochs: int,
    work: Path,
) -> dict[str, Any]:
    """Per real size and seed: the classifier on N real, N real + M synthetic, and M synthetic volumes."""
    from medgen_monai.data import read_dataset, split_datalist
    from medgen_monai.io.volumes import load_volume

    config = inference_parser(root, initialize=False)
    classes, size = list(config.get_parsed_content("classes")), list(config.get_parsed_content("image_size"))
    train = split_datalist(read_dataset("picai", data))["train"]
    if max(real_sizes) + synthetic > len(train):
        raise ValueError(f"{data}: {len(train)} training cases, fewer than N {max(real_sizes)} + M {synthetic}")
    tests = list(get_phantom("prostate").generate_many(n_test, seed=CCELLA_SEEDS["classifier_test"]))
    test_volumes = _volumes([s.images["t2w"] for s in tests], size)
    test_labels = torch.tensor([classes.index(str(s.label)) for s in tests])
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    for seed in seeds:
        order = np.random.default_rng(int(seed)).permutation(len(train))
        # the synthetic volumes come from the reports of cases outside every real subset of this seed
        donors = [train[int(i)] for i in order[max(real_sizes) : max(real_sizes) + synthetic]]
        synthetic_volumes = _volumes(synthesize(root, donors, 1_000 * int(seed), work / f"synthetic_seed{seed}"), size)
        synthetic_labels = torch.tensor([int(r["label"]) for r in donors])
        arms = {"synthetic": (synthetic_volumes, synthetic_labels)}
        for n_real in real_sizes:
            chosen = [train[int(i)] for i in order[:n_real]]
            real_volumes = _volumes([load_volume(r["image"])[0] for r in chosen], size)
            real_labels = torch.tensor([int(r["label"]) for r in chosen])
            arms[f"real_{n_real}"] = (real_volumes, real_labels)
            arms[f"real_{n_real}+synthetic"] = (
                torch.cat([real_volumes, synthetic_volumes]),
                torch.cat([real_labels, synthetic_labels]),
            )
        for name, (volumes, labels) in arms.items():
            scores = train_classifier(volumes, labels, test_volumes, test_labels, seed, epochs)
            runs.setdefault(name, {}).setdefault("seeds", []).append({"seed": int(seed), **scores})
            print(f"classifier {name} seed {seed}: accuracy {scores['accuracy']:.3f}, AUC {scores['auc']}", flush=True)
    for entry in runs.values():
        entry["accuracy"] = _mean_sd([r["accuracy"] for r in entry["seeds"]])
        entry["auc"] = _mean_sd([r["auc"] for r in entry["seeds"]])
    return {
        "synthetic": int(synthetic),
        "real_sizes": [int(s) for s in real_sizes],
        "n_test": int(n_test),
        "test_seed": CCELLA_SEEDS["classifier_test"],
        "epochs": int(epochs),
        "arms": runs,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--stages", default=",".join(STAGES), help=f"comma-separated, of {list(STAGES)}")
    parser.add_argument("--bundle-dir", default=str(ROOT / "bundles" / "ccella_prostate_mri"))
    parser.add_argument(
        "--n",
        type=int,
        default=400,
        help="held-out reports (class stage); generated volumes per arm and seed (ablation stage)",
    )
    parser.add_argument("--arms", default=",".join(ARMS), help=f"ablation arms, of {list(ARMS)}")
    parser.add_argument("--seeds", default="0,1,2", help="ablation training seeds")
    parser.add_argument(
        "--iterations", type=int, default=None, help="ablation diffusion iterations (default: the bundle's)"
    )
    parser.add_argument("--work", default=str(ROOT / "runs" / "ccella"), help="ablation copies (resumable)")
    parser.add_argument("--data", default=str(ROOT / "data" / "prostate"), help="the prostate training data")
    parser.add_argument("--real-sizes", default="25,100", help="classifier study: real training volumes N")
    parser.add_argument("--synthetic", type=int, default=200, help="classifier study: synthetic volumes M")
    parser.add_argument("--test", type=int, default=300, help="classifier study: held-out real test volumes")
    parser.add_argument("--epochs", type=int, default=30, help="classifier study: training epochs")
    parser.add_argument("--out", default=str(RESULTS / "ccella.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise SystemExit(f"--stages: unknown {unknown or stages}; expected some of {list(STAGES)}")
    if args.n < 2:
        raise SystemExit(f"--n must be >= 2, got {args.n}")
    root = Path(args.bundle_dir)
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {}
    command = "python benchmarks/ccella.py " + " ".join(argv if argv is not None else sys.argv[1:])
    if "class" in stages:
        results["class_from_report"] = {**class_from_report(root, args.n), "command": command.strip()}
        print(json.dumps(results["class_from_report"]["reports"]), flush=True)
    if "ablation" in stages:
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        if not arms or any(a not in ARMS for a in arms):
            raise SystemExit(f"--arms: expected some of {list(ARMS)}, got {arms}")
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        results["ablation"] = {
            "arms": ablation(root, arms, seeds, args.iterations, args.n, Path(args.work), Path(args.data)),
            "command": command.strip(),
        }
    if "classifier" in stages:
        sizes = [int(v) for v in args.real_sizes.split(",") if v.strip()]
        seeds = [int(v) for v in args.seeds.split(",") if v.strip()]
        results["classifier"] = {
            **classifier_study(
                root,
                Path(args.data),
                sizes,
                args.synthetic,
                seeds,
                args.test,
                args.epochs,
                Path(args.work) / "classifier",
            ),
            "command": command.strip(),
        }
    results["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
