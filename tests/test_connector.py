"""ELLA's timestep-aware connector with CCELLA's class heads."""

from __future__ import annotations

import pytest
import torch

from medgen_monai.nets import CLASS_HEAD_MODES, TimestepAwareConnector


def _connector(**kwargs) -> TimestepAwareConnector:
    torch.manual_seed(0)
    options = {"text_dim": 12, "output_dim": 8, "width": 16, "layers": 3, "heads": 4, "num_latents": 5,
               "time_channels": 8, "time_embed_dim": 16, "class_hidden": 8, **kwargs}
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


@pytest.mark.parametrize("kwargs, message", [
    ({"width": 10, "heads": 4}, "divisible by heads"),
    ({"class_heads": "middle"}, "class_heads must be one of"),
    ({"time_channels": 7}, "time_channels must be even"),
    ({"layers": 0}, "layers must be >= 1"),
])
def test_bad_arguments(kwargs, message):
    with pytest.raises(ValueError, match=message):
        _connector(**kwargs)


def test_bad_inputs():
    connector = _connector()
    with pytest.raises(ValueError, match="text must be"):
        connector(torch.randn(2, 12), torch.tensor([1, 2]))
    with pytest.raises(ValueError, match="timesteps must be"):
        connector(torch.randn(2, 7, 12), torch.tensor([1]))
