"""MONAI's ``DiffusionModelUNet`` with the conditioning our bundles need, without forking MONAI.

MONAI's U-Net adds ``class_embedding(class_labels)`` to the timestep embedding and accepts integer
labels only. :class:`ConditionedDiffusionUNet` keeps MONAI's forward and replaces that one
embedding module, so that

* integer labels ``(B,)`` work as in MONAI, with one extra row: the **null class** used for
  classifier-free guidance (training drops labels to it, the sampler's unconditional half uses it);
* soft labels ``(B, num_classes + 1)`` (probabilities, e.g. CCELLA's class predicted from the report)
  embed as the probability-weighted mix of the rows;
* an extra conditioning vector ``(B, extra_embedding_dim)`` is projected (zero-initialised, so a
  pretrained U-Net starts unchanged) and joined to the timestep embedding.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence

import torch
import torch.nn as nn
from monai.networks.nets import DiffusionModelUNet

__all__ = ["SoftClassEmbedding", "ConditionedDiffusionUNet"]


class SoftClassEmbedding(nn.Embedding):
    """``nn.Embedding`` that also takes probability vectors, plus an optional extra-vector projection.

    Args:
        num_embeddings: rows (classes + the null class).
        embedding_dim: the U-Net's timestep-embedding width.
        extra_embedding_dim: width of an extra conditioning vector (``None``: none).
    """

    def __init__(self, num_embeddings: int, embedding_dim: int, extra_embedding_dim: int | None = None) -> None:
        super().__init__(num_embeddings, embedding_dim)
        self.extra_projection: nn.Linear | None = None
        if extra_embedding_dim is not None:
            self.extra_projection = nn.Linear(extra_embedding_dim, embedding_dim)
            nn.init.zeros_(self.extra_projection.weight)
            nn.init.zeros_(self.extra_projection.bias)
        # the extra vector of the current call (MONAI's U-Net forward has no slot for it): see with_extra
        self._extra: torch.Tensor | None = None

    @contextlib.contextmanager
    def with_extra(self, extra: torch.Tensor | None) -> Iterator[None]:
        """Add ``extra`` ``(B, extra_embedding_dim)`` (projected) to the embeddings made inside the block."""
        self._extra = extra
        try:
            yield
        finally:
            self._extra = None

    def forward(self, labels: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """Embed ``(B,)`` integer labels or ``(B, num_embeddings)`` probabilities -> ``(B, embedding_dim)``."""
        if labels.is_floating_point():
            if labels.ndim != 2 or labels.shape[1] != self.num_embeddings:
                raise ValueError(
                    f"soft class labels must be (B, {self.num_embeddings}) probabilities "
                    f"(classes + the null class), got {tuple(labels.shape)}"
                )
            embedding = labels.to(self.weight.dtype) @ self.weight
        else:
            if labels.ndim != 1:
                raise ValueError(f"integer class labels must be (B,), got {tuple(labels.shape)}")
            embedding = super().forward(labels)
        if self._extra is not None:
            if self.extra_projection is None:
                raise ValueError("extra_embedding given, but the U-Net was built without extra_embedding_dim")
            embedding = embedding + self.extra_projection(self._extra.to(self.weight.dtype))
        return embedding


class ConditionedDiffusionUNet(DiffusionModelUNet):
    """``DiffusionModelUNet`` with a null class, soft class labels and an extra conditioning vector.

    Args:
        num_classes: real classes (a null class is added at index ``num_classes``); ``None``: no class input.
        extra_embedding_dim: width of an extra conditioning vector joined to the timestep embedding
            (requires ``num_classes``; use 1 class for "no classes, extra vector only").
        kwargs: every other ``DiffusionModelUNet`` argument (``spatial_dims``, ``in_channels``,
            ``out_channels``, ``channels``, ``attention_levels``, ``with_conditioning``, ``cross_attention_dim``, ...).
            ``num_class_embeds`` is set from ``num_classes`` and may not be given.

    Forward:
        ``x`` ``(B, C, *spatial)``, ``timesteps`` ``(B,)``, ``context`` ``(B, L, D)`` or ``None``,
        ``class_labels`` ``(B,)`` int or ``(B, num_classes + 1)`` float, ``extra_embedding``
        ``(B, extra_embedding_dim)`` or ``None`` -> ``(B, out_channels, *spatial)``.
    """

    def __init__(self, num_classes: int | None = None, extra_embedding_dim: int | None = None, **kwargs) -> None:
        if "num_class_embeds" in kwargs:
            raise ValueError("give num_classes (the null class is added); num_class_embeds is set from it")
        if num_classes is not None and num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if extra_embedding_dim is not None and (num_classes is None or extra_embedding_dim < 1):
            raise ValueError(
                "extra_embedding_dim must be >= 1 and needs num_classes (use num_classes=1 if there are none)"
            )
        super().__init__(num_class_embeds=None if num_classes is None else num_classes + 1, **kwargs)
        self.num_classes = num_classes
        if num_classes is not None:
            time_embed_dim = self.time_embed[-1].out_features
            self.class_embedding = SoftClassEmbedding(num_classes + 1, time_embed_dim, extra_embedding_dim)

    @property
    def null_class(self) -> int:
        """Index of the null class (classifier-free guidance)."""
        if self.num_classes is None:
            raise ValueError("this U-Net has no class input")
        return self.num_classes

    def forward(  # type: ignore[override]
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,
        class_labels: torch.Tensor | None = None,
        extra_embedding: torch.Tensor | None = None,
        down_block_additional_residuals: Sequence[torch.Tensor] | None = None,
        mid_block_additional_residual: torch.Tensor | None = None,
    ) -> torch.Tensor:
        if extra_embedding is not None:
            if self.num_classes is None:
                raise ValueError("extra_embedding given, but the U-Net was built without extra_embedding_dim")
            if class_labels is None:  # the extra vector rides on the class embedding: use the null class
                class_labels = torch.full((x.shape[0],), self.null_class, dtype=torch.long, device=x.device)
        extra = (
            self.class_embedding.with_extra(extra_embedding)
            if self.num_classes is not None
            else contextlib.nullcontext()
        )
        with extra:
            return super().forward(
                x,
                timesteps,
                context=context,
                class_labels=class_labels,
                down_block_additional_residuals=down_block_additional_residuals,
                mid_block_additional_residual=mid_block_additional_residual,
            )
