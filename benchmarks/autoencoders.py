"""What each bundle's autoencoder keeps: the audit's attribute accuracy on real phantoms and on their reconstructions.

A latent diffusion model can only draw what its autoencoder can decode. For every bundle, ``--n`` fresh
phantoms (the ``autoencoder`` quality seed, which no bundle trains on) are passed through the bundle's
autoencoder (encoder mean, then decoder); the bundle's audit network reads every attribute from the real
images and from the reconstructions. Per attribute: ``real`` and ``autoencoder`` accuracy against the
phantoms' true attributes and their ratio; an autoencoder passes when the ratio is at least 0.95 on every
attribute (and the reconstructions are valid images of the kind as often as the real ones, within 0.05).
Also the FID of the reconstructions against ``n`` other real phantoms (the ``reference`` quality seed), over
the real images' FID against the same reference (``fid_ratio``): the lowest FID ratio a latent diffusion
model on this autoencoder can reach.

Writes ``benchmarks/results/autoencoders.json``; ``python docs/build_docs.py`` puts the table in docs/quality.md.

    python benchmarks/autoencoders.py                                 # every bundle, n=400
    python benchmarks/autoencoders.py --bundles-dir runs/ae_pilot     # autoencoders of bundle copies
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

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from medgen_monai.io.atomic import atomic_write_text  # noqa: E402
from medgen_monai.metrics import attribute_accuracy, feature_extractor, load_audit  # noqa: E402
from medgen_monai.metrics.audit import parse_unit  # noqa: E402
from medgen_monai.metrics.fid import fid_from_features  # noqa: E402
from medgen_monai.metrics.negatives import bundle_autoencoders  # noqa: E402
from medgen_monai.metrics.preprocess import preprocess_images  # noqa: E402
from medgen_monai.phantoms import KINDS, get_phantom  # noqa: E402
from medgen_monai.phantoms.seeds import QUALITY_SEEDS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: an autoencoder passes when it keeps this share of the real images' accuracy on every attribute
KEEP = 0.95


@torch.inference_mode()
def measure(entry: dict[str, Any], n: int) -> dict[str, Any]:
    """One bundle's autoencoder: per-attribute accuracy on real phantoms and on their reconstructions."""
    kind, view = parse_unit(entry["unit"])
    audit = load_audit(entry["unit"])
    samples = list(get_phantom(kind).generate_many(n, seed=QUALITY_SEEDS["autoencoder"]))
    truth = [dict(s.attributes) for s in samples]
    x = preprocess_images([s.images[view] for s in samples], audit.spec.spatial_dims, audit.spec.in_channels)
    autoencoder = entry["autoencoder"]
    reconstructed = torch.cat([autoencoder.reconstruct(x[s : s + 64]).clamp(0, 1) for s in range(0, len(x), 64)])
    real = attribute_accuracy(x, truth, audit=audit)
    decoded = attribute_accuracy(reconstructed, truth, audit=audit)
    extractor = feature_extractor(audit)
    reference = extractor([s.images[view] for s in get_phantom(kind).generate_many(n, seed=QUALITY_SEEDS["reference"])])
    fid_real = fid_from_features(reference, extractor(x))
    fid_reconstructed = fid_from_features(reference, extractor(reconstructed))
    per_attribute = {}
    for head, accuracy in real["per_attribute"].items():
        kept = decoded["per_attribute"][head] / accuracy if accuracy > 0 else None
        per_attribute[head] = {"real": accuracy, "autoencoder": decoded["per_attribute"][head], "kept": kept}
    failing = [h for h, v in per_attribute.items() if v["kept"] is None or v["kept"] < KEEP]
    if decoded["valid_fraction"] < real["valid_fraction"] - 0.05:
        failing.append("valid")
    return {
        "unit": entry["unit"],
        "n": n,
        "real_valid": real["valid_fraction"],
        "autoencoder_valid": decoded["valid_fraction"],
        "real_mean": real["mean"],
        "autoencoder_mean": decoded["mean"],
        "per_attribute": per_attribute,
        "l1": float((reconstructed - x).abs().mean()),
        "fid_real": fid_real,
        "fid_reconstructed": fid_reconstructed,
        "fid_ratio": fid_reconstructed / fid_real,
        "passes": not failing,
        "failing": failing,
    }


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bundles", default="all", help="comma-separated bundle names, or all")
    parser.add_argument("--bundles-dir", default=str(ROOT / "bundles"))
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--out", default=str(RESULTS / "autoencoders.json"))
    args = parser.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    entries = [e for kind in KINDS for e in bundle_autoencoders(kind, args.bundles_dir)]
    if args.bundles != "all":
        wanted = {b.strip() for b in args.bundles.split(",") if b.strip()}
        unknown = wanted - {e["bundle"] for e in entries}
        if unknown:
            raise SystemExit(
                f"--bundles: unknown {sorted(unknown)}; expected some of {sorted(e['bundle'] for e in entries)}"
            )
        entries = [e for e in entries if e["bundle"] in wanted]
    out = Path(args.out)
    results = json.loads(out.read_text()) if out.is_file() else {"bundles": {}}
    command = "python benchmarks/autoencoders.py " + " ".join(argv if argv is not None else sys.argv[1:])
    for entry in entries:
        report = measure(entry, args.n)
        report["command"] = command.strip()
        results["bundles"][entry["bundle"]] = report
        worst = min(report["per_attribute"].items(), key=lambda kv: kv[1]["kept"] or 0.0)
        print(
            f"{entry['bundle']}: mean {report['real_mean']:.3f} -> {report['autoencoder_mean']:.3f}, worst {worst[0]} "
            f"{worst[1]['real']:.3f} -> {worst[1]['autoencoder']:.3f}, FID ratio {report['fid_ratio']:.2f}, "
            f"{'passes' if report['passes'] else 'fails ' + str(report['failing'])}",
            flush=True,
        )
    results["keep"] = KEEP
    results["machine"] = {"platform": platform.platform(), "cpu_count": os.cpu_count(), "torch": torch.__version__}
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
