"""Method-specific modules around MONAI networks."""

from __future__ import annotations

from .conditioned_unet import ConditionedDiffusionUNet, SoftClassEmbedding

__all__ = ["ConditionedDiffusionUNet", "SoftClassEmbedding"]
