"""Method-specific modules around MONAI networks."""

from __future__ import annotations

from .ccella import CLASS_PATHS, CCELLAUNet
from .conditioned_unet import ConditionedDiffusionUNet, SoftClassEmbedding
from .connector import CLASS_HEAD_MODES, AdaLayerNorm, PerceiverBlock, TimestepAwareConnector
from .projection import NearestNeighbourProjection
from .prototype import MiddleBlockWithPrototypes, PrototypeConditioning, VAPDiffusionUNet
from .shapes import latent_shape

__all__ = [
    "CCELLAUNet",
    "CLASS_PATHS",
    "AdaLayerNorm",
    "CLASS_HEAD_MODES",
    "PerceiverBlock",
    "TimestepAwareConnector",
    "ConditionedDiffusionUNet",
    "SoftClassEmbedding",
    "NearestNeighbourProjection",
    "PrototypeConditioning",
    "MiddleBlockWithPrototypes",
    "VAPDiffusionUNet",
    "latent_shape",
]
