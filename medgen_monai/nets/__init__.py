"""Method-specific modules around MONAI networks."""

from __future__ import annotations

from .aligned import AlignedEncoders, clip_loss, combine_embeddings
from .auxiliary import AuxiliaryLosses, AuxiliaryLossNetwork
from .ccella import CLASS_PATHS, CCELLAUNet
from .conditioned_unet import ConditionedDiffusionUNet, SoftClassEmbedding
from .connector import CLASS_HEAD_MODES, AdaLayerNorm, PerceiverBlock, TimestepAwareConnector
from .projection import NearestNeighbourProjection, projection_from_bank
from .prototype import MiddleBlockWithPrototypes, PrototypeConditioning, VAPDiffusionUNet
from .report_vae import ReportVAE
from .shapes import latent_shape
from .streams import (
    EnvironmentEncoder,
    JointDiffusion,
    StreamAutoencoder,
    StreamConnector,
    VectorDiffusionNet,
    pack,
    unpack,
)

__all__ = [
    "AlignedEncoders",
    "AuxiliaryLossNetwork",
    "AuxiliaryLosses",
    "clip_loss",
    "combine_embeddings",
    "ReportVAE",
    "EnvironmentEncoder",
    "JointDiffusion",
    "StreamAutoencoder",
    "StreamConnector",
    "VectorDiffusionNet",
    "pack",
    "unpack",
    "CCELLAUNet",
    "CLASS_PATHS",
    "AdaLayerNorm",
    "CLASS_HEAD_MODES",
    "PerceiverBlock",
    "TimestepAwareConnector",
    "ConditionedDiffusionUNet",
    "SoftClassEmbedding",
    "NearestNeighbourProjection",
    "projection_from_bank",
    "PrototypeConditioning",
    "MiddleBlockWithPrototypes",
    "VAPDiffusionUNet",
    "latent_shape",
]
