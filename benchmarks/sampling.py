"""Sampling speed and quality of the shared engine, measured in one run on the baseline bundle (ldm_label_derm).

Writes benchmarks/results/sampling.json and benchmarks/results/sampling.png.

    python benchmarks/sampling.py [--per_class 10] [--dataset_dir data/derm] [--quick]

Measured, all in this process, on the bundle's shipped weights:

- per sampler setting (our DiffusionSampler with DDIM at several step counts, deterministic (eta 0) and
  stochastic (eta 1), DDPM 1000 steps, and the
  MONAI baseline ``LatentDiffusionInferer.sample`` with DDPM 1000 steps, the schedule CCELLA samples
  with): seconds per image, class accuracy (the audit network reads back the requested class: the
  label-only bundle's "attribute accuracy"), attribute distance to the real data (per-class attribute
  mix, see medgen_monai.metrics.evaluation) and FID in audit features against the real test split;
- ``speedup_vs_ddpm1000``: the fastest of our settings whose class accuracy is within 2 points of the
  MONAI DDPM-1000 baseline, as a time ratio (target >= 20);
- ``overhead_ratio``: our sampler's wall time / (steps x one U-Net forward at the same batch), at 50
  DDIM steps with guidance (one forward of batch 2B per step) (target <= 1.10);
- ``training_throughput_ratio``: LatentDiffusionTrainer iterations/s over a plain PyTorch loop doing the
  same work on the same model and data (1.0 = no overhead);
- peak resident memory of 3D latent sampling at 64x64x32 and 128x128x64 with a small 3D model (each in a
  fresh subprocess, so the peaks do not mix).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

ROOT = Path(__file__).resolve().parents[1]
BUNDLE = ROOT / "bundles" / "ldm_label_derm"  # --bundle overrides it (a retrained copy)
RESULTS = Path(__file__).parent / "results"


def load_bundle() -> dict:
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLE / "configs" / "inference.json"))
    parser["bundle_root"] = str(BUNDLE)
    parser["progress"] = False
    parser.get_parsed_content("load_autoencoder")
    return {
        "network": parser.get_parsed_content("network").eval(),
        "autoencoder": parser.get_parsed_content("autoencoder").eval(),
        "scale_factor": float(parser.get_parsed_content("diffusion_extra")["scale_factor"]),
        "classes": parser.get_parsed_content("classes"),
        "latent_shape": tuple(parser.get_parsed_content("latent_shape")),
        "scheduler_config": dict(parser.get("noise_scheduler")),
        "guidance_scale": float(parser.get_parsed_content("guidance_scale")),
    }


def scheduler(kind: str, config: dict):
    from monai.networks.schedulers import DDIMScheduler, DDPMScheduler

    arguments = {k: v for k, v in config.items() if not k.startswith("_")}
    return {"ddim": DDIMScheduler, "ddpm": DDPMScheduler}[kind](**arguments)


class LabelsAsContext(nn.Module):
    """Lets MONAI's inferer drive our class-conditioned U-Net: its ``conditioning`` tensor carries the class
    index, and its classifier-free-guidance fill value (-1) becomes the null class."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, x, timesteps, context=None):
        labels = context.flatten(1)[:, 0].round().long()
        labels = torch.where(labels < 0, torch.full_like(labels, self.network.null_class), labels)
        return self.network(x, timesteps, class_labels=labels)


def quality(images: torch.Tensor, categories: list[str], reference: dict, unit: str = "derm_image") -> dict:
    from medgen_monai.metrics import attribute_accuracy, fid
    from medgen_monai.metrics.evaluation import attribute_distance

    audit = reference["audit"]
    scored = attribute_accuracy(images, [{} for _ in categories], labels=categories, audit=audit)
    from medgen_monai.metrics.evaluation import predicted_or_invalid

    predicted = predicted_or_invalid(audit, images)  # an invalid image's attributes are "invalid"
    names = [h for h in audit.spec.head_names if h != "label"]
    return {
        "valid_fraction": scored["valid_fraction"],  # an image the audit rejects counts as a wrong class
        "class_accuracy": scored["per_attribute"]["label"],
        "attribute_distance": attribute_distance({a: predicted[a] for a in names}, {a: reference["predicted"][a] for a in names},
                                                 categories, reference["classes"])["mean"],
        "fid": fid(reference["images"], images, extractor=reference["extractor"]),
    }


def run_setting(name: str, sample, categories: list[str], reference: dict, batch: int) -> dict:
    """``sample(seeds, labels) -> images``; timed over every batch."""
    from medgen_monai.engines.generation import ClassConditioner

    conditioner = ClassConditioner(reference["class_names"])
    outputs, seconds = [], 0.0
    for start in range(0, len(categories), batch):
        chunk = categories[start : start + batch]
        labels = torch.tensor([conditioner.index(c) for c in chunk])
        t0 = time.perf_counter()
        outputs.append(sample(list(range(start, start + len(chunk))), labels))
        seconds += time.perf_counter() - t0
    images = torch.cat(outputs).clamp(0, 1)
    result = {"setting": name, "seconds_per_image": seconds / len(categories), "n": len(categories), **quality(images, categories, reference)}
    print(json.dumps(result), flush=True)
    return result


def sampling_table(bundle: dict, reference: dict, per_class: int, steps: list[int], eta_steps: list[int], batch: int,
                   ddpm: bool) -> list[dict]:
    from monai.inferers import LatentDiffusionInferer

    from medgen_monai.engines import DiffusionSampler

    categories = [c for c in bundle["classes"] for _ in range(per_class)]
    network, autoencoder = bundle["network"], bundle["autoencoder"]
    guidance = bundle["guidance_scale"]
    null = network.null_class
    rows = []

    def ours(kind: str, n_steps: int, eta: float = 0.0):
        sampler = DiffusionSampler(scheduler(kind, bundle["scheduler_config"]), n_steps, guidance, autoencoder,
                                   bundle["scale_factor"], eta=eta, progress=False)
        return lambda seeds, labels: sampler(network, bundle["latent_shape"], seeds, {"class_labels": labels},
                                             {"class_labels": torch.full_like(labels, null)})

    for n_steps in steps:
        rows.append(run_setting(f"ours_ddim_{n_steps}", ours("ddim", n_steps), categories, reference, batch) | {"sampler": "ddim", "steps": n_steps, "implementation": "medgen_monai"})
    for n_steps in eta_steps:  # stochastic DDIM (eta = 1): DDPM-like noise at each step, on a short schedule
        rows.append(run_setting(f"ours_ddim_eta1_{n_steps}", ours("ddim", n_steps, eta=1.0), categories, reference, batch) | {"sampler": "ddim_eta1", "steps": n_steps, "implementation": "medgen_monai"})
    if ddpm:
        rows.append(run_setting("ours_ddpm_1000", ours("ddpm", 1000), categories, reference, batch) | {"sampler": "ddpm", "steps": 1000, "implementation": "medgen_monai"})
        monai_scheduler = scheduler("ddpm", bundle["scheduler_config"])
        monai_scheduler.set_timesteps(1000)
        inferer = LatentDiffusionInferer(monai_scheduler, scale_factor=bundle["scale_factor"])
        wrapped = LabelsAsContext(network)

        @torch.inference_mode()
        def monai_baseline(seeds, labels):
            torch.manual_seed(seeds[0])
            noise = torch.randn(len(seeds), *bundle["latent_shape"])
            return inferer.sample(noise, autoencoder, wrapped, conditioning=labels.float().view(-1, 1, 1),
                                  verbose=False, cfg=guidance, cfg_fill_value=-1.0)

        rows.append(run_setting("monai_ddpm_1000", monai_baseline, categories, reference, batch) | {"sampler": "ddpm", "steps": 1000, "implementation": "monai LatentDiffusionInferer.sample"})
    return rows


def overhead(bundle: dict, batch: int, steps: int = 50, repeats: int = 3) -> dict:
    from medgen_monai.engines import DiffusionSampler

    network = bundle["network"]
    sampler = DiffusionSampler(scheduler("ddim", bundle["scheduler_config"]), steps, bundle["guidance_scale"],
                               bundle["autoencoder"], bundle["scale_factor"], progress=False)
    labels = torch.arange(batch) % len(bundle["classes"])
    null = torch.full_like(labels, network.null_class)
    x = torch.randn(2 * batch, *bundle["latent_shape"])
    t = torch.full((2 * batch,), 500)
    both = torch.cat([labels, null])
    with torch.inference_mode():
        for _ in range(3):
            network(x, t, class_labels=both)
        forwards = []
        for _ in range(20):
            t0 = time.perf_counter()
            network(x, t, class_labels=both)
            forwards.append(time.perf_counter() - t0)
    walls = []
    for r in range(repeats):
        t0 = time.perf_counter()
        sampler(network, bundle["latent_shape"], list(range(batch)), {"class_labels": labels}, {"class_labels": null})
        walls.append(time.perf_counter() - t0)
    forward = float(np.median(forwards))
    return {"batch": batch, "steps": steps, "forward_seconds_median": forward, "sampler_seconds": min(walls),
            "overhead_ratio": min(walls) / (steps * forward), "note": "sampler wall time includes initial noise and the autoencoder decode"}


def training_throughput(dataset_dir: Path, iterations: int = 30, batch: int = 32) -> dict:
    """Trainer vs a plain loop: same U-Net (fresh copies of one init), same latents, same optimiser."""
    import torch.nn.functional as F
    from monai.bundle import ConfigParser

    from medgen_monai.engines import IndexedBatches, LatentDiffusionTrainer

    parser = ConfigParser()
    parser.read_config([str(BUNDLE / "configs" / n) for n in ("inference.json", "train_common.json", "train_diffusion.json")])
    parser.update({"bundle_root": str(BUNDLE), "progress": False, "dataset_dir": str(dataset_dir)})
    parser.get_parsed_content("load_autoencoder")
    dataset = parser.get_parsed_content("dataset")
    autoencoder = parser.get_parsed_content("autoencoder").eval()
    template = parser.get_parsed_content("network_def", instantiate=True)
    ddpm = parser.get_parsed_content("train_scheduler")

    def trainer_run() -> float:
        network = copy.deepcopy(template)
        optimizer = torch.optim.AdamW(network.parameters(), 2e-4)
        with tempfile.TemporaryDirectory() as tmp:
            trainer = LatentDiffusionTrainer(network, optimizer, IndexedBatches(dataset, batch, seed=0), ddpm, autoencoder=autoencoder,
                                             conditions={"label": "class_labels"}, condition_dropout=0.15, max_iterations=iterations,
                                             output_dir=tmp, checkpoint_every=10**9, progress=False, tensorboard=False, ema_decay=0.999)
            t0 = time.perf_counter()
            trainer.run_training(resume=False)
            return iterations / (time.perf_counter() - t0)

    def plain_run() -> float:
        network = copy.deepcopy(template)
        optimizer = torch.optim.AdamW(network.parameters(), 2e-4)
        loader = torch.utils.data.DataLoader(dataset, batch_size=batch, shuffle=True, drop_last=True)
        scale = None
        t0 = time.perf_counter()
        done = 0
        while done < iterations:
            for item in loader:
                with torch.no_grad():
                    z = autoencoder.encode(item["image"].float())[0]
                scale = scale or 1.0 / float(z.std())
                z = z * scale
                noise = torch.randn_like(z)
                t = torch.randint(0, 1000, (z.shape[0],))
                labels = item["label"].long()
                labels = torch.where(torch.rand(z.shape[0]) < 0.15, torch.full_like(labels, network.null_class), labels)
                loss = F.mse_loss(network(ddpm.add_noise(z, noise, t), t, class_labels=labels), noise)
                optimizer.zero_grad()
                loss.backward()
                torch.nn.utils.clip_grad_norm_(network.parameters(), 1.0)
                optimizer.step()
                done += 1
                if done == iterations:
                    break
        return iterations / (time.perf_counter() - t0)

    plain_run(), trainer_run()  # warm-up both paths
    plain = [plain_run() for _ in range(2)]
    ours = [trainer_run() for _ in range(2)]
    return {"iterations": iterations, "batch": batch, "plain_iterations_per_s": max(plain), "trainer_iterations_per_s": max(ours),
            "training_throughput_ratio": max(ours) / max(plain),
            "note": "the trainer also updates an EMA copy every iteration; the plain loop does not"}


MEMORY_CHILD = r"""
import resource, sys, torch
from monai.networks.nets import AutoencoderKL
from medgen_monai.engines import DiffusionSampler
from medgen_monai.nets import ConditionedDiffusionUNet
from monai.networks.schedulers import DDIMScheduler
size = tuple(int(s) for s in sys.argv[1].split(","))
torch.manual_seed(0)
ae = AutoencoderKL(spatial_dims=3, in_channels=1, out_channels=1, channels=(16, 32, 64), latent_channels=4, num_res_blocks=1,
                   attention_levels=(False, False, False), norm_num_groups=8, with_encoder_nonlocal_attn=False,
                   with_decoder_nonlocal_attn=False).eval()
unet = ConditionedDiffusionUNet(num_classes=2, spatial_dims=3, in_channels=4, out_channels=4, channels=(32, 64, 64),
                                attention_levels=(False, False, True), num_res_blocks=1, num_head_channels=32, norm_num_groups=16).eval()
latent = (4,) + tuple(s // 4 for s in size)
roi = None if size[0] <= 64 else tuple(s // 2 for s in latent[1:])
sampler = DiffusionSampler(DDIMScheduler(num_train_timesteps=1000), 5, 2.0, ae, 1.0, decode_roi_size=roi, progress=False)
def kib(field):  # VmHWM / VmRSS of this process image (ru_maxrss would include the parent's pages at fork)
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith(field + ":"))
base = kib("VmHWM")
out = sampler(unet, latent, [0], {"class_labels": torch.tensor([1])}, {"class_labels": torch.tensor([2])})
assert tuple(out.shape[2:]) == size, out.shape
print(base, kib("VmHWM"), "whole" if roi is None else "x".join(map(str, roi)))
"""


def memory_3d() -> list[dict]:
    rows = []
    for size in ("64,64,32", "128,128,64"):
        run = subprocess.run([sys.executable, "-c", MEMORY_CHILD, size], capture_output=True, text=True, cwd=ROOT)
        if run.returncode:
            raise RuntimeError(run.stderr)
        before, peak, roi = run.stdout.split()[-3:]
        rows.append({"size": [int(s) for s in size.split(",")], "peak_rss_mib": int(peak) / 1024, "peak_rss_before_sampling_mib": int(before) / 1024,
                     "decode_roi_latent": roi, "model": "AutoencoderKL (16,32,64) + ConditionedDiffusionUNet (32,64,64), 5 DDIM steps, batch 1"})
        print(json.dumps(rows[-1]), flush=True)
    return rows


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = results["settings"]
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    for ax, metric in zip(axes, ("class_accuracy", "fid")):
        for implementation, marker in (("medgen_monai", "o"), ("monai LatentDiffusionInferer.sample", "s")):
            chosen = [r for r in rows if r["implementation"] == implementation]
            ax.scatter([r["seconds_per_image"] for r in chosen], [r[metric] for r in chosen], marker=marker,
                       label="ours (DiffusionSampler)" if implementation == "medgen_monai" else "MONAI inferer")
            for r in chosen:
                ax.annotate(f"{r['sampler']}-{r['steps']}", (r["seconds_per_image"], r[metric]), fontsize=7)
        ax.set_xscale("log")
        ax.set_xlabel("seconds per image (CPU)")
        ax.set_ylabel(metric)
    axes[0].axhline(results["reference"]["class_accuracy"], ls="--", c="grey", label="real phantoms (audit ceiling)")
    axes[0].legend(fontsize=7)
    fig.suptitle(f"ldm_label_derm sampling: speedup vs MONAI DDPM-1000 = {results['speedup_vs_ddpm1000']['ratio']:.1f}x")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main() -> None:
    global BUNDLE
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--per_class", type=int, default=10)
    parser.add_argument("--dataset_dir", default=str(ROOT / "data" / "derm"))
    parser.add_argument("--steps", default="5,10,20,50")
    parser.add_argument("--eta_steps", default="25,50,100", help="stochastic DDIM (eta 1) step counts")
    parser.add_argument("--batch", type=int, default=35)
    parser.add_argument("--bundle", default=str(BUNDLE), help="the bundle folder (default: the shipped ldm_label_derm)")
    parser.add_argument("--only_memory", action="store_true", help="re-measure only the 3D memory rows of sampling.json")
    parser.add_argument("--quick", action="store_true", help="smoke test: 1 image per class, no DDPM-1000, no 3D memory")
    args = parser.parse_args()
    BUNDLE = Path(args.bundle).resolve()

    if args.only_memory:
        path = RESULTS / "sampling.json"
        results = json.loads(path.read_text())
        results["memory_3d"] = memory_3d()
        path.write_text(json.dumps(results, indent=2) + "\n")
        print(f"updated memory_3d in {path}")
        return
    from medgen_monai.data import read_dataset, split_datalist
    from medgen_monai.metrics import feature_extractor, load_audit
    from medgen_monai.metrics.evaluation import load_images

    torch.manual_seed(0)
    bundle = load_bundle()
    records = split_datalist(read_dataset("isic", args.dataset_dir))["test"][:500]
    audit = load_audit("derm_image")
    images = load_images([r["image"] for r in records])
    classes = [bundle["classes"][r["label"]] for r in records]
    reference = {"audit": audit, "images": images, "classes": classes, "class_names": bundle["classes"],
                 "predicted": audit.predict(images), "extractor": feature_extractor(None, unit="derm_image")}
    reference_accuracy = quality(torch.stack([torch.from_numpy(i).permute(2, 0, 1).float() / 255 for i in images]), classes, reference)

    per_class = 1 if args.quick else args.per_class
    steps = [int(s) for s in args.steps.split(",")]
    eta_steps = [int(s) for s in args.eta_steps.split(",") if s]
    rows = sampling_table(bundle, reference, per_class, steps[:2] if args.quick else steps, eta_steps[:1] if args.quick else eta_steps,
                          args.batch, ddpm=not args.quick)
    results: dict = {
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "torch": torch.__version__, "python": sys.version.split()[0]},
        "bundle": "ldm_label_derm",
        "reference": {"n": len(images), **reference_accuracy, "note": "real test-split phantoms scored like generated images; fid here is real vs real (0)"},
        "settings": rows,
    }
    baseline = next((r for r in rows if r["setting"] == "monai_ddpm_1000"), None)
    if baseline is not None:
        ours = [r for r in rows if r["implementation"] == "medgen_monai" and r["class_accuracy"] >= baseline["class_accuracy"] - 0.02]
        fastest = min(ours, key=lambda r: r["seconds_per_image"]) if ours else None
        results["speedup_vs_ddpm1000"] = {
            "baseline": "monai_ddpm_1000", "setting": fastest and fastest["setting"],
            "ratio": baseline["seconds_per_image"] / fastest["seconds_per_image"] if fastest else None,
            "rule": "fastest of our settings with class accuracy >= baseline - 0.02", "target": 20.0}
    else:
        results["speedup_vs_ddpm1000"] = {"ratio": float("nan"), "note": "--quick: no DDPM-1000 baseline"}
    results["overhead"] = overhead(bundle, batch=8)
    if not args.quick:
        results["training"] = training_throughput(Path(args.dataset_dir))
        results["memory_3d"] = memory_3d()
    RESULTS.mkdir(exist_ok=True)
    name = "sampling_quick" if args.quick else "sampling"
    (RESULTS / f"{name}.json").write_text(json.dumps(results, indent=2) + "\n")
    plot(results, RESULTS / f"{name}.png")
    print(f"wrote {RESULTS / name}.json and .png; peak RSS of this process {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB")


if __name__ == "__main__":
    main()
