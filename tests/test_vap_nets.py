"""VAP-Diffusion's networks: the prototype condition mechanism, the kNN projection, the description conditioner."""

from __future__ import annotations

import copy
from types import SimpleNamespace

import pytest
import torch

from medgen_monai.engines import DescriptionConditioner, IndexedBatches, LatentDiffusionTrainer, class_requests
from medgen_monai.nets import (
    ConditionedDiffusionUNet,
    NearestNeighbourProjection,
    PrototypeConditioning,
    VAPDiffusionUNet,
)


def tiny_unet(prototype: bool = True, spatial_dims: int = 2, num_classes: int = 3) -> VAPDiffusionUNet:
    torch.manual_seed(0)
    return VAPDiffusionUNet(
        num_classes=num_classes,
        prototype=prototype,
        prototype_tokens=4,
        prototype_heads=2,
        spatial_dims=spatial_dims,
        in_channels=2,
        out_channels=2,
        channels=(8, 16),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_head_channels=8,
        norm_num_groups=4,
        with_conditioning=True,
        cross_attention_dim=6,
    )


@pytest.mark.parametrize("spatial", [(4, 4), (4, 4, 2)])
def test_prototypes_start_as_identity_with_a_loss(spatial):
    module = PrototypeConditioning(num_classes=3, channels=8, num_tokens=5, num_heads=2)
    hidden = torch.randn(2, 8, *spatial)
    out, loss = module(hidden, torch.tensor([0, 3]))  # 3 is the null class
    assert out.shape == hidden.shape
    torch.testing.assert_close(out, hidden)  # Z1 and Z2 are zero-initialised
    assert loss.ndim == 0 and float(loss.detach()) > 0


def test_soft_labels_mix_prototypes_like_one_hot():
    module = PrototypeConditioning(num_classes=2, channels=8, num_tokens=3, num_heads=2)
    one_hot = torch.nn.functional.one_hot(torch.tensor([1, 2]), 3).float()
    torch.testing.assert_close(module.class_prototypes(one_hot), module.class_prototypes(torch.tensor([1, 2])))


@pytest.mark.parametrize(
    "labels, match",
    [
        (torch.tensor([0, 4]), "must be in \\[0, 3\\]"),
        (torch.zeros(2, 2, dtype=torch.long), "must be \\(B,\\)"),
        (torch.zeros(2, 3), "\\(B, 4\\) probabilities"),
    ],
)
def test_bad_class_labels_are_refused(labels, match):
    module = PrototypeConditioning(num_classes=3, channels=8, num_heads=2)
    with pytest.raises(ValueError, match=match):
        module(torch.randn(2, 8, 4, 4), labels)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 0}, "num_classes"),
        ({"num_tokens": 0}, "num_tokens"),
        ({"num_heads": 3}, "divisible"),
        ({"mlp_ratio": 0}, "mlp_ratio"),
    ],
)
def test_bad_arguments_are_refused(kwargs, match):
    arguments = {"num_classes": 2, "channels": 8, "num_heads": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        PrototypeConditioning(**arguments)


def test_prototype_loss_learns_class_specific_features():
    """L_proto alone teaches each class's prototypes to reproduce that class's features: after training, the
    read-out from the right class's prototypes fits the query better than the other class's."""
    torch.manual_seed(0)
    module = PrototypeConditioning(num_classes=2, channels=8, num_tokens=4, num_heads=2)
    centres = torch.randn(2, 8, 1, 1) * 3
    optimizer = torch.optim.Adam(module.parameters(), lr=3e-2)

    def features(c: int) -> torch.Tensor:
        return centres[c] + 0.1 * torch.randn(16, 8, 3, 3)

    first = None
    for _ in range(150):
        losses = [module(features(c), torch.full((16,), c))[1] for c in (0, 1)]
        loss = sum(losses)
        first = float(loss.detach()) if first is None else first
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert float(loss.detach()) < 0.2 * first
    with torch.no_grad():
        right = module(features(0), torch.zeros(16, dtype=torch.long))[1]
        wrong = module(features(0), torch.ones(16, dtype=torch.long))[1]
    assert float(right) < 0.5 * float(wrong)


def test_vap_unet_publishes_the_prototype_loss_in_training_only():
    net = tiny_unet()
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([3, 500])
    context, labels = torch.randn(2, 5, 6), torch.tensor([0, 3])
    net.train()
    net(x, t, context=context, class_labels=labels)
    assert set(net.auxiliary_losses) == {"prototype"}
    net.auxiliary_losses["prototype"].backward()
    assert net.middle_block.prototypes.prototypes.grad is not None
    net.eval()
    net(x, t, context=context, class_labels=labels)
    assert net.auxiliary_losses == {}
    with pytest.raises(ValueError, match="needs class_labels"):
        net(x, t, context=context)


def test_networks_with_training_only_terms_hand_them_over_once():
    """The trainer/network contract: an AuxiliaryLossNetwork's terms are taken once (cleared), and the class labels
    reach the middle block only inside its context (nothing is left set on a submodule after a call, even a failing
    one)."""
    from medgen_monai.nets import AuxiliaryLossNetwork

    net = tiny_unet().train()
    assert isinstance(net, AuxiliaryLossNetwork) and not isinstance(
        ConditionedDiffusionUNet(
            spatial_dims=2,
            in_channels=2,
            out_channels=2,
            channels=(8, 8),
            attention_levels=(False, False),
            num_res_blocks=1,
            norm_num_groups=4,
            num_head_channels=8,
            num_classes=3,
        ),
        AuxiliaryLossNetwork,
    )
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([3, 500])
    net(x, t, context=torch.randn(2, 5, 6), class_labels=torch.tensor([0, 3]))
    taken = net.pop_auxiliary_losses()
    assert set(taken) == {"prototype"} and net.pop_auxiliary_losses() == {} and net.auxiliary_losses == {}
    assert net.middle_block._labels is None and net.middle_block._result is None
    with pytest.raises((RuntimeError, ValueError)):
        net(x, t, context=torch.randn(2, 5, 6), class_labels=torch.tensor([0]))  # a batch the labels do not match
    assert net.middle_block._labels is None


def test_vap_unet_starts_as_the_unet_without_prototypes():
    """Zero-initialised Z1/Z2: the prototype U-Net computes the same function as the one without prototypes."""
    with_prototypes, without = tiny_unet(True), tiny_unet(False)
    state = {
        k.replace("middle_block.block.", "middle_block."): v
        for k, v in with_prototypes.state_dict().items()
        if ".prototypes." not in k
    }
    without.load_state_dict(state)
    x, t = torch.randn(2, 2, 8, 8), torch.tensor([10, 900])
    context, labels = torch.randn(2, 5, 6), torch.tensor([1, 2])
    torch.testing.assert_close(with_prototypes.eval()(x, t, context, labels), without.eval()(x, t, context, labels))
    assert isinstance(without, ConditionedDiffusionUNet) and without.auxiliary_losses == {}


def test_deep_copy_keeps_its_own_prototypes():
    """The trainer's EMA is a deep copy: its middle block must use its own prototype module."""
    net = tiny_unet()
    with torch.no_grad():  # MONAI zero-initialises the output convolution: make the output depend on the features
        for parameter in net.out.parameters():
            parameter.normal_()
    ema = copy.deepcopy(net)
    with torch.no_grad():
        ema.middle_block.prototypes.attention_out.weight.fill_(0.5)
    x, t, context, labels = torch.randn(1, 2, 8, 8), torch.tensor([5]), torch.randn(1, 5, 6), torch.tensor([0])
    assert not torch.allclose(net.eval()(x, t, context, labels), ema.eval()(x, t, context, labels))


def test_trainer_adds_the_prototype_loss(tmp_path):
    from monai.networks.schedulers import DDPMScheduler

    net = tiny_unet()
    data = [{"image": torch.randn(2, 8, 8), "label": i % 3, "context": torch.randn(5, 6)} for i in range(8)]
    trainer = LatentDiffusionTrainer(
        net,
        torch.optim.Adam(net.parameters(), 1e-3),
        IndexedBatches(data, 4),
        DDPMScheduler(100),
        conditions={"label": "class_labels", "context": "context"},
        null_conditions={"context": torch.zeros(1, 5, 6)},
        auxiliary_weights={"prototype": 0.5},
        max_iterations=2,
        output_dir=tmp_path,
        progress=False,
        tensorboard=False,
    )
    trainer.run_training()
    out = trainer.state.output
    assert {"diffusion", "prototype", "loss"} <= set(out)
    assert out["loss"] == pytest.approx(out["diffusion"] + 0.5 * out["prototype"], rel=1e-5)
    with pytest.raises(ValueError, match="auxiliary_weights"):
        LatentDiffusionTrainer(
            net,
            torch.optim.Adam(net.parameters()),
            IndexedBatches(data, 4),
            DDPMScheduler(100),
            auxiliary_weights={"prototype": -1},
            max_iterations=1,
            output_dir=tmp_path,
        )


def test_projection_pulls_toward_neighbours_of_the_same_class():
    tokens = torch.stack([torch.full((3, 2), float(i)) for i in range(6)])  # description i has tokens all = i
    pooled = torch.tensor([[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [1.0, 0.05], [0.95, 0.0], [0.1, 1.0]])
    classes = torch.tensor([0, 0, 0, 1, 1, 1])
    projection = NearestNeighbourProjection(tokens, pooled, classes, k=2, alpha=1.0)
    query_tokens, query_pooled = torch.zeros(2, 3, 2), torch.tensor([[1.0, 0.0], [1.0, 0.0]])
    out = projection(query_tokens, query_pooled, torch.tensor([0, 1]))
    torch.testing.assert_close(out[0], torch.full((3, 2), 0.5))  # class 0: descriptions 0 and 1
    torch.testing.assert_close(out[1], torch.full((3, 2), 3.5))  # class 1: descriptions 3 and 4, never class 0's
    half = NearestNeighbourProjection(tokens, pooled, classes, k=2, alpha=0.5)(query_tokens + 1, query_pooled, [0, 1])
    torch.testing.assert_close(half[0], torch.full((3, 2), 0.75))
    identity = NearestNeighbourProjection(tokens, pooled, classes, k=2, alpha=0.0)
    torch.testing.assert_close(identity(query_tokens, query_pooled, [0, 1]), query_tokens)
    with pytest.raises(ValueError, match="class 2 has no training descriptions"):
        projection(query_tokens[:1], query_pooled[:1], [2])
    with pytest.raises(ValueError, match="tokens must be"):
        projection(torch.zeros(1, 4, 2), query_pooled[:1], [0])
    with pytest.raises(ValueError, match="alpha"):
        NearestNeighbourProjection(tokens, pooled, classes, alpha=1.5)


class CountingEncoder:
    """A stand-in text encoder: token i of a text is its length plus i (deterministic, cheap)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def encode(self, texts):
        self.calls.append(list(texts))
        lengths = torch.tensor([float(len(t)) for t in texts])
        tokens = lengths[:, None, None] + torch.arange(4.0)[None, :, None].expand(len(texts), 4, 3)
        return SimpleNamespace(tokens=tokens, pooled=tokens.mean(1))


def test_description_conditioner_encodes_descriptions_and_the_empty_null():
    encoder = CountingEncoder()
    conditioner = DescriptionConditioner(["A", "B"], encoder)
    requests = class_requests(["A", "B"], 1, seed=3, description="a dark oval lesion")
    condition, null = conditioner(requests)
    assert condition["class_labels"].tolist() == [0, 1] and null["class_labels"].tolist() == [2, 2]
    assert condition["context"].shape == null["context"].shape == (2, 4, 3)
    torch.testing.assert_close(condition["context"][:, 0, 0], torch.tensor([18.0, 18.0]))
    torch.testing.assert_close(null["context"][:, 0, 0], torch.tensor([0.0, 0.0]))  # the empty description
    assert encoder.calls[0] == [""]  # the null description, encoded once per batch
    with pytest.raises(ValueError, match="has no description"):
        conditioner(class_requests(["A", "B"], 1))
    label_only, _ = DescriptionConditioner(["A", "B"], encoder, use_descriptions=False)(requests)
    torch.testing.assert_close(label_only["context"], null["context"])  # the description is ignored
    with pytest.raises(ValueError, match="description is empty"):
        class_requests(["A"], 1, description="  ")


def test_description_conditioner_applies_the_projection():
    encoder = CountingEncoder()
    train = encoder.encode(["xx", "yyyy"])
    projection = NearestNeighbourProjection(train.tokens, train.pooled, [0, 0], k=1, alpha=1.0)
    condition, _ = DescriptionConditioner(["A"], encoder, projection)(class_requests(["A"], 1, description="zzz"))
    assert condition["context"][0, 0, 0] in (2.0, 4.0)  # replaced by its nearest training description
