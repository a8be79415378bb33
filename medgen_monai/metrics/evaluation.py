"""Evaluate a generator's outputs against real (phantom or real-data) images of the same classes.

One function serves every bundle's ``evaluate.json``: it reads the generated images of a run (the
writer's outputs and sidecars), a reference datalist, and reports

* ``valid_fraction``: how many images the audit network's validity output accepts as images of its kind;
* ``class_accuracy``: how often the audit network's class head reads back the requested class, an invalid
  image counting as wrong (its accuracy on the reference, ``reference.class_accuracy``, is the ceiling);
* ``attribute_accuracy``: requested attributes read back, an invalid image wrong on every attribute
  (only for requests that name attributes), and ``attribute_accuracy_valid`` over the valid images;
* ``attribute_distance``: per class, the total-variation distance between the audit network's
  attribute predictions on generated and on reference images, averaged over attributes and classes
  (0: same attribute mix as the data; label-only generators are judged on this);
* ``fid`` in the audit network's feature space, with its floor ``fid_floor`` (real vs real at the generated
  set's ``n``), ``fid_ratio`` and ``kid`` with a 95% interval (:mod:`medgen_monai.metrics.reference`), and
  ``diversity`` (1 - MS-SSIM within class) for generated and reference images;

and writes ``evaluation.json`` plus ``evaluation.png`` (a bar plot) atomically. The reference is a seeded random
draw in the requests' class proportions that leaves out the requests' own source images
(:func:`~medgen_monai.metrics.reference.stratified_reference`), never the first records of a list.
"""

from __future__ import annotations

import json
import warnings
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ..io.atomic import atomic_path, atomic_write_text
from .attributes import attribute_accuracy
from .audit import load_audit, parse_unit
from .diversity import diversity
from .fid import feature_extractor, fid_from_features
from .reference import fid_floor, kid, matched_fid, request_sources, stratified_reference

__all__ = [
    "load_images",
    "predicted_or_invalid",
    "attribute_distance",
    "evaluate_generation",
    "labelled_reference",
    "with_bank_attributes",
]


def labelled_reference(
    records: Sequence[Mapping[str, Any]], classes: Sequence[str], task: Any, multi_label: bool = False
) -> list[dict[str, Any]]:
    """Reference datalist records with the ``label`` index :func:`evaluate_generation` scores against.

    Args:
        records: datalist records of real images (:func:`medgen_monai.data.read_dataset`).
        classes: class names in label-index order.
        task: the describe task of the kind (:func:`medgen_monai.describe.get_task`): its ``category(record)``
            names the record's class.
        multi_label: also give each record its positive classes as ``labels`` (from its ``label_name``: chest
            X-rays carry several findings at once).
    """
    classes = list(classes)
    labelled = []
    for record in records:
        extra: dict[str, Any] = {"label": classes.index(task.category(record))}
        if multi_label:
            extra["labels"] = record["label_name"]
        labelled.append(dict(record, **extra))
    return labelled


def with_bank_attributes(
    requests: Sequence[Mapping[str, Any]], bank: Any, labels_from_attributes: Any = None
) -> list[dict[str, Any]]:
    """Requests whose description was drawn from ``bank``, with that description's ``attributes`` (what the audit
    reads back); requests with their own description are kept as they are.

    Args:
        requests: a generation run's requests (``description_id`` names the bank entry drawn).
        bank: the bundle's :class:`~medgen_monai.describe.DescriptionBank`.
        labels_from_attributes: attributes -> positive classes (multi-label kinds: the chest X-ray phantom's
            ``label_from_attributes``), given as the requests' ``labels``; ``None``: no labels.
    """
    index = bank.index()
    scored = []
    for request in requests:
        if not request.get("description_id"):
            scored.append(dict(request))
            continue
        attributes = index[request["description_id"]]["attributes"]
        extra: dict[str, Any] = {"attributes": attributes}
        if labels_from_attributes is not None:
            extra["labels"] = labels_from_attributes(attributes)
        scored.append(dict(request, **extra))
    return scored


def load_images(paths: Sequence[str | Path], size: Sequence[int] | None = None) -> list[np.ndarray]:
    """Read 2D images (PNG / JPEG) as uint8 ``(H, W)`` or ``(H, W, 3)``, or volumes (NIfTI, MetaImage, a DICOM
    series folder) as float32 ``(X, Y, Z)`` in RAS voxel order (:func:`medgen_monai.io.volumes.load_volume`), the
    phantoms' (and so the audit networks') orientation.

    Args:
        paths: the files.
        size: ``(H, W)``: resize 2D images to it (area averaging), so that a folder of mixed sizes (real ISIC)
            can be compared; ``None`` keeps each image's size.
    """
    if size is not None and (len(size) != 2 or min(int(s) for s in size) < 1):
        raise ValueError(f"size must be (H, W), two positive integers for 2D images, got {list(size)}")
    images = []
    for path in paths:
        path = Path(path)
        if not path.is_file() and not path.is_dir():
            raise ValueError(f"{path}: image file not found")
        if path.suffix.lower() in (".png", ".jpg", ".jpeg"):
            from PIL import Image

            from ..transforms.images import read_image_channels

            array = read_image_channels(path, None)  # the bundles' reading rule (palette, CMYK, alpha, 16 bit)
            image = Image.fromarray(
                array[0].astype(np.uint8) if len(array) == 1 else np.moveaxis(array, 0, -1).astype(np.uint8)
            )
            if size is not None and image.size != (int(size[1]), int(size[0])):
                image = image.resize((int(size[1]), int(size[0])), Image.BOX)
            images.append(np.array(image))
        else:
            if size is not None:
                raise ValueError(f"{path}: size applies to 2D images only; volumes are compared at their own size")
            from ..io.volumes import load_volume

            images.append(load_volume(path)[0])
    return images


def predicted_or_invalid(audit: Any, images: Sequence[np.ndarray]) -> dict[str, list[str]]:
    """The audit's read-back per head, with ``"invalid"`` for images its validity output rejects (so an attribute
    mix made of noise is as far from the real mix as it looks)."""
    assessed = audit.assess(images)
    return {
        head: [v if ok else "invalid" for v, ok in zip(values, assessed["valid"])]
        for head, values in assessed["values"].items()
    }


def attribute_distance(
    generated: Mapping[str, Sequence[str]],
    reference: Mapping[str, Sequence[str]],
    generated_classes: Sequence[str],
    reference_classes: Sequence[str],
) -> dict[str, Any]:
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

    names = ["valid_fraction", "class_accuracy", "attribute_distance", "diversity"]
    generated = [report["generated"][n] for n in names]
    reference = [report["reference"].get(n, np.nan) for n in names]
    fig, ax = plt.subplots(figsize=(7, 3))
    x = np.arange(len(names))
    ax.bar(x - 0.2, generated, 0.4, label="generated")
    ax.bar(x + 0.2, reference, 0.4, label="reference (real)")
    ax.set_xticks(x, names)
    floor = report["generated"].get("fid_floor")
    floor_text = f", floor {floor['mean']:.2f} ± {floor['sd']:.2f}" if floor else ""
    ax.set_title(f"{report['unit']}: FID {report['generated']['fid']:.2f}{floor_text} (n={report['generated']['n']})")
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
    reference_seed: int = 0,
    size: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Score the outputs of a generation run and write ``evaluation.json`` and ``evaluation.png``.

    Args:
        output_dir: the run's output folder (``<id>.<format>`` per request).
        requests: the run's requests (``id``, ``category``, optional ``attributes``; optional ``labels``, the
            positive classes of a multi-label request, scored instead of ``category``). A request's source image
            (``source_image``: a path; ``source`` or ``description_id``: the dataset / description-bank id of the
            image whose description conditioned it) is left out of the reference.
        reference: datalist records of real images (``image``, ``label`` index, optional ``attributes`` and
            ``labels`` as for requests).
        unit: the audit unit judging the images (``"derm_image"``).
        classes: class names in label-index order.
        image_format: ``png`` or ``nifti`` outputs.
        max_reference: reference size ``n``, drawn at random in the requests' class proportions
            (:func:`~medgen_monai.metrics.reference.stratified_reference` with ``on_short="shrink"``: smaller when a
            class is short, as ``report["reference"]["sampling"]["note"]`` says); ``None``: as large as the data allow.
        reference_seed: seed of the reference draw, the FID floor's subsets and the KID subsets.
        size: ``(H, W)`` both the generated and the reference 2D images are resized to (a real folder holds
            images of many sizes); ``None``: the generated images' size, the reference resized to it.

    Returns:
        the report written to ``evaluation.json``; besides the scores, ``generated.fid_floor`` (``{"mean", "sd", "n",
        "repeats"}``: real-vs-real FID at the generated set's ``n`` and class counts, 10 repetitions; ``None`` with
        ``generated.fid_floor_note`` when the reference is too small), ``generated.fid_ratio`` (``fid / floor mean``),
        ``generated.kid`` (``{"mean", "ci95", "subsets", "subset_size"}``), ``reference.sampling`` (the draw) and
        ``reference.fid_split_half`` (FID of two random halves of the reference, at ``n_reference / 2`` per side:
        kept for old readers, not comparable with ``fid``; use ``fid_floor``).
    """
    output_dir = Path(output_dir)
    kind, _ = parse_unit(unit)
    suffix = {"png": ".png", "nifti": ".nii.gz"}[image_format]
    generated = load_images([output_dir / f"{r['id']}{suffix}" for r in requests], size)
    if size is None and image_format == "png":  # the reference at the generated images' size
        size = generated[0].shape[:2]
    generated_classes = [str(r["category"]) for r in requests]
    # a seeded random draw in the requests' class proportions, without the requests' own source images
    drawn = stratified_reference(
        reference,
        generated_classes,
        max_reference,
        reference_seed,
        class_of=lambda r: classes[int(r["label"])],
        exclude=request_sources(requests),
        on_short="shrink",
    )
    reference = drawn.records
    if len(reference) < 2:
        raise ValueError(
            f"evaluate_generation: the reference has {len(reference)} images of the requested classes "
            f"{sorted(set(generated_classes))} (draw: {drawn.summary()}); need at least 2"
        )
    if drawn.note:
        warnings.warn(f"evaluate_generation: reference of {len(reference)} images: {drawn.note}", stacklevel=2)
    reference_images = load_images([r["image"] for r in reference], size)
    reference_classes = drawn.classes
    audit = load_audit(unit)
    extractor = feature_extractor(audit)  # loaded once: FID, its floor and KID share the features
    reference_features, generated_features = extractor(reference_images), extractor(generated)
    spatial_dims, channels = audit.spec.spatial_dims, audit.spec.in_channels

    def read_back(images: list[np.ndarray], labels: list[Any]) -> tuple[dict[str, list[str]], float, float]:
        """Predicted values, class accuracy (an invalid image is wrong) and the valid fraction."""
        scored = attribute_accuracy(images, [{} for _ in images], labels=labels, audit=audit)
        # single-label units have one "label" head, multi-label units one "label:<class>" head per class
        heads = [v for k, v in scored["per_attribute"].items() if k == "label" or k.startswith("label:")]
        return predicted_or_invalid(audit, images), float(np.mean(heads)), scored["valid_fraction"]

    # a record's "labels" (the positive classes of a multi-label study) is scored instead of its category
    generated_pred, class_accuracy, generated_valid = read_back(
        generated, [r.get("labels") or c for r, c in zip(requests, generated_classes)]
    )
    reference_pred, reference_accuracy, reference_valid = read_back(
        reference_images, [r.get("labels") or c for r, c in zip(reference, reference_classes)]
    )
    attributes = [h for h in audit.spec.head_names if h != "label" and not h.startswith("label:")]
    report: dict[str, Any] = {
        "unit": unit,
        "kind": kind,
        "generated": {
            "n": len(generated),
            "valid_fraction": generated_valid,
            "class_accuracy": class_accuracy,
            "attribute_distance": attribute_distance(
                {a: generated_pred[a] for a in attributes},
                {a: reference_pred[a] for a in attributes},
                generated_classes,
                reference_classes,
            )["mean"],
            "fid": fid_from_features(reference_features, generated_features),
            "diversity": diversity(generated, generated_classes, spatial_dims, channels)["diversity"],
        },
        "reference": {
            "n": len(reference_images),
            "valid_fraction": reference_valid,
            "class_accuracy": reference_accuracy,
            "diversity": diversity(reference_images, reference_classes, spatial_dims, channels)["diversity"],
        },
    }
    requested = [r.get("attributes") or {} for r in requests]
    if any(requested):
        scored = attribute_accuracy(generated, requested, audit=audit)
        report["generated"]["attribute_accuracy"] = scored["mean"]  # an invalid image is wrong on every attribute
        report["generated"]["attribute_accuracy_valid"] = scored["mean_valid"]
    # FID's small-sample bias depends on n: its floor is real vs real at the generated set's n and class counts
    try:
        floor = fid_floor(
            reference_features,
            len(generated),
            seed=reference_seed,
            labels=reference_classes,
            counts=Counter(generated_classes),
        )
    except ValueError as error:  # too small a reference (or a class missing from it): say so, keep the rest
        floor = None
        report["generated"]["fid_floor_note"] = str(error)
    report["generated"]["fid_floor"] = floor
    if floor is not None:  # the FID on the floor's footing: reference subsets of the generated set's size and classes
        report["generated"]["fid_full_reference"] = report["generated"]["fid"]
        report["generated"]["fid"] = matched_fid(
            reference_features, generated_features, reference_classes, Counter(generated_classes), seed=reference_seed
        )["mean"]
    fid_value = report["generated"]["fid"]
    report["generated"]["fid_ratio"] = fid_value / floor["mean"] if floor and floor["mean"] > 0 else None
    report["generated"]["kid"] = kid(reference_features, generated_features, seed=reference_seed)
    report["reference"]["sampling"] = drawn.summary()
    # legacy: the reference is in random order, so these halves are random (at n_reference / 2, not the generated n)
    half = len(reference_images) // 2
    if half >= 2:
        report["reference"]["fid_split_half"] = fid_from_features(reference_features[:half], reference_features[half:])
    report["generated"]["per_class_count"] = dict(Counter(generated_classes))
    atomic_write_text(output_dir / "evaluation.json", json.dumps(report, indent=2) + "\n")
    _bar_plot(report, output_dir / "evaluation.png")
    return report
