"""How strongly should the kNN projection pull a description? A sweep of ``projection_alpha`` on the ablation's weights.

The VAP ablation (benchmarks/vap_ablation.py) samples the ``description_prototype`` weights with the projection at one
alpha (0.5), where it lowered attribute accuracy. This script samples the same weights, with the same requests, seeds,
DDIM steps, reference images and audit network, at several alphas, so the bundles' default (``projection_alpha`` 0.0,
off) rests on a curve rather than on one point. It trains nothing: run the ablation first; every seed whose
``description_prototype`` weights exist under the ablation's work folder is swept.

    python benchmarks/vap_projection_sweep.py [--modalities derm,colon,cxr] [--alphas 0,0.1,0.25,0.5]

Writes benchmarks/results/vap_projection_sweep.json, shaped ``{"settings": {modality: ...}, "runs": {modality:
{alpha: {split: [{"seed": s, metric: x}]}}}, "summary": {modality: {alpha: {split: {metric: {"mean", "sd", "n"}}}}}}``,
and vap_projection_sweep.png; ``python docs/build_docs.py`` puts the table in docs/results.md. Alpha 0 is the
ablation's ``description_prototype`` condition and alpha 0.5 its ``description_prototype_projection`` condition: the
sweep reproduces their numbers exactly (a check that it measures the same thing), and records whether it did; so it
refuses ablation runs scored against other references than today's (``vap_ablation.REFERENCE_METHOD``). Each row
also carries ``fid_floor``, ``fid_ratio`` and ``kid``, scored as the ablation scores them (``vap_ablation.score``).
(seed, alpha) pairs already in the results with the same settings are not rerun.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import vap_ablation  # noqa: E402  (the sibling benchmark: its requests, generation and scoring are reused as they are)

RESULTS = vap_ablation.RESULTS
#: the ablation conditions whose numbers an alpha must reproduce
REPRODUCES = {0.0: "description_prototype"}


def alpha_key(alpha: float) -> str:
    return f"{alpha:g}"


def ablation_settings(runs_path: Path, modality: str) -> dict[str, Any]:
    if not runs_path.is_file():
        raise ValueError(f"{runs_path}: no ablation results; run `python benchmarks/vap_ablation.py` first")
    settings = json.loads(runs_path.read_text()).get("settings", {}).get(modality)
    if settings is None:
        raise ValueError(
            f"{runs_path}: no {modality} runs; run `python benchmarks/vap_ablation.py --modalities {modality}`"
        )
    return settings


def reproduced(
    runs_path: Path,
    modality: str,
    alpha: float,
    projection_alpha: float,
    seed: int,
    scores: Mapping[str, Mapping[str, float]],
) -> bool | None:
    """Whether ``scores`` equal the ablation's numbers for the condition sampled at this alpha (None: nothing to
    compare)."""
    condition = "description_prototype_projection" if alpha == projection_alpha else REPRODUCES.get(alpha)
    if condition is None:
        return None
    runs = json.loads(runs_path.read_text())["runs"][modality]["runs"][condition]
    ablation = {s: next((r for r in runs[s] if r["seed"] == seed), None) for s in vap_ablation.SPLITS}
    if any(v is None for v in ablation.values()):
        return None
    return all(
        np.isclose(scores[s][m], ablation[s][m], rtol=1e-6) for s in vap_ablation.SPLITS for m in vap_ablation.METRICS
    )


def sweep_modality(modality: str, args: argparse.Namespace, results: dict[str, Any]) -> None:
    settings = ablation_settings(Path(args.ablation_runs), modality)
    if settings.get("reference") != vap_ablation.REFERENCE_METHOD:  # prepare() draws today's references
        raise ValueError(
            f"{args.ablation_runs}: the {modality} ablation runs were scored against other references "
            f"({settings.get('reference')!r}, not {vap_ablation.REFERENCE_METHOD!r}); the sweep could not "
            "reproduce them: re-run `python benchmarks/vap_ablation.py` first"
        )
    if results["settings"].get(modality) not in (None, settings):
        results["runs"].pop(modality, None)  # measured against other ablation settings: not comparable, redo
    results["settings"][modality] = settings
    prepared = vap_ablation.prepare(
        modality, argparse.Namespace(work_dir=args.work_dir, data_root=args.data_root, **settings)
    )
    runs = results["runs"].setdefault(modality, {})
    seeds = sorted(
        int(p.parent.name.removeprefix("seed"))
        for p in (prepared.work / "description_prototype").glob("seed*/diffusion.pt")
    )
    if not seeds:
        raise ValueError(f"{prepared.work / 'description_prototype'}: no trained weights; run the ablation first")
    for alpha in args.alphas:
        cell = runs.setdefault(alpha_key(alpha), {s: [] for s in vap_ablation.SPLITS})
        for seed in seeds:
            if any(r["seed"] == seed for r in cell[vap_ablation.SPLITS[0]]):
                continue
            weights = prepared.work / "description_prototype" / f"seed{seed}" / "diffusion.pt"
            scores = {}
            for split in vap_ablation.SPLITS:
                out_dir = prepared.work / "projection_sweep" / f"alpha{alpha_key(alpha)}" / f"seed{seed}" / split
                vap_ablation.generate(
                    modality,
                    "description_prototype_projection",
                    weights,
                    prepared.requests[split],
                    out_dir,
                    prepared.bank_dir,
                    settings["steps"],
                    {"alpha": alpha, "k": settings["projection_k"]},
                )
                scores[split] = vap_ablation.score(
                    modality,
                    prepared.requests[split],
                    out_dir,
                    prepared.reference[split],
                    prepared.audit,
                    prepared.extractor,
                )
            same = reproduced(Path(args.ablation_runs), modality, alpha, settings["projection_alpha"], seed, scores)
            for split in vap_ablation.SPLITS:
                cell[split].append({"seed": seed, **scores[split], "reproduces_ablation": same})
                cell[split].sort(key=lambda r: r["seed"])
            print(
                f"{modality} alpha {alpha:g} seed {seed}: {json.dumps(scores)} reproduces ablation: {same}", flush=True
            )
            write(Path(args.out), results)  # each point lands as soon as it is scored


def summarise(runs: Mapping[str, Any]) -> dict[str, Any]:
    return {
        m: {
            a: {
                s: {
                    metric: {
                        "mean": float(np.mean([r[metric] for r in rows])),
                        "sd": float(np.std([r[metric] for r in rows], ddof=1)) if len(rows) > 1 else 0.0,
                        "n": len(rows),
                    }
                    for metric in vap_ablation.METRICS
                }
                for s, rows in cell.items()
                if rows
            }
            for a, cell in sorted(alphas.items(), key=lambda kv: float(kv[0]))
        }
        for m, alphas in runs.items()
    }


def write(out: Path, results: dict[str, Any]) -> None:
    from medgen_monai.io.atomic import atomic_write_text

    results["summary"] = summarise(results["runs"])
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    plot(results["summary"], out.with_suffix(".png"))


def plot(summary: Mapping[str, Any], path: Path) -> None:
    modalities = [m for m in summary if summary[m]]
    if not modalities:
        return
    fig, axes = vap_ablation.metric_grid(len(modalities))
    for row, modality in enumerate(modalities):
        alphas = list(summary[modality])
        for col, metric in enumerate(vap_ablation.METRICS):
            ax = axes[row][col]
            for split in vap_ablation.SPLITS:
                points = [
                    (float(a), summary[modality][a][split][metric]) for a in alphas if split in summary[modality][a]
                ]
                ax.errorbar(
                    [p[0] for p in points],
                    [p[1]["mean"] for p in points],
                    yerr=[p[1]["sd"] for p in points],
                    marker="o",
                    capsize=2,
                    label=split,
                )
            ax.set_xlabel("projection_alpha")
            ax.set_title(f"{modality}: {metric}")
    vap_ablation.save_grid(fig, axes, path)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--modalities", default="derm,colon,cxr")
    parser.add_argument("--alphas", default="0,0.1,0.25,0.5", help="projection weights to sample at, each in [0, 1]")
    parser.add_argument(
        "--ablation_runs",
        default=str(RESULTS / "vap_ablation_runs.json"),
        help="the ablation's runs file: its settings (steps, k, requests) are the sweep's",
    )
    parser.add_argument(
        "--work_dir",
        default=str(vap_ablation.ROOT / "runs" / "vap_ablation"),
        help="the ablation's work folder (its weights, test data and banks)",
    )
    parser.add_argument(
        "--data_root", default=str(vap_ablation.ROOT / "data"), help="the ablation's training data root"
    )
    parser.add_argument("--out", default=str(RESULTS / "vap_projection_sweep.json"))
    args = parser.parse_args(argv)
    args.alphas = [float(a) for a in str(args.alphas).split(",")]
    bad = [a for a in args.alphas if not 0.0 <= a <= 1.0]
    if bad:
        raise ValueError(f"--alphas: each must be in [0, 1], got {bad}")
    modalities = args.modalities.split(",")
    unknown = [m for m in modalities if m not in vap_ablation.MODALITIES]
    if unknown:
        raise ValueError(f"--modalities: unknown {unknown}; expected some of {list(vap_ablation.MODALITIES)}")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"settings": {}, "runs": {}}
    for modality in modalities:
        if not (Path(args.work_dir) / modality / "description_prototype").is_dir():
            print(f"{modality}: no ablation weights under {args.work_dir}; skipped", flush=True)
            continue
        sweep_modality(modality, args, results)
    print(json.dumps(results.get("summary", {}), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
