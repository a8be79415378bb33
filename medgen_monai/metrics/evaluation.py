"""Evaluate a generator's outputs against real (phantom or real-data) images of the same classes.

One function serves every bundle's ``evaluate.json``: it reads the generated images of a run (the
writer's outputs and sidecars), a reference datalist, and reports

* ``class_accuracy``: how often the audit network's class head reads back the requested class
  (its held-out accuracy on real phantoms, ``reference_class_accuracy``, is the ceiling);
* ``attribute_accuracy``: requested attributes read back (only for requests that name attributes);
* ``attribute_distance``: per class, the total-variation distance between the audit network's
  attribute predictions on generated and on reference images, averaged over attributes and classes
  (0: same attribute mix as the data; label-only generators are judged on this);
* ``fid`` in the audit network's feature space and ``diversity`` (1 - MS-SSIM within class) for
  generated and reference images;

and writes ``evaluation.json`` plus ``evaluation.png`` (a bar plot) atomically.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path, atomic_write_text
from .attributes import attribute_accuracy
from .audit import load_audit, parse_unit
from .diversity import diversity
from .fid import feature_extractor, fid

__all__ = ["load_images", "attribute_distance", "evaluate_generation"]


def load_images(paths: Sequence[str | Path]) -> list[np.ndarray]:
    """Read 2D images (PNG / JPEG) as uint8 ``(H, W)`` or ``(H, W, 3)``, or volumes (NIfTI / MetaImage) as ``(X, Y, Z)``."""
    images = []
    for path in paths:
        path = Path(path)
        if not path.is_file():
            raise ValueError(f"{path}: image file not found")
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            with Image.open(path) as image:
                images.append(np.array(image.convert("RGB") if image.mode not in ("L", "RGB") else image))
        else:
            from monai.transforms import LoadImage

            images.append(np.asarray(LoadImage(image_only=True)(str(path))))
    return images


def attribute_distance(generated: Mapping[str, Sequence[str]], reference: Mapping[str, Sequence[str]],
                       generated_classes: Sequence[str], reference_classes: Sequence[str]) -> dict[str, Any]:
    """Mean total-variation distance between per-class attribute value frequencies.

    Args:
        generated: attribute -> predicted value per generated image.
        reference: attribute -> value per reference image (ground truth or predictions).
        generated_classes: requested class per generated image.
        reference_classes: class per reference image.

    Returns:
        ``{"mean": float, "per_attribute": {attribute: mean over classes}}`` over the classes present on both sides.
    """
    classes = sorted(set(generated_classes) & set(reference_classes))
    if not classes:
        raise ValueError("attribute_distance: no class is present in both the generated and the reference images")
    per_attribute = {}
    for name in generated:
        distances = []
        for c in classes:
            g = Counter(v for v, k in zip(generated[name], generated_classes) if k == c)
            r = Counter(v for v, k in zip(reference[name], reference_classes) if k == c)
            ng, nr = sum(g.values()), sum(r.values())
            values = set(g) | set(r)
            distances.append(0.5 * sum(abs(g[v] / ng - r[v] / nr) for v in values))
        per_attribute[name] = float(np.mean(distances))
    return {"mean": float(np.mean(list(per_attribute.values()))), "per_attribute": per_attribute}


def _bar_plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = ["class_accuracy", "attribute_distance", "diversity"]
    generated = [report["generated"][n] for n in names]
    reference = [report["reference"].get(n, np.nan) for n in names]
    fig, ax = plt.subplots(figsize=(6, 3))
    x = np.arange(len(names))
    ax.bar(x - 0.2, generated, 0.4, label="generated")
    ax.bar(x + 0.2, reference, 0.4, label="reference (real)")
    ax.set_xticks(x, names)
    ax.set_title(f"{report['unit']}: FID {report['generated']['fid']:.2f} (n={report['generated']['n']})")
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=100, format="png")
    plt.close(fig)


def evaluate_generation(
    output_dir: str | Path,
    requests: Sequence[Mapping[str, Any]],
    reference: Sequence[Mapping[str, Any]],
    unit: str,
    classes: Sequence[str],
    image_format: str = "png",
    max_reference: int | None = 500,
) -> dict[str, Any]:
    """Score the outputs of a generation run and write ``evaluation.json`` and ``evaluation.png``.

    Args:
        output_dir: the run's output folder (``<id>.<format>`` per request).
        requests: the run's requests (``id``, ``category``, optional ``attributes``; optional ``labels``, the
            positive classes of a multi-label request, scored instead of ``category``).
        reference: datalist records of real images (``image``, ``label`` index, optional ``attributes`` and
            ``labels`` as for requests).
        unit: the audit unit judging the images (``"derm_image"``).
        classes: class names in label-index order.
        image_format: ``png`` or ``nifti`` outputs.
        max_reference: use at most this many reference images (the first ones).

    Returns:
        the report written to ``evaluation.json``.
    """
    output_dir = Path(output_dir)
    kind, _ = parse_unit(unit)
    suffix = {"png": ".png", "nifti": ".nii.gz"}[image_format]
    generated = load_images([output_dir / f"{r['id']}{suffix}" for r in requests])
    generated_classes = [str(r["category"]) for r in requests]
    reference = list(reference)[:max_reference] if max_reference else list(reference)
    if len(reference) < 2:
        raise ValueError(f"evaluate_generation: the reference datalist has {len(reference)} images; need at least 2")
    reference_images = load_images([r["image"] for r in reference])
    reference_classes = [classes[int(r["label"])] for r in reference]
    audit = load_audit(unit)
    extractor = feature_extractor(audit)  # loaded once: scores, FID and the split-half FID share it
    spatial_dims, channels = audit.spec.spatial_dims, audit.spec.in_channels

    def read_back(images: list[np.ndarray], labels: list[Any]) -> tuple[dict[str, list[str]], float]:
        scored = attribute_accuracy(images, [{} for _ in images], labels=labels, audit=audit)
        # single-label units have one "label" head, multi-label units one "label:<class>" head per class
        heads = [v for k, v in scored["per_attribute"].items() if k == "label" or k.startswith("label:")]
        return audit.predict(images), float(np.mean(heads))

    # a record's "labels" (the positive classes of a multi-label study) is scored instead of its category
    generated_pred, class_accuracy = read_back(generated, [r.get("labels") or c for r, c in zip(requests, generated_classes)])
    reference_pred, reference_accuracy = read_back(
        reference_images, [r.get("labels") or c for r, c in zip(reference, reference_classes)])
    attributes = [h for h in audit.spec.head_names if h != "label" and not h.startswith("label:")]
    report: dict[str, Any] = {
        "unit": unit,
        "kind": kind,
        "generated": {
            "n": len(generated),
            "class_accuracy": class_accuracy,
            "attribute_distance": attribute_distance({a: generated_pred[a] for a in attributes},
                                                     {a: reference_pred[a] for a in attributes},
                                                     generated_classes, reference_classes)["mean"],
            "fid": fid(reference_images, generated, extractor=extractor),
            "diversity": diversity(generated, generated_classes, spatial_dims, channels)["diversity"],
        },
        "reference": {
            "n": len(reference_images),
            "class_accuracy": reference_accuracy,
            "diversity": diversity(reference_images, reference_classes, spatial_dims, channels)["diversity"],
        },
    }
    requested = [r.get("attributes") or {} for r in requests]
    if any(requested):
        report["generated"]["attribute_accuracy"] = attribute_accuracy(generated, requested, audit=audit)["mean"]
    # the split-half FID of the reference set is the floor a perfect generator would reach at this n
    half = len(reference_images) // 2
    if half >= 2:
        report["reference"]["fid_split_half"] = fid(reference_images[:half], reference_images[half:], extractor=extractor)
    report["generated"]["per_class_count"] = dict(Counter(generated_classes))
    atomic_write_text(output_dir / "evaluation.json", json.dumps(report, indent=2) + "\n")
    _bar_plot(report, output_dir / "evaluation.png")
    return report
