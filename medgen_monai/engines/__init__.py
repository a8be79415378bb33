"""One trainer family and the one sampler every bundle uses."""

from __future__ import annotations

from .bundles import inference_parser, shipped_bundles, unshipped_bundles
from .generation import (ClassConditioner, Conditioner, DescriptionConditioner, GenerationRunner, ReportConditioner,
                         class_requests, dataset_report_requests, report_requests, volume_affine)
from .guidance import classifier_free_guidance, conditioned
from .latents import LATENT_NORMALISATIONS, denormalise_latents, fit_latent_normalisation, normalise_latents
from .sampler import DiffusionSampler, initial_noise, step_noise
from .schedules import DDIMSchedule, DDPMSchedule, RFlowSchedule, Schedule, schedule_for
from .joint import JointStreamTrainer
from .objective import ObjectiveTrainer, TrainingObjective
from .trainer import AutoencoderTrainer, CheckpointError, IndexedBatches, LatentDiffusionTrainer, load_checkpoint

__all__ = [
    "AutoencoderTrainer",
    "CheckpointError",
    "ClassConditioner",
    "Conditioner",
    "DDIMSchedule",
    "DDPMSchedule",
    "DescriptionConditioner",
    "DiffusionSampler",
    "GenerationRunner",
    "IndexedBatches",
    "JointStreamTrainer",
    "ObjectiveTrainer",
    "TrainingObjective",
    "LATENT_NORMALISATIONS",
    "LatentDiffusionTrainer",
    "RFlowSchedule",
    "ReportConditioner",
    "Schedule",
    "class_requests",
    "classifier_free_guidance",
    "conditioned",
    "dataset_report_requests",
    "denormalise_latents",
    "fit_latent_normalisation",
    "inference_parser",
    "initial_noise",
    "load_checkpoint",
    "normalise_latents",
    "report_requests",
    "schedule_for",
    "shipped_bundles",
    "step_noise",
    "unshipped_bundles",
    "volume_affine",
]
