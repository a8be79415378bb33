"""The trainer family: deterministic batches, AE and LDM steps, checkpoints, and exact resume after a kill."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from monai.networks.nets import AutoencoderKL, PatchDiscriminator
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, RFlowScheduler

from medgen_monai.engines import DiffusionSampler
from medgen_monai.engines.trainer import (
    AutoencoderTrainer,
    CheckpointError,
    IndexedBatches,
    LatentDiffusionTrainer,
    load_checkpoint,
)
from medgen_monai.nets import ConditionedDiffusionUNet

ROOT = Path(__file__).parents[1]


def toy_dataset(n: int = 12, size: int = 16) -> list[dict]:
    g = torch.Generator().manual_seed(0)
    return [{"image": torch.rand(1, size, size, generator=g), "label": i % 3} for i in range(n)]


def tiny_unet(in_channels: int = 1) -> ConditionedDiffusionUNet:
    torch.manual_seed(0)
    return ConditionedDiffusionUNet(
        num_classes=3,
        spatial_dims=2,
        in_channels=in_channels,
        out_channels=in_channels,
        channels=(8, 16),
        attention_levels=(False, False),
        num_res_blocks=1,
        norm_num_groups=8,
    )


def tiny_autoencoder() -> AutoencoderKL:
    torch.manual_seed(0)
    return AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=2,
        num_res_blocks=(1, 1),
        attention_levels=(False, False),
        norm_num_groups=4,
    )


def ldm_trainer(
    out: Path, max_iterations: int = 6, scheduler=None, checkpoint_every: int = 2, **kwargs
) -> LatentDiffusionTrainer:
    network = tiny_unet(2)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-3)
    scheduler = scheduler or DDPMScheduler(num_train_timesteps=100)
    return LatentDiffusionTrainer(
        network,
        optimizer,
        IndexedBatches(toy_dataset(), batch_size=4, seed=1),
        scheduler,
        autoencoder=tiny_autoencoder(),
        conditions={"label": "class_labels"},
        condition_dropout=0.3,
        max_iterations=max_iterations,
        output_dir=out,
        lr_scheduler=torch.optim.lr_scheduler.StepLR(optimizer, step_size=2, gamma=0.5),
        checkpoint_every=checkpoint_every,
        progress=False,
        tensorboard=False,
        tag="toy",
        seed=5,
        **kwargs,
    )


def test_batches_are_a_function_of_the_iteration():
    batches = IndexedBatches(toy_dataset(10), batch_size=3, seed=4)
    assert batches.epoch_length == 3  # the incomplete last batch is dropped
    first_epoch = [i for it in range(3) for i in batches.indices(it)]
    assert len(set(first_epoch)) == 9
    again = IndexedBatches(toy_dataset(10), batch_size=3, seed=4)
    assert again.indices(4) == batches.indices(4) and batches.indices(1) == again.indices(1)
    assert batches.indices(3) != batches.indices(0) or batches.indices(4) != batches.indices(1)  # epochs reshuffle
    assert batches(2)["image"].shape == (3, 1, 16, 16)
    with pytest.raises(ValueError, match="fewer than one batch"):
        IndexedBatches(toy_dataset(2), batch_size=3)


def test_autoencoder_trainer_with_adversarial_loss(tmp_path):
    autoencoder = tiny_autoencoder()
    discriminator = PatchDiscriminator(spatial_dims=2, num_layers_d=1, channels=8, in_channels=1, out_channels=1)
    trainer = AutoencoderTrainer(
        autoencoder,
        torch.optim.Adam(autoencoder.parameters(), 1e-3),
        IndexedBatches(toy_dataset(), 4),
        discriminator=discriminator,
        discriminator_optimizer=torch.optim.Adam(discriminator.parameters(), 1e-3),
        adversarial_start=1,
        max_iterations=3,
        output_dir=tmp_path,
        sample_every=3,
        checkpoint_every=3,
        progress=False,
    )
    before = [p.detach().clone() for p in discriminator.parameters()]
    trainer.run_training()
    output = trainer.state.output
    assert {"l1", "kl", "generator_adversarial", "discriminator", "loss"} <= set(output)
    assert all(torch.isfinite(torch.tensor(v)) for v in output.values())
    assert any(not torch.equal(a, b) for a, b in zip(before, discriminator.parameters()))
    assert (tmp_path / "samples" / "iteration_0000003.png").stat().st_size > 100
    assert list((tmp_path / "tensorboard").glob("events.out.tfevents.*"))
    state = load_checkpoint(tmp_path / "checkpoints" / "last.pt", "AutoencoderTrainer")
    assert state["iteration"] == 3 and "discriminator" in state["extra"]
    with pytest.raises(ValueError, match="both discriminator"):
        AutoencoderTrainer(
            autoencoder,
            torch.optim.Adam(autoencoder.parameters()),
            IndexedBatches(toy_dataset(), 4),
            discriminator=discriminator,
            max_iterations=1,
            output_dir=tmp_path,
        )


@pytest.mark.parametrize(
    "scheduler",
    [
        DDPMScheduler(num_train_timesteps=100, prediction_type="v_prediction"),
        RFlowScheduler(num_train_timesteps=100, use_discrete_timesteps=False),
    ],
)
def test_latent_diffusion_trainer_targets_and_sample_grid(tmp_path, scheduler):
    sampler = DiffusionSampler(
        DDIMScheduler(num_train_timesteps=100, prediction_type=scheduler.prediction_type)
        if isinstance(scheduler, DDPMScheduler)
        else RFlowScheduler(num_train_timesteps=100),
        num_inference_steps=2,
        guidance_scale=2.0,
        progress=False,
    )
    trainer = ldm_trainer(
        tmp_path,
        max_iterations=2,
        scheduler=scheduler,
        sampler=sampler,
        sample_every=2,
        sample_conditions={"class_labels": torch.tensor([0, 1, 2])},
    )
    trainer.run_training()
    assert trainer.scale_factor is not None and trainer.scale_factor > 0
    assert torch.isfinite(torch.tensor(trainer.state.output["loss"]))
    assert (tmp_path / "samples" / "iteration_0000002.png").is_file()


def test_per_channel_latents_and_min_snr_weighting_train_resume_and_reach_the_sampler(tmp_path):
    sampler = DiffusionSampler(DDIMScheduler(num_train_timesteps=100), num_inference_steps=2, progress=False)
    kwargs = {
        "latent_normalisation": "per_channel",
        "min_snr_gamma": 5.0,
        "sampler": sampler,
        "sample_every": 4,
        "sample_conditions": {"class_labels": torch.tensor([0, 1])},
    }
    trainer = ldm_trainer(tmp_path / "a", max_iterations=4, **kwargs)
    trainer.run_training()
    extra = trainer.latent_normalisation_extra()
    assert isinstance(extra["scale_factor"], list) and len(extra["scale_factor"]) == 2 == len(extra["latent_shift"])
    assert sampler.scale_factor == extra["scale_factor"] and sampler.latent_shift == extra["latent_shift"]
    latents = trainer.encode(toy_dataset()[0]["image"][None])
    assert abs(float(latents.mean())) < 3.0  # shifted by the first batch's channel means
    # killed at 2 and resumed: the normalisation comes back from the checkpoint, not refitted
    first = ldm_trainer(tmp_path / "b", max_iterations=2, **kwargs)
    first.run_training()
    resumed = ldm_trainer(tmp_path / "b", max_iterations=4, **kwargs)
    resumed.run_training()
    assert resumed.latent_normalisation_extra() == extra
    # the training wall time (for model cards) adds up over the resumed runs
    stored = load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["train_seconds"]
    assert stored == pytest.approx(resumed.train_seconds, abs=0.5) and resumed.train_seconds > first.train_seconds > 0
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="latent_normalisation must be one of"):
        ldm_trainer(tmp_path / "c", latent_normalisation="batch")
    with pytest.raises(ValueError, match="min-SNR weighting is defined for DDPM/DDIM"):
        ldm_trainer(tmp_path / "c", scheduler=RFlowScheduler(num_train_timesteps=100), min_snr_gamma=5.0)
    with pytest.raises(ValueError, match="min_snr_gamma must be > 0"):
        ldm_trainer(tmp_path / "c", min_snr_gamma=0.0)


def test_checkpoints_are_checked(tmp_path):
    trainer = ldm_trainer(tmp_path / "a", max_iterations=2)
    trainer.run_training()
    path = trainer.checkpoint_path
    assert load_checkpoint(path, "LatentDiffusionTrainer", "toy")["iteration"] == 2
    with pytest.raises(CheckpointError, match="belongs to run 'toy', expected 'other'"):
        load_checkpoint(path, tag="other")
    with pytest.raises(CheckpointError, match="written by 'LatentDiffusionTrainer', expected a 'AutoencoderTrainer'"):
        load_checkpoint(path, "AutoencoderTrainer")
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(path.read_bytes()[:200])
    with pytest.raises(CheckpointError, match="truncated.pt: not a readable checkpoint"):
        load_checkpoint(truncated)
    foreign = tmp_path / "foreign.pt"
    torch.save({"state_dict": {}}, foreign)
    with pytest.raises(CheckpointError, match="not a medgen-monai trainer checkpoint"):
        load_checkpoint(foreign)
    other = ldm_trainer(tmp_path / "a", max_iterations=3)
    other.tag = "another-bundle"
    with pytest.raises(CheckpointError, match="another bundle"):
        other.run_training()


def test_resume_after_a_kill_is_exact(tmp_path):
    """A run killed after iteration 3 (last checkpoint at 2) and resumed equals an uninterrupted run."""
    straight = ldm_trainer(tmp_path / "straight")
    straight.run_training()

    killed = tmp_path / "killed"
    run = subprocess.run([sys.executable, __file__, str(killed), "3"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 17, run.stderr
    assert load_checkpoint(killed / "checkpoints" / "last.pt")["iteration"] == 2
    resumed = ldm_trainer(killed)
    resumed.run_training()

    assert resumed.state.iteration == straight.state.iteration == 6
    for a, b in ((straight.network, resumed.network), (straight.ema, resumed.ema)):
        for (name, x), (_, y) in zip(a.state_dict().items(), b.state_dict().items()):
            assert torch.equal(x, y), name
    assert straight.optimizer.param_groups[0]["lr"] == resumed.optimizer.param_groups[0]["lr"] == 1e-3 / 8
    assert straight.scale_factor == resumed.scale_factor
    assert torch.equal(straight.generator.get_state(), resumed.generator.get_state())


if __name__ == "__main__":  # the killed run of test_resume_after_a_kill_is_exact
    from ignite.engine import Events

    out, kill_at = Path(sys.argv[1]), int(sys.argv[2])
    trainer = ldm_trainer(out)
    trainer.add_event_handler(Events.ITERATION_COMPLETED(once=kill_at), lambda engine: os._exit(17))
    trainer.run_training()


def test_latent_cache_encodes_once_samples_posteriors_and_resumes_exactly(tmp_path):
    calls = []
    trainer = ldm_trainer(tmp_path / "a", max_iterations=4, latent_cache=True)
    encode = trainer.autoencoder.encode
    trainer.autoencoder.encode = lambda x: (calls.append(x.shape[0]), encode(x))[1]
    trainer.run_training()
    n = len(trainer.batches.dataset)
    assert sum(calls) == n  # every item once, before the first iteration; none during the iterations
    mu, sigma = trainer._posteriors
    assert mu.shape[0] == n and (sigma > 0).all()
    first = ldm_trainer(tmp_path / "b", max_iterations=2, latent_cache=True)
    first.run_training()
    resumed = ldm_trainer(tmp_path / "b", max_iterations=4, latent_cache=True)
    resumed.run_training()
    for a, b in zip(trainer.model.parameters(), resumed.model.parameters()):
        torch.testing.assert_close(a, b)
    with pytest.raises(ValueError, match="latent_cache needs an autoencoder"):
        network = tiny_unet(2)
        LatentDiffusionTrainer(
            network,
            torch.optim.Adam(network.parameters()),
            IndexedBatches(toy_dataset(), 4),
            DDPMScheduler(num_train_timesteps=100),
            autoencoder=None,
            latent_cache=True,
            max_iterations=1,
            output_dir=tmp_path / "c",
        )
