"""One adapter per MONAI scheduler kind, shared by the trainer and the sampler.

A MONAI scheduler holds a noise schedule; what the trainer and the sampler need from it differs by kind
(diffusers keeps schedulers apart the same way): which timesteps to train on, what the network learns to
predict, how one reverse step is taken and with which noise. :func:`schedule_for` picks the adapter for a
scheduler, so neither the trainer nor the sampler asks which kind it holds.

* :class:`DDPMSchedule` (``DDPMScheduler``): ancestral steps on the DDPM posterior, always stochastic.
* :class:`DDIMSchedule` (``DDIMScheduler``): DDIM steps with stochasticity ``eta`` (0: deterministic).
* :class:`RFlowSchedule` (``RFlowScheduler``): Euler steps along the rectified-flow velocity (deterministic).

The reverse steps take their noise as one ``(B, *latent_shape)`` tensor, drawn by the caller (per-sample
generators in :class:`~medgen_monai.engines.sampler.DiffusionSampler`), instead of a generator inside MONAI's
``step``: a batch then needs one call per step, not one per sample. DDPM and DDIM steps are MONAI's formulas
(Ho et al. 2020 eq. 7; Song et al. 2021 eq. 12 and 16), except that a DDIM step goes to the next timestep of
the grid ``set_timesteps`` made, where MONAI's ``step`` assumes the grid's spacing is ``T // steps`` (it is
not: the grid runs from ``T - 1`` to 0).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import ClassVar

import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler, Scheduler

__all__ = ["DDIMSchedule", "DDPMSchedule", "RFlowSchedule", "Schedule", "schedule_for"]


class Schedule:
    """What the trainer and the sampler need from a scheduler of one kind.

    Args:
        scheduler: the MONAI scheduler, configured as in training.
    """

    #: name recorded in sidecars and sample settings.
    name: ClassVar[str] = ""
    #: the MONAI class this adapter serves.
    scheduler_type: ClassVar[type[Scheduler]] = Scheduler

    def __init__(self, scheduler: Scheduler) -> None:
        if not isinstance(scheduler, self.scheduler_type):
            raise ValueError(
                f"{type(self).__name__} needs a MONAI {self.scheduler_type.__name__}, got {type(scheduler).__name__}"
            )
        self.scheduler = scheduler

    @property
    def num_train_timesteps(self) -> int:
        return int(self.scheduler.num_train_timesteps)

    # ---- training --------------------------------------------------------------------------------
    def training_timesteps(self, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """Timesteps ``(B,)`` for a training batch ``x0`` ``(B, C, *spatial)``, drawn from ``generator``."""
        return torch.randint(0, self.num_train_timesteps, (x0.shape[0],), generator=generator).to(x0.device)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """The noisy input at ``timesteps``; all tensors ``(B, C, *spatial)`` except ``timesteps`` ``(B,)``."""
        return self.scheduler.add_noise(original_samples=x0, noise=noise, timesteps=timesteps)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        """What the network learns to predict, ``(B, C, *spatial)``."""
        raise NotImplementedError

    def loss_weights(self, timesteps: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
        """Per-sample loss weights ``(B,)``: ones, or min-SNR-gamma weighting (Hang et al. 2023)."""
        if min_snr_gamma is None:
            return torch.ones(timesteps.shape[0], device=timesteps.device)
        raise ValueError(f"min_snr_gamma: min-SNR weighting is defined for DDPM/DDIM schedules, not {self.name}")

    # ---- sampling --------------------------------------------------------------------------------
    def timesteps(
        self, num_steps: int, latent_shape: Sequence[int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The reverse grid for ``num_steps`` steps: ``(timesteps, following)``, each ``(num_steps,)``; the last
        following timestep is 0 (the clean end)."""
        self.scheduler.set_timesteps(num_steps, device=device)
        return self._with_following(self.scheduler.timesteps)

    @staticmethod
    def _with_following(timesteps: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        following = torch.cat([timesteps[1:], torch.zeros(1, dtype=timesteps.dtype, device=timesteps.device)])
        return timesteps, following

    def stochastic(self, eta: float) -> bool:
        """Whether a step with this ``eta`` takes noise."""
        return False

    def step(
        self,
        output: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        """One reverse step from ``x`` at ``t`` to ``t_next``; ``output``, ``x``, ``noise``: ``(B, *latent_shape)``."""
        raise NotImplementedError

    def predicted_x0(self, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """The clean latent the network's ``output`` at ``t`` implies, ``(B, *latent_shape)`` (diagnostics)."""
        raise NotImplementedError


class _AlphaBarSchedule(Schedule):
    """DDPM and DDIM: a discrete schedule of ``alphas_cumprod`` with epsilon, v or sample prediction."""

    def _alpha_bar(self, t: torch.Tensor | int) -> torch.Tensor:
        t = int(t)
        if t < 0:  # past the clean end (DDIM may set it below one: set_alpha_to_one=False)
            return getattr(self.scheduler, "final_alpha_cumprod", self.scheduler.one)
        return self.scheduler.alphas_cumprod[t]

    def x0_and_epsilon(
        self, output: torch.Tensor, t: torch.Tensor | int, x: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The clean latent and the noise that ``output`` at ``t`` implies (MONAI's three prediction types)."""
        a = self._alpha_bar(t).to(x)
        kind = self.scheduler.prediction_type
        if kind == "epsilon":
            x0, eps = (x - (1 - a).sqrt() * output) / a.sqrt(), output
        elif kind == "v_prediction":
            x0, eps = a.sqrt() * x - (1 - a).sqrt() * output, a.sqrt() * output + (1 - a).sqrt() * x
        else:
            x0 = output
            eps = (x - a.sqrt() * x0) / (1 - a).sqrt()
        if self.scheduler.clip_sample:
            low, high = self.scheduler.clip_sample_values
            x0 = x0.clamp(low, high)
        return x0, eps

    def predicted_x0(self, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return self.x0_and_epsilon(output, t, x)[0]

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        kind = self.scheduler.prediction_type
        if kind == "epsilon":
            return noise
        if kind == "v_prediction":
            return self.scheduler.get_velocity(x0, noise, timesteps)
        return x0

    def snr(self, timesteps: torch.Tensor) -> torch.Tensor:
        """Signal-to-noise ratio ``alpha_bar / (1 - alpha_bar)`` at ``timesteps`` ``(B,)``."""
        a = self.scheduler.alphas_cumprod.to(timesteps.device)[timesteps.long()]
        return a / (1 - a)

    def loss_weights(self, timesteps: torch.Tensor, min_snr_gamma: float | None) -> torch.Tensor:
        if min_snr_gamma is None:
            return super().loss_weights(timesteps, None)
        snr = self.snr(timesteps)
        clipped = snr.clamp(max=float(min_snr_gamma))
        kind = self.scheduler.prediction_type
        # min(SNR, gamma) on the x0 error, written for the target the network predicts
        if kind == "epsilon":
            return clipped / snr
        if kind == "v_prediction":
            return clipped / (snr + 1)
        return clipped


class DDPMSchedule(_AlphaBarSchedule):
    """Ancestral DDPM steps (MONAI ``DDPMScheduler.step``) with the noise given as a tensor."""

    name = "ddpm"
    scheduler_type = DDPMScheduler

    def stochastic(self, eta: float) -> bool:
        return True

    def step(
        self,
        output: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        # the posterior q(x_next | x_t, x0) across the gap t -> t_next (MONAI's step for a gap of one; MONAI's
        # step assumes a gap of one whatever the grid); after the grid's last point, the clean end
        prev = int(t_next) if int(t_next) < int(t) else -1
        x0, _ = self.x0_and_epsilon(output, t, x)
        a, a_prev = self._alpha_bar(t).to(x), self._alpha_bar(prev).to(x)
        beta = 1 - a / a_prev
        mean = (a_prev.sqrt() * beta / (1 - a)) * x0 + ((a / a_prev).sqrt() * (1 - a_prev) / (1 - a)) * x
        if prev < 0:
            return mean
        if noise is None:
            raise ValueError("a DDPM step needs noise (B, *latent_shape)")
        if prev == int(t) - 1:  # MONAI's variance, with its variance_type (fixed small or large)
            variance = self.scheduler._get_variance(int(t)).to(x)
        else:  # the posterior's across the gap
            variance = ((1 - a_prev) / (1 - a) * beta).clamp(min=1e-20)
        return mean + variance.sqrt() * noise


class DDIMSchedule(_AlphaBarSchedule):
    """DDIM steps (MONAI ``DDIMScheduler.step``) to the grid's next timestep, noise given as a tensor."""

    name = "ddim"
    scheduler_type = DDIMScheduler

    def stochastic(self, eta: float) -> bool:
        return eta > 0

    def step(
        self,
        output: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        # the clean end: t_next 0 is the grid's last point when t > 0; after the last grid point, past it
        prev = int(t_next) if int(t_next) < int(t) else -1
        x0, eps = self.x0_and_epsilon(output, t, x)
        a, a_prev = self._alpha_bar(t).to(x), self._alpha_bar(prev).to(x)
        sigma = eta * ((1 - a_prev) / (1 - a) * (1 - a / a_prev)).clamp(min=0).sqrt()
        x_next = a_prev.sqrt() * x0 + (1 - a_prev - sigma**2).clamp(min=0).sqrt() * eps
        if eta > 0:
            if noise is None:
                raise ValueError("a DDIM step with eta > 0 needs noise (B, *latent_shape)")
            x_next = x_next + sigma * noise
        return x_next


class RFlowSchedule(Schedule):
    """Rectified flow (MONAI ``RFlowScheduler``): the network predicts the velocity ``x0 - noise``."""

    name = "rflow"
    scheduler_type = RFlowScheduler

    def training_timesteps(self, x0: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        # MONAI draws these from the global RNG: seed it from ours so that resume stays exact
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator)))
            return self.scheduler.sample_timesteps(x0)

    def add_noise(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        if x0.ndim >= 4:
            return super().add_noise(x0, noise, timesteps)
        # MONAI's add_noise takes 4D / 5D tensors only; vector latents (a report stream, packed streams) go through
        # it as (B, N, 1, 1), the same formula
        flat = (x0.shape[0], -1, 1, 1)
        return super().add_noise(x0.reshape(flat), noise.reshape(flat), timesteps).reshape(x0.shape)

    def training_target(self, x0: torch.Tensor, noise: torch.Tensor, timesteps: torch.Tensor) -> torch.Tensor:
        return x0 - noise

    def timesteps(
        self, num_steps: int, latent_shape: Sequence[int], device: torch.device
    ) -> tuple[torch.Tensor, torch.Tensor]:
        numel = 1
        for size in latent_shape[1:]:
            numel *= int(size)
        self.scheduler.set_timesteps(num_steps, device=device, input_img_size_numel=numel)
        return self._with_following(self.scheduler.timesteps)

    def step(
        self,
        output: torch.Tensor,
        t: torch.Tensor,
        t_next: torch.Tensor,
        x: torch.Tensor,
        noise: torch.Tensor | None = None,
        eta: float = 0.0,
    ) -> torch.Tensor:
        # not MONAI's step: it truncates the next timestep to an integer, so with continuous timesteps the
        # steps' lengths do not add up to the whole path
        dt = (float(t) - float(t_next)) / self.num_train_timesteps
        return x + output * dt

    def predicted_x0(self, output: torch.Tensor, t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        return x + output * float(t) / self.num_train_timesteps


_SCHEDULES: tuple[type[Schedule], ...] = (DDPMSchedule, DDIMSchedule, RFlowSchedule)


def schedule_for(scheduler: Scheduler | Schedule) -> Schedule:
    """The adapter for a MONAI scheduler (an adapter is returned as it is)."""
    if isinstance(scheduler, Schedule):
        return scheduler
    for kind in _SCHEDULES:
        if type(scheduler) is kind.scheduler_type:
            return kind(scheduler)
    names = [k.scheduler_type.__name__ for k in _SCHEDULES]
    names = ", ".join(names[:-1]) + " or " + names[-1]
    raise ValueError(f"scheduler must be a MONAI {names}, got {type(scheduler).__name__}")
