"""Deployment exports: every bundle's inference networks through ``torch.export`` (``medgen-monai export``,
:mod:`medgen_monai.export`), loaded back with ``torch.export.load`` and compared with the eager networks built from the
bundle's config; the autoencoder through ``python -m monai.bundle ckpt_export`` (traced: MONAI's ``AutoencoderKL``
cannot be scripted), loaded with ``torch.jit.load``.

The fast tests use the smallest shipped bundle (ldm_label_derm); the other bundles are ``slow``: those with weights
exported with them, those without (in development) from random initialisation at tiny sizes.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_bundle_ccella import TINY as CCELLA_TINY
from test_bundle_medcodim import TINY as MEDCODIM_TINY

from medgen_monai import cli
from medgen_monai.engines.bundles import shipped_bundles, unshipped_bundles
from medgen_monai.export import (
    MANIFEST,
    AutoencoderKLDecoder,
    ExportError,
    bundle_targets,
    compare_exported,
    export_bundle,
    export_target,
    load_exported,
)
from medgen_monai.io.weights import WeightsError, load_weights

ROOT = Path(__file__).parents[1]
BUNDLES = ROOT / "bundles"
SMALLEST = BUNDLES / "ldm_label_derm"
ATOL = 1e-4

# bundles without weights are exported from random initialisation at the sizes their bundle tests use
TINY = {"ccella_prostate_mri": CCELLA_TINY, "medcodim_cxr": MEDCODIM_TINY}


def _check_against_eager(out: Path, bundle: Path, weights: bool, overrides: dict | None = None) -> dict:
    """Load every exported program and compare it with the eager network rebuilt from the bundle's config, on fresh
    inputs of batch 3 (the programs were exported at batch 2: the batch is dynamic)."""
    manifest = json.loads((out / MANIFEST).read_text())
    exported = load_exported(out)
    targets = {t.name: t for t in bundle_targets(bundle, weights=weights, overrides=overrides)}
    assert sorted(exported) == sorted(targets) == sorted(manifest["networks"])
    for name, target in targets.items():
        args, kwargs = target.example(2, torch.Generator().manual_seed(5))
        with torch.no_grad():  # an identically zero output (an untrained zero-initialised layer) would check nothing
            assert target.module(*args, **kwargs).abs().max() > 1e-3, name
        assert compare_exported(target, exported[name], batch_sizes=(3,), atol=ATOL, seed=7) <= ATOL, name
        assert manifest["networks"][name]["max_abs_difference"] <= ATOL
    return manifest


@pytest.fixture(scope="module")
def smallest_export(tmp_path_factory) -> dict:
    """ldm_label_derm exported through the command line (weights, encoder, verification)."""
    out = tmp_path_factory.mktemp("export") / "ldm_label_derm"
    summary = json.loads(cli.export(str(SMALLEST), str(out)))
    return {"out": out, "summary": summary}


def test_cli_exports_every_inference_network_of_the_smallest_bundle(smallest_export):
    out, summary = smallest_export["out"], smallest_export["summary"]
    assert summary["bundle"] == "ldm_label_derm"
    assert sorted(summary["networks"]) == ["decoder", "diffusion", "encoder"]
    assert summary["networks"]["diffusion"]["call"] == "diffusion(x, timesteps=timesteps, class_labels=class_labels)"
    assert sorted(p.name for p in out.iterdir()) == ["decoder.pt2", "diffusion.pt2", "encoder.pt2", MANIFEST]
    manifest = _check_against_eager(out, SMALLEST, weights=True)
    extra = load_weights(SMALLEST / "models" / "diffusion.pt")
    assert manifest["networks"]["decoder"]["constants"]["scale_factor"] == pytest.approx(extra["scale_factor"])
    assert manifest["networks"]["diffusion"]["inputs"]["x"]["shape"] == ["B", 4, 16, 16]
    assert manifest["networks"]["decoder"]["output"]["shape"] == ["B", 3, 64, 64]
    assert manifest["bundle"]["weights_sha256"].keys() == {"autoencoder.pt", "diffusion.pt"}


def test_exported_programs_sample_as_the_bundle_does(smallest_export):
    """The exported denoiser drives the bundle's own sampler (the same call, ``network(x, timesteps=t, **condition)``,
    at classifier-free guidance's batch of 2B, with DDIM's per-seed noise) and the exported decoder decodes its latents
    (the latent scale included): the same images as the eager bundle."""
    from medgen_monai.engines.bundles import inference_parser

    exported = load_exported(smallest_export["out"])
    parser = inference_parser(SMALLEST, num_inference_steps=2, device="$torch.device('cpu')")
    parser.get_parsed_content("load_diffusion")
    sampler, network = parser.get_parsed_content("sampler"), parser.get_parsed_content("network").eval()
    shape, seeds = parser.get_parsed_content("latent_shape"), [3, 4]
    condition, null = {"class_labels": torch.tensor([0, 4])}, {"class_labels": torch.tensor([7, 7])}
    with torch.no_grad():
        eager = sampler.decode(sampler.denoise(network, shape, seeds, condition, null))
        images = exported["decoder"](sampler.denoise(exported["diffusion"], shape, seeds, condition, null))
    assert images.shape == eager.shape == (2, 3, 64, 64)
    assert torch.allclose(images, eager, atol=ATOL)


def test_exported_programs_run_without_this_package_or_monai(smallest_export):
    """What a deployment needs is torch: the programs hold aten operations, not this package's or MONAI's code."""
    script = f"""
import sys
sys.modules["medgen_monai"] = None  # any import of them fails
sys.modules["monai"] = None
import torch
folder = {str(smallest_export["out"])!r}
diffusion = torch.export.load(folder + "/diffusion.pt2").module()
decoder = torch.export.load(folder + "/decoder.pt2").module()
out = diffusion(torch.randn(5, 4, 16, 16), timesteps=torch.full((5,), 500), class_labels=torch.tensor([0, 1, 2, 3, 7]))
print(tuple(decoder(out).shape))
"""
    run = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=smallest_export["out"])
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "(5, 3, 64, 64)"


@pytest.mark.parametrize("decoder", [True, False], ids=["decoder", "autoencoder"])
def test_monai_ckpt_export_traces_the_autoencoder(tmp_path, decoder):
    """``python -m monai.bundle ckpt_export autoencoder_def`` with the bundle's own weights file (``key_in_ckpt
    state_dict``): traced, with the decoder class (the generation path) or MONAI's AutoencoderKL itself."""
    from monai.bundle import ckpt_export

    from medgen_monai.engines.bundles import inference_parser

    path = tmp_path / "autoencoder.ts"
    options = (
        {"input_shape": [1, 4, 16, 16], "autoencoder_def#_target_": "medgen_monai.export.AutoencoderKLDecoder"}
        if decoder
        else {"input_shape": [1, 3, 64, 64], "converter_kwargs": {"check_trace": False}}
    )
    ckpt_export(
        "autoencoder_def",
        filepath=str(path),
        ckpt_file=str(SMALLEST / "models" / "autoencoder.pt"),
        config_file=str(SMALLEST / "configs" / "inference.json"),
        bundle_root=str(SMALLEST),
        key_in_ckpt="state_dict",
        use_trace=True,
        **options,
    )
    traced = torch.jit.load(str(path))
    autoencoder = inference_parser(SMALLEST, initialize=False).get_parsed_content("autoencoder_def").eval()
    load_weights(SMALLEST / "models" / "autoencoder.pt", autoencoder, role="autoencoder")
    with torch.no_grad():
        if decoder:
            z = torch.randn(3, 4, 16, 16, generator=torch.Generator().manual_seed(0))
            assert torch.allclose(traced(z), autoencoder.decode_stage_2_outputs(z), atol=ATOL)
        else:  # forward: (reconstruction of a random posterior sample, mu, sigma); mu and sigma are deterministic
            x = torch.rand(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
            _, mu, sigma = traced(x)
            expected_mu, expected_sigma = autoencoder.encode(x)
            assert torch.allclose(mu, expected_mu, atol=ATOL) and torch.allclose(sigma, expected_sigma, atol=ATOL)


def test_autoencoder_decoder_class_loads_the_autoencoder_weights():
    from medgen_monai.engines.bundles import inference_parser

    parser = inference_parser(
        SMALLEST, initialize=False, **{"autoencoder_def#_target_": "medgen_monai.export.AutoencoderKLDecoder"}
    )
    decoder = parser.get_parsed_content("autoencoder_def").eval()
    assert isinstance(decoder, AutoencoderKLDecoder)
    load_weights(SMALLEST / "models" / "autoencoder.pt", decoder, role="autoencoder")
    z = torch.randn(1, 4, 16, 16)
    with torch.no_grad():
        assert torch.equal(decoder(z), decoder.decode_stage_2_outputs(z))


def test_export_refuses_a_folder_inside_the_bundle_or_of_other_files(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        cli.main(["export", "--bundle", str(SMALLEST), "--out", str(SMALLEST / "exported")])
    assert exit_info.value.code == 2 and "inside the bundle folder" in capsys.readouterr().err
    assert not (SMALLEST / "exported").exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep")
    with pytest.raises(ValueError, match="neither empty nor an earlier export"):
        export_bundle(SMALLEST, tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep"
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        export_bundle(SMALLEST, tmp_path / "new", batch_size=1)
    with pytest.raises(ValueError, match="not a bundle folder"):
        export_bundle(tmp_path, tmp_path / "new")
    with pytest.raises(ValueError, match="not an export folder"):
        load_exported(tmp_path / "mine")
    assert not (tmp_path / "new").exists()


def test_export_of_missing_weights_names_the_file(tmp_path):
    copy = tmp_path / "bundle"
    shutil.copytree(SMALLEST, copy, ignore=shutil.ignore_patterns("models", "output"))
    with pytest.raises(WeightsError, match="autoencoder.pt: weights file not found"):
        export_bundle(copy, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_disagreeing_program_is_refused():
    target = next(t for t in bundle_targets(SMALLEST, weights=False, encoder=False) if t.name == "decoder")
    program = export_target(target).module()
    conv = target.module.autoencoder.post_quant_conv.conv
    # a new tensor: an exported program shares the eager network's parameter tensors until it is saved
    conv.bias = torch.nn.Parameter(conv.bias.detach() + 1.0)
    with pytest.raises(ExportError, match="decoder: the exported program differs"):
        compare_exported(target, program)


# ---- every other bundle -------------------------------------------------------------------------------------------


def _names(paths: list[Path]) -> list[str]:
    return [p.name for p in paths]


@pytest.mark.slow
@pytest.mark.parametrize("name", [n for n in _names(shipped_bundles(BUNDLES)) if n != SMALLEST.name])
def test_every_shipped_bundle_exports_and_matches(name, tmp_path):
    bundle = BUNDLES / name
    out = tmp_path / name
    manifest = export_bundle(bundle, out)
    _check_against_eager(out, bundle, weights=True)
    assert "diffusion" in manifest["networks"] and "decoder" in manifest["networks"]
    if (bundle / "bank").is_dir():  # description-conditioned: text token states and the class (prototypes)
        assert list(manifest["networks"]["diffusion"]["inputs"]) == ["x", "timesteps", "context", "class_labels"]
        assert "text_encoder" in manifest["not_exported"]


@pytest.mark.slow
@pytest.mark.parametrize("name", _names(unshipped_bundles(BUNDLES)))
def test_bundles_without_weights_export_from_random_initialisation(name, tmp_path):
    bundle = BUNDLES / name
    out = tmp_path / name
    overrides = TINY.get(name, {})
    manifest = export_bundle(bundle, out, weights=False, overrides=overrides)
    assert manifest["bundle"]["weights"].startswith("none")
    _check_against_eager(out, bundle, weights=False, overrides=overrides)


@pytest.mark.slow
def test_ccella_exports_report_spacing_and_class_inputs(tmp_path):
    bundle = BUNDLES / "ccella_prostate_mri"
    manifest = export_bundle(
        bundle, tmp_path / "predicted", weights=False, encoder=False, overrides=TINY["ccella_prostate_mri"]
    )
    assert list(manifest["networks"]["diffusion"]["inputs"]) == ["x", "timesteps", "context", "spacing"]
    assert manifest["networks"]["report_class"]["output"]["shape"] == ["B", 2]
    # the DECOUPLED ablation's true class is an input too
    overrides = {**TINY["ccella_prostate_mri"], "class_path": "true"}
    manifest = export_bundle(bundle, tmp_path / "true", weights=False, encoder=False, overrides=overrides)
    assert list(manifest["networks"]["diffusion"]["inputs"]) == ["x", "timesteps", "context", "spacing", "report_class"]
    assert "report_class" not in manifest["networks"]


@pytest.mark.slow
def test_medcodim_joint_network_exports_with_its_coupling(tmp_path):
    """The joint network's connectors run as forward hooks; with trained (here: random non-zero) connectors the
    streams see each other, and the exported program computes the same."""
    overrides = {**TINY["medcodim_cxr"], "outputs": ["frontal", "report"]}
    targets = {
        t.name: t for t in bundle_targets(BUNDLES / "medcodim_cxr", weights=False, encoder=False, overrides=overrides)
    }
    assert sorted(targets) == [
        "aligned_frontal",
        "aligned_lateral",
        "aligned_report",
        "decoder_frontal",
        "decoder_lateral",
        "diffusion",
    ]
    joint = targets["diffusion"]
    torch.manual_seed(0)
    with torch.no_grad():
        for parameter in joint.module.coupling.parameters():  # zero-initialised connectors are the identity
            parameter.normal_(0.0, 0.2)
    args, kwargs = joint.example(2, torch.Generator().manual_seed(3))
    with torch.no_grad():
        coupled = joint.module(*args, **kwargs)
        joint.module.connect = False
        independent = joint.module(*args, **kwargs)
        joint.module.connect = True
    assert (coupled - independent).abs().max() > 1e-3  # the coupling matters
    program = export_target(joint)
    assert compare_exported(joint, program.module(), batch_sizes=(2, 1), atol=ATOL) <= ATOL
    assert [s.name for s in joint.inputs] == ["x", "timesteps", "context"]
    assert joint.inputs[0].shape == (joint.module.packed_size,)


def test_prototype_label_check_still_refuses_bad_labels_outside_export():
    """The one change export needed in our networks: the prototype's label range check (it reads values) is skipped
    only while torch.export traces."""
    from medgen_monai.nets import PrototypeConditioning

    module = PrototypeConditioning(2, 8, num_tokens=2, num_heads=2)
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 2\]"):
        module.class_prototypes(torch.tensor([0, 3]))
    assert module.class_prototypes(torch.tensor([0, 2])).shape == (2, 2, 8)


@pytest.mark.slow
def test_medcodim_exports_with_its_weights_files(tmp_path):
    """MedCoDi-M ships no weights yet: a copy of the bundle gets tiny weights files of every role (random, saved with
    save_weights), and the export loads them through the bundle's own config (the streams' latent scales, the joint
    connectors)."""
    from medgen_monai.engines.bundles import inference_parser
    from medgen_monai.io.weights import save_weights

    copy = tmp_path / "medcodim_cxr"
    shutil.copytree(BUNDLES / "medcodim_cxr", copy, ignore=shutil.ignore_patterns("models", "output"))
    overrides = TINY["medcodim_cxr"]
    parser = inference_parser(copy, initialize=False, device="$torch.device('cpu')", **overrides)
    network = parser.get_parsed_content("network")
    with torch.no_grad():
        for parameter in network.parameters():  # trained-like: no zero-initialised layer left
            parameter.add_(0.05 * torch.randn(parameter.shape))
    models = copy / "models"
    save_weights(models / "autoencoder.pt", parser.get_parsed_content("autoencoder"), "medcodim_cxr", "autoencoder")
    save_weights(models / "report_vae.pt", parser.get_parsed_content("report_vae"), "medcodim_cxr", "report vae")
    save_weights(models / "alignment.pt", parser.get_parsed_content("aligned"), "medcodim_cxr", "aligned encoders")
    scales = {"frontal": 0.5, "lateral": 0.25, "report": 2.0}
    for stream, scale in scales.items():
        save_weights(
            models / f"{stream}.pt",
            network.streams[stream],
            "medcodim_cxr",
            f"{stream} stream",
            extra={"scale_factor": scale},
        )
    save_weights(models / "joint.pt", network.coupling, "medcodim_cxr", "joint")

    out = tmp_path / "exported"
    manifest = export_bundle(copy, out, overrides=overrides)
    assert manifest["networks"]["decoder_frontal"]["constants"]["scale_factor"] == 0.5
    assert manifest["networks"]["decoder_lateral"]["constants"]["scale_factor"] == 0.25
    assert "coupled: True" in manifest["networks"]["diffusion"]["description"]
    assert sorted(manifest["bundle"]["weights_sha256"]) == [
        "alignment.pt",
        "autoencoder.pt",
        "frontal.pt",
        "joint.pt",
        "lateral.pt",
        "report.pt",
        "report_vae.pt",
    ]
    assert "report_vae" in manifest["not_exported"]
    _check_against_eager(out, copy, weights=True, overrides=overrides)
