"""What a user should expect from every bundle today: quality at each sampler setting, against its ceilings.

For every bundle under ``bundles/``, with its shipped weights, at its shipped default sampler setting and at
the alternatives it supports (deterministic and stochastic DDIM, 50 and 25 steps), ``--n`` images (default
500) are generated through the bundle's own ``configs/inference.json`` (the same objects ``python -m
monai.bundle run`` builds; only ``n``, ``seed``, ``output_dir``, the step count and ``sampler#eta`` are
overridden), stratified by class, and scored by the bundle's audit network:

* ``valid_fraction``: images the audit's validity output accepts as images of the kind;
* ``attribute_accuracy``: requested attributes read back, an invalid image wrong on every attribute;
  ``attribute_accuracy_valid``: the same over the valid images. A description bundle's request asks for
  the attributes of the bank description it drew; a class-only bundle's request is scored against the
  attributes of a fresh phantom of the class (the class attribute mix), which it cannot know;
* ``ceiling``: fresh phantoms drawn with exactly the requested class and attributes, scored the same way;
  ``label_only``: real images of the requested class (a perfect label-only generator);
  ``autoencoder_ceiling``: the ceiling images through the bundle's autoencoder (what its latent space keeps);
  ``gap_recovered = (generated - label_only) / (ceiling - label_only)``;
* ``fid`` against a random reference of real phantoms stratified to the requests' classes, of the generated
  set's size, in the audit network's feature space; ``fid_floor``: real vs real at that size (10 random
  disjoint pairs, stratified the same way), ``fid_ratio = fid / fid_floor.mean``; ``kid`` with its 95% interval;
* ``diversity``: ``1 - mean pairwise MS-SSIM`` within class; ``diversity_real``: the same on the reference;
* ``class_accuracy``: the requested class read back (an invalid image wrong); ``class_accuracy_ceiling``: the
  same on real images of the class (the phantoms' classes overlap in appearance, so it is below 1 for derm).

Real images are phantoms of the ``quality`` seeds (medgen_monai.phantoms.seeds.QUALITY_SEEDS), which no
bundle trains on and no audit network saw. Generated images are kept under ``--work`` (default
runs/quality/<bundle>/<setting>/), so an interrupted run resumes where it stopped; scores are recomputed.

The same scoring is also applied, per bundle, to stand-ins whose answer is known (``checks``): fresh phantoms
with exactly the requested attributes (a perfect generator: valid, accuracy at the ceiling, FID at its floor),
real images of the wrong class, Gaussian noise and blanks (all invalid, accuracy 0).

Writes ``benchmarks/results/quality.json`` and ``docs/images/quality_<bundle>.png`` (per class: real
images, then the shipped default's, then the same requests with the other kind of sampling, deterministic or
stochastic, at the default's steps), then ``python docs/build_docs.py``
turns the JSON into docs/quality.md.

    python benchmarks/quality.py                                # every bundle, every setting, n=500
    python benchmarks/quality.py --bundles vap_diffusion_cxr --settings default --n 100   # a quick look

Cost on 2 CPU cores: about 0.5 s per image at 50 steps with guidance (one thread), so about 12 minutes of
generation per bundle for the four settings, plus about 2 minutes of scoring.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medgen_monai.describe import DescriptionBank  # noqa: E402
from medgen_monai.engines import inference_parser, report_requests, schedule_for, shipped_bundles  # noqa: E402
from medgen_monai.io.atomic import atomic_path, atomic_write_text  # noqa: E402
from medgen_monai.io.writers import safe_id  # noqa: E402
from medgen_monai.metrics import attribute_accuracy, diversity, feature_extractor, load_audit  # noqa: E402
from medgen_monai.metrics.audit import parse_unit  # noqa: E402
from medgen_monai.metrics.evaluation import load_images  # noqa: E402
from medgen_monai.metrics.fid import fid_from_features  # noqa: E402
from medgen_monai.metrics.negatives import bundle_autoencoders  # noqa: E402
from medgen_monai.metrics.reference import fid_floor, kid  # noqa: E402
from medgen_monai.phantoms import get_phantom  # noqa: E402
from medgen_monai.phantoms.seeds import QUALITY_SEEDS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
IMAGES = ROOT / "docs" / "images"
#: sampler settings per scheduler kind: name -> (steps, eta). The bundle's default is added when missing.
SETTINGS: dict[str, dict[str, tuple[int, float]]] = {
    "ddim": {"ddim50_eta0": (50, 0.0), "ddim50_eta1": (50, 1.0), "ddim25_eta0": (25, 0.0), "ddim25_eta1": (25, 1.0)},
    "rflow": {"rflow50": (50, 0.0), "rflow30": (30, 0.0), "rflow15": (15, 0.0)},
}
#: the sampling seed of the first request of each class (a noise seed, not a dataset seed).
SAMPLING_SEED = 0
FLOOR_REPEATS = 10


def setting_name(steps: int, eta: float, sampler: str = "ddim") -> str:
    """``ddim50_eta1``: DDIM, 50 steps, eta 1; ``rflow30``: rectified flow, 30 Euler steps (deterministic)."""
    return f"ddim{steps}_eta{eta:g}" if sampler == "ddim" else f"{sampler}{steps}"


# ---- bundles ------------------------------------------------------------------------------------
def bundle_facts(root: Path) -> dict[str, Any]:
    """What the benchmark needs to know about a bundle, read from its configs."""
    inference = json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8"))
    evaluate = json.loads((root / "configs" / "evaluate.json").read_text(encoding="utf-8"))
    sampler = inference.get("sampler", {})
    steps = int(inference.get("num_inference_steps", 50))
    eta = sampler.get("eta", 0.0)
    eta = float(inference.get(eta[1:], 0.0) if isinstance(eta, str) and eta.startswith("@") else eta)
    unit = evaluate["audit_unit"]
    kind, view = parse_unit(unit)
    schedule = schedule_for(inference_parser(root, initialize=False).get_parsed_content("noise_scheduler"))
    sampler_kind = schedule.name
    if not schedule.stochastic(1.0):
        eta = 0.0  # a deterministic sampler (rectified flow) has no eta, whatever the config's DDIM setting says
    return {
        "name": root.name,
        "root": root,
        "unit": unit,
        "kind": kind,
        "view": view,
        "classes": list(inference["classes"]),
        "descriptions": (root / "bank").is_dir(),
        # a report bundle (CCELLA) is asked with the report of a fresh phantom, whose attributes it must show
        "reports": "report" in inference and "spacing" in inference,
        "spatial_dims": len(inference["image_size"]),
        "sampler": sampler_kind,
        "default": setting_name(steps, eta, sampler_kind),
        "default_steps": steps,
        "default_eta": eta,
        "guidance_scale": inference.get("guidance_scale"),
    }


def bundle_settings(
    facts: Mapping[str, Any], chosen: Sequence[str] | None, guidance: Sequence[float] = ()
) -> dict[str, tuple[Any, ...]]:
    """Setting name -> ``(steps, eta)`` or ``(steps, eta, guidance_scale)``; ``guidance`` adds the default sampler
    at other guidance scales (``<default>_g<scale>``)."""
    settings: dict[str, tuple[Any, ...]] = dict(SETTINGS.get(facts["sampler"], {}))
    settings.setdefault(facts["default"], (facts["default_steps"], facts["default_eta"]))
    for scale in guidance:
        settings[f"{facts['default']}_g{float(scale):g}"] = (facts["default_steps"], facts["default_eta"], float(scale))
    if chosen:
        names = [facts["default"] if c == "default" else c for c in chosen]
        unknown = [c for c in names if c not in settings]
        if unknown:
            raise ValueError(f"--settings: unknown {unknown}; expected 'default' or some of {list(settings)}")
        # the guidance variants asked for are kept beside the chosen settings
        names += [name for name in settings if name.startswith(f"{facts['default']}_g") and name not in names]
        settings = {c: settings[c] for c in names}
    return settings


def _parser(
    facts: Mapping[str, Any], out_dir: Path, n_per_class: int, steps: int, eta: float, guidance: float | None = None
):
    overrides = {} if guidance is None else {"guidance_scale": float(guidance)}
    return inference_parser(
        facts["root"],
        output_dir=str(out_dir),
        n=n_per_class,
        seed=SAMPLING_SEED,
        num_inference_steps=steps,
        progress=False,
        formats="png" if facts["spatial_dims"] == 2 else "nifti",
        **{"sampler#eta": eta},
        **overrides,
    )


def generate(
    facts: Mapping[str, Any], out_dir: Path, n_per_class: int, steps: int, eta: float, guidance: float | None = None
) -> dict[str, Any]:
    """Run the bundle's inference config into ``out_dir`` (resuming); the requests, and seconds per new image."""
    parser = _parser(facts, out_dir, n_per_class, steps, eta, guidance)
    evaluator = parser.get_parsed_content("evaluator")
    if facts["reports"]:
        evaluator.dataset = report_requests_of(facts, n_per_class, parser.get_parsed_content("image_size"))
    requests = [dict(r) for r in evaluator.dataset]
    _check_kept_outputs(facts, out_dir, evaluator.inferer.sampler.settings())
    timing_path = out_dir / "timing.json"
    start = time.perf_counter()
    written = evaluator.run()
    seconds = time.perf_counter() - start
    if written:
        previous = json.loads(timing_path.read_text()) if timing_path.is_file() else {"images": 0, "seconds": 0.0}
        timing = {
            "images": previous["images"] + len(written),
            "seconds": previous["seconds"] + seconds,
            "threads": torch.get_num_threads(),
        }
        atomic_write_text(timing_path, json.dumps(timing) + "\n")
    if not timing_path.is_file():  # every image was there, made by a run that recorded no timing
        return {"requests": requests, "seconds_per_image": None, "threads": None}
    timing = json.loads(timing_path.read_text())
    return {
        "requests": requests,
        "seconds_per_image": timing["seconds"] / max(timing["images"], 1),
        "threads": timing.get("threads"),
    }


def report_requests_of(facts: Mapping[str, Any], n_per_class: int, image_size: Sequence[int]) -> list[dict[str, Any]]:
    """A report bundle's requests: per class, the reports of fresh phantoms of the class (the ceiling's phantoms,
    so the ceiling shows exactly what each report describes), at each phantom's own voxel spacing."""
    phantom = get_phantom(facts["kind"])
    requests = []
    for category in facts["classes"]:
        for _ in range(n_per_class):
            index = len(requests)
            sample = _class_phantom(phantom, facts, index, category)
            (request,) = report_requests(1, SAMPLING_SEED + index, sample.text, sample.meta["spacing"], image_size)
            request.update(id=f"{safe_id(category)}_{index:06d}", category=category)
            requests.append(request)
    return requests


def _check_kept_outputs(facts: Mapping[str, Any], out_dir: Path, sampling: Mapping[str, Any]) -> None:
    """Refuse to resume into images made by other weights (a bundle retrained since) or by other sampler settings
    (a bundle whose shipped guidance or steps changed since)."""
    from medgen_monai.io.weights import file_sha256

    current = {p.name: file_sha256(p) for p in sorted((facts["root"] / "models").glob("*.pt"))}
    sidecars = [p for p in sorted(out_dir.glob("*.json")) if p.name != "timing.json"] if out_dir.is_dir() else []
    for sidecar in sidecars[:1]:  # one run writes every sidecar with the same weights and sampler
        record = json.loads(sidecar.read_text())
        recorded = record.get("bundle", {}).get("weights_sha256", {})
        if recorded and recorded != {k: v for k, v in current.items() if k in recorded}:
            raise RuntimeError(
                f"{out_dir}: images of other {facts['name']} weights ({sidecar.name}); delete the folder "
                "to measure the current weights"
            )
        differing = {k: (record[k], v) for k, v in sampling.items() if k in record and record[k] != v}
        if differing:
            raise RuntimeError(
                f"{out_dir}: images of other sampler settings ({sidecar.name}: recorded vs now "
                f"{differing}); delete the folder to measure these settings"
            )


def requested_attributes(facts: Mapping[str, Any], requests: Sequence[Mapping[str, Any]]) -> list[dict[str, str]]:
    """What each request asks for: its bank description's attributes, or (class-only) a fresh phantom's of its class."""
    if facts["descriptions"]:
        index = DescriptionBank(str(facts["root"] / "bank")).index()
        return [dict(index[r["description_id"]]["attributes"]) for r in requests]
    phantom = get_phantom(facts["kind"])
    return [dict(_class_phantom(phantom, facts, i, r["category"]).attributes) for i, r in enumerate(requests)]


def category_of(facts: Mapping[str, Any], sample: Any) -> str:
    """The class a bundle files a phantom under: its label, or (cxr) its bank category, the most acute finding."""
    if not get_phantom(facts["kind"]).multilabel:
        return str(sample.label)
    from medgen_monai.describe import get_task

    return get_task(facts["kind"]).category({"id": str(sample.index), "label_name": list(sample.label)})


def _label(phantom: Any, category: str) -> Any:
    return (category,) if phantom.multilabel else category


def _class_phantom(phantom: Any, facts: Mapping[str, Any], index: int, category: str) -> Any:
    return phantom.generate(index, seed=QUALITY_SEEDS["ceiling"], label=_label(phantom, category))


# ---- real sets ----------------------------------------------------------------------------------
def real_sets(
    facts: Mapping[str, Any],
    requests: Sequence[Mapping[str, Any]],
    attributes: Sequence[Mapping[str, str]],
    autoencoders: Sequence[Mapping[str, Any]],
) -> dict[str, Any]:
    """The real images one bundle's requests are compared with (the same for every setting)."""
    phantom = get_phantom(facts["kind"])
    view = facts["view"]
    categories = [r["category"] for r in requests]
    # reference pool: two real phantoms of each request's class, drawn naturally (never forced to the class:
    # a forced cxr class would have that one finding alone) and kept when their bank category is the class
    wanted = Counter(categories * 2)
    taken_per_class: Counter[str] = Counter()
    pool, pool_classes = [], []
    index = 0
    while taken_per_class != wanted:
        if index > 200 * len(categories):
            missing = {c: wanted[c] - taken_per_class[c] for c in wanted if taken_per_class[c] < wanted[c]}
            raise RuntimeError(f"{facts['name']}: the phantom rarely draws {missing}; cannot fill the reference pool")
        sample = phantom.generate(index, seed=QUALITY_SEEDS["reference"])
        index += 1
        category = category_of(facts, sample)
        if taken_per_class[category] < wanted[category]:
            pool.append(sample.images[view])
            pool_classes.append(category)
            taken_per_class[category] += 1
    # ceiling: exactly the requested class and attributes, drawn fresh
    ceiling = []
    for i, (category, wanted) in enumerate(zip(categories, attributes)):
        if facts["descriptions"]:
            sample = phantom.generate(
                i, seed=QUALITY_SEEDS["ceiling"], label=None if phantom.multilabel else category, attributes=wanted
            )
        else:
            sample = _class_phantom(phantom, facts, i, category)
        ceiling.append(sample.images[view])
    # label-only: the i-th real image of the requested class, without its attributes forced
    by_class: dict[str, list[int]] = {}
    for index, category in enumerate(pool_classes):
        by_class.setdefault(category, []).append(index)
    taken: Counter[str] = Counter()
    label_only = []
    for category in categories:
        label_only.append(pool[by_class[category][taken[category]]])
        taken[category] += 1
    own = [a for a in autoencoders if a["bundle"] == facts["name"]]
    reconstructed = None
    if own:
        from medgen_monai.metrics.preprocess import preprocess_images

        audit = load_audit(facts["unit"])
        x = preprocess_images(ceiling, audit.spec.spatial_dims, audit.spec.in_channels)
        with torch.inference_mode():
            reconstructed = torch.cat(
                [own[0]["autoencoder"].reconstruct(x[s : s + 64]).clamp(0, 1) for s in range(0, x.shape[0], 64)]
            )
    return {
        "pool": pool,
        "pool_classes": pool_classes,
        "ceiling": ceiling,
        "label_only": label_only,
        "reconstructed": reconstructed,
    }


# ---- scoring ------------------------------------------------------------------------------------
def class_accuracy(images: Any, categories: Sequence[str], audit: Any) -> float:
    """How often the audit reads the requested class back from a valid image (an invalid image is wrong).

    Single-label units: the ``label`` head says the category. Multi-label units: the category's own
    ``label:<class>`` head says present (the request names one positive class, not the absent ones).
    """
    assessed = audit.assess(images)
    values = assessed["values"]
    hits = []
    for i, category in enumerate(categories):
        read = values["label"][i] == category if "label" in values else values[f"label:{category}"][i] == "present"
        hits.append(bool(assessed["valid"][i] and read))
    return float(np.mean(hits))


def score_setting(
    facts: Mapping[str, Any],
    images: list[np.ndarray],
    requests: Sequence[Mapping[str, Any]],
    attributes: Sequence[Mapping[str, str]],
    real: Mapping[str, Any],
    baselines: Mapping[str, Any],
    audit: Any,
    extractor: Any,
    seed: int = 0,
) -> dict[str, Any]:
    categories = [r["category"] for r in requests]
    n = len(images)
    generated = attribute_accuracy(images, attributes, audit=audit)
    spatial_dims, channels = audit.spec.spatial_dims, audit.spec.in_channels
    # FID: against a random reference of n real images with the requests' class counts (the first half of the
    # pool holds one image per request, in request order, so it has exactly those counts)
    pool_features = baselines["pool_features"]
    rng = np.random.default_rng(seed)
    reference_index = _stratified_half(real["pool_classes"], categories, rng)
    generated_features = extractor(images)
    counts = dict(Counter(categories))
    floor = fid_floor(pool_features, n, repeats=FLOOR_REPEATS, seed=seed, labels=real["pool_classes"], counts=counts)
    fid_value = fid_from_features(pool_features[reference_index], generated_features)
    kid_value = kid(pool_features[reference_index], generated_features, seed=seed)
    ceiling, label_only = baselines["ceiling"]["mean"], baselines["label_only"]["mean"]
    gap = (generated["mean"] - label_only) / (ceiling - label_only) if ceiling - label_only > 1e-9 else None
    return {
        "n": n,
        "class_accuracy": class_accuracy(images, categories, audit),
        "class_accuracy_ceiling": baselines["class_accuracy_ceiling"],
        "valid_fraction": generated["valid_fraction"],
        "attribute_accuracy": generated["mean"],
        "attribute_accuracy_valid": generated["mean_valid"],
        "per_attribute": generated["per_attribute"],
        "ceiling": ceiling,
        "label_only": label_only,
        "gap_recovered": gap,
        "autoencoder_ceiling": baselines["autoencoder_ceiling"]["mean"] if baselines["autoencoder_ceiling"] else None,
        "fid": fid_value,
        "fid_floor": {"mean": floor["mean"], "sd": floor["sd"]},
        "fid_ratio": fid_value / floor["mean"] if floor["mean"] > 0 else None,
        "kid": {"mean": kid_value["mean"], "ci95": kid_value["ci95"]},
        "diversity": diversity(images, categories, spatial_dims, channels)["diversity"],
        "diversity_real": baselines["diversity_real"],
    }


def _stratified_half(pool_classes: Sequence[str], categories: Sequence[str], rng: np.random.Generator) -> np.ndarray:
    """Indices of a random subset of the pool with exactly the requests' class counts."""
    wanted = Counter(categories)
    chosen = []
    for category, count in wanted.items():
        members = [i for i, c in enumerate(pool_classes) if c == category]
        chosen += list(rng.choice(members, size=count, replace=False))
    return np.sort(np.asarray(chosen))


def baselines_of(
    facts: Mapping[str, Any],
    requests: Sequence[Mapping[str, Any]],
    attributes: Sequence[Mapping[str, str]],
    real: Mapping[str, Any],
    audit: Any,
    extractor: Any,
) -> dict[str, Any]:
    categories = [r["category"] for r in requests]
    rng = np.random.default_rng(1)
    reference_index = _stratified_half(real["pool_classes"], categories, rng)
    reference = [real["pool"][i] for i in reference_index]
    return {
        "class_accuracy_ceiling": class_accuracy(real["label_only"], categories, audit),
        "ceiling": attribute_accuracy(real["ceiling"], attributes, audit=audit),
        "label_only": attribute_accuracy(real["label_only"], attributes, audit=audit),
        "autoencoder_ceiling": (
            attribute_accuracy(real["reconstructed"], attributes, audit=audit)
            if real["reconstructed"] is not None
            else None
        ),
        "pool_features": extractor(real["pool"]),
        "diversity_real": diversity(
            reference,
            [real["pool_classes"][i] for i in reference_index],
            audit.spec.spatial_dims,
            audit.spec.in_channels,
        )["diversity"],
    }


def check_sets(
    real: Mapping[str, Any], requests: Sequence[Mapping[str, Any]], n_per_class: int
) -> dict[str, list[np.ndarray]]:
    """Stand-ins for a generator whose scores are known: a perfect one (fresh phantoms with exactly the requested
    attributes), one that draws the wrong class (real images of the next class in request order), noise, blanks."""
    n = len(requests)
    example = np.asarray(real["ceiling"][0])
    rng = np.random.default_rng(0)
    if example.dtype == np.uint8:
        noise = [rng.integers(0, 256, example.shape, dtype=np.uint8) for _ in range(n)]
        blank = [np.full(example.shape, 128, dtype=np.uint8) for _ in range(n)]
    else:  # volumes
        noise = [rng.normal(size=example.shape).astype(np.float32) for _ in range(n)]
        blank = [np.ones(example.shape, dtype=np.float32) for _ in range(n)]
    return {
        "real_requested": list(real["ceiling"]),
        "real_wrong_class": [real["label_only"][(i + n_per_class) % n] for i in range(n)],
        "gaussian_noise": noise,
        "blank": blank,
    }


# ---- contact sheet ------------------------------------------------------------------------------
def _display(image: Any, spatial_dims: int) -> np.ndarray:
    """What a contact sheet shows of an image: the 8-bit image itself, or a volume's middle axial slice (percentile
    scaled as the audit sees it, radiological orientation)."""
    if spatial_dims == 2:
        return np.asarray(image)
    from medgen_monai.io.writers import radiological_axial
    from medgen_monai.metrics.preprocess import percentile_scale

    volume = percentile_scale(torch.as_tensor(np.asarray(image, dtype=np.float32)).reshape(1, 1, *np.shape(image)[-3:]))
    return radiological_axial(np.round(volume[0, 0].numpy() * 255).astype(np.uint8))


def contact_sheet(
    facts: Mapping[str, Any],
    requests: Sequence[Mapping[str, Any]],
    columns: Mapping[str, list[np.ndarray]],
    real: Mapping[str, Any],
    path: Path,
    per_class: int = 4,
) -> None:
    """Per class: ``per_class`` real images, then ``per_class`` of each setting in ``columns``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    classes = [c for c in facts["classes"] if any(r["category"] == c for r in requests)]
    groups = {"real": real["label_only"], **columns}
    fig, axes = plt.subplots(
        len(classes),
        per_class * len(groups),
        squeeze=False,
        figsize=(0.8 * per_class * len(groups), 0.85 * len(classes) + 0.5),
    )
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_frame_on(False)
    for row, category in enumerate(classes):
        members = [i for i, r in enumerate(requests) if r["category"] == category][:per_class]
        for g, (name, images) in enumerate(groups.items()):
            for k, index in enumerate(members):
                ax = axes[row, g * per_class + k]
                image = _display(images[index], facts["spatial_dims"])
                ax.imshow(image, cmap="gray" if image.ndim == 2 else None, vmin=0, vmax=255)
                if row == 0 and k == 0:
                    ax.set_title(name, fontsize=7, loc="left")
            if g == 0:
                axes[row, 0].set_frame_on(True)
                axes[row, 0].set_ylabel(category, fontsize=6, rotation=0, ha="right", va="center")
    fig.suptitle(f"{facts['name']}: real images of the requested class, then generated (same requests)", fontsize=8)
    fig.tight_layout(pad=0.2, w_pad=0.05, h_pad=0.05, rect=(0.07, 0, 1, 1))  # room for the class names
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


# ---- main ---------------------------------------------------------------------------------------
def scoring_context(facts: Mapping[str, Any], requests: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """What :func:`score_setting` compares one bundle's images with, for these requests (the same for every
    setting): the requested attributes, the audit network and its feature extractor, the real sets, the baselines."""
    attributes = requested_attributes(facts, requests)
    audit = load_audit(facts["unit"])
    extractor = feature_extractor(audit)
    real = real_sets(facts, requests, attributes, bundle_autoencoders(facts["kind"]))
    return {
        "attributes": attributes,
        "audit": audit,
        "extractor": extractor,
        "real": real,
        "baselines": baselines_of(facts, requests, attributes, real, audit, extractor),
    }


def run_bundle(
    facts: dict[str, Any],
    settings: Mapping[str, tuple[int, float]],
    n: int,
    work: Path,
    generate_only: bool = False,
    sheet: Path | None = None,
) -> dict[str, Any] | None:
    """Generate (resuming) and score every setting of one bundle; the report, or ``None`` with ``generate_only``.
    The contact sheet goes to ``sheet`` (default docs/images/quality_<bundle>.png)."""
    n_per_class = math.ceil(n / len(facts["classes"]))
    generated: dict[str, dict[str, Any]] = {}
    for name, (steps, eta, *guidance) in settings.items():
        print(f"{facts['name']} {name}: generating {n_per_class} per class", flush=True)
        generated[name] = generate(facts, work / facts["name"] / name, n_per_class, steps, eta, *guidance)
    if generate_only:
        return None
    requests = next(iter(generated.values()))["requests"]
    context = scoring_context(facts, requests)
    attributes, audit, extractor, real, baselines = (
        context[k] for k in ("attributes", "audit", "extractor", "real", "baselines")
    )
    report: dict[str, Any] = {
        "default": facts["default"],
        "unit": facts["unit"],
        "classes": facts["classes"],
        "descriptions": facts["descriptions"],
        "reports": facts["reports"],
        "guidance_scale": facts["guidance_scale"],
        "settings": {},
    }
    # the metrics must be able to fail: the same scoring on real images, on real images of another class,
    # on noise and on blanks (no generator involved)
    report["checks"] = {}
    for name, images in check_sets(real, requests, n_per_class).items():
        report["checks"][name] = score_setting(facts, images, requests, attributes, real, baselines, audit, extractor)
        c = report["checks"][name]
        print(
            f"{facts['name']} check {name}: valid {c['valid_fraction']:.3f}, accuracy {c['attribute_accuracy']:.3f}, "
            f"FID / floor {c['fid_ratio'] or float('nan'):.2f}",
            flush=True,
        )
    columns: dict[str, list[np.ndarray]] = {}
    for name, result in generated.items():
        if [r["id"] for r in result["requests"]] != [r["id"] for r in requests]:
            raise RuntimeError(f"{facts['name']} {name}: the settings drew different requests; they must be paired")
        suffix = ".png" if facts["spatial_dims"] == 2 else ".nii.gz"
        images = load_images([work / facts["name"] / name / f"{r['id']}{suffix}" for r in requests])
        scores = score_setting(facts, images, requests, attributes, real, baselines, audit, extractor)
        steps, eta, *guidance = settings[name]
        report["settings"][name] = {
            "steps": steps,
            "eta": eta,
            "guidance_scale": guidance[0] if guidance else facts["guidance_scale"],
            "seconds_per_image": result["seconds_per_image"],
            "threads": result["threads"],
            **scores,
        }
        columns[name] = images
        print(
            f"{facts['name']} {name}: valid {scores['valid_fraction']:.3f}, "
            f"accuracy {scores['attribute_accuracy']:.3f} "
            f"(ceiling {scores['ceiling']:.3f}, label-only {scores['label_only']:.3f}), FID {scores['fid']:.1f} "
            f"(floor {scores['fid_floor']['mean']:.1f}), diversity {scores['diversity']:.3f} "
            f"(real {scores['diversity_real']:.3f})",
            flush=True,
        )
    # the sheet shows the shipped default and the other kind of sampling (deterministic vs stochastic) at its steps
    shown = {facts["default"]: columns[facts["default"]]} if facts["default"] in columns else {}
    other = setting_name(facts["default_steps"], 0.0 if facts["default_eta"] > 0 else 1.0, facts["sampler"])
    if other in columns and other != facts["default"]:
        shown[other] = columns[other]
    # and the default at each other guidance scale asked for (--guidance): a guidance sweep shows what it compares
    shown.update({name: images for name, images in columns.items() if name.startswith(f"{facts['default']}_g")})
    contact_sheet(facts, requests, shown or columns, real, sheet or IMAGES / f"quality_{facts['name']}.png")
    return report


def _finite(value: Any) -> Any:
    """NaN (e.g. the diversity of blank images) becomes null: JSON has no NaN."""
    if isinstance(value, float) and value != value:
        return None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default="all", help="comma-separated bundle names, or all")
    parser.add_argument(
        "--bundle-dir",
        default=None,
        help="score this bundle folder instead (e.g. a copy made by benchmarks/recipes.py); give --out",
    )
    parser.add_argument("--settings", default="", help="comma-separated setting names (or 'default'); empty: all")
    parser.add_argument("--n", type=int, default=500, help="generated images per setting (rounded up per class)")
    parser.add_argument("--work", default=str(ROOT / "runs" / "quality"))
    parser.add_argument("--out", default=str(RESULTS / "quality.json"))
    parser.add_argument("--generate-only", action="store_true", help="generate (resumably) without scoring")
    parser.add_argument(
        "--guidance", default="", help="comma-separated guidance scales: also the default sampler at these"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    roots = shipped_bundles(ROOT / "bundles")  # a bundle in development (no weights yet) has nothing to measure
    if args.bundle_dir is not None:
        if args.out == str(RESULTS / "quality.json"):
            raise SystemExit("--bundle-dir: give --out too (quality.json holds the shipped bundles)")
        roots = [Path(args.bundle_dir)]
        if args.work == str(ROOT / "runs" / "quality"):  # the shipped bundle's images live there
            args.work = str(Path(args.bundle_dir) / "quality_runs")
    elif args.bundles != "all":
        wanted = [b.strip() for b in args.bundles.split(",") if b.strip()]
        unknown = [b for b in wanted if b not in {r.name for r in roots}]
        if unknown:
            raise SystemExit(f"--bundles: unknown {unknown}; expected some of {[r.name for r in roots]}")
        roots = [r for r in roots if r.name in wanted]
    if args.n < 2:
        raise SystemExit(f"--n must be >= 2, got {args.n}")
    chosen = [s.strip() for s in args.settings.split(",") if s.strip()] or None
    out = Path(args.out)
    command = "python benchmarks/quality.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for root in roots:
        facts = bundle_facts(root)
        guidance = [float(g) for g in args.guidance.split(",") if g.strip()]
        sheet = None if args.bundle_dir is None else Path(args.out).with_suffix(".png")
        report = run_bundle(
            facts, bundle_settings(facts, chosen, guidance), args.n, Path(args.work), args.generate_only, sheet=sheet
        )
        if report is None:
            continue
        report["command"] = command.strip()
        # read-merge-write at the moment of writing: runs for other bundles may have written meanwhile
        results = json.loads(out.read_text()) if out.is_file() else {"bundles": {}}
        from medgen_monai.io.weights import file_sha256

        report["weights_sha256"] = {p.name: file_sha256(p) for p in sorted((facts["root"] / "models").glob("*.pt"))}
        earlier = results["bundles"].get(facts["name"], {})
        # settings measured earlier are kept only when they were measured on these weights
        previous = earlier.get("settings", {}) if earlier.get("weights_sha256") == report["weights_sha256"] else {}
        report["settings"] = {
            **{k: v for k, v in previous.items() if k not in report["settings"]},
            **report["settings"],
        }
        results["bundles"][facts["name"]] = report
        results["machine"] = {
            "platform": platform.platform(),
            "cpu_count": os.cpu_count(),
            "torch": torch.__version__,
            "python": platform.python_version(),
        }
        results.pop("command", None)  # each bundle records the command that measured it
        out.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out, json.dumps(_finite(results), indent=2, allow_nan=False) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
