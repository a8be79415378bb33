"""ELLA's timestep-aware semantic connector, with CCELLA's class heads.

ELLA (Hu et al. 2024, arXiv 2403.05135; Apache-2.0 code by Tencent) maps a frozen language model's token
features to a diffusion U-Net's cross-attention tokens through a perceiver resampler whose layer norms are
modulated by the diffusion timestep: the same report yields different tokens early (layout) and late
(detail) in sampling. CCELLA (Grabke et al. 2025, arXiv 2506.10230) adds class heads on the perceiver's
latents that predict the pathology class from the report; the predicted class then conditions the U-Net
through its timestep embedding.

:class:`TimestepAwareConnector` ``(text (B, L, D_text), timesteps (B,)) -> (tokens (B, N, D_out), logits)``:

* the timestep's sinusoidal embedding (MONAI's :func:`get_timestep_embedding`) through a two-layer MLP;
* ``num_latents`` learnable latents plus a linear map of the timestep embedding;
* ``layers`` perceiver blocks: adaptive LayerNorm (shift and scale from the timestep embedding, zero-initialised,
  so every block starts as a plain LayerNorm) on the latents and on the text, attention with queries from the
  latents and keys/values from latents and text, then an MLP with squared ReLU;
* class heads (``class_heads``): ``"cascade"`` (CCELLA: a head after every block, their logits concatenated and
  mapped to the classes), ``"first"`` / ``"last"`` (one head, after the first block / on the output),
  ``"shared"`` (one head applied after every block, then mixed as in cascade), ``"none"``.
  A head: flatten the latents, linear, ReLU, linear to ``num_classes`` logits.
"""

from __future__ import annotations

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

__all__ = ["AdaLayerNorm", "CLASS_HEAD_MODES", "PerceiverBlock", "TimestepAwareConnector"]

CLASS_HEAD_MODES: tuple[str, ...] = ("cascade", "first", "last", "shared", "none")


class AdaLayerNorm(nn.Module):
    """LayerNorm without its own affine, shifted and scaled by a linear map of a conditioning vector.

    The map is zero-initialised: at the start it is a plain LayerNorm.

    Args:
        dim: the normalised width.
        condition_dim: the conditioning vector's width.
    """

    def __init__(self, dim: int, condition_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(condition_dim, 2 * dim)
        nn.init.zeros_(self.modulation.weight)
        nn.init.zeros_(self.modulation.bias)

    def forward(self, x: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``x`` ``(B, L, dim)``, ``condition`` ``(B, condition_dim)`` -> ``(B, L, dim)``."""
        shift, scale = self.modulation(F.silu(condition)).unsqueeze(1).chunk(2, dim=-1)
        return self.norm(x) * (1 + scale) + shift


class PerceiverBlock(nn.Module):
    """One perceiver block: latents attend to themselves and the text, then an MLP (squared ReLU)."""

    def __init__(self, width: int, heads: int, condition_dim: int) -> None:
        super().__init__()
        self.attention = nn.MultiheadAttention(width, heads, batch_first=True)
        self.norm_latents = AdaLayerNorm(width, condition_dim)
        self.norm_text = AdaLayerNorm(width, condition_dim)
        self.norm_mlp = AdaLayerNorm(width, condition_dim)
        self.mlp_in = nn.Linear(width, 4 * width)
        self.mlp_out = nn.Linear(4 * width, width)

    def forward(self, text: torch.Tensor, latents: torch.Tensor, condition: torch.Tensor) -> torch.Tensor:
        """``text`` ``(B, L, W)``, ``latents`` ``(B, N, W)``, ``condition`` ``(B, C)`` -> latents ``(B, N, W)``."""
        normed = self.norm_latents(latents, condition)
        keys = torch.cat([normed, self.norm_text(text, condition)], dim=1)
        latents = latents + self.attention(normed, keys, keys, need_weights=False)[0]
        return latents + self.mlp_out(torch.relu(self.mlp_in(self.norm_mlp(latents, condition))).square())


class _ClassHead(nn.Sequential):
    def __init__(self, num_latents: int, width: int, hidden: int, num_classes: int) -> None:
        super().__init__(
            nn.Flatten(1), nn.Linear(num_latents * width, hidden), nn.ReLU(), nn.Linear(hidden, num_classes)
        )


class TimestepAwareConnector(nn.Module):
    """Text features -> timestep-aware cross-attention tokens, and class logits predicted from the text.

    Args:
        text_dim: width of the text encoder's token features.
        output_dim: width of the output tokens (the U-Net's ``cross_attention_dim``).
        width: the perceiver's width.
        layers: perceiver blocks.
        heads: attention heads (``width`` must divide by it).
        num_latents: output tokens.
        time_channels: sinusoidal timestep features before the MLP.
        time_embed_dim: the timestep embedding's width (conditions every AdaLayerNorm).
        class_heads: one of :data:`CLASS_HEAD_MODES`.
        num_classes: classes the heads predict.
        class_hidden: hidden width of a class head.

    Forward:
        ``text`` ``(B, L, text_dim)``, ``timesteps`` ``(B,)`` -> ``(tokens (B, num_latents, output_dim),
        logits (B, num_classes) or None)``.
    """

    def __init__(
        self,
        text_dim: int,
        output_dim: int,
        width: int = 64,
        layers: int = 2,
        heads: int = 4,
        num_latents: int = 16,
        time_channels: int = 64,
        time_embed_dim: int = 64,
        class_heads: str = "cascade",
        num_classes: int = 2,
        class_hidden: int = 64,
    ) -> None:
        super().__init__()
        for name, value in (
            ("text_dim", text_dim),
            ("output_dim", output_dim),
            ("width", width),
            ("layers", layers),
            ("heads", heads),
            ("num_latents", num_latents),
            ("time_channels", time_channels),
            ("time_embed_dim", time_embed_dim),
            ("num_classes", num_classes),
            ("class_hidden", class_hidden),
        ):
            if int(value) < 1:
                raise ValueError(f"{name} must be >= 1, got {value}")
        if width % heads:
            raise ValueError(f"width {width} must be divisible by heads {heads}")
        if time_channels % 2:
            raise ValueError(f"time_channels must be even (sine and cosine halves), got {time_channels}")
        if class_heads not in CLASS_HEAD_MODES:
            raise ValueError(f"class_heads must be one of {CLASS_HEAD_MODES}, got {class_heads!r}")
        self.time_channels = int(time_channels)
        self.time_mlp = nn.Sequential(
            nn.Linear(time_channels, time_embed_dim), nn.SiLU(), nn.Linear(time_embed_dim, time_embed_dim)
        )
        self.latents = nn.Parameter(width**-0.5 * torch.randn(num_latents, width))
        self.time_to_latents = nn.Linear(time_embed_dim, width)
        self.text_in = nn.Linear(text_dim, width)
        self.blocks = nn.ModuleList(PerceiverBlock(width, heads, time_embed_dim) for _ in range(layers))
        self.out = nn.Sequential(nn.Linear(width, output_dim), nn.LayerNorm(output_dim))
        self.class_heads = class_heads
        self.num_classes = int(num_classes)
        heads_needed = {"cascade": layers, "first": 1, "last": 1, "shared": 1, "none": 0}[class_heads]
        self.heads = nn.ModuleList(
            _ClassHead(num_latents, width, class_hidden, num_classes) for _ in range(heads_needed)
        )
        # cascade and shared: every block's logits, concatenated, mapped to the classes
        self.mix = nn.Linear(layers * num_classes, num_classes) if class_heads in ("cascade", "shared") else None

    def timestep_embedding(self, timesteps: torch.Tensor) -> torch.Tensor:
        """``(B,)`` -> ``(B, time_embed_dim)``."""
        return self.time_mlp(get_timestep_embedding(timesteps, self.time_channels).to(self.latents.dtype))

    def forward(self, text: torch.Tensor, timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        if text.ndim != 3:
            raise ValueError(f"text must be (B, L, text_dim) token features, got {tuple(text.shape)}")
        if timesteps.ndim != 1 or timesteps.shape[0] != text.shape[0]:
            raise ValueError(f"timesteps must be (B,) with B = {text.shape[0]}, got {tuple(timesteps.shape)}")
        condition = self.timestep_embedding(timesteps)
        latents = self.latents.unsqueeze(0).expand(text.shape[0], -1, -1) + self.time_to_latents(
            F.silu(condition)
        ).unsqueeze(1)
        text = self.text_in(text)
        per_block = []
        for index, block in enumerate(self.blocks):
            latents = block(text, latents, condition)
            if self.class_heads == "cascade":
                per_block.append(self.heads[index](latents))
            elif self.class_heads == "shared":
                per_block.append(self.heads[0](latents))
            elif self.class_heads == "first" and index == 0:
                per_block.append(self.heads[0](latents))
        if self.class_heads == "last":
            per_block.append(self.heads[0](latents))
        logits = None
        if per_block:
            logits = self.mix(torch.cat(per_block, dim=1)) if self.mix is not None else per_block[0]
        return self.out(latents), logits
