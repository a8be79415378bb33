"""Generation runs: what to make (requests), how a request becomes U-Net conditions, and the loop
that samples the missing outputs in batches and hands them to the writers.

A bundle's ``inference.json`` composes MONAI's inference workflow from these: its ``dataset`` is the list of
requests, its ``inferer`` a :class:`GenerationInferer` (a sampler and a conditioner: :class:`ClassConditioner`,
:class:`DescriptionConditioner`, :class:`ReportConditioner` or :class:`AlignedConditioner`) and its ``evaluator``
a :class:`GenerationEvaluator` that writes each batch through a :class:`~medgen_monai.io.OutputWriter`. A request is
a dict with at least ``"id"`` (the output file stem) and ``"seed"``; everything else in it (category,
description, ...) goes into the output sidecar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, Protocol

import torch
import torch.nn as nn
from ignite.engine import Engine, Events
from monai.inferers import Inferer
from tqdm import tqdm

from ..io.writers import OutputWriter, safe_id
from .sampler import DiffusionSampler

__all__ = [
    "AlignedConditioner",
    "Conditioner",
    "ClassConditioner",
    "DescriptionConditioner",
    "ReportConditioner",
    "class_requests",
    "dataset_report_requests",
    "report_requests",
    "volume_affine",
    "GenerationEvaluator",
    "GenerationInferer",
]


class Conditioner(Protocol):
    """Turns a batch of requests into ``(condition, null_condition)`` U-Net keyword inputs."""

    def __call__(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]: ...


class ClassConditioner:
    """``request["category"]`` (a class name) -> ``class_labels``; the null class for guidance.

    Args:
        classes: class names in the network's label order.
        null_class: the U-Net's null class index (``len(classes)`` for ``ConditionedDiffusionUNet``).
    """

    def __init__(self, classes: Sequence[str], null_class: int | None = None) -> None:
        if not classes:
            raise ValueError("classes must name at least one class")
        self.classes = list(classes)
        self.null_class = len(self.classes) if null_class is None else int(null_class)

    def index(self, category: str) -> int:
        if category not in self.classes:
            raise ValueError(f"unknown category {category!r}; expected one of {self.classes}")
        return self.classes.index(category)

    def __call__(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        labels = torch.tensor([self.index(r["category"]) for r in requests], dtype=torch.long)
        return {"class_labels": labels}, {"class_labels": torch.full_like(labels, self.null_class)}


class DescriptionConditioner(ClassConditioner):
    """``request["category"]`` and ``request["description"]`` -> ``class_labels`` and description tokens ``context``.

    The unconditional half of guidance gets the null class and the tokens of the empty description,
    the same null condition the trainer drops to.

    Args:
        classes: class names in the network's label order.
        encoder: a :class:`~medgen_monai.text.TextEncoder` (``encode(texts)`` -> ``.tokens (B, L, D)``,
            ``.pooled (B, D)``); it caches, so each distinct description is encoded once.
        projection: optional :class:`~medgen_monai.nets.NearestNeighbourProjection` applied to the tokens.
        null_class: the U-Net's null class index (default ``len(classes)``).
        use_descriptions: ``False`` conditions on the class only, with the empty description in both halves
            (the label-only arm of the ablation: the same network, trained with every description emptied).
    """

    def __init__(
        self,
        classes: Sequence[str],
        encoder: Any,
        projection: Any = None,
        null_class: int | None = None,
        use_descriptions: bool = True,
    ) -> None:
        super().__init__(classes, null_class)
        self.encoder = encoder
        self.projection = projection
        self.use_descriptions = bool(use_descriptions)

    def __call__(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        condition, null_condition = super().__call__(requests)
        null_tokens = self.encoder.encode([""]).tokens
        if not self.use_descriptions:
            condition["context"] = null_condition["context"] = null_tokens.expand(len(requests), *null_tokens.shape[1:])
            return condition, null_condition
        descriptions = []
        for r in requests:
            text = r.get("description")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(
                    f"request {r.get('id')!r} has no description: retrieve one from the bank "
                    "(medgen_monai.transforms.RetrieveDescriptiond) or give one explicitly"
                )
            descriptions.append(text)
        embedding = self.encoder.encode(descriptions)
        tokens = embedding.tokens
        if self.projection is not None:
            tokens = self.projection(tokens, embedding.pooled, condition["class_labels"])
        condition["context"] = tokens
        null_condition["context"] = null_tokens.expand_as(tokens)
        return condition, null_condition


class ReportConditioner:
    """``request["report"]`` and ``request["spacing"]`` -> report token states ``context`` and ``spacing`` (CCELLA).

    An empty report is encoded as the empty string (the paper's choice: the network learns what "no report" looks
    like). The null condition (guidance) is the empty report at the same spacing. With ``network`` and ``classes``,
    :meth:`annotate` adds the class the network predicts from each report to its sidecar.

    Args:
        encoder: a :class:`~medgen_monai.text.TextEncoder`.
        network: the U-Net whose ``predict_class(context)`` gives ``(B, K)`` class probabilities
            (:class:`~medgen_monai.nets.CCELLAUNet`); ``None``: no annotation.
        classes: the ``K`` class names, in the network's order.
        true_class: also give the U-Net ``report_class``, the index of ``request["category"]`` (-1 when a request
            has none): the paper's DECOUPLED ablation, where the true class conditions instead of the predicted one.
    """

    def __init__(
        self,
        encoder: Any,
        network: nn.Module | None = None,
        classes: Sequence[str] | None = None,
        true_class: bool = False,
    ) -> None:
        if encoder is None or not callable(getattr(encoder, "encode", None)):
            raise ValueError(
                f"encoder must be a TextEncoder (an object with encode(texts)), got {type(encoder).__name__}"
            )
        if network is not None and not callable(getattr(network, "predict_class", None)):
            raise ValueError(
                f"network {type(network).__name__} has no predict_class(context); give None to annotate nothing"
            )
        if (network is not None or true_class) and not classes:
            raise ValueError("classes: name the network's classes (to annotate its predictions or give the true class)")
        self.encoder = encoder
        self.network = network
        self.classes = list(classes or [])
        self.true_class = bool(true_class)

    def __call__(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        reports, spacings = [], []
        for r in requests:
            report = r.get("report", "")
            if not isinstance(report, str):
                raise ValueError(
                    f"request {r.get('id')!r}: 'report' must be text ('' for none), got {type(report).__name__}"
                )
            spacing = [float(v) for v in r.get("spacing", ())]
            if len(spacing) != 3 or not all(v > 0 for v in spacing):
                raise ValueError(
                    f"request {r.get('id')!r}: 'spacing' must be three positive millimetre values, "
                    f"got {r.get('spacing')!r}"
                )
            reports.append(report)
            spacings.append(spacing)
        tokens = self.encoder.encode(reports).tokens
        spacing = torch.tensor(spacings, dtype=torch.float32)
        null_tokens = self.encoder.encode([""]).tokens.expand_as(tokens)
        condition, null = {"context": tokens, "spacing": spacing}, {"context": null_tokens, "spacing": spacing}
        if self.true_class:
            unknown = sorted({str(r["category"]) for r in requests if r.get("category") not in (None, *self.classes)})
            if unknown:
                raise ValueError(f"unknown category {unknown}; expected some of {self.classes}")
            condition["report_class"] = torch.tensor(
                [self.classes.index(r["category"]) if r.get("category") else -1 for r in requests], dtype=torch.long
            )
            null["report_class"] = torch.full_like(condition["report_class"], -1)
        return condition, null

    @torch.inference_mode()
    def annotate(
        self, requests: Sequence[Mapping[str, Any]], condition: Mapping[str, torch.Tensor]
    ) -> list[dict[str, Any]]:
        """Per request: the class the network predicts from its report and the class probabilities."""
        if self.network is None:
            return [{} for _ in requests]
        device = next(self.network.parameters()).device
        probabilities = self.network.predict_class(condition["context"].to(device)).cpu()
        if probabilities.shape != (len(requests), len(self.classes)):
            raise ValueError(
                f"predict_class gave {tuple(probabilities.shape)}, expected ({len(requests)}, {len(self.classes)})"
            )
        return [
            {
                "predicted_class": self.classes[int(p.argmax())],
                "predicted_probability": round(float(p.max()), 4),
                "class_probabilities": {c: round(float(v), 4) for c, v in zip(self.classes, p)},
            }
            for p in probabilities
        ]


class AlignedConditioner:
    """``request["inputs"]`` (any of the modalities a MedCoDi-M model is conditioned on) -> one aligned condition
    token ``context`` ``(B, 1, dim)``: the normalised weighted mean of the inputs' embeddings in the aligned space.
    A request without inputs gets the null (zero) condition, as the unconditional half of guidance does.

    Args:
        encoders: the trained :class:`~medgen_monai.nets.AlignedEncoders`.
        text_encoder: the frozen :class:`~medgen_monai.text.TextEncoder` whose pooled vector its text modalities read.
        load_image: an image input (a file path: PNG, JPEG or DICOM) -> ``(C, H, W)`` as in training
            (the bundle's loading transforms, applied to ``{"image": input}``).
        weights: modality -> weight in the mean (default 1 each).
        network: the :class:`~medgen_monai.nets.JointDiffusion`; given, each sidecar records ``joint_generation``:
            whether the request's outputs were generated jointly (several outputs, connectors trained and on).
    """

    def __init__(
        self,
        encoders: nn.Module,
        text_encoder: Any,
        load_image: Any,
        weights: Mapping[str, float] | None = None,
        network: nn.Module | None = None,
    ) -> None:
        if not callable(getattr(encoders, "embed", None)) or not hasattr(encoders, "text_modalities"):
            raise ValueError(f"encoders must be AlignedEncoders, got {type(encoders).__name__}")
        if encoders.text_modalities and not callable(getattr(text_encoder, "encode", None)):
            raise ValueError("text_encoder: the aligned text modalities need a TextEncoder (encode(texts))")
        if not callable(load_image):
            raise ValueError("load_image must be callable: {'image': input} -> {'image': (C, H, W)}")
        self.encoders, self.text_encoder, self.load_image = encoders, text_encoder, load_image
        self.weights = dict(weights or {})
        self.network = network

    def _input(self, request: Mapping[str, Any], modality: str, value: Any) -> torch.Tensor:
        if modality in self.encoders.text_modalities:
            if not isinstance(value, str):
                raise ValueError(
                    f"request {request.get('id')!r}: input {modality!r} must be text, got {type(value).__name__}"
                )
            return self.text_encoder.encode([value]).pooled
        if not isinstance(value, (str, Path)):
            raise ValueError(
                f"request {request.get('id')!r}: input {modality!r} must be an image file path (PNG, JPEG "
                f"or DICOM), got {type(value).__name__}"
            )
        image = self.load_image({"image": value})["image"]
        return torch.as_tensor(image, dtype=torch.float32).unsqueeze(0)

    @torch.inference_mode()
    def condition(self, request: Mapping[str, Any]) -> torch.Tensor:
        """The request's aligned condition ``(dim,)``; zeros without inputs."""
        from ..nets.aligned import combine_embeddings

        inputs = request.get("inputs") or {}
        if not isinstance(inputs, Mapping):
            raise ValueError(f"request {request.get('id')!r}: 'inputs' must map modalities to inputs, got {inputs!r}")
        unknown = sorted(set(inputs) - set(self.encoders.modalities))
        if unknown:
            raise ValueError(
                f"request {request.get('id')!r}: unknown input modalities {unknown}; this model takes "
                f"{list(self.encoders.modalities)}"
            )
        if not inputs:
            return torch.zeros(self.encoders.dim)
        device = next(self.encoders.parameters()).device
        self.encoders.eval()
        names = list(inputs)
        embeddings = [self.encoders.embed(m, self._input(request, m, inputs[m]).to(device)) for m in names]
        return combine_embeddings(embeddings, [self.weights.get(m, 1.0) for m in names])[0].cpu()

    def __call__(
        self, requests: Sequence[Mapping[str, Any]]
    ) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        if self.network is not None:  # the network generates its outputs; a request asking for others is refused
            made = list(self.network.outputs)
            wrong = [r.get("id") for r in requests if list(r.get("outputs") or made) != made]
            if wrong:
                raise ValueError(
                    f"requests {wrong[:3]} ask for outputs other than the network's {made}; set the "
                    "config's outputs to the requests' (one task per run)"
                )
        context = torch.stack([self.condition(r) for r in requests]).unsqueeze(1)
        return {"context": context}, {"context": torch.zeros_like(context)}

    def annotate(
        self, requests: Sequence[Mapping[str, Any]], condition: Mapping[str, torch.Tensor]
    ) -> list[dict[str, Any]]:
        """Per request: whether its outputs were generated jointly (several outputs, connectors on)."""
        if self.network is None:
            return [{} for _ in requests]
        joint = bool(getattr(self.network, "connect", False)) and len(self.network.outputs) > 1
        return [{"joint_generation": joint} for _ in requests]


def volume_affine(shape: Sequence[int], spacing: Sequence[float]) -> list[list[float]]:
    """The ``(4, 4)`` voxel -> RAS (mm) affine of a RAS-ordered volume of ``shape`` and ``spacing``, centred on the
    origin (what the writers put in a NIfTI header)."""
    if len(shape) != len(spacing) or not all(float(v) > 0 for v in spacing):
        raise ValueError(
            f"spacing must be {len(shape)} positive values for a {len(shape)}D volume, got {list(spacing)}"
        )
    affine = [[0.0] * (len(shape) + 1) for _ in range(len(shape) + 1)]
    for axis, (size, step) in enumerate(zip(shape, spacing)):
        affine[axis][axis] = float(step)
        affine[axis][-1] = -0.5 * (int(size) - 1) * float(step)
    affine[-1][-1] = 1.0
    return affine


def report_requests(
    n: int,
    seed: int = 0,
    report: str | Sequence[str] | None = None,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    image_size: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """``n`` requests per report (or for no report) at one voxel spacing, seeds ``seed, seed + 1, ...`` in order.

    Args:
        n: samples per report (>= 1).
        seed: first seed.
        report: the radiology report conditioning the samples, or a list of reports (``n`` samples each); ``None``
            or ``""``: none (the network's empty-report condition). Each is de-identified first
            (:func:`medgen_monai.text.deid.scrub_text`): it goes into every sidecar.
        spacing: the voxel spacing in mm (3 values).
        image_size: the volume's voxels; when given, each request carries the NIfTI affine of that spacing.

    Returns:
        requests ``{"id": "report_<seed>", "seed", "report", "spacing"(, "affine")}``.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    spacing = [float(v) for v in spacing]
    if len(spacing) != 3 or not all(v > 0 for v in spacing):
        raise ValueError(f"spacing must be three positive millimetre values, got {spacing}")
    reports = [report] if report is None or isinstance(report, str) else list(report)
    if not reports:
        raise ValueError("report: give a report, a list of reports, or None for none")
    from ..text.deid import scrub_text

    texts = [scrub_text(str(r))[0] if r is not None and str(r).strip() else "" for r in reports]
    affine = volume_affine(image_size, spacing) if image_size is not None else None
    requests = []
    for text in texts:
        for _ in range(n):
            request = {
                "id": f"report_{seed + len(requests):06d}",
                "seed": seed + len(requests),
                "report": text,
                "spacing": spacing,
            }
            if affine is not None:
                request["affine"] = affine
            requests.append(request)
    return requests


def dataset_report_requests(
    records: Sequence[Mapping[str, Any]],
    n: int,
    seed: int = 0,
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    image_size: Sequence[int] | None = None,
) -> list[dict[str, Any]]:
    """One request per report of ``n`` dataset records drawn at random (evaluation: generate from held-out reports
    and read back what each report says).

    Args:
        records: datalist records with ``id``, ``text`` (the report, maybe empty), ``label_name`` and optional
            ``attributes`` (a PI-CAI reader's records).
        n: requests (<= ``len(records)``), drawn without replacement with ``numpy.random.default_rng(seed)``.
        seed: the draw's seed and the first sampling seed.
        spacing, image_size: as :func:`report_requests`.

    Returns:
        :func:`report_requests` requests, each with ``category`` (the record's class), ``attributes`` and
        ``source`` (the record id, left out of the evaluation's real reference).
    """
    import numpy as np

    if not 1 <= n <= len(records):
        raise ValueError(f"n must be in [1, {len(records)}] (the records available), got {n}")
    chosen = [records[int(i)] for i in np.random.default_rng(seed).choice(len(records), size=n, replace=False)]
    requests = report_requests(1, seed, [r.get("text", "") for r in chosen], spacing, image_size)
    for request, record in zip(requests, chosen):
        request.update(
            category=record["label_name"], attributes=dict(record.get("attributes") or {}), source=record["id"]
        )
    return requests


def class_requests(
    classes: Sequence[str],
    n: int,
    seed: int = 0,
    categories: Sequence[str] | str | None = None,
    description: str | None = None,
) -> list[dict[str, Any]]:
    """``n`` requests per category, seeds ``seed, seed + 1, ...`` per category.

    Args:
        classes: every class the bundle knows (for checking).
        n: samples per category (>= 1).
        seed: first seed.
        categories: the categories to make (a name, a comma-separated string or a list); ``None``: all.
        description: an explicit description for every request (description-conditioned bundles; it
            overrides retrieval from the bank). It is de-identified first
            (:func:`medgen_monai.text.deid.scrub_text`): free text may name people, dates or record numbers, and
            what conditions generation also goes into every sidecar.

    Returns:
        requests ``{"id": "<category>_<seed>", "seed", "category"}`` (characters other than letters, digits,
        ``.``, ``_``, ``-`` in the id become ``_``) (and ``"description"``) in category order.
    """
    if n < 1:
        raise ValueError(f"n must be >= 1 (samples per category), got {n}")
    if categories is None:
        chosen = list(classes)
    elif isinstance(categories, str):
        chosen = [c.strip() for c in categories.split(",") if c.strip()]
    else:
        chosen = list(categories)
    unknown = [c for c in chosen if c not in classes]
    if unknown or not chosen:
        raise ValueError(f"unknown category {unknown or chosen}; expected some of {list(classes)}")
    # output ids are file stems: a category such as "Pleural Effusion" becomes "Pleural_Effusion"
    requests = [
        {"id": f"{safe_id(c)}_{seed + i:06d}", "seed": seed + i, "category": c} for c in chosen for i in range(n)
    ]
    if description is not None:
        if not str(description).strip():
            raise ValueError("description is empty: give a description, or leave it out to draw one from the bank")
        from ..text.deid import scrub_text

        scrubbed = scrub_text(str(description))[0]
        for r in requests:
            r["description"] = scrubbed
    return requests


class GenerationInferer(Inferer):
    """Requests -> generated outputs: MONAI's ``Inferer`` interface over the project's sampler.

    ``inferer(requests, network)`` turns a batch of requests into U-Net conditions (the conditioner), draws each
    request's noise from its own seed and runs the sampler. It is the bundles' ``inferer`` (MONAI's inference
    workflow property); :class:`GenerationEvaluator` calls it once per batch.

    Args:
        sampler: the project's :class:`DiffusionSampler`.
        conditioner: requests -> U-Net conditions (and their null conditions for guidance).
        latent_shape: ``(C, *spatial)`` of one latent.
        device: where the network runs.
    """

    def __init__(
        self,
        sampler: DiffusionSampler,
        conditioner: Conditioner,
        latent_shape: Sequence[int],
        device: str | torch.device = "cpu",
    ) -> None:
        super().__init__()
        if not latent_shape or any(int(s) < 1 for s in latent_shape):
            raise ValueError(f"latent_shape must be (C, *spatial) with positive sizes, got {latent_shape}")
        self.sampler = sampler
        self.conditioner = conditioner
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.device = torch.device(device)

    def __call__(
        self,
        inputs: Sequence[Mapping[str, Any]],
        network: nn.Module,
        *args: Any,  # type: ignore[override]
        **kwargs: Any,
    ) -> tuple[Any, list[dict[str, Any]]]:
        """Generate ``inputs`` (requests: dicts with ``"id"`` and ``"seed"``).

        Returns:
            the sampler's output for the batch (``(B, C, *spatial)`` images, or a stream -> batch mapping for a
            multi-stream network) and one record per request: the request, the sampler's settings and what the
            conditioner derived from it (CCELLA: the class predicted from the report).
        """
        requests = list(inputs)
        if not requests:
            raise ValueError("inputs is empty: give at least one request")
        network.to(self.device).eval()
        condition, null_condition = self.conditioner(requests)
        outputs = self.sampler(
            network,
            self.latent_shape,
            [int(r["seed"]) for r in requests],
            condition=condition,
            null_condition=null_condition,
            device=self.device,
        )
        annotate = getattr(self.conditioner, "annotate", None)
        notes = annotate(requests, condition) if callable(annotate) else [{} for _ in requests]
        records = [{**r, **self.sampler.settings(), **note} for r, note in zip(requests, notes)]
        return outputs, records


class GenerationEvaluator(Engine):
    """Generate every request of ``dataset`` that has no complete output yet, in batches, and write it.

    An ignite engine, as MONAI's evaluators are (the bundles' ``evaluator``): one iteration is one batch of
    pending requests through ``inferer`` and ``writer``; ``handlers`` (MONAI style: objects with
    ``attach(engine)``) are attached at construction. :meth:`run` takes no data, like MONAI's ``Workflow.run``:
    the data are the requests still missing in ``writer``'s folder, so a rerun into the same folder makes only
    what is missing, and the writer's contact sheet is written at the end.

    Args:
        dataset: the requests (a MONAI ``Dataset`` or any sequence of dicts with ``"id"`` and ``"seed"``).
        network: the diffusion network (put in eval mode).
        inferer: requests -> outputs and records (:class:`GenerationInferer`).
        writer: where outputs and sidecars go (:class:`~medgen_monai.io.OutputWriter` or its stream variant).
        batch_size: requests per inferer call.
        handlers: ignite/MONAI handlers to attach.
        progress: a tqdm bar over batches.
    """

    def __init__(
        self,
        dataset: Sequence[Mapping[str, Any]],
        network: nn.Module,
        inferer: GenerationInferer,
        writer: OutputWriter,
        batch_size: int = 8,
        handlers: Sequence[Any] = (),
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if len(dataset) == 0:
            raise ValueError("dataset is empty: no request to generate")
        super().__init__(self._iteration)
        self.dataset = dataset
        self.network = network
        self.inferer = inferer
        self.writer = writer
        self.batch_size = int(batch_size)
        self.progress = progress
        self.written: list[dict[str, Any]] = []
        for handler in handlers:
            handler.attach(self)

    def _iteration(self, engine: Engine, batch: list[Mapping[str, Any]]) -> list[dict[str, Any]]:
        with torch.no_grad():
            outputs, records = self.inferer(batch, self.network)
        self.writer.write(outputs, records)
        self.written.extend(records)
        return records

    def run(self) -> list[dict[str, Any]]:  # type: ignore[override]
        """Generate what is missing; returns the sidecar records written in this call."""
        requests = [self.dataset[i] for i in range(len(self.dataset))]
        pending = self.writer.pending(requests)
        batches = [pending[i : i + self.batch_size] for i in range(0, len(pending), self.batch_size)]
        self.written = []
        if batches:
            bar = tqdm(total=len(batches), desc="generating", unit="batch", disable=not self.progress)
            with bar:
                handle = self.add_event_handler(Events.ITERATION_COMPLETED, lambda _: bar.update(1))
                try:
                    super().run(batches, max_epochs=1)
                finally:
                    handle.remove()
        self.writer.write_grid()
        return self.written
