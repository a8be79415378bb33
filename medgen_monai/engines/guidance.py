"""Classifier-free guidance as a wrapper around the denoiser (as k-diffusion's ``CFGDenoiser``).

The sampler's loop only calls ``denoiser(x, t)``; whether and how conditions enter is this wrapper's business.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

import torch

__all__ = ["Condition", "Denoiser", "classifier_free_guidance", "conditioned"]

#: U-Net keyword inputs, each ``(B, ...)``: ``context``, ``class_labels``, ``extra_embedding``.
Condition = Mapping[str, torch.Tensor]
#: ``denoiser(x, t) -> output``: ``x`` ``(B, *latent_shape)``, ``t`` a scalar timestep, output like ``x``.
Denoiser = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def conditioned(network: Callable[..., torch.Tensor], condition: Condition) -> Denoiser:
    """``network(x, timesteps=t, **condition)`` with ``t`` broadcast to the batch."""

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return network(x, timesteps=t.to(x.device).expand(x.shape[0]), **condition)

    return denoiser


def classifier_free_guidance(
    network: Callable[..., torch.Tensor], condition: Condition, null_condition: Condition, scale: float
) -> Denoiser:
    """``uncond + scale * (cond - uncond)`` (Ho & Salimans 2022), both halves in ONE network call of batch ``2B``.

    Args:
        network: called as ``network(x, timesteps=t, **condition)``.
        condition: keyword inputs of the conditional half, each ``(B, ...)``.
        null_condition: the same keys for the unconditional half (the null class, an empty description's tokens).
        scale: guidance weight; 1 returns the conditional denoiser (no unconditional call).
    """
    if scale < 0:
        raise ValueError(f"guidance scale must be >= 0, got {scale}")
    if scale == 1.0:
        return conditioned(network, condition)
    if set(null_condition) != set(condition):
        raise ValueError(f"null_condition keys {sorted(null_condition)} must match condition keys {sorted(condition)}")
    both = conditioned(network, {k: torch.cat([condition[k], null_condition[k]]) for k in condition})

    def denoiser(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        cond, uncond = both(torch.cat([x, x]), t).chunk(2)
        return uncond + scale * (cond - uncond)

    return denoiser
