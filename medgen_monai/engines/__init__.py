"""One trainer family and the one sampler every bundle uses."""

from __future__ import annotations

from .bundles import inference_parser
from .generation import ClassConditioner, Conditioner, DescriptionConditioner, GenerationRunner, class_requests
from .sampler import DiffusionSampler, initial_noise
from .trainer import AutoencoderTrainer, CheckpointError, IndexedBatches, LatentDiffusionTrainer, load_checkpoint

__all__ = [
    "AutoencoderTrainer",
    "CheckpointError",
    "ClassConditioner",
    "Conditioner",
    "DescriptionConditioner",
    "DiffusionSampler",
    "GenerationRunner",
    "IndexedBatches",
    "LatentDiffusionTrainer",
    "class_requests",
    "inference_parser",
    "initial_noise",
    "load_checkpoint",
]
