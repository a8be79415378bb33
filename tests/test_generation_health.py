"""Every shipped bundle at its shipped default: no divergence, and conditioning that changes the picture.

* **Divergence**: each generated latent's standard deviation lies within the band of real latents (real
  phantoms through the bundle's autoencoder and its latent normalisation; the band is their 1st-99th
  percentile widened by a quarter each way). Deterministic sampling of an under-trained epsilon model ended
  near 3 where real latents have 1 (docs/engine.md).
* **Conditioning**: for one seed, the requests of every class are read back by the audit as their classes
  (class accuracy at least a share of what real images of those classes score), and not as one shared
  picture (the audit reads more than one class across them).

The fast version (CI) samples two seeds per class; ``-m slow`` samples eight and asks for more.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
from benchmark_helpers import load_benchmark

from medgen_monai.engines import inference_parser, normalise_latents, shipped_bundles
from medgen_monai.metrics import load_audit
from medgen_monai.metrics.preprocess import preprocess_images
from medgen_monai.phantoms import get_phantom
from medgen_monai.phantoms.seeds import QUALITY_SEEDS

ROOT = Path(__file__).resolve().parents[1]
#: bundles whose shipped weights fail here today (issue 13: they are being retrained); strict, so that a bundle that
#: starts to pass must be taken off this list
KNOWN_FAILING = {
    "ldm_label_derm": "epsilon-trained weights: class conditioning too weak (class accuracy below half the real one)",
    "vap_diffusion_colon": "rectified flow at 3000 iterations on the annealed autoencoder: generated latents' standard "
    "deviation 1.38-1.48 against the real band's upper edge 1.43 (at guidance 1.0 as at 1.5): "
    "slightly over-dispersed, though the images pass every gate measure but FID",
    "vap_diffusion_derm": "rectified flow at 9000 iterations: latents inside the band, but on these 14 requests the "
    "class is read back below half as often as from real images (0.14 against 0.36)",
}
BUNDLES = [
    pytest.param(name, marks=pytest.mark.xfail(strict=True, reason=KNOWN_FAILING[name]))
    if name in KNOWN_FAILING
    else name
    for name in [root.name for root in shipped_bundles(ROOT / "bundles")]
]
REAL_LATENTS = 64


def _quality():
    return load_benchmark("quality")


def real_latent_band(inferer, facts) -> tuple[float, float]:
    """The 1st-99th percentile of per-image latent standard deviations of real phantoms, widened by 25%."""
    phantom = get_phantom(facts["kind"])
    samples = phantom.generate_many(REAL_LATENTS, seed=QUALITY_SEEDS["autoencoder"])
    spatial_dims = len(inferer.latent_shape) - 1
    images = preprocess_images([s.images[facts["view"]] for s in samples], spatial_dims, phantom.channels)
    sampler = inferer.sampler
    with torch.inference_mode():
        z_mu, _ = sampler.autoencoder.eval().encode(images)
    stds = normalise_latents(z_mu, sampler.scale_factor, sampler.latent_shift).flatten(1).std(dim=1).numpy()
    low, high = np.percentile(stds, [1, 99])
    return float(low) / 1.25, float(high) * 1.25


def check_bundle(name: str, seeds_per_class: int, share: float) -> None:
    quality = _quality()
    facts = quality.bundle_facts(ROOT / "bundles" / name)
    # one seed for every class: seed s for the first request of each class, s + 1 for the second, ...
    evaluator = inference_parser(ROOT / "bundles" / name, n=seeds_per_class, seed=0, progress=False).get_parsed_content(
        "evaluator"
    )
    requests, inferer = list(evaluator.dataset), evaluator.inferer
    condition, null_condition = inferer.conditioner(requests)
    with torch.inference_mode():
        latents = inferer.sampler.denoise(
            evaluator.network.eval(),
            inferer.latent_shape,
            [int(r["seed"]) for r in requests],
            condition,
            null_condition,
        )
        images = inferer.sampler.decode(latents).clamp(0, 1)
    low, high = real_latent_band(inferer, facts)
    stds = latents.flatten(1).std(dim=1)
    outside = [(r["category"], r["seed"], round(float(s), 2)) for r, s in zip(requests, stds) if not low <= s <= high]
    assert not outside, f"{name}: latents outside the real band [{low:.2f}, {high:.2f}]: {outside}"

    audit = load_audit(facts["unit"])
    categories = [r["category"] for r in requests]
    accuracy = quality.class_accuracy(list(images), categories, audit)
    attributes = quality.requested_attributes(facts, requests)
    real = quality.real_sets(facts, requests, attributes, [])
    ceiling = quality.class_accuracy(real["label_only"], categories, audit)
    assert accuracy >= share * ceiling, (
        f"{name}: class accuracy {accuracy:.2f} < {share} x real {ceiling:.2f} ({len(requests)} requests)"
    )
    values = audit.assess(list(images))["values"]
    for seed in sorted({int(r["seed"]) for r in requests}):
        index = [i for i, r in enumerate(requests) if int(r["seed"]) == seed]
        if "label" in values:
            read = Counter(values["label"][i] for i in index)
        else:  # multi-label: the set of findings read present
            read = Counter(
                tuple(sorted(k for k, v in values.items() if k.startswith("label:") and v[i] == "present"))
                for i in index
            )
        assert len(read) > 1, f"{name}: seed {seed} gives one picture for every class (the audit reads {dict(read)})"


@pytest.mark.parametrize("name", BUNDLES)
def test_shipped_default_neither_diverges_nor_ignores_the_class(name):
    check_bundle(name, seeds_per_class=2, share=0.5)


@pytest.mark.slow
@pytest.mark.parametrize("name", BUNDLES)
def test_shipped_default_neither_diverges_nor_ignores_the_class_full(name):
    check_bundle(name, seeds_per_class=8, share=0.9)
