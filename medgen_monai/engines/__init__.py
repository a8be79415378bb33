"""One trainer family and the one sampler every bundle uses."""

from __future__ import annotations

from .sampler import DiffusionSampler, initial_noise

__all__ = ["DiffusionSampler", "initial_noise"]
