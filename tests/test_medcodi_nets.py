"""MedCoDi-M's pieces: the report VAE (round trip), the aligned condition space (contrastive alignment), the
fully connected report U-Net, joint generation's environment encoders and connectors, packing, multi-prompt
conditions and the trainers of the text VAE / alignment stage and of the joint stage."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.networks.nets import AutoencoderKL, DiffusionModelUNet
from monai.networks.schedulers import RFlowScheduler

from medgen_monai.engines import IndexedBatches, JointStreamTrainer, ObjectiveTrainer, load_checkpoint
from medgen_monai.nets import (
    AlignedEncoders,
    JointDiffusion,
    ReportVAE,
    StreamAutoencoder,
    VectorDiffusionNet,
    clip_loss,
    combine_embeddings,
    pack,
    unpack,
)
from medgen_monai.transforms import AlignedEmbeddingsd, MultiPromptConditiond, PackStreamsd, TokenizeReportd

TEXTS = [
    "The lungs are clear. No pleural effusion.",
    "Small left pleural effusion.",
    "Cardiomegaly is present.",
    "There is no pneumothorax.",
]


def tiny_vae(**kwargs) -> ReportVAE:
    torch.manual_seed(0)
    args = dict(
        latent_dim=8,
        max_length=24,
        hidden_size=32,
        encoder_layers=1,
        decoder_layers=1,
        heads=2,
        vocabulary_size=64,
        free_bits=0.0,
    )
    return ReportVAE(**{**args, **kwargs})


def objective_trainer(network, dataset, out, iterations, inputs, weights, **kwargs) -> ObjectiveTrainer:
    optimizer = torch.optim.AdamW([p for p in network.parameters() if p.requires_grad], 3e-3)
    return ObjectiveTrainer(
        network,
        optimizer,
        IndexedBatches(dataset, 8, seed=0),
        inputs=inputs,
        loss_weights=weights,
        max_iterations=iterations,
        output_dir=out,
        progress=False,
        tensorboard=False,
        ema_decay=None,
        **kwargs,
    )


# ---- report VAE ---------------------------------------------------------------------------------------------------
def test_report_vae_rejects_bad_arguments():
    with pytest.raises(ValueError, match="latent_dim"):
        ReportVAE(latent_dim=0)
    with pytest.raises(ValueError, match="hidden_size"):
        ReportVAE(hidden_size=30, heads=4)
    with pytest.raises(ValueError, match="vocabulary_size must be None"):
        ReportVAE(encoder_path="/nonexistent")
    with pytest.raises(ValueError, match="free_bits"):
        ReportVAE(free_bits=-1)


def test_report_vae_vocabulary_is_fitted_once_and_unknown_tokens_read_as_unknown():
    vae = tiny_vae()
    used = vae.fit_vocabulary(TEXTS)
    assert 10 < used < 40
    with pytest.raises(ValueError, match="already fitted"):
        vae.fit_vocabulary(TEXTS)
    ids = vae.token_ids(["pleural zebra"])
    rows = vae._rows(ids)
    unknown_row = vae.unknown_row
    zebra = vae.tokenizer("zebra", add_special_tokens=False)["input_ids"][0]
    assert rows[0, (ids[0] == zebra).nonzero()[0, 0]] == unknown_row
    assert rows[0, 1] != unknown_row  # "pleural" has a row
    # the fitted vocabulary travels with the weights
    clone = tiny_vae()
    clone.load_state_dict(vae.state_dict())
    assert torch.equal(clone._rows(ids), rows)


def test_report_vae_shapes_and_the_autoencoder_interface():
    vae = tiny_vae()
    vae.fit_vocabulary(TEXTS)
    ids = vae.token_ids(TEXTS)
    assert ids.shape == (4, 24)
    mu, sigma = vae.encode(ids.float())  # a trainer batches ids as float
    assert mu.shape == sigma.shape == (4, 1, 8) and bool((sigma > 0).all())
    decoded = vae.decode_stage_2_outputs(mu)
    assert decoded.shape == (4, 24) and decoded.dtype == torch.long
    assert len(vae.texts(decoded)) == 4
    with pytest.raises(ValueError, match="8 values"):
        vae.decode_stage_2_outputs(torch.zeros(2, 5))
    terms = vae.training_losses(TEXTS, generator=torch.Generator().manual_seed(0))
    assert set(terms) == {"reconstruction", "kl", "token_accuracy"} and all(torch.isfinite(v) for v in terms.values())


def test_report_vae_round_trip_after_training(tmp_path):
    """Trained by the ObjectiveTrainer, the VAE writes each report back from its latent (the tokenizer is uncased)."""
    vae = tiny_vae()
    vae.fit_vocabulary(TEXTS)
    trainer = objective_trainer(
        vae,
        [{"text": t} for t in TEXTS] * 8,
        tmp_path,
        300,
        {"text": "texts"},
        {"reconstruction": 1.0, "kl": 1e-3},
        sample_every=300,
    )
    trainer.run_training()
    vae.eval()
    assert vae.texts(vae(TEXTS)) == [t.lower() for t in TEXTS]
    sample = (tmp_path / "samples" / "iteration_0000300.txt").read_text()
    assert "input:" in sample and "output:" in sample
    # an untrained VAE does not (the test can fail)
    fresh = tiny_vae()
    fresh.fit_vocabulary(TEXTS)
    assert fresh.eval().texts(fresh(TEXTS)) != [t.lower() for t in TEXTS]


# ---- the objective trainer ------------------------------------------------------------------------------------------
def test_objective_trainer_checks_its_arguments(tmp_path):
    vae = tiny_vae()
    with pytest.raises(ValueError, match="training_losses"):
        objective_trainer(torch.nn.Linear(2, 2), [{"text": "a"}] * 8, tmp_path, 1, {"text": "texts"}, {"loss": 1.0})
    with pytest.raises(ValueError, match="ramp_iterations"):
        objective_trainer(
            vae, [{"text": "a"}] * 8, tmp_path, 1, {"text": "texts"}, {"kl": 1.0}, ramp_iterations={"other": 5}
        )
    trainer = objective_trainer(
        vae, [{"text": "a"}] * 8, tmp_path, 1, {"text": "texts"}, {"kl": 0.5}, ramp_iterations={"kl": 10}
    )
    assert trainer.weight("kl", 5) == pytest.approx(0.25) and trainer.weight("kl", 20) == pytest.approx(0.5)
    with pytest.raises(ValueError, match="gave no"):
        objective_trainer(
            vae, [{"text": "a"}] * 8, tmp_path / "b", 1, {"text": "texts"}, {"missing": 1.0}
        ).run_training()


def test_objective_trainer_resumes_exactly(tmp_path):
    data = [{"text": t} for t in TEXTS] * 4
    args = ({"text": "texts"}, {"reconstruction": 1.0, "kl": 1e-2})
    straight = tiny_vae()
    straight.fit_vocabulary(TEXTS)
    objective_trainer(straight, data, tmp_path / "a", 6, *args, ramp_iterations={"kl": 4}).run_training()
    resumed = tiny_vae()
    resumed.fit_vocabulary(TEXTS)
    objective_trainer(resumed, data, tmp_path / "b", 3, *args, ramp_iterations={"kl": 4}).run_training()
    resumed = tiny_vae()
    resumed.fit_vocabulary(TEXTS)
    objective_trainer(resumed, data, tmp_path / "b", 6, *args, ramp_iterations={"kl": 4}).run_training()
    assert load_checkpoint(tmp_path / "b" / "checkpoints" / "last.pt")["iteration"] == 6
    for (name, a), b in zip(straight.state_dict().items(), resumed.state_dict().values()):
        assert torch.equal(a, b), name


# ---- aligned condition space -----------------------------------------------------------------------------------
def paired_studies(n: int, seed: int = 0) -> list[dict]:
    """Studies whose frontal, lateral and pooled text share a hidden finding (brightness pattern / text direction)."""
    rng = np.random.default_rng(seed)
    directions = rng.normal(size=(4, 16))
    studies = []
    for i in range(n):
        k = i % 4
        frontal = rng.normal(0, 0.1, (1, 16, 16)).astype(np.float32)
        frontal[0, :, k * 4 : k * 4 + 4] += 1.0
        lateral = rng.normal(0, 0.1, (1, 16, 16)).astype(np.float32)
        lateral[0, k * 4 : k * 4 + 4, :] += 1.0
        text = (directions[k] + rng.normal(0, 0.1, 16)).astype(np.float32)
        studies.append(
            {
                "frontal": torch.from_numpy(frontal),
                "lateral": torch.from_numpy(lateral),
                "report_pooled": torch.from_numpy(text),
                "finding": k,
            }
        )
    return studies


def tiny_encoders() -> AlignedEncoders:
    torch.manual_seed(0)
    return AlignedEncoders(image_shape=(1, 16, 16), text_dim=16, dim=8, channels=(8, 16))


def test_clip_loss_and_combined_embeddings():
    a = torch.nn.functional.normalize(torch.randn(6, 4), dim=-1)
    matched, top1 = clip_loss(a, a, torch.tensor(np.log(100.0)))
    shuffled, _ = clip_loss(a, a.roll(1, 0), torch.tensor(np.log(100.0)))
    assert top1 == 1.0 and matched < shuffled
    mixed = combine_embeddings([a, a.roll(1, 0)], [1.0, 3.0])
    assert torch.allclose(mixed.norm(dim=-1), torch.ones(6))
    with pytest.raises(ValueError, match="weights"):
        combine_embeddings([a], [-1.0])
    with pytest.raises(ValueError, match="at least two"):
        AlignedEncoders(image_modalities=("frontal",), text_modalities=())


def test_alignment_training_pairs_the_modalities_of_one_study(tmp_path):
    encoders = tiny_encoders()
    studies = paired_studies(64)
    inputs = {"frontal": "frontal", "lateral": "lateral", "report_pooled": "report"}

    def retrieval(model) -> float:
        model.eval()
        with torch.no_grad():
            f = model.embed("frontal", torch.stack([s["frontal"] for s in studies]))
            r = model.embed("report", torch.stack([s["report_pooled"] for s in studies]))
        findings = torch.tensor([s["finding"] for s in studies])
        return float((findings[(f @ r.t()).argmax(1)] == findings).float().mean())

    before = retrieval(encoders)
    objective_trainer(encoders, studies, tmp_path, 150, inputs, {"contrastive": 1.0}).run_training()
    assert retrieval(encoders) == 1.0 > before + 0.3
    with pytest.raises(ValueError, match="at least two"):
        encoders.training_losses(frontal=studies[0]["frontal"][None])


# ---- streams ---------------------------------------------------------------------------------------------------------
def tiny_unet(context: int = 8) -> DiffusionModelUNet:
    return DiffusionModelUNet(
        spatial_dims=2,
        in_channels=4,
        out_channels=4,
        channels=(16, 32),
        attention_levels=(False, True),
        num_res_blocks=1,
        num_head_channels=16,
        norm_num_groups=8,
        with_conditioning=True,
        cross_attention_dim=context,
    )


SHAPES = {"frontal": (4, 4, 4), "lateral": (4, 4, 4), "report": (1, 8)}


def tiny_joint(**kwargs) -> JointDiffusion:
    torch.manual_seed(0)
    streams = {
        "frontal": tiny_unet(),
        "lateral": tiny_unet(),
        "report": VectorDiffusionNet(latent_dim=8, channels=(32, 16), cross_attention_dim=8, attention_tokens=2),
    }
    for net in streams.values():  # MONAI zero-initialises the output layer; a trained stream's is not
        last = [m for m in net.modules() if isinstance(m, (torch.nn.Conv2d, torch.nn.Linear))][-1]
        torch.nn.init.normal_(last.weight, std=0.1)
    return JointDiffusion(streams, SHAPES, condition_dim=8, env_dim=16, align_dim=8, **kwargs)


def test_vector_diffusion_net_shapes():
    net = VectorDiffusionNet(latent_dim=8, channels=(32, 16), cross_attention_dim=8, attention_tokens=2)
    x = torch.randn(3, 1, 8)
    out = net(x, torch.tensor([1, 500, 999]), context=torch.randn(3, 1, 8))
    assert out.shape == x.shape and float(out.detach().abs().max()) == 0.0  # zero-initialised output layer
    with pytest.raises(ValueError, match="latent width"):
        net(torch.randn(3, 1, 7), torch.tensor([1, 2, 3]))
    with pytest.raises(ValueError, match="split into"):
        VectorDiffusionNet(latent_dim=8, channels=(30,), attention_tokens=4)


def test_pack_unpack_round_trip():
    parts = [torch.randn(2, 4, 4, 4), torch.randn(2, 1, 8)]
    packed = pack(parts)
    assert packed.shape == (2, 72)
    assert all(torch.equal(a, b) for a, b in zip(unpack(packed, [(4, 4, 4), (1, 8)]), parts))
    with pytest.raises(ValueError, match="packed tensor"):
        unpack(packed, [(4, 4, 4)])


def test_joint_diffusion_connectors_start_as_identity_and_then_couple_the_streams():
    joint = tiny_joint().eval()
    independent = tiny_joint(connect=False).eval()
    x, t, context = torch.randn(2, joint.packed_size), torch.tensor([10, 700]), torch.randn(2, 1, 8)
    assert torch.allclose(joint(x, t, context), independent(x, t, context), atol=1e-6)
    for connectors in joint.coupling.connectors.values():
        for connector in connectors:
            torch.nn.init.normal_(connector.out.weight, std=0.2)
    coupled = joint(x, t, context)
    assert not torch.allclose(coupled, independent(x, t, context), atol=1e-4)
    # changing the lateral latent changes the frontal output only through the connectors
    moved = x.clone()
    moved[:, 64:128] += 1.0
    frontal = slice(0, 64)
    assert not torch.allclose(joint(moved, t, context)[:, frontal], coupled[:, frontal], atol=1e-5)
    assert torch.allclose(independent(moved, t, context)[:, frontal], independent(x, t, context)[:, frontal])
    # one stream alone: no connectors, its own latent size
    joint.set_outputs(["report"])
    assert joint.packed_size == 8 and joint(torch.randn(2, 8), t, context).shape == (2, 8)
    with pytest.raises(ValueError, match="distinct streams"):
        joint.set_outputs(["report", "report"])
    with pytest.raises(ValueError, match="context must be"):
        joint.set_outputs(["frontal", "report"])(torch.randn(2, 72), t, torch.randn(2, 3, 8))


def test_joint_diffusion_publishes_the_environment_alignment_in_training():
    joint = tiny_joint().train()
    joint(torch.randn(4, joint.packed_size), torch.tensor([1, 2, 3, 4]), torch.randn(4, 3, 8))
    assert set(joint.auxiliary_losses) == {"environment_alignment"}
    joint.auxiliary_losses = {}
    joint.set_outputs(["lateral"])(torch.randn(4, 64), torch.tensor([1, 2, 3, 4]), torch.randn(4, 1, 8))
    assert joint.auxiliary_losses == {}


def tiny_stream_autoencoder(vae: ReportVAE) -> StreamAutoencoder:
    torch.manual_seed(0)
    image = AutoencoderKL(
        spatial_dims=2,
        in_channels=1,
        out_channels=1,
        channels=(8, 16),
        latent_channels=4,
        num_res_blocks=1,
        attention_levels=(False, False),
        norm_num_groups=4,
        with_encoder_nonlocal_attn=False,
        with_decoder_nonlocal_attn=False,
    )
    return StreamAutoencoder(
        {"frontal": image, "lateral": image, "report": vae},
        {"frontal": (1, 8, 8), "lateral": (1, 8, 8), "report": (24,)},
        SHAPES,
        {"frontal": 1.0, "lateral": 2.0, "report": 0.5},
    )


def test_stream_autoencoder_packs_every_stream_and_shares_autoencoders():
    vae = tiny_vae(latent_dim=8)
    vae.fit_vocabulary(TEXTS)
    streams = tiny_stream_autoencoder(vae)
    assert len(streams.autoencoders) == 2  # the views share one autoencoder
    ids = vae.token_ids(TEXTS[:2]).float()
    packed = pack([torch.rand(2, 1, 8, 8), torch.rand(2, 1, 8, 8), ids])
    mu, sigma = streams.encode(packed)
    assert mu.shape == sigma.shape == (2, 136)
    frontal_mu, _ = streams.autoencoder("lateral").encode(unpack(packed, [(1, 8, 8)] * 2 + [(24,)])[1])
    assert torch.allclose(unpack(mu, list(SHAPES.values()))[1], frontal_mu * 2.0)  # lateral's scale factor
    decoded = streams.with_outputs(["report", "frontal"]).decode_stage_2_outputs(torch.zeros(2, 72))
    assert decoded["report"].shape == (2, 24) and decoded["frontal"].shape == (2, 1, 8, 8)
    with pytest.raises(ValueError, match="scale_factors"):
        StreamAutoencoder({"report": vae}, {"report": (24,)}, {"report": (1, 8)}, {})


# ---- transforms ------------------------------------------------------------------------------------------------------
def test_stream_transforms():
    vae = tiny_vae()
    vae.fit_vocabulary(TEXTS)
    item = TokenizeReportd(vae)({"id": "s1", "text": TEXTS[0]})
    assert item["report_ids"].shape == (24,)
    with pytest.raises(ValueError, match="report text"):
        TokenizeReportd(vae)({"id": "s1", "text": 3})
    encoders = tiny_encoders()
    study = paired_studies(1)[0]
    embedded = AlignedEmbeddingsd(encoders, {"frontal": "frontal", "lateral": "lateral", "report": "report_pooled"})(
        study
    )
    assert embedded["report_embedding"].shape == (8,)
    with pytest.raises(ValueError, match="not among"):
        AlignedEmbeddingsd(encoders, {"audio": "frontal"})
    prompt = MultiPromptConditiond([["report"], ["lateral"], ["report", "lateral"]], seed=3)
    draws = []
    for _ in range(60):
        condition = prompt(embedded)["condition"]
        assert condition.shape == (1, 8)
        draws.append(tuple(np.round(condition.numpy(), 5).ravel()))
    assert len(set(draws)) == 3  # every option is drawn
    again = MultiPromptConditiond([["report"], ["lateral"], ["report", "lateral"]], seed=3)
    assert [tuple(np.round(again(embedded)["condition"].numpy(), 5).ravel()) for _ in range(60)] == draws
    with pytest.raises(ValueError, match="run AlignedEmbeddingsd"):
        MultiPromptConditiond([["frontal"]])({"id": "x"})
    packed = PackStreamsd(["frontal", "report_ids"])({**study, "report_ids": item["report_ids"]})
    assert packed["streams"].shape == (256 + 24,)


# ---- the joint stage -------------------------------------------------------------------------------------------
def test_joint_stream_trainer_trains_only_connectors_and_resumes_exactly(tmp_path):
    vae = tiny_vae(latent_dim=8)
    vae.fit_vocabulary(TEXTS)
    encoders = tiny_encoders()

    def dataset():
        items = []
        for i, study in enumerate(paired_studies(16)):
            item = {**study, "text": TEXTS[i % 4]}
            item = TokenizeReportd(vae)(item)
            item = AlignedEmbeddingsd(
                encoders, {"frontal": "frontal", "lateral": "lateral", "report": "report_pooled"}
            )(item)
            item["frontal"], item["lateral"] = item["frontal"][:, :8, :8], item["lateral"][:, :8, :8]
            items.append(PackStreamsd(["frontal", "lateral", "report_ids"])(item))
        return [{k: v for k, v in item.items() if k == "streams" or k.endswith("_embedding")} for item in items]

    data = dataset()
    tasks = [
        {"inputs": ["report"], "outputs": ["frontal", "lateral"]},
        {"inputs": ["frontal"], "outputs": ["lateral", "report"]},
    ]

    def run(out, iterations):
        joint = tiny_joint()
        streams = tiny_stream_autoencoder(vae)
        optimizer = torch.optim.AdamW(joint.joint_parameters(), 1e-3)
        trainer = JointStreamTrainer(
            joint,
            optimizer,
            IndexedBatches(data, 4, seed=0),
            RFlowScheduler(num_train_timesteps=1000, use_discrete_timesteps=True),
            streams,
            tasks=tasks,
            latent_cache=True,
            max_iterations=iterations,
            output_dir=out,
            progress=False,
            tensorboard=False,
            ema_decay=None,
        )
        trainer.run_training()
        return joint, trainer

    before = tiny_joint().state_dict()
    straight, trainer = run(tmp_path / "a", 6)
    assert set(trainer.state.output) >= {"loss", "environment_alignment"}
    assert all(torch.equal(v, before[k]) for k, v in straight.state_dict().items() if k.startswith("streams."))
    assert any(
        not torch.equal(v, before[k]) for k, v in straight.state_dict().items() if k.startswith("coupling.connectors.")
    )
    run(tmp_path / "b", 3)
    resumed, _ = run(tmp_path / "b", 6)
    assert all(torch.equal(a, b) for a, b in zip(straight.state_dict().values(), resumed.state_dict().values()))
    with pytest.raises(ValueError, match="two or more"):
        JointStreamTrainer(
            tiny_joint(),
            torch.optim.SGD(tiny_joint().joint_parameters(), 0.1),
            IndexedBatches(data, 4),
            RFlowScheduler(),
            tiny_stream_autoencoder(vae),
            tasks=[{"inputs": ["report"], "outputs": ["frontal"]}],
            max_iterations=1,
            output_dir=tmp_path / "c",
        )
