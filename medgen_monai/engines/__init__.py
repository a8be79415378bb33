"""One trainer family and the one sampler every bundle uses."""

from __future__ import annotations

from .bundles import inference_parser, shipped_bundles, unshipped_bundles
from .distributed import (
    destroy_distributed,
    distributed_backend,
    distributed_device,
    get_rank,
    get_world_size,
    init_distributed,
    is_distributed,
    is_main_process,
)
from .generation import (
    AlignedConditioner,
    ClassConditioner,
    Conditioner,
    DescriptionConditioner,
    GenerationEvaluator,
    GenerationInferer,
    ReportConditioner,
    class_requests,
    dataset_report_requests,
    report_requests,
    volume_affine,
)
from .guidance import classifier_free_guidance, conditioned
from .joint import JointStreamTrainer
from .latents import LATENT_NORMALISATIONS, denormalise_latents, fit_latent_normalisation, normalise_latents
from .objective import ObjectiveTrainer, TrainingObjective
from .sampler import DiffusionSampler, initial_noise, step_noise
from .schedules import DDIMSchedule, DDPMSchedule, RFlowSchedule, Schedule, schedule_for
from .streams import dataset_stream_requests, load_stream_models, prompt_options, stream_requests, stream_weight_files
from .trainer import AutoencoderTrainer, CheckpointError, IndexedBatches, LatentDiffusionTrainer, load_checkpoint

__all__ = [
    "AlignedConditioner",
    "AutoencoderTrainer",
    "CheckpointError",
    "ClassConditioner",
    "Conditioner",
    "DDIMSchedule",
    "DDPMSchedule",
    "DescriptionConditioner",
    "DiffusionSampler",
    "GenerationEvaluator",
    "GenerationInferer",
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
    "destroy_distributed",
    "distributed_backend",
    "distributed_device",
    "fit_latent_normalisation",
    "get_rank",
    "get_world_size",
    "inference_parser",
    "init_distributed",
    "initial_noise",
    "is_distributed",
    "is_main_process",
    "load_checkpoint",
    "normalise_latents",
    "report_requests",
    "dataset_stream_requests",
    "load_stream_models",
    "prompt_options",
    "stream_requests",
    "stream_weight_files",
    "schedule_for",
    "shipped_bundles",
    "step_noise",
    "unshipped_bundles",
    "volume_affine",
]
