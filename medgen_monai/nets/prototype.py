"""VAP-Diffusion's Prototype Condition Mechanism, attached to MONAI's diffusion U-Net at its middle block.

Random retrieval from a description bank pairs a class with descriptions (and combinations of
attributes) that were never seen together in training. The prototype mechanism keeps the U-Net's
features close to what training saw: every class ``c`` owns learnable prototype tokens ``P_c``
(plus a null prototype used for classifier-free guidance), and after the middle block the hidden
tokens ``H`` read from their class's prototypes (VAP-Diffusion, arXiv 2506.23641, the Prototype Condition Mechanism)::

    Q = W_q LN(H),  K = W_k P_c,  V = W_v P_c,  A = softmax(Q K^T / sqrt(d)) V
    H <- H + Z1(A)                       # Z1: zero-initialised linear
    H <- H + Z2(MLP(LN(H)))              # Z2: zero-initialised linear
    L_proto = 0.5 * mean((A - sg(Q))^2) / mean(sg(Q)^2)  # training only, added to the noise loss (weight 1)

Z1 and Z2 start at zero, so attaching the module leaves a U-Net's output unchanged until it learns.
At test time the same attention runs without the loss.

Three departures from the paper's text, each stated where it matters:

* ``Q`` is taken from the layer-normalised tokens (the U-Net's own attention blocks normalise before
  projecting too); the features after a middle block of a diffusion U-Net have a scale that drifts
  with the timestep.
* the loss target ``Q`` is detached (``sg``). With a live target the loss is minimised by shrinking
  ``W_q`` and ``W_v`` to zero, which the zero-initialised ``Z1`` does nothing to prevent at the start
  of training; with the target detached, only the prototypes, ``W_k``, ``W_v`` and the attention
  weights move to reproduce training features.
* the error is divided by the (detached) mean power of ``Q``. With the detached target, the raw error
  grows with ``||W_q||``, which the noise loss keeps enlarging: on the derm bundle it rose from 0.28 to
  16.5 in 400 iterations while the noise loss fell to 0.2, and under gradient-norm clipping it then
  starved the noise loss. The relative error keeps the same pull (read-out toward query) at a scale
  comparable to the noise loss whatever the feature scale.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from .auxiliary import AuxiliaryLosses
from .conditioned_unet import ConditionedDiffusionUNet

__all__ = ["PrototypeConditioning", "MiddleBlockWithPrototypes", "VAPDiffusionUNet"]


def _exporting() -> bool:
    """Whether ``torch.export`` is tracing (``torch.compiler.is_exporting``, torch >= 2.5)."""
    is_exporting = getattr(torch.compiler, "is_exporting", None)
    return bool(is_exporting is not None and is_exporting())


class PrototypeConditioning(nn.Module):
    """Per-class prototype cross-attention with zero-initialised residual attention and MLP.

    Args:
        num_classes: real classes; a null prototype is added at index ``num_classes``.
        channels: channels of the features it refines (the U-Net's deepest level).
        num_tokens: prototype tokens per class (the authors use 512 at width 512; ours are scaled to the data).
        token_dim: prototype token width (default ``channels``).
        num_heads: attention heads (``channels`` must divide by it).
        mlp_ratio: hidden width of the MLP as a multiple of ``channels``.

    Forward:
        ``hidden`` ``(B, C, *spatial)`` and ``class_labels`` ``(B,)`` int (the null class allowed) or
        ``(B, num_classes + 1)`` probabilities -> ``(hidden', loss)``: ``hidden'`` has ``hidden``'s shape,
        ``loss`` is the scalar ``L_proto`` of this call.
    """

    def __init__(
        self,
        num_classes: int,
        channels: int,
        num_tokens: int = 16,
        token_dim: int | None = None,
        num_heads: int = 4,
        mlp_ratio: float = 2.0,
    ) -> None:
        super().__init__()
        if num_classes < 1:
            raise ValueError(f"num_classes must be >= 1, got {num_classes}")
        if num_tokens < 1:
            raise ValueError(f"num_tokens (prototype tokens per class) must be >= 1, got {num_tokens}")
        if num_heads < 1 or channels % num_heads:
            raise ValueError(f"channels ({channels}) must be divisible by num_heads ({num_heads})")
        if mlp_ratio <= 0:
            raise ValueError(f"mlp_ratio must be > 0, got {mlp_ratio}")
        token_dim = channels if token_dim is None else int(token_dim)
        self.num_classes = int(num_classes)
        self.num_heads = int(num_heads)
        # N(0, 1/d) like transformer token embeddings: attention logits start near uniform
        self.prototypes = nn.Parameter(torch.randn(num_classes + 1, num_tokens, token_dim) / math.sqrt(token_dim))
        self.norm = nn.LayerNorm(channels)
        self.to_q = nn.Linear(channels, channels, bias=False)
        self.to_k = nn.Linear(token_dim, channels, bias=False)
        self.to_v = nn.Linear(token_dim, channels, bias=False)
        self.attention_out = nn.Linear(channels, channels)  # Z1
        self.mlp_norm = nn.LayerNorm(channels)
        hidden = max(1, int(round(channels * mlp_ratio)))
        self.mlp = nn.Sequential(nn.Linear(channels, hidden), nn.GELU(), nn.Linear(hidden, channels))
        self.mlp_out = nn.Linear(channels, channels)  # Z2
        for layer in (self.attention_out, self.mlp_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    @property
    def null_class(self) -> int:
        return self.num_classes

    def class_prototypes(self, class_labels: torch.Tensor) -> torch.Tensor:
        """``(B,)`` int labels or ``(B, num_classes + 1)`` probabilities -> prototype tokens ``(B, T, D)``."""
        rows = self.num_classes + 1
        if class_labels.is_floating_point():
            if class_labels.ndim != 2 or class_labels.shape[1] != rows:
                raise ValueError(
                    f"soft class labels must be (B, {rows}) probabilities, got {tuple(class_labels.shape)}"
                )
            return torch.einsum("bk,ktd->btd", class_labels.to(self.prototypes.dtype), self.prototypes)
        if class_labels.ndim != 1:
            raise ValueError(f"integer class labels must be (B,), got {tuple(class_labels.shape)}")
        # the range check reads the labels' values: torch.export traces without values (the exported program
        # indexes the prototypes as given)
        if (
            class_labels.numel()
            and not _exporting()
            and (int(class_labels.min()) < 0 or int(class_labels.max()) >= rows)
        ):
            raise ValueError(
                f"class labels must be in [0, {self.num_classes}] ({self.num_classes} is the null class), "
                f"got {class_labels.tolist()}"
            )
        return self.prototypes[class_labels.long()]

    def _heads(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        return x.view(b, n, self.num_heads, c // self.num_heads).transpose(1, 2)

    def forward(self, hidden: torch.Tensor, class_labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if hidden.ndim < 3:
            raise ValueError(f"hidden must be (B, C, *spatial), got {tuple(hidden.shape)}")
        if class_labels.shape[0] != hidden.shape[0]:
            raise ValueError(f"class_labels has batch {class_labels.shape[0]}, hidden has {hidden.shape[0]}")
        b, c = hidden.shape[:2]
        tokens = hidden.flatten(2).transpose(1, 2)  # (B, N, C)
        prototypes = self.class_prototypes(class_labels).to(tokens.dtype)
        query = self.to_q(self.norm(tokens))
        read = F.scaled_dot_product_attention(
            self._heads(query), self._heads(self.to_k(prototypes)), self._heads(self.to_v(prototypes))
        )
        read = read.transpose(1, 2).reshape(b, -1, c)  # (B, N, C)
        target = query.detach().float()
        # relative to the query's power: the raw error grows with ||W_q||, which the noise loss keeps enlarging
        loss = 0.5 * (read.float() - target).pow(2).mean() / target.pow(2).mean().clamp_min(1e-6)
        tokens = tokens + self.attention_out(read)
        tokens = tokens + self.mlp_out(self.mlp(self.mlp_norm(tokens)))
        return tokens.transpose(1, 2).reshape(hidden.shape), loss


class MiddleBlockWithPrototypes(nn.Module):
    """A U-Net middle block followed by :class:`PrototypeConditioning`.

    The U-Net's forward has no slot for class labels at the middle block, so :class:`VAPDiffusionUNet` runs its
    forward inside :meth:`conditioned_on` (a module, not a hook: a deep copy such as the trainer's EMA copy then keeps
    its own prototypes); :meth:`conditioned_on` yields a dict that holds the call's ``L_proto`` afterwards.
    """

    def __init__(self, block: nn.Module, prototypes: PrototypeConditioning) -> None:
        super().__init__()
        self.block = block
        self.prototypes = prototypes
        self._labels: torch.Tensor | None = None
        self._result: dict[str, torch.Tensor] | None = None

    @contextlib.contextmanager
    def conditioned_on(self, class_labels: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
        """Condition the calls inside the block on ``class_labels`` ``(B,)`` / ``(B, num_classes + 1)``; the yielded
        dict holds ``"loss"``, the last call's ``L_proto``, when the block ends."""
        result: dict[str, torch.Tensor] = {}
        self._labels, self._result = class_labels, result
        try:
            yield result
        finally:
            self._labels, self._result = None, None

    def forward(
        self, hidden_states: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None = None
    ) -> torch.Tensor:
        hidden_states = self.block(hidden_states=hidden_states, temb=temb, context=context)
        if self._labels is None or self._result is None:
            raise ValueError("the prototype mechanism needs class labels: call VAPDiffusionUNet with class_labels")
        hidden_states, self._result["loss"] = self.prototypes(hidden_states, self._labels.to(hidden_states.device))
        return hidden_states


class VAPDiffusionUNet(AuxiliaryLosses, ConditionedDiffusionUNet):
    """The VAP-Diffusion U-Net: MONAI's diffusion U-Net with description cross-attention, a class embedding with a
    null class, and (switchable, for the ablation) the Prototype Condition Mechanism after the middle block.

    Args:
        num_classes: real classes (the null class is added).
        prototype: attach :class:`PrototypeConditioning`; ``False`` gives the description-only model.
        prototype_tokens: prototype tokens per class.
        prototype_heads: attention heads of the prototype attention.
        kwargs: :class:`~medgen_monai.nets.ConditionedDiffusionUNet` / ``DiffusionModelUNet`` arguments
            (``spatial_dims``, ``in_channels``, ``out_channels``, ``channels``, ``attention_levels``,
            ``with_conditioning``, ``cross_attention_dim``, ...).

    Forward:
        ``x`` ``(B, C, *spatial)``, ``timesteps`` ``(B,)``, ``context`` ``(B, L, D)`` description tokens,
        ``class_labels`` ``(B,)`` int or ``(B, num_classes + 1)`` float -> ``(B, out_channels, *spatial)``.
        After a call in training mode, :attr:`auxiliary_losses` is ``{"prototype": L_proto}`` (empty without
        prototypes); the trainer adds it to the noise loss.
    """

    def __init__(
        self,
        num_classes: int,
        prototype: bool = True,
        prototype_tokens: int = 16,
        prototype_heads: int = 4,
        **kwargs: Any,
    ) -> None:
        super().__init__(num_classes=num_classes, **kwargs)
        self.prototype = bool(prototype)
        if self.prototype:
            channels = int(kwargs.get("channels", (32, 64, 64))[-1])
            module = PrototypeConditioning(
                num_classes, channels, num_tokens=prototype_tokens, num_heads=prototype_heads
            )
            self.middle_block = MiddleBlockWithPrototypes(self.middle_block, module)
        self.auxiliary_losses: dict[str, torch.Tensor] = {}

    def forward(
        self,
        x: torch.Tensor,
        timesteps: torch.Tensor,
        context: torch.Tensor | None = None,  # type: ignore[override]
        class_labels: torch.Tensor | None = None,
        **kwargs: Any,
    ) -> torch.Tensor:
        if not self.prototype:
            self.auxiliary_losses = {}
            return super().forward(x, timesteps, context=context, class_labels=class_labels, **kwargs)
        if class_labels is None:
            raise ValueError("VAPDiffusionUNet with prototypes needs class_labels (the null class for unconditional)")
        with self.middle_block.conditioned_on(class_labels) as result:
            out = super().forward(x, timesteps, context=context, class_labels=class_labels, **kwargs)
        loss = result.get("loss")
        self.auxiliary_losses = {"prototype": loss} if self.training and loss is not None else {}
        return out
