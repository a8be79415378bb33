"""Method-specific modules around MONAI networks."""

from __future__ import annotations

from .conditioned_unet import ConditionedDiffusionUNet, SoftClassEmbedding
from .projection import NearestNeighbourProjection
from .prototype import MiddleBlockWithPrototypes, PrototypeConditioning, VAPDiffusionUNet
from .shapes import latent_shape

__all__ = [
    "ConditionedDiffusionUNet",
    "SoftClassEmbedding",
    "NearestNeighbourProjection",
    "PrototypeConditioning",
    "MiddleBlockWithPrototypes",
    "VAPDiffusionUNet",
    "latent_shape",
]
