"""Every bundle's ``configs/metadata.json`` through MONAI's ``verify_metadata`` (against the schema shipped in
``medgen_monai/schemas``), and its declared data formats against the networks its ``inference.json`` builds: the
declared inputs, made as tensors, run through the network and give the declared output (MONAI's
``verify_net_in_out`` wants a single input named ``image``, which no diffusion network has)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from monai.bundle import verify_metadata

from medgen_monai.engines import inference_parser
from medgen_monai.schemas import BUNDLE_METADATA_SCHEMA

ROOT = Path(__file__).parents[1]
BUNDLES = sorted(p.parents[1] for p in (ROOT / "bundles").glob("*/configs/metadata.json"))
IDS = [p.name for p in BUNDLES]
BATCH = 2


def _metadata(root: Path) -> dict:
    return json.loads((root / "configs" / "metadata.json").read_text())


def tensor_of(spec: dict, generator: torch.Generator) -> torch.Tensor:
    """A batch of ``BATCH`` tensors as ``spec`` declares them: ``(B, C, *spatial)`` for an image, ``(B, *spatial)`` for
    tuples; integers drawn inside the declared value range."""
    shape = [BATCH] + ([spec["num_channels"]] if spec["type"] == "image" else []) + list(spec["spatial_shape"])
    if spec["dtype"].startswith("int"):
        low, high = spec["value_range"]
        return torch.randint(int(low), int(high) + 1, shape, generator=generator)
    return torch.randn(shape, generator=generator, dtype=getattr(torch, spec["dtype"]))


def declared_shape(spec: dict) -> tuple[int, ...]:
    return (BATCH, *([spec["num_channels"]] if spec["type"] == "image" else []), *spec["spatial_shape"])


@pytest.mark.parametrize("root", BUNDLES, ids=IDS)
def test_metadata_passes_monais_verify_metadata(root, tmp_path):
    verify_metadata(meta_file=str(root / "configs" / "metadata.json"), filepath=str(BUNDLE_METADATA_SCHEMA))
    metadata = _metadata(root)
    assert metadata["version"] in metadata["changelog"]
    # the model zoo's latent diffusion form: the generator is the network
    assert metadata["generator_data_format"] == metadata["network_data_format"]


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda m: m["network_data_format"]["inputs"]["x"].update(type="tensor"), "'tensor' is not one of"),
        (lambda m: m["network_data_format"]["inputs"]["x"].pop("channel_def"), "'channel_def' is a required property"),
        (lambda m: m.pop("copyright"), "'copyright' is a required property"),
        (lambda m: m.update(version="0.2"), "'0.2' does not match"),
    ],
)
def test_verify_metadata_fails_on_what_the_specification_forbids(change, message, tmp_path):
    metadata = _metadata(ROOT / "bundles" / "ldm_label_derm")
    change(metadata)
    path = tmp_path / "metadata.json"
    path.write_text(json.dumps(metadata))
    with pytest.raises(ValueError, match=message):
        verify_metadata(meta_file=str(path), filepath=str(BUNDLE_METADATA_SCHEMA))


@pytest.mark.parametrize("root", BUNDLES, ids=IDS)
def test_declared_data_formats_are_what_the_networks_take_and_give(root):
    metadata = _metadata(root)
    parser = inference_parser(root, initialize=False)
    generator = torch.Generator().manual_seed(0)
    network = parser.get_parsed_content("network_def").eval()
    formats = metadata["network_data_format"]
    inputs = {name: tensor_of(spec, generator) for name, spec in formats["inputs"].items()}
    with torch.no_grad():
        output = network(**inputs)
    assert tuple(output.shape) == declared_shape(formats["outputs"]["pred"])
    assert str(output.dtype) == f"torch.{formats['outputs']['pred']['dtype']}"

    autoencoder = parser.get_parsed_content("autoencoder_def").eval()
    image_spec = metadata["autoencoder_data_format"]["inputs"]["image"]
    image = tensor_of(image_spec, generator).clamp(0, 1)
    with torch.no_grad():
        reconstruction, z_mu, _ = autoencoder(image)
    assert tuple(reconstruction.shape) == declared_shape(metadata["autoencoder_data_format"]["outputs"]["pred"])
    if formats["inputs"]["x"]["type"] == "image":  # the latent the diffusion network takes is the encoder's
        assert tuple(z_mu.shape) == declared_shape(formats["inputs"]["x"])
