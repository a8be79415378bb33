"""The one sampler: schedulers, batched guidance, per-sample seeds, decoding."""

from __future__ import annotations

import pytest
import torch
from monai.networks.nets import AutoencoderKL
from monai.networks.schedulers import DDIMScheduler, DDPMScheduler, PNDMScheduler, RFlowScheduler

from medgen_monai.engines import DiffusionSampler
from medgen_monai.nets import ConditionedDiffusionUNet


def _unet(spatial_dims: int = 2, context: bool = True) -> ConditionedDiffusionUNet:
    torch.manual_seed(0)
    kwargs = {"with_conditioning": True, "cross_attention_dim": 8} if context else {}
    net = ConditionedDiffusionUNet(
        num_classes=3,
        spatial_dims=spatial_dims,
        in_channels=2,
        out_channels=2,
        channels=(8, 8),
        attention_levels=(False, True),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        **kwargs,
    ).eval()
    with torch.no_grad():  # MONAI zero-initialises output layers: an untrained U-Net would ignore its inputs
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.2)
    return net


class _Counting(torch.nn.Module):
    """Counts forwards and the batch each one saw."""

    def __init__(self, net: torch.nn.Module) -> None:
        super().__init__()
        self.net, self.batches = net, []

    def forward(self, x, timesteps, **kwargs):
        self.batches.append(x.shape[0])
        return self.net(x, timesteps, **kwargs)


def _schedulers():
    return {
        "ddim": DDIMScheduler(num_train_timesteps=100, clip_sample=False),
        "ddpm": DDPMScheduler(num_train_timesteps=100),
        "rflow": RFlowScheduler(num_train_timesteps=100, use_discrete_timesteps=False),
    }


@pytest.mark.parametrize("name", ["ddim", "ddpm", "rflow"])
def test_guidance_is_one_forward_per_step_and_seeds_are_per_sample(name):
    net = _Counting(_unet())
    sampler = DiffusionSampler(_schedulers()[name], num_inference_steps=3, guidance_scale=3.0, progress=False)
    context = torch.randn(3, 4, 8)
    condition = {"context": context, "class_labels": torch.tensor([0, 1, 2])}
    null = {"context": torch.zeros(1, 4, 8), "class_labels": torch.tensor([3])}
    batch = sampler(net, (2, 16, 16), seeds=[5, 6, 7], condition=condition, null_condition=null)
    assert batch.shape == (3, 2, 16, 16)
    assert net.batches == [6, 6, 6]  # 2B in one forward, once per step
    alone = sampler(
        net, (2, 16, 16), seeds=[6], condition={k: v[1:2] for k, v in condition.items()}, null_condition=null
    )
    torch.testing.assert_close(alone[0], batch[1], rtol=1e-4, atol=1e-5)
    other = sampler(
        net, (2, 16, 16), seeds=[8], condition={k: v[1:2] for k, v in condition.items()}, null_condition=null
    )
    assert (other[0] - batch[1]).abs().max() > 1e-2


def test_guidance_weight_changes_the_result_and_one_disables_it():
    net = _Counting(_unet())
    condition, null = {"class_labels": torch.tensor([1])}, {"class_labels": torch.tensor([3])}
    plain = DiffusionSampler(DDIMScheduler(100, clip_sample=False), 2, guidance_scale=1.0, progress=False)
    guided = DiffusionSampler(DDIMScheduler(100, clip_sample=False), 2, guidance_scale=4.0, progress=False)
    a = plain(net, (2, 16, 16), [0], {**condition, "context": torch.ones(1, 2, 8)})
    assert net.batches == [1, 1]
    b = guided(
        net, (2, 16, 16), [0], {**condition, "context": torch.ones(1, 2, 8)}, {**null, "context": torch.zeros(1, 2, 8)}
    )
    assert (a - b).abs().max() > 1e-4


def test_soft_labels_match_integer_labels():
    net = _unet(context=False)
    sampler = DiffusionSampler(DDIMScheduler(100), 2, progress=False)
    hard = sampler(net, (2, 16, 16), [1, 2], {"class_labels": torch.tensor([0, 2])})
    soft = sampler(net, (2, 16, 16), [1, 2], {"class_labels": torch.eye(4)[[0, 2]]})
    torch.testing.assert_close(hard, soft)


def test_latent_decode_whole_and_sliding_window_3d():
    torch.manual_seed(0)
    autoencoder = AutoencoderKL(
        spatial_dims=3,
        in_channels=1,
        out_channels=1,
        channels=(8, 8),
        latent_channels=2,
        num_res_blocks=1,
        norm_num_groups=8,
        attention_levels=(False, False),
    ).eval()
    net = _unet(spatial_dims=3, context=False)
    whole = DiffusionSampler(DDIMScheduler(100), 2, autoencoder=autoencoder, scale_factor=0.5, progress=False)
    one_window = DiffusionSampler(
        DDIMScheduler(100), 2, autoencoder=autoencoder, scale_factor=0.5, decode_roi_size=(16, 16, 8), progress=False
    )
    windowed = DiffusionSampler(
        DDIMScheduler(100), 2, autoencoder=autoencoder, scale_factor=0.5, decode_roi_size=(8, 8, 8), progress=False
    )
    condition = {"class_labels": torch.tensor([1])}
    a = whole(net, (2, 16, 16, 8), [3], condition)
    torch.testing.assert_close(one_window(net, (2, 16, 16, 8), [3], condition), a)
    b = windowed(net, (2, 16, 16, 8), [3], condition)
    assert a.shape == b.shape == (1, 1, 32, 32, 16) and torch.isfinite(b).all()
    # an untrained decoder's GroupNorm statistics differ per window, so only the scale is compared
    assert 0.5 < b.std() / a.std() < 2.0


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"scheduler": PNDMScheduler(100)}, "DDPMScheduler, DDIMScheduler or RFlowScheduler"),
        ({"num_inference_steps": 0}, "num_inference_steps"),
        ({"num_inference_steps": 101}, "num_inference_steps"),
        ({"guidance_scale": -1.0}, "guidance_scale"),
        ({"scale_factor": 0.0}, "scale_factor"),
        ({"scheduler": RFlowScheduler(100), "eta": 1.0}, "stochastic steps are DDIM's"),
    ],
)
def test_sampler_rejects_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DiffusionSampler(**{"scheduler": DDIMScheduler(100), **kwargs})


def test_sampler_rejects_bad_conditions():
    net = _unet(context=False)
    sampler = DiffusionSampler(DDIMScheduler(100), 2, guidance_scale=2.0, progress=False)
    with pytest.raises(ValueError, match="null_condition"):
        sampler(net, (2, 16, 16), [0], {"class_labels": torch.tensor([0])})
    with pytest.raises(ValueError, match="batch 2"):
        sampler(
            net, (2, 16, 16), [0, 1, 2], {"class_labels": torch.tensor([0, 1])}, {"class_labels": torch.tensor([3])}
        )
    with pytest.raises(ValueError, match="at least one seed"):
        sampler(net, (2, 16, 16), [], {})
