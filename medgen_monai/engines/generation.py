"""Generation runs: what to make (requests), how a request becomes U-Net conditions, and the loop
that samples the missing outputs in batches and hands them to the writers.

A bundle's ``inference.json`` builds a :class:`GenerationRunner` from a sampler, a network, a
:class:`~medgen_monai.io.OutputWriter`, a conditioner (method-specific: :class:`ClassConditioner` here;
description and report conditioners in later bundles) and a list of requests, and runs it. A request is
a dict with at least ``"id"`` (the output file stem) and ``"seed"``; everything else in it (category,
description, ...) goes into the output sidecar.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import torch
import torch.nn as nn
from tqdm import tqdm

from ..io.writers import OutputWriter, safe_id
from .sampler import DiffusionSampler

__all__ = ["Conditioner", "ClassConditioner", "DescriptionConditioner", "class_requests", "GenerationRunner"]


class Conditioner(Protocol):
    """Turns a batch of requests into ``(condition, null_condition)`` U-Net keyword inputs."""

    def __call__(self, requests: Sequence[Mapping[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]: ...


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

    def __call__(self, requests: Sequence[Mapping[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
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

    def __init__(self, classes: Sequence[str], encoder: Any, projection: Any = None, null_class: int | None = None,
                 use_descriptions: bool = True) -> None:
        super().__init__(classes, null_class)
        self.encoder = encoder
        self.projection = projection
        self.use_descriptions = bool(use_descriptions)

    def __call__(self, requests: Sequence[Mapping[str, Any]]) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        condition, null_condition = super().__call__(requests)
        null_tokens = self.encoder.encode([""]).tokens
        if not self.use_descriptions:
            condition["context"] = null_condition["context"] = null_tokens.expand(len(requests), *null_tokens.shape[1:])
            return condition, null_condition
        descriptions = []
        for r in requests:
            text = r.get("description")
            if not isinstance(text, str) or not text.strip():
                raise ValueError(f"request {r.get('id')!r} has no description: retrieve one from the bank "
                                 "(medgen_monai.transforms.RetrieveDescriptiond) or give one explicitly")
            descriptions.append(text)
        embedding = self.encoder.encode(descriptions)
        tokens = embedding.tokens
        if self.projection is not None:
            tokens = self.projection(tokens, embedding.pooled, condition["class_labels"])
        condition["context"] = tokens
        null_condition["context"] = null_tokens.expand_as(tokens)
        return condition, null_condition


def class_requests(classes: Sequence[str], n: int, seed: int = 0, categories: Sequence[str] | str | None = None,
                   description: str | None = None) -> list[dict[str, Any]]:
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
    requests = [{"id": f"{safe_id(c)}_{seed + i:06d}", "seed": seed + i, "category": c}
                for c in chosen for i in range(n)]
    if description is not None:
        if not str(description).strip():
            raise ValueError("description is empty: give a description, or leave it out to draw one from the bank")
        from ..text.deid import scrub_text

        scrubbed = scrub_text(str(description))[0]
        for r in requests:
            r["description"] = scrubbed
    return requests


class GenerationRunner:
    """Sample every request that has no complete output yet and write it.

    Args:
        sampler: the project's :class:`DiffusionSampler`.
        network: the diffusion U-Net (put in eval mode).
        writer: where outputs and sidecars go (a rerun into the same folder fills only what is missing).
        conditioner: requests -> U-Net conditions.
        requests: what to make.
        latent_shape: ``(C, *spatial)`` of one latent.
        batch_size: samples per sampler call.
        device: where the network runs.
        progress: a tqdm bar over batches.
    """

    def __init__(
        self,
        sampler: DiffusionSampler,
        network: nn.Module,
        writer: OutputWriter,
        conditioner: Conditioner,
        requests: Sequence[Mapping[str, Any]],
        latent_shape: Sequence[int],
        batch_size: int = 8,
        device: str | torch.device = "cpu",
        progress: bool = True,
    ) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        if not requests:
            raise ValueError("requests is empty: nothing to generate")
        self.sampler = sampler
        self.network = network
        self.writer = writer
        self.conditioner = conditioner
        self.requests = list(requests)
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.batch_size = int(batch_size)
        self.device = torch.device(device)
        self.progress = progress

    def __call__(self) -> list[dict[str, Any]]:
        """Generate what is missing; returns the sidecar records written in this call."""
        pending = self.writer.pending(self.requests)
        self.network.to(self.device).eval()
        written = []
        batches = [pending[i : i + self.batch_size] for i in range(0, len(pending), self.batch_size)]
        for batch in tqdm(batches, desc="generating", unit="batch", disable=not self.progress):
            condition, null_condition = self.conditioner(batch)
            images = self.sampler(self.network, self.latent_shape, [int(r["seed"]) for r in batch],
                                  condition=condition, null_condition=null_condition, device=self.device)
            records = [{**r, **self.sampler.settings()} for r in batch]
            self.writer.write(images, records)
            written.extend(records)
        self.writer.write_grid()
        return written
