"""Latent normalisation between an autoencoder's latents and the diffusion model's.

The diffusion model sees ``(z - shift) * scale`` where ``z`` is the autoencoder's latent; ``scale`` and
``shift`` are one number each (Rombach et al.'s global scale factor, no shift) or one per latent channel.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

__all__ = ["LATENT_NORMALISATIONS", "denormalise_latents", "fit_latent_normalisation", "normalise_latents"]

#: ``global``: one ``1 / std``, no shift; ``per_channel``: each channel's mean and ``1 / std``.
LATENT_NORMALISATIONS: tuple[str, ...] = ("global", "per_channel")

Numbers = float | Sequence[float]


def numbers(value: Numbers) -> list[float]:
    """A number or a sequence of numbers as a list."""
    if isinstance(value, torch.Tensor):
        return [float(v) for v in value.flatten()]
    return [float(v) for v in value] if isinstance(value, Sequence) else [float(value)]


def plain(value: Numbers) -> float | list[float]:
    """A number stays a float, a sequence becomes a list of floats (what checkpoints and weights files store)."""
    if isinstance(value, torch.Tensor) and value.ndim == 0:
        return float(value)
    values = numbers(value)
    return values if isinstance(value, (Sequence, torch.Tensor)) else values[0]


def _per_channel(value: Numbers, latents: torch.Tensor) -> torch.Tensor:
    """``value`` as a tensor broadcastable against ``latents`` ``(B, C, *spatial)``."""
    values = numbers(value)
    if len(values) not in (1, latents.shape[1]):
        raise ValueError(
            f"latent normalisation has {len(values)} values for latents with {latents.shape[1]} channels; "
            "expected one or one per channel"
        )
    return torch.tensor(values, dtype=latents.dtype, device=latents.device).view(1, -1, *([1] * (latents.ndim - 2)))


def fit_latent_normalisation(
    latents: torch.Tensor, how: str = "global"
) -> tuple[float | list[float], float | list[float]]:
    """``(scale, shift)`` that bring ``latents`` ``(B, C, *spatial)`` to zero mean (per channel) and unit spread."""
    if how not in LATENT_NORMALISATIONS:
        raise ValueError(f"latent normalisation must be one of {LATENT_NORMALISATIONS}, got {how!r}")
    if how == "global":
        return 1.0 / max(float(latents.flatten().std()), 1e-6), 0.0
    by_channel = latents.transpose(0, 1).flatten(1)
    return ([1.0 / max(float(s), 1e-6) for s in by_channel.std(dim=1)], [float(m) for m in by_channel.mean(dim=1)])


def normalise_latents(latents: torch.Tensor, scale: Numbers, shift: Numbers = 0.0) -> torch.Tensor:
    """Autoencoder latents ``(B, C, *spatial)`` -> the diffusion model's: ``(z - shift) * scale``."""
    return (latents - _per_channel(shift, latents)) * _per_channel(scale, latents)


def denormalise_latents(latents: torch.Tensor, scale: Numbers, shift: Numbers = 0.0) -> torch.Tensor:
    """The diffusion model's latents ``(B, C, *spatial)`` -> the autoencoder's: ``x / scale + shift``."""
    return latents / _per_channel(scale, latents) + _per_channel(shift, latents)
