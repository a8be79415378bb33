"""Scheduler adapters, the guidance wrapper and latent normalisation."""

from __future__ import annotations

import pytest
import torch
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, RFlowScheduler

from medgen_monai.engines import (
    DDIMSchedule,
    DDPMSchedule,
    RFlowSchedule,
    classifier_free_guidance,
    denormalise_latents,
    fit_latent_normalisation,
    normalise_latents,
    schedule_for,
)

BETAS = {"schedule": "scaled_linear_beta", "beta_start": 0.0015, "beta_end": 0.0195, "clip_sample": False}
PREDICTIONS = ["epsilon", "v_prediction", "sample"]


def _tensors(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 4, 8, 8, generator=g), torch.randn(2, 4, 8, 8, generator=g)


def test_schedule_for_picks_the_adapter_and_refuses_other_schedulers():
    assert isinstance(schedule_for(DDPMScheduler(10)), DDPMSchedule)
    assert isinstance(schedule_for(DDIMScheduler(10)), DDIMSchedule)
    assert isinstance(schedule_for(RFlowScheduler(10)), RFlowSchedule)
    adapter = schedule_for(DDIMScheduler(10))
    assert schedule_for(adapter) is adapter
    with pytest.raises(ValueError, match="DDPMScheduler, DDIMScheduler or RFlowScheduler, got PNDMScheduler"):
        schedule_for(PNDMScheduler(10))
    with pytest.raises(ValueError, match="needs a MONAI DDIMScheduler"):
        DDIMSchedule(DDPMScheduler(10))


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("t", [999, 500, 1, 0])
def test_ddpm_step_with_given_noise_is_monai_step(prediction, t):
    scheduler = DDPMScheduler(1000, prediction_type=prediction, **BETAS)
    scheduler.set_timesteps(1000)
    x, output = _tensors()
    expected = scheduler.step(output, t, x, generator=torch.Generator().manual_seed(5))[0]
    noise = torch.randn(output.shape, generator=torch.Generator().manual_seed(5))
    got = schedule_for(scheduler).step(output, torch.tensor(t), torch.tensor(max(t - 1, 0)), x, noise)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("prediction", PREDICTIONS)
@pytest.mark.parametrize("eta", [0.0, 1.0])
@pytest.mark.parametrize("t", [990, 500, 10, 0])
def test_ddim_step_with_given_noise_is_monai_step_on_an_even_grid(prediction, eta, t):
    scheduler = DDIMScheduler(1000, prediction_type=prediction, **BETAS)
    scheduler.set_timesteps(100)  # MONAI's step assumes the spacing 1000 // 100: compare where that holds
    x, output = _tensors()
    expected = scheduler.step(output, t, x, eta=eta, generator=torch.Generator().manual_seed(5))[0]
    noise = torch.randn(output.shape, generator=torch.Generator().manual_seed(5))
    got = schedule_for(scheduler).step(output, torch.tensor(t), torch.tensor(max(t - 10, 0)), x, noise, eta)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)


def test_ddim_steps_to_the_grids_next_timestep():
    # an exact model of one clean latent: every deterministic DDIM step lands on the forward process's mean path,
    # whatever the grid's spacing, only if each step goes to the timestep the grid says comes next
    scheduler = DDIMScheduler(1000, **BETAS)
    adapter = schedule_for(scheduler)
    x0, noise = _tensors(1)
    timesteps, following = adapter.timesteps(7, (4, 8, 8), torch.device("cpu"))
    assert len(set((timesteps[:-1] - following[:-1]).tolist())) > 1  # the grid is uneven
    x = adapter.add_noise(x0, noise, timesteps[:1].expand(2))
    for t, t_next in zip(timesteps, following):
        x = adapter.step(noise, t, t_next, x)
    torch.testing.assert_close(x, x0, rtol=1e-4, atol=1e-4)


def test_ddim_and_ddpm_need_noise_when_stochastic():
    x, output = _tensors()
    ddim = schedule_for(DDIMScheduler(1000, **BETAS))
    assert ddim.stochastic(0.5) and not ddim.stochastic(0.0)
    with pytest.raises(ValueError, match="needs noise"):
        ddim.step(output, torch.tensor(500), torch.tensor(480), x, None, eta=1.0)
    ddpm = schedule_for(DDPMScheduler(1000, **BETAS))
    assert ddpm.stochastic(0.0)
    with pytest.raises(ValueError, match="needs noise"):
        ddpm.step(output, torch.tensor(500), torch.tensor(499), x, None)


def test_rflow_steps_add_up_to_the_whole_path():
    # continuous timesteps: MONAI's step truncates the next timestep to an integer and loses part of the path
    adapter = schedule_for(RFlowScheduler(1000, use_discrete_timesteps=False))
    x0, noise = _tensors(2)
    x = noise.clone()
    timesteps, following = adapter.timesteps(7, (4, 8, 8), torch.device("cpu"))
    for t, t_next in zip(timesteps, following):
        x = adapter.step(x0 - noise, t, t_next, x)  # the exact velocity of the straight path
    torch.testing.assert_close(x, x0, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(adapter.predicted_x0(x0 - noise, torch.tensor(1000.0), noise), x0)
    assert torch.equal(adapter.training_target(x0, noise, timesteps[:2]), x0 - noise)


def test_rflow_training_timesteps_follow_the_generator_not_the_global_rng():
    adapter = schedule_for(RFlowScheduler(1000, sample_method="logit-normal"))
    x0 = torch.zeros(6, 4, 8, 8)
    first = adapter.training_timesteps(x0, torch.Generator().manual_seed(3))
    torch.manual_seed(123)
    again = adapter.training_timesteps(x0, torch.Generator().manual_seed(3))
    assert torch.equal(first, again)


@pytest.mark.parametrize(
    "prediction, expected",
    [
        ("epsilon", lambda s: torch.clamp(s, max=5) / s),
        ("v_prediction", lambda s: torch.clamp(s, max=5) / (s + 1)),
        ("sample", lambda s: torch.clamp(s, max=5)),
    ],
)
def test_min_snr_weights(prediction, expected):
    adapter = schedule_for(DDPMScheduler(1000, prediction_type=prediction, **BETAS))
    t = torch.tensor([0, 10, 100, 500, 999])
    snr = adapter.snr(t)
    assert snr[0] > 5 > snr[-1]  # the clamp acts at the clean end only
    torch.testing.assert_close(adapter.loss_weights(t, 5.0), expected(snr))
    assert torch.equal(adapter.loss_weights(t, None), torch.ones(5))
    with pytest.raises(ValueError, match="min-SNR"):
        schedule_for(RFlowScheduler(1000)).loss_weights(t, 5.0)


def _network(calls: list[int]):
    def network(x, timesteps, class_labels):
        calls.append(x.shape[0])
        assert timesteps.shape == (x.shape[0],)
        return x * 0 + class_labels.float().view(-1, 1, 1, 1)

    return network


def test_guidance_wrapper_is_one_call_of_twice_the_batch():
    calls: list[int] = []
    denoiser = classifier_free_guidance(
        _network(calls), {"class_labels": torch.tensor([1, 2])}, {"class_labels": torch.tensor([0, 0])}, scale=3.0
    )
    out = denoiser(torch.zeros(2, 1, 2, 2), torch.tensor(5))
    assert calls == [4]
    torch.testing.assert_close(out[:, 0, 0, 0], torch.tensor([3.0, 6.0]))  # 0 + 3 * (c - 0)
    calls.clear()
    plain = classifier_free_guidance(
        _network(calls), {"class_labels": torch.tensor([1, 2])}, {"class_labels": torch.tensor([0, 0])}, scale=1.0
    )
    assert plain(torch.zeros(2, 1, 2, 2), torch.tensor(5))[:, 0, 0, 0].tolist() == [1.0, 2.0] and calls == [2]
    with pytest.raises(ValueError, match="keys"):
        classifier_free_guidance(_network(calls), {"class_labels": torch.tensor([1])}, {"context": torch.zeros(1)}, 2.0)
    with pytest.raises(ValueError, match=">= 0"):
        classifier_free_guidance(_network(calls), {}, {}, -1.0)


@pytest.mark.parametrize("how", ["global", "per_channel"])
def test_latent_normalisation_round_trips_and_standardises(how):
    g = torch.Generator().manual_seed(0)
    spread = torch.tensor([0.1, 1.0, 3.0]).view(1, 3, 1, 1)
    latents = torch.randn(16, 3, 8, 8, generator=g) * spread + torch.tensor([0.5, -1.0, 0.0]).view(1, 3, 1, 1)
    scale, shift = fit_latent_normalisation(latents, how)
    normalised = normalise_latents(latents, scale, shift)
    torch.testing.assert_close(denormalise_latents(normalised, scale, shift), latents, rtol=1e-5, atol=1e-5)
    per_channel_std = normalised.transpose(0, 1).flatten(1).std(dim=1)
    if how == "per_channel":
        torch.testing.assert_close(per_channel_std, torch.ones(3), rtol=1e-4, atol=1e-4)
        assert isinstance(scale, list) and len(shift) == 3
    else:
        assert float(normalised.std()) == pytest.approx(1.0, rel=1e-3)
        assert per_channel_std.min() < 0.1  # one global factor leaves the narrow channel far from unit noise
        assert isinstance(scale, float) and shift == 0.0
    with pytest.raises(ValueError, match="channels"):
        normalise_latents(latents, [1.0, 2.0], 0.0)
    with pytest.raises(ValueError, match="latent normalisation must be one of"):
        fit_latent_normalisation(latents, "batch")
