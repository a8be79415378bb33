"""ELLA's timestep-aware connector with CCELLA's class heads."""

from __future__ import annotations

import pytest
import torch

from medgen_monai.nets import CLASS_HEAD_MODES, TimestepAwareConnector


def _connector(**kwargs) -> TimestepAwareConnector:
    torch.manual_seed(0)
    options = {
        "text_dim": 12,
        "output_dim": 8,
        "width": 16,
        "layers": 3,
        "heads": 4,
        "num_latents": 5,
        "time_channels": 8,
        "time_embed_dim": 16,
        "class_hidden": 8,
        **kwargs,
    }
    return TimestepAwareConnector(**options)


@pytest.mark.parametrize("mode", CLASS_HEAD_MODES)
def test_shapes_and_class_head_modes(mode):
    connector = _connector(class_heads=mode)
    tokens, logits = connector(torch.randn(2, 7, 12), torch.tensor([10, 900]))
    assert tokens.shape == (2, 5, 8)
    assert (logits is None) if mode == "none" else logits.shape == (2, 2)
    heads = {"cascade": 3, "first": 1, "last": 1, "shared": 1, "none": 0}[mode]
    assert len(connector.heads) == heads


def test_the_tokens_depend_on_the_timestep_and_the_text():
    connector = _connector()
    text = torch.randn(1, 7, 12)
    early, _ = connector(text, torch.tensor([950]))
    late, _ = connector(text, torch.tensor([20]))
    other, _ = connector(torch.randn(1, 7, 12), torch.tensor([20]))
    assert not torch.allclose(early, late) and not torch.allclose(late, other)
    # zero-initialised modulation: every adaptive norm starts as a plain LayerNorm
    assert all(not b.norm_latents.modulation.weight.any() for b in connector.blocks)


def test_the_class_heads_learn_the_class_from_the_text():
    """A class written into the text features is read back by the cascade heads after a short training."""
    torch.manual_seed(1)
    connector = _connector()
    direction = torch.randn(12)
    labels = torch.randint(0, 2, (64,))
    text = torch.randn(64, 7, 12) * 0.5 + (labels.float() * 2 - 1).view(-1, 1, 1) * direction
    optimizer = torch.optim.Adam(connector.parameters(), lr=3e-3)
    for _ in range(60):
        _, logits = connector(text, torch.randint(0, 1000, (64,)))
        loss = torch.nn.functional.cross_entropy(logits, labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    _, logits = connector(text, torch.randint(0, 1000, (64,)))
    assert (logits.argmax(1) == labels).float().mean() > 0.95


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"width": 10, "heads": 4}, "divisible by heads"),
        ({"class_heads": "middle"}, "class_heads must be one of"),
        ({"time_channels": 7}, "time_channels must be even"),
        ({"layers": 0}, "layers must be >= 1"),
    ],
)
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _connector(**kwargs)


def test_bad_inputs():
    connector = _connector()
    with pytest.raises(ValueError, match="text must be"):
        connector(torch.randn(2, 12), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="timesteps must be"):
        connector(torch.randn(2, 7, 12), torch.tensor([1]))


# ---- CCELLA's U-Net -------------------------------------------------------------------------------------
def _ccella(class_path: str = "predicted", connector: bool = True, **kwargs):
    from medgen_monai.nets import CCELLAUNet

    torch.manual_seed(0)
    return CCELLAUNet(
        connector=_connector(output_dim=8) if connector else None,
        class_path=class_path,
        spatial_dims=3,
        in_channels=2,
        out_channels=2,
        channels=(8, 8),
        attention_levels=(False, True),
        num_res_blocks=1,
        norm_num_groups=8,
        num_head_channels=8,
        condition_dim=8,
        **kwargs,
    )


@pytest.mark.parametrize(
    "class_path, connector", [("predicted", True), ("true", True), ("none", True), ("true", False), ("none", False)]
)
def test_ccella_unet_paths_in_3d(class_path, connector):
    net = _ccella(class_path, connector).train()
    x, t = torch.randn(2, 2, 8, 8, 8), torch.tensor([3, 700])
    inputs = {"spacing": torch.tensor([[0.5, 0.5, 3.0], [0.6, 0.6, 3.6]]), "report_class": torch.tensor([1, -1])}
    if connector:
        inputs["context"] = torch.randn(2, 7, 12)
    out = net(x, t, **inputs)
    assert out.shape == x.shape
    assert set(net.auxiliary_losses) == ({"class"} if class_path == "predicted" else set())
    if class_path == "predicted":
        assert net.last_class_probabilities.shape == (2, 2)
        net.auxiliary_losses["class"].backward()  # the class loss trains the connector's heads
        assert net.connector.heads[0][1].weight.grad.abs().sum() > 0


def test_ccella_class_loss_skips_empty_reports_and_inference():
    net = _ccella().train()
    inputs = {"context": torch.randn(2, 7, 12), "spacing": torch.ones(2, 3), "report_class": torch.tensor([-1, -1])}
    net(torch.randn(2, 2, 8, 8, 8), torch.tensor([3, 7]), **inputs)
    assert net.auxiliary_losses == {}
    net.eval()
    net(torch.randn(2, 2, 8, 8, 8), torch.tensor([3, 7]), context=inputs["context"], spacing=inputs["spacing"])
    assert net.auxiliary_losses == {}


def test_ccella_spacing_changes_the_output_and_bad_arguments_are_refused():
    net = _ccella().eval()
    with torch.no_grad():  # MONAI zero-initialises the output layer, we the extra projection: open them
        for p in net.parameters():
            if not p.any():
                p.normal_(0.0, 0.5)
    x, t, context = torch.randn(1, 2, 8, 8, 8), torch.tensor([500]), torch.randn(1, 7, 12)
    a = net(x, t, context=context, spacing=torch.tensor([[0.5, 0.5, 3.0]]))
    b = net(x, t, context=context, spacing=torch.tensor([[1.0, 1.0, 1.0]]))
    assert not torch.allclose(a, b)
    with pytest.raises(ValueError, match="spacing must be"):
        net(x, t, context=context)
    with pytest.raises(ValueError, match="needs a connector with class heads"):
        _ccella("predicted", connector=False)
    with pytest.raises(ValueError, match="class_path must be one of"):
        _ccella("soft")
    with pytest.raises(ValueError, match="set by CCELLAUNet"):
        _ccella(cross_attention_dim=8)
