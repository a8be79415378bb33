"""Why deterministic sampling diverges: per-step statistics of the shipped bundles' reverse process.

For every bundle (its shipped weights and sampler, as ``configs/inference.json`` builds them), for
deterministic (DDIM ``eta`` 0) and stochastic (``eta`` 1) sampling of the same requests and seeds, per step:

* ``x_std``: the latent's standard deviation before the step (the real scaled latents' is ``real_latent_std``);
* ``x0_std``: the standard deviation of the predicted clean latent
  ``x0 = (x - sqrt(1 - a_t) eps) / sqrt(a_t)`` (``a_t``: the scheduler's cumulative alpha);
* ``eps_rms``: the root mean square of the guided noise prediction (1 for a perfect prediction of unit noise),
  and ``eps_rms_conditional`` / ``eps_rms_unconditional`` of the two halves before guidance;

and, on real training-distribution latents (phantoms of the training seed through the bundle's autoencoder,
conditioned as at training: class, and for description bundles the oracle description), the denoising loss
per timestep ``mean((eps_pred - eps)^2)`` and the noise prediction's RMS, conditional and unconditional.
The real latents' per-channel standard deviations are recorded too (the latents are scaled by one factor).

    python benchmarks/sampling_diagnostics.py            # all bundles -> benchmarks/results/sampling_diagnostics.json
                                                         #   + .png

About 2 minutes per bundle on 2 CPU cores.
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
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medgen_monai.engines import inference_parser  # noqa: E402
from medgen_monai.engines.latents import normalise_latents  # noqa: E402
from medgen_monai.io.atomic import atomic_path, atomic_write_text  # noqa: E402
from medgen_monai.metrics.audit import parse_unit  # noqa: E402
from medgen_monai.metrics.preprocess import preprocess_images  # noqa: E402
from medgen_monai.phantoms import get_phantom  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: timesteps at which the denoising loss is measured on real latents.
LOSS_TIMESTEPS = (1, 20, 50, 100, 200, 300, 400, 500, 600, 700, 800, 900, 950, 999)
#: real phantoms per bundle (training dataset seed 0: the distribution the bundle was trained on).
N_REAL = 64
TRAINING_SEED = 0


def _rms(x: torch.Tensor) -> float:
    return float(x.float().pow(2).mean().sqrt())


def _alpha_bar(scheduler: Any, t: torch.Tensor | int) -> float | None:
    """``alpha_bar`` of a DDPM/DDIM schedule at ``t`` (rectified flow has none)."""
    alphas = getattr(scheduler, "alphas_cumprod", None)
    return None if alphas is None else float(alphas[int(t)])


def sampling_trace(evaluator: Any, requests: Sequence[Mapping[str, Any]], eta: float) -> dict[str, list[float]]:
    """Per-step statistics of one sampling run of ``requests`` at ``eta`` (the sampler's other settings as shipped)."""
    inferer = evaluator.inferer
    sampler, network, conditioner = inferer.sampler, evaluator.network.eval(), inferer.conditioner
    sampler.eta = float(eta)
    condition, null_condition = conditioner(requests)
    trace: dict[str, list[float]] = {
        k: []
        for k in ("t", "x_std", "x0_std", "eps_rms", "eps_rms_conditional", "eps_rms_unconditional", "x_final_std")
    }
    halves: list[tuple[torch.Tensor, torch.Tensor]] = []

    def split_network(x: torch.Tensor, timesteps: torch.Tensor, **inputs: Any) -> torch.Tensor:
        out = network(x, timesteps=timesteps, **inputs)
        if sampler.guidance_scale != 1.0:
            halves.append(out.chunk(2))
        return out

    def record(step: Mapping[str, Any]) -> None:
        t = int(step["t"])
        trace["t"].append(t)
        trace["x_std"].append(float(step["x"].std()))
        trace["x0_std"].append(float(sampler.schedule.predicted_x0(step["output"], step["t"], step["x"]).std()))
        trace["eps_rms"].append(_rms(step["output"]))
        if halves:
            conditional, unconditional = halves.pop()
            trace["eps_rms_conditional"].append(_rms(conditional))
            trace["eps_rms_unconditional"].append(_rms(unconditional))

    with torch.inference_mode():
        latents = sampler.denoise(
            split_network,
            inferer.latent_shape,
            [int(r["seed"]) for r in requests],
            condition,
            null_condition,
            callback=record,
        )
    trace["x_final_std"] = [float(latents.std())]
    trace["x_final_channel_std"] = [float(s) for s in latents.transpose(0, 1).flatten(1).std(dim=1)]
    return trace


def real_conditions(facts: Mapping[str, Any], samples: Sequence[Any]) -> list[dict[str, Any]]:
    """Requests that condition like training: the real class and, for description bundles, the oracle description."""
    from medgen_monai.describe import get_task
    from medgen_monai.describe.backends import OracleDescriber

    requests = []
    task = get_task(facts["kind"]) if facts["descriptions"] else None
    for i, sample in enumerate(samples):
        record = {"id": f"diag_{i}", "attributes": dict(sample.attributes), "label_name": sample.label}
        category = task.category(record) if task is not None else sample.label
        request = {"id": record["id"], "seed": i, "category": category}
        if task is not None:
            request["description"] = json.loads(OracleDescriber(task).describe([None], [record])[0])["description"]
        requests.append(request)
    return requests


@torch.inference_mode()
def denoising_loss(evaluator: Any, facts: Mapping[str, Any]) -> dict[str, Any]:
    """The denoising loss per timestep on real latents, conditional and unconditional, and the latents' statistics."""
    phantom = get_phantom(facts["kind"])
    samples = list(phantom.generate_many(N_REAL, seed=TRAINING_SEED))
    inferer = evaluator.inferer
    sampler, network, conditioner = inferer.sampler, evaluator.network.eval(), inferer.conditioner
    autoencoder = sampler.autoencoder.eval()
    images = preprocess_images([s.images[facts["view"]] for s in samples], 2, phantom.channels)
    z_mu, _ = autoencoder.encode(images)
    latents = normalise_latents(z_mu, sampler.scale_factor, sampler.latent_shift)
    condition, null_condition = conditioner(real_conditions(facts, samples))
    generator = torch.Generator().manual_seed(0)
    rows = []
    for t in LOSS_TIMESTEPS:
        noise = torch.randn(latents.shape, generator=generator)
        timesteps = torch.full((latents.shape[0],), t, dtype=torch.long)
        noisy = sampler.schedule.add_noise(latents, noise, timesteps)
        target = sampler.schedule.training_target(latents, noise, timesteps)
        row: dict[str, float] = {"t": t}
        for name, inputs in (("conditional", condition), ("unconditional", null_condition)):
            prediction = network(noisy, timesteps=timesteps, **inputs)
            row[f"loss_{name}"] = float((prediction - target).pow(2).mean())
            row[f"eps_rms_{name}"] = _rms(prediction)
        rows.append(row)
    return {
        "per_timestep": rows,
        "real_latent_std": float(latents.std()),
        "alpha_bar_999": _alpha_bar(sampler.scheduler, 999),
        "real_latent_channel_std": [float(s) for s in latents.transpose(0, 1).flatten(1).std(dim=1)],
        "scale_factor": sampler.scale_factor,
        "latent_shift": sampler.latent_shift,
    }


def bundle_facts(root: Path) -> dict[str, Any]:
    evaluate = json.loads((root / "configs" / "evaluate.json").read_text(encoding="utf-8"))
    kind, view = parse_unit(evaluate["audit_unit"])
    return {"name": root.name, "kind": kind, "view": view, "descriptions": (root / "bank").is_dir()}


def diagnose(root: Path, n_per_class: int, etas: Sequence[float]) -> dict[str, Any]:
    facts = bundle_facts(root)
    evaluator = inference_parser(root, n=n_per_class, seed=0, progress=False).get_parsed_content("evaluator")
    requests, sampler = list(evaluator.dataset), evaluator.inferer.sampler
    report: dict[str, Any] = {
        "kind": facts["kind"],
        "n": len(requests),
        "steps": sampler.num_inference_steps,
        "guidance_scale": sampler.guidance_scale,
        "sampler": sampler.name,
        "prediction_type": sampler.scheduler.prediction_type,
        "sampling": {},
    }
    # eta is DDIM's; a deterministic sampler (rectified flow's Euler steps) is traced once
    for eta in etas if sampler.schedule.stochastic(1.0) else etas[:1]:
        report["sampling"][f"eta{eta:g}"] = sampling_trace(evaluator, requests, eta)
        print(
            f"{facts['name']} eta {eta:g}: final latent std {report['sampling'][f'eta{eta:g}']['x_final_std'][0]:.2f}",
            flush=True,
        )
    report.update(denoising_loss(evaluator, facts))
    return report


def plot(results: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bundles = list(results["bundles"])
    fig, axes = plt.subplots(len(bundles), 4, figsize=(15, 3 * len(bundles)), squeeze=False)
    for row, name in enumerate(bundles):
        r = results["bundles"][name]
        for setting, trace in r["sampling"].items():
            steps = np.arange(len(trace["t"]))
            axes[row, 0].plot(steps, trace["x_std"], label=setting)
            axes[row, 1].plot(steps, trace["x0_std"], label=setting)
            axes[row, 2].plot(steps, trace["eps_rms"], label=f"{setting} guided")
            if trace["eps_rms_conditional"]:
                axes[row, 2].plot(steps, trace["eps_rms_conditional"], linestyle=":", label=f"{setting} conditional")
        for ax in axes[row, :2]:
            ax.axhline(r["real_latent_std"], color="k", linewidth=0.8, linestyle="--", label="real latents")
        axes[row, 2].axhline(1.0, color="k", linewidth=0.8, linestyle="--")
        ts = [x["t"] for x in r["per_timestep"]]
        axes[row, 3].plot(ts, [x["loss_conditional"] for x in r["per_timestep"]], marker="o", label="loss, conditional")
        axes[row, 3].plot(
            ts, [x["loss_unconditional"] for x in r["per_timestep"]], marker="x", label="loss, unconditional"
        )
        axes[row, 3].plot(
            ts, [x["eps_rms_conditional"] for x in r["per_timestep"]], linestyle=":", label="eps RMS, conditional"
        )
        axes[row, 0].set_ylabel(name, fontsize=8)
        titles = (
            "latent std per step",
            "predicted clean latent std",
            "noise prediction RMS (sampling)",
            "real latents: loss and eps RMS per timestep",
        )
        for ax, title in zip(axes[row], titles):
            ax.set_title(title, fontsize=8)
            ax.legend(fontsize=6)
    axes[-1, 0].set_xlabel("sampling step")
    axes[-1, 3].set_xlabel("timestep")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default="all")
    parser.add_argument("--n_per_class", type=int, default=2)
    parser.add_argument("--etas", default="0,1")
    parser.add_argument("--out", default=str(RESULTS / "sampling_diagnostics.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    roots = sorted(p.parents[1] for p in (ROOT / "bundles").glob("*/configs/evaluate.json"))
    if args.bundles != "all":
        wanted = {b.strip() for b in args.bundles.split(",")}
        roots = [r for r in roots if r.name in wanted]
    etas = [float(e) for e in args.etas.split(",")]
    results: dict[str, Any] = {
        "command": "python benchmarks/sampling_diagnostics.py " + " ".join(argv or sys.argv[1:]),
        "bundles": {},
    }
    for root in roots:
        results["bundles"][root.name] = diagnose(root, args.n_per_class, etas)
    out = Path(args.out)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    plot(results, out.with_suffix(".png"))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
