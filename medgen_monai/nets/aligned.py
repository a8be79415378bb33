"""MedCoDi-M's aligned condition space: one encoder per modality into one normalised embedding space.

MedCoDi-M (after CoDi) conditions every stream on a single pooled, L2-normalised embedding, whatever the
condition's modality: the encoders of the frontal view, the lateral view and the report are trained
contrastively (CLIP's symmetric InfoNCE) on the pairs of one study, so an image and the report of the same study
land close together. A condition made of several inputs is the normalised weighted mean of their embeddings.

Here an image modality's encoder is a MONAI ``Regressor`` (a small residual CNN) and a text modality's is a
two-layer MLP over the frozen text encoder's pooled vector (all-MiniLM-L6-v2 by default; the paper fine-tunes
a CLIP text tower, too large for two CPU cores).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets import Regressor

__all__ = ["AlignedEncoders", "clip_loss", "combine_embeddings"]


def clip_loss(a: torch.Tensor, b: torch.Tensor, logit_scale: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """CLIP's symmetric InfoNCE of two batches of normalised embeddings ``(B, D)`` whose rows pair up, and the
    fraction of rows whose best match (both directions averaged) is their own pair."""
    logits = logit_scale.exp() * a @ b.t()
    target = torch.arange(a.shape[0], device=a.device)
    loss = 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
    top1 = 0.5 * ((logits.argmax(1) == target).float().mean() + (logits.argmax(0) == target).float().mean())
    return loss, top1


def combine_embeddings(embeddings: Sequence[torch.Tensor], weights: Sequence[float] | None = None) -> torch.Tensor:
    """The condition of several inputs: the L2-normalised weighted mean of their ``(B, D)`` embeddings."""
    if not embeddings:
        raise ValueError("combine_embeddings: give at least one embedding")
    weights = [1.0] * len(embeddings) if weights is None else [float(w) for w in weights]
    if len(weights) != len(embeddings) or any(w < 0 for w in weights) or sum(weights) <= 0:
        raise ValueError(f"weights must be one non-negative number per embedding, not all 0; got {weights}")
    mixed = sum(w * e for w, e in zip(weights, embeddings)) / sum(weights)
    return F.normalize(mixed, dim=-1)


class AlignedEncoders(nn.Module):
    """Encoders of several modalities into one ``dim``-wide normalised space, trained contrastively.

    Args:
        image_modalities: names of the image modalities (each gets its own CNN).
        text_modalities: names of the text modalities (each gets an MLP over a pooled text vector).
        image_shape: ``(C, H, W)`` of the images.
        text_dim: width of the pooled text vectors.
        dim: width of the shared space.
        channels: the image CNNs' channels, one stride-2 residual level each.
        temperature: CLIP's initial temperature (its logit scale is learned).

    ``embed(modality, x)``: images ``(B, C, H, W)`` or pooled text ``(B, text_dim)`` -> ``(B, dim)``, unit norm.
    ``training_losses(**{modality: batch})``: the mean CLIP loss over every pair of the given modalities.
    """

    def __init__(
        self,
        image_modalities: Sequence[str] = ("frontal", "lateral"),
        text_modalities: Sequence[str] = ("report",),
        image_shape: Sequence[int] = (1, 64, 64),
        text_dim: int = 384,
        dim: int = 128,
        channels: Sequence[int] = (16, 32, 64, 128),
        temperature: float = 0.07,
    ) -> None:
        super().__init__()
        names = [*image_modalities, *text_modalities]
        if len(names) < 2 or len(set(names)) != len(names):
            raise ValueError(
                f"give at least two modalities, each named once; got images {list(image_modalities)}, "
                f"texts {list(text_modalities)}"
            )
        if len(image_shape) != 3 or min(image_shape) < 1:
            raise ValueError(f"image_shape must be (C, H, W), got {tuple(image_shape)}")
        if dim < 1 or text_dim < 1 or not channels:
            raise ValueError(f"dim and text_dim must be >= 1 and channels non-empty; got {dim}, {text_dim}, {channels}")
        if not 0 < temperature < 1:
            raise ValueError(f"temperature must be in (0, 1), got {temperature}")
        self.image_modalities, self.text_modalities = tuple(image_modalities), tuple(text_modalities)
        self.dim = int(dim)
        self.encoders = nn.ModuleDict()
        for name in self.image_modalities:
            self.encoders[name] = Regressor(
                in_shape=tuple(image_shape), out_shape=(dim,), channels=tuple(channels), strides=(2,) * len(channels)
            )
        for name in self.text_modalities:
            self.encoders[name] = nn.Sequential(nn.Linear(text_dim, 2 * dim), nn.GELU(), nn.Linear(2 * dim, dim))
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / temperature)))

    @property
    def modalities(self) -> tuple[str, ...]:
        return (*self.image_modalities, *self.text_modalities)

    def embed(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        """``x`` of ``modality`` -> ``(B, dim)`` unit-norm embeddings."""
        if modality not in self.encoders:
            raise ValueError(f"unknown modality {modality!r}; this model has {list(self.modalities)}")
        return F.normalize(self.encoders[modality](x.float()), dim=-1)

    def condition(self, inputs: Mapping[str, torch.Tensor], weights: Mapping[str, float] | None = None) -> torch.Tensor:
        """The aligned condition of several inputs: their embeddings' normalised weighted mean, ``(B, dim)``."""
        if not inputs:
            raise ValueError("condition: give at least one input modality")
        names = list(inputs)
        return combine_embeddings(
            [self.embed(n, inputs[n]) for n in names], None if weights is None else [weights.get(n, 1.0) for n in names]
        )

    def training_losses(
        self, generator: torch.Generator | None = None, **batch: torch.Tensor
    ) -> dict[str, torch.Tensor]:
        """``contrastive``: the mean CLIP loss over every pair of the given modalities; ``top1_<a>_<b>``: each
        pair's in-batch retrieval accuracy (for logs)."""
        names = [n for n in self.modalities if n in batch]
        unknown = sorted(set(batch) - set(self.modalities))
        if unknown or len(names) < 2:
            raise ValueError(f"training_losses takes at least two of {list(self.modalities)}; got {sorted(batch)}")
        embedded = {n: self.embed(n, batch[n]) for n in names}
        scale = self.logit_scale.clamp(max=math.log(100.0))  # CLIP's cap on the logit scale
        terms, losses = {}, []
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                loss, top1 = clip_loss(embedded[a], embedded[b], scale)
                losses.append(loss)
                terms[f"top1_{a}_{b}"] = top1.detach()
        terms["contrastive"] = torch.stack(losses).mean()
        return terms

    def forward(self, modality: str, x: torch.Tensor) -> torch.Tensor:
        return self.embed(modality, x)
