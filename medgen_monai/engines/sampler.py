"""The one sampler of the project: a short loop over a denoiser (k-diffusion's shape), MONAI schedulers.

Every bundle samples through :class:`DiffusionSampler`. It differs from MONAI's
``LatentDiffusionInferer.sample`` in what the bundles need:

* the conditional and unconditional halves of classifier-free guidance run in ONE U-Net forward
  per step (batch ``2B``), with our null condition (a null class, an empty description's tokens)
  rather than MONAI's ``-1``-filled tensor;
* any U-Net keyword input is passed through: ``context`` tokens, ``class_labels`` (integer or soft),
  ``extra_embedding`` (MONAI's inferers never pass class labels);
* per-sample seeds: sample ``i`` with seed ``s`` draws its initial noise and every stochastic step's
  noise from its own generator, so it is the same whether made alone or inside a batch;
* DDPM, DDIM and rectified flow (MONAI ``DDPMScheduler``, ``DDIMScheduler``, ``RFlowScheduler``), each through
  its adapter in :mod:`medgen_monai.engines.schedules` (the trainer uses the same adapters);
* guidance is a wrapper around the denoiser (:mod:`medgen_monai.engines.guidance`), not code in the loop;
* latent decoding through the autoencoder, with MONAI sliding windows for large 3D latents.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn as nn
from monai.inferers import SlidingWindowInferer
from monai.networks.schedulers import Scheduler

from .guidance import Condition, classifier_free_guidance, conditioned
from .latents import denormalise_latents, numbers, plain
from .schedules import Schedule, schedule_for

__all__ = ["Condition", "DiffusionSampler", "initial_noise", "step_noise"]


def initial_noise(
    seeds: Sequence[int], shape: Sequence[int], device: torch.device | str = "cpu"
) -> tuple[torch.Tensor, list[torch.Generator]]:
    """Gaussian noise ``(len(seeds), *shape)``, one CPU generator per sample (kept for later stochastic steps).

    Noise is drawn on the CPU so that a seed gives the same sample on every device.
    """
    generators = [torch.Generator().manual_seed(int(s)) for s in seeds]
    noise = torch.stack([torch.randn(tuple(shape), generator=g) for g in generators])
    return noise.to(device), generators


def step_noise(
    generators: Sequence[torch.Generator], shape: Sequence[int], device: torch.device | str = "cpu"
) -> torch.Tensor:
    """One stochastic step's noise ``(len(generators), *shape)``: sample ``i`` draws from its own generator, so its
    noise does not depend on which other samples share the batch."""
    return torch.stack([torch.randn(tuple(shape), generator=g) for g in generators]).to(device)


def _check_condition(name: str, condition: Condition, batch: int) -> dict[str, torch.Tensor]:
    checked = {}
    for key, value in condition.items():
        if not isinstance(value, torch.Tensor):
            raise ValueError(f"{name}[{key!r}] must be a tensor, got {type(value).__name__}")
        if value.shape[0] not in (1, batch):
            raise ValueError(f"{name}[{key!r}] has batch {value.shape[0]}; expected 1 or {batch} (one per seed)")
        checked[key] = value.expand(batch, *value.shape[1:]) if value.shape[0] == 1 else value
    return checked


class DiffusionSampler:
    """Reverse diffusion from noise to (decoded) samples.

    Args:
        scheduler: a MONAI ``DDPMScheduler``, ``DDIMScheduler`` or ``RFlowScheduler`` configured as in training
            (or its :class:`~medgen_monai.engines.schedules.Schedule`).
        num_inference_steps: reverse steps.
        guidance_scale: classifier-free guidance weight ``w`` in ``uncond + w * (cond - uncond)``; 1 disables it.
        autoencoder: decodes latents (MONAI ``AutoencoderKL``: ``decode_stage_2_outputs``); ``None``: return latents.
        scale_factor: latent scale used in training, one number or one per channel (the trainer's).
        latent_shift: latent shift used in training, one number or one per channel (latents are divided by
            ``scale_factor`` and shifted back before decoding:
            :func:`~medgen_monai.engines.latents.denormalise_latents`).
        decode_roi_size: latent window for sliding-window decoding (large 3D); ``None``: decode whole.
        decode_overlap: sliding-window overlap.
        eta: DDIM stochasticity (0 is deterministic DDIM).
        progress: show a tqdm bar over steps.
    """

    def __init__(
        self,
        scheduler: Scheduler | Schedule,
        num_inference_steps: int = 50,
        guidance_scale: float = 1.0,
        autoencoder: nn.Module | None = None,
        scale_factor: float | Sequence[float] = 1.0,
        latent_shift: float | Sequence[float] = 0.0,
        decode_roi_size: Sequence[int] | None = None,
        decode_overlap: float = 0.25,
        eta: float = 0.0,
        progress: bool = True,
    ) -> None:
        schedule = schedule_for(scheduler)
        if not 1 <= int(num_inference_steps) <= schedule.num_train_timesteps:
            raise ValueError(
                f"num_inference_steps must be in [1, {schedule.num_train_timesteps}] (the training steps), "
                f"got {num_inference_steps}"
            )
        if guidance_scale < 0:
            raise ValueError(f"guidance_scale must be >= 0, got {guidance_scale}")
        if not all(v > 0 for v in numbers(scale_factor)):
            raise ValueError(f"scale_factor must be positive (one number or one per channel), got {scale_factor}")
        if eta < 0:
            raise ValueError(f"eta must be >= 0, got {eta}")
        if eta > 0 and not schedule.stochastic(eta):
            raise ValueError(
                f"eta {eta}: stochastic steps are DDIM's; this sampler's {schedule.name} steps are "
                "deterministic (use eta 0)"
            )
        if not 0 <= decode_overlap < 1:
            raise ValueError(f"decode_overlap must be in [0, 1), got {decode_overlap}")
        self.schedule = schedule
        self.scheduler = schedule.scheduler
        self.num_inference_steps = int(num_inference_steps)
        self.guidance_scale = float(guidance_scale)
        self.autoencoder = autoencoder
        self.scale_factor = plain(scale_factor)
        self.latent_shift = plain(latent_shift)
        self.decode_roi_size = tuple(decode_roi_size) if decode_roi_size is not None else None
        self.decode_overlap = decode_overlap
        self.eta = float(eta)
        self.progress = progress

    @property
    def name(self) -> str:
        """``ddpm``, ``ddim`` or ``rflow`` (recorded in output sidecars)."""
        return self.schedule.name

    def settings(self) -> dict[str, float | int | str]:
        """What a sidecar records about the sampling."""
        return {
            "sampler": self.name,
            "steps": self.num_inference_steps,
            "guidance_scale": self.guidance_scale,
            "eta": self.eta,
        }

    def denoise(
        self,
        network: Callable[..., torch.Tensor],
        latent_shape: Sequence[int],
        seeds: Sequence[int],
        condition: Condition | None = None,
        null_condition: Condition | None = None,
        device: torch.device | str = "cpu",
        callback: Callable[[dict[str, torch.Tensor | int]], None] | None = None,
    ) -> torch.Tensor:
        """Run the reverse process and return latents ``(B, *latent_shape)``.

        Args:
            network: the U-Net, called as ``network(x, timesteps=t, **condition)``.
            latent_shape: ``(C, *spatial)`` of one latent.
            seeds: one seed per sample (``B = len(seeds)``).
            condition: U-Net keyword inputs for the conditional half, each ``(B, ...)`` or ``(1, ...)``.
            null_condition: the same keys for the unconditional half (the null condition); required when
                ``guidance_scale != 1``.
            device: where the network runs.
            callback: called after every step (as k-diffusion's samplers do) with ``{"i": step index, "t": the
                timestep, "x": the latents before the step (B, *latent_shape), "output": the guided network
                output (B, *latent_shape), "x_next": the latents after it}``; for diagnostics.
        """
        if len(seeds) == 0:
            raise ValueError("seeds: give at least one seed (one per sample)")
        batch = len(seeds)
        device = torch.device(device)
        condition = {k: v.to(device) for k, v in _check_condition("condition", condition or {}, batch).items()}
        if self.guidance_scale != 1.0:
            if null_condition is None:
                raise ValueError("guidance_scale != 1 needs null_condition (the unconditional inputs)")
            null_condition = {
                k: v.to(device) for k, v in _check_condition("null_condition", null_condition, batch).items()
            }
            denoiser = classifier_free_guidance(network, condition, null_condition, self.guidance_scale)
        else:
            denoiser = conditioned(network, condition)
        x, generators = initial_noise(seeds, latent_shape, device)
        timesteps, following = self.schedule.timesteps(self.num_inference_steps, latent_shape, device)
        stochastic = self.schedule.stochastic(self.eta)
        from tqdm import tqdm

        for i, (t, t_next) in enumerate(
            tqdm(
                list(zip(timesteps, following)),
                desc=f"{self.name} sampling",
                disable=not self.progress,
                unit="step",
                leave=False,
            )
        ):
            output = denoiser(x, t)
            noise = step_noise(generators, latent_shape, device) if stochastic else None
            x_next = self.schedule.step(output, t, t_next, x, noise, self.eta)
            if callback is not None:
                callback({"i": i, "t": t, "x": x, "output": output, "x_next": x_next})
            x = x_next
        return x

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """Latents ``(B, C_z, *spatial_z)`` -> images ``(B, C, *spatial)`` through the autoencoder."""
        if self.autoencoder is None:
            return latents
        z = denormalise_latents(latents, self.scale_factor, self.latent_shift)
        decode = self.autoencoder.decode_stage_2_outputs
        if self.decode_roi_size is None:
            return decode(z)
        if len(self.decode_roi_size) != z.ndim - 2:
            raise ValueError(
                f"decode_roi_size {self.decode_roi_size} must have {z.ndim - 2} entries for latents {tuple(z.shape)}"
            )
        inferer = SlidingWindowInferer(
            roi_size=self.decode_roi_size, sw_batch_size=1, overlap=self.decode_overlap, mode="gaussian", progress=False
        )
        return inferer(z, decode)

    @torch.inference_mode()
    def __call__(
        self,
        network: Callable[..., torch.Tensor],
        latent_shape: Sequence[int],
        seeds: Sequence[int],
        condition: Condition | None = None,
        null_condition: Condition | None = None,
        device: torch.device | str = "cpu",
    ) -> torch.Tensor:
        """Sample and decode: ``(B, C, *spatial)`` images (latents when there is no autoencoder).

        See :meth:`denoise` for the arguments.
        """
        if isinstance(network, nn.Module):
            network.eval()
        if isinstance(self.autoencoder, nn.Module):
            self.autoencoder.eval()
        return self.decode(self.denoise(network, latent_shape, seeds, condition, null_condition, device))
