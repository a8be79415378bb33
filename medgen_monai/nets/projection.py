"""Inference-time projection of a description embedding toward its nearest training embeddings (our addition
to VAP-Diffusion).

The prototype mechanism keeps the U-Net's *features* close to training; this keeps its *input* close too:
a description never seen in training (a held-out attribute combination, a user's own words) is pulled
toward the ``k`` training descriptions of the same class that are nearest in the text encoder's pooled
space (cosine similarity)::

    tokens' = (1 - alpha) * tokens + alpha * mean(tokens of the k nearest training descriptions)

``alpha = 0`` is the identity; a description that is itself in the training bank is its own nearest
neighbour, so retrieval from the bank is changed only by the spread of its neighbourhood.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

__all__ = ["NearestNeighbourProjection", "projection_from_bank"]


class NearestNeighbourProjection:
    """Pull description tokens toward the mean of their ``k`` nearest training descriptions of the same class.

    Args:
        tokens: training description tokens ``(N, L, D)``.
        pooled: their pooled vectors ``(N, D)`` (the neighbour search space).
        classes: their class indices ``(N,)``.
        k: neighbours (capped at the class's size).
        alpha: interpolation weight in ``[0, 1]``.

    Call:
        ``tokens`` ``(B, L, D)``, ``pooled`` ``(B, D)``, ``classes`` ``(B,)`` -> projected tokens ``(B, L, D)``.
        A class without training descriptions is an error (the projection would have nothing to pull toward).
    """

    def __init__(
        self,
        tokens: torch.Tensor,
        pooled: torch.Tensor,
        classes: torch.Tensor | Sequence[int],
        k: int = 8,
        alpha: float = 0.5,
    ) -> None:
        classes = torch.as_tensor(classes, dtype=torch.long)
        if tokens.ndim != 3 or pooled.ndim != 2 or classes.ndim != 1:
            raise ValueError(
                f"expected tokens (N, L, D), pooled (N, D), classes (N,); got {tuple(tokens.shape)}, "
                f"{tuple(pooled.shape)}, {tuple(classes.shape)}"
            )
        if not tokens.shape[0] == pooled.shape[0] == classes.shape[0] or tokens.shape[0] == 0:
            raise ValueError(
                f"tokens, pooled and classes must describe the same N >= 1 training descriptions, got "
                f"{tokens.shape[0]}, {pooled.shape[0]}, {classes.shape[0]}"
            )
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"alpha must be in [0, 1], got {alpha}")
        self.tokens = tokens.float()
        self.pooled = F.normalize(pooled.float(), dim=-1)
        self.classes = classes
        self.k = int(k)
        self.alpha = float(alpha)

    @classmethod
    def from_encoder(
        cls, encoder, descriptions: Sequence[str], classes: Sequence[int], k: int = 8, alpha: float = 0.5
    ) -> NearestNeighbourProjection:
        """Build from training descriptions encoded by a :class:`~medgen_monai.text.TextEncoder` (cached)."""
        if len(descriptions) == 0:
            raise ValueError("the projection needs training descriptions; the bank gave none")
        embedding = encoder.encode(list(descriptions))
        return cls(embedding.tokens, embedding.pooled, classes, k=k, alpha=alpha)

    @classmethod
    def from_bank(
        cls, bank, encoder, classes: Sequence[str], k: int = 8, alpha: float = 0.5
    ) -> NearestNeighbourProjection:
        """Build from every description of a :class:`~medgen_monai.describe.DescriptionBank` whose category is one of
        ``classes`` (the bank of the training set: its descriptions are what training saw)."""
        descriptions, labels = [], []
        for index, category in enumerate(classes):
            if category in bank.categories:
                texts = bank.descriptions(category)
                descriptions.extend(texts)
                labels.extend([index] * len(texts))
        return cls.from_encoder(encoder, descriptions, labels, k=k, alpha=alpha)

    def neighbours(self, pooled: torch.Tensor, classes: torch.Tensor) -> list[torch.Tensor]:
        """Indices of the nearest training descriptions of each query's class."""
        query = F.normalize(pooled.float(), dim=-1)
        out = []
        for vector, c in zip(query, classes.tolist()):
            members = torch.nonzero(self.classes == int(c)).flatten()
            if members.numel() == 0:
                raise ValueError(f"class {c} has no training descriptions to project toward")
            similarity = self.pooled[members] @ vector
            out.append(members[similarity.topk(min(self.k, members.numel())).indices])
        return out

    def __call__(
        self, tokens: torch.Tensor, pooled: torch.Tensor, classes: torch.Tensor | Sequence[int]
    ) -> torch.Tensor:
        classes = torch.as_tensor(classes, dtype=torch.long)
        if tokens.shape[1:] != self.tokens.shape[1:]:
            raise ValueError(
                f"tokens must be (B, {self.tokens.shape[1]}, {self.tokens.shape[2]}) like the training "
                f"descriptions, got {tuple(tokens.shape)}"
            )
        if self.alpha == 0.0:
            return tokens
        targets = torch.stack([self.tokens[index].mean(0) for index in self.neighbours(pooled, classes)])
        return ((1.0 - self.alpha) * tokens.float() + self.alpha * targets).to(tokens.dtype)


def projection_from_bank(
    bank: Any, encoder: Any, classes: Sequence[str], k: int = 8, alpha: float = 0.5
) -> NearestNeighbourProjection | None:
    """The bundles' ``projection``: :meth:`NearestNeighbourProjection.from_bank`, or ``None`` (no projection) when
    ``alpha`` is 0."""
    if alpha == 0:
        return None
    return NearestNeighbourProjection.from_bank(bank, encoder, classes, k=k, alpha=alpha)
