"""Export a bundle's inference networks for deployment: ``torch.export`` programs (``.pt2``) built from the bundle's own
``configs/inference.json`` and weights, each checked against the eager network it came from.

``python -m monai.bundle ckpt_export`` covers one network of one input: it scripts the network or traces it with one
random tensor. That fits the autoencoders (MONAI's ``AutoencoderKL`` is traced, since it cannot be scripted; see
:class:`AutoencoderKLDecoder` for its generation path), but not the diffusion networks: MONAI's ``DiffusionModelUNet``
cannot be scripted (its ``Upsample`` calls ``super().forward``), and tracing through ``ckpt_export`` passes only ``x``
where the denoisers take timesteps and their conditions too. :func:`export_bundle` exports every network the bundle
runs at inference, with all its inputs:

* ``decoder``: normalised latents ``(B, *latent_shape)`` -> images ``(B, C, *image_size)``, the sampler's decode
  path (``latents / scale_factor + latent_shift``, then the autoencoder's ``decode_stage_2_outputs``);
* ``encoder`` (optional): images ``(B, C, *image_size)`` -> normalised latent means ``(B, *latent_shape)``, its inverse;
* ``diffusion``: the denoiser, called as the sampler calls it: ``module(x, timesteps=t, **condition)``, e.g.
  ``context`` ``(B, L, D)`` text token states and ``class_labels`` ``(B,)`` (VAP-Diffusion), ``class_labels``
  (the label baseline), ``context`` and ``spacing`` ``(B, 3)`` (CCELLA), packed latents ``(B, N)`` and one aligned
  condition token ``context`` ``(B, 1, c)`` (MedCoDi-M's streams of the configured ``outputs``);
* CCELLA: ``report_class``: report token states ``(B, L, D)`` -> class probabilities ``(B, K)``;
* MedCoDi-M: ``decoder_<view>`` / ``encoder_<view>`` per image stream (each stream has its own latent scale) and
  ``aligned_<modality>``: an image ``(B, C, H, W)`` or a pooled text vector ``(B, D)`` -> ``(B, c)`` condition.

Not exported: the frozen text encoder (a ``transformers`` model shipped as its own package: the exported networks
take its token states) and MedCoDi-M's report VAE (greedy autoregressive decoding with a data-dependent stop and a
tokenizer). Every input's first dimension (the batch) is dynamic; everything else is the bundle's configured size.
``<out>/export.json`` records each program's inputs, output, call and measured difference from the eager network.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from monai.networks.nets import AutoencoderKL

from .engines.latents import denormalise_latents, normalise_latents

__all__ = [
    "EXPORT_FORMAT",
    "MANIFEST",
    "ExportError",
    "InputSpec",
    "ExportTarget",
    "LatentDecoder",
    "LatentEncoder",
    "AutoencoderKLDecoder",
    "bundle_targets",
    "export_target",
    "compare_exported",
    "export_bundle",
    "load_exported",
]

EXPORT_FORMAT = "medgen-monai-export-1"
MANIFEST = "export.json"

Numbers = float | Sequence[float]


class ExportError(ValueError):
    """A network that ``torch.export`` cannot export, or an exported program that disagrees with its eager network."""


@dataclass(frozen=True)
class InputSpec:
    """One input of an exported network: the shape of one sample (the batch dimension comes first and is dynamic).

    Args:
        name: the forward argument's name.
        shape: one sample's shape (``()`` for a per-sample scalar such as a timestep or a class index).
        dtype: the input's dtype.
        values: example values are drawn from these (timesteps of the bundle's grid, class indices); scalars only.
        low, high: example values are uniform in ``[low, high)``; otherwise standard normal.
        description: what it is (recorded in the manifest).
    """

    name: str
    shape: tuple[int, ...]
    dtype: torch.dtype = torch.float32
    values: tuple[float, ...] | None = None
    low: float | None = None
    high: float | None = None
    description: str = ""

    def __post_init__(self) -> None:
        if self.values is not None and (self.shape != () or not self.values):
            raise ValueError(f"{self.name}: values are for per-sample scalars (shape ()), got shape {self.shape}")
        if (self.low is None) != (self.high is None) or (self.low is not None and not self.low < self.high):
            raise ValueError(f"{self.name}: give both low < high, or neither; got {self.low}, {self.high}")

    def sample(self, batch: int, generator: torch.Generator) -> torch.Tensor:
        """An example input ``(batch, *shape)``."""
        if self.values is not None:
            index = torch.randint(len(self.values), (batch,), generator=generator)
            return torch.tensor(self.values, dtype=self.dtype)[index]
        if self.low is not None:
            uniform = torch.rand((batch, *self.shape), generator=generator)
            return (self.low + (self.high - self.low) * uniform).to(self.dtype)
        return torch.randn((batch, *self.shape), generator=generator).to(self.dtype)

    def describe(self) -> dict[str, Any]:
        return {
            "shape": ["B", *self.shape],
            "dtype": str(self.dtype).removeprefix("torch."),
            "description": self.description,
        }


@dataclass
class ExportTarget:
    """A network to export: ``module(first input, **the other inputs by name)``.

    Args:
        name: the program's file stem (``<name>.pt2``).
        module: the eager network (weights loaded), in eval mode.
        inputs: its inputs; the first is positional, the others keywords (as the sampler calls a denoiser).
        description: what it computes (recorded in the manifest).
        notes: constants baked into the program (e.g. the latent scale), recorded in the manifest.
    """

    name: str
    module: nn.Module
    inputs: tuple[InputSpec, ...]
    description: str
    notes: dict[str, Any] = field(default_factory=dict)

    def example(
        self, batch: int, generator: torch.Generator
    ) -> tuple[tuple[torch.Tensor, ...], dict[str, torch.Tensor]]:
        """Example ``(args, kwargs)`` of ``batch`` samples."""
        first, *rest = self.inputs
        return (first.sample(batch, generator),), {spec.name: spec.sample(batch, generator) for spec in rest}

    @property
    def call(self) -> str:
        first, *rest = self.inputs
        return f"{self.name}({', '.join([first.name, *(f'{s.name}={s.name}' for s in rest)])})"


class LatentDecoder(nn.Module):
    """The sampler's decode path as one module: normalised latents ``(B, C_z, *spatial_z)`` -> images
    ``(B, C, *spatial)`` (``latents / scale_factor + latent_shift``, then ``decode_stage_2_outputs``).

    Args:
        autoencoder: a MONAI ``AutoencoderKL`` (weights loaded).
        scale_factor: the latent scale of training (one number or one per channel).
        latent_shift: the latent shift of training (one number or one per channel).
    """

    def __init__(self, autoencoder: nn.Module, scale_factor: Numbers = 1.0, latent_shift: Numbers = 0.0) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.scale_factor, self.latent_shift = scale_factor, latent_shift

    def forward(self, latents: torch.Tensor) -> torch.Tensor:
        return self.autoencoder.decode_stage_2_outputs(
            denormalise_latents(latents, self.scale_factor, self.latent_shift)
        )


class LatentEncoder(nn.Module):
    """The inverse of :class:`LatentDecoder`: images ``(B, C, *spatial)`` -> normalised latent means
    ``(B, C_z, *spatial_z)`` (``(mu - latent_shift) * scale_factor``; deterministic, no posterior sample)."""

    def __init__(self, autoencoder: nn.Module, scale_factor: Numbers = 1.0, latent_shift: Numbers = 0.0) -> None:
        super().__init__()
        self.autoencoder = autoencoder
        self.scale_factor, self.latent_shift = scale_factor, latent_shift

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        mu, _ = self.autoencoder.encode(images)
        return normalise_latents(mu, self.scale_factor, self.latent_shift)


class AutoencoderKLDecoder(AutoencoderKL):
    """MONAI's ``AutoencoderKL`` whose forward is its decoder: latents ``(B, C_z, *spatial_z)`` -> images
    ``(B, C, *spatial)`` (the autoencoder's own latents, before the bundle's latent normalisation).

    The same parameters as ``AutoencoderKL``, so the bundle's ``models/autoencoder.pt`` loads into it. For
    ``python -m monai.bundle ckpt_export``: override ``autoencoder_def#_target_`` with this class and trace with a
    latent ``input_shape`` to export the generation's decoder instead of ``AutoencoderKL.forward`` (encode, random
    posterior sample, decode).
    """

    def forward(self, z: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self.decode(z)


class _AlignedEmbedding(nn.Module):
    """One modality of :class:`~medgen_monai.nets.AlignedEncoders` as a forward: ``x`` -> ``(B, dim)`` unit norm."""

    def __init__(self, aligned: nn.Module, modality: str) -> None:
        super().__init__()
        self.aligned, self.modality = aligned, modality

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.aligned.embed(self.modality, x)


class _ReportClass(nn.Module):
    """CCELLA's class from the report: token states ``(B, L, D)`` -> class probabilities ``(B, K)``."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, context: torch.Tensor) -> torch.Tensor:
        return self.network.predict_class(context)


@contextmanager
def _config_errors() -> Iterator[None]:
    """MONAI wraps an error raised while evaluating a config item in a RuntimeError: hand on the ValueError (a
    missing or foreign weights file) underneath."""
    try:
        yield
    except RuntimeError as e:
        cause: BaseException | None = e
        while cause is not None and not isinstance(cause, ValueError):
            cause = cause.__cause__
        if cause is None:
            raise
        raise cause from None


def _plain(value: Any) -> Any:
    """Scale factors as JSON numbers (a tensor or a per-channel list)."""
    if isinstance(value, torch.Tensor):
        value = value.tolist()
    if isinstance(value, (list, tuple)):
        return [float(v) for v in value]
    return float(value)


def _timesteps(parser: Any, latent_shape: Sequence[int]) -> InputSpec:
    """The bundle's timestep grid (its scheduler, its step count): the values and dtype the sampler passes."""
    from .engines.schedules import schedule_for

    schedule = schedule_for(parser.get_parsed_content("noise_scheduler"))
    grid, _ = schedule.timesteps(
        int(parser.get_parsed_content("num_inference_steps")), latent_shape, torch.device("cpu")
    )
    values = tuple(float(v) if grid.is_floating_point() else int(v) for v in grid.tolist())
    return InputSpec(
        "timesteps",
        (),
        grid.dtype,
        values=values,
        description=f"diffusion timesteps (B,), the {schedule.name} grid of the bundle's sampler",
    )


def _diffusion_inputs(parser: Any, network: nn.Module, latent_shape: Sequence[int]) -> tuple[InputSpec, ...]:
    """The denoiser's inputs, as the bundle's conditioner builds them."""
    from monai.networks.nets import DiffusionModelUNet

    from .nets import CCELLAUNet, ConditionedDiffusionUNet, JointDiffusion

    x = InputSpec("x", tuple(int(s) for s in latent_shape), description="noisy normalised latents")
    specs = [x, _timesteps(parser, latent_shape)]
    if isinstance(network, JointDiffusion):
        specs[0] = InputSpec(
            "x", (network.packed_size,), description=f"the packed noisy latents of the streams {list(network.outputs)}"
        )
        specs.append(
            InputSpec(
                "context",
                (1, network.condition_dim),
                description="one aligned condition token (aligned_<modality> outputs, combined)",
            )
        )
        return tuple(specs)
    if isinstance(network, CCELLAUNet):
        if network.connector is not None:
            length = int(parser.get_parsed_content("text_max_length"))
            specs.append(
                InputSpec(
                    "context",
                    (length, network.connector.text_in.in_features),
                    description="the report's text-encoder token states",
                )
            )
        if network.spacing_mlp is not None:
            specs.append(
                InputSpec(
                    "spacing", (network.spacing_dims,), low=0.5, high=3.0, description="voxel spacing in millimetres"
                )
            )
        if network.class_path == "true":
            specs.append(
                InputSpec(
                    "report_class",
                    (),
                    torch.long,
                    values=tuple(range(-1, network.report_classes)),
                    description="the true class index (-1: unknown)",
                )
            )
        return tuple(specs)
    if not isinstance(network, DiffusionModelUNet):
        raise ExportError(
            f"network: {type(network).__name__} is not a diffusion network this exporter knows "
            "(DiffusionModelUNet and its subclasses, CCELLAUNet, JointDiffusion)"
        )
    if network.with_conditioning:
        length = int(parser.get_parsed_content("text_max_length"))
        width = int(parser.get_parsed_content("network_def#cross_attention_dim"))
        specs.append(InputSpec("context", (length, width), description="the description's text-encoder token states"))
    if isinstance(network, ConditionedDiffusionUNet) and network.num_classes is not None:
        specs.append(
            InputSpec(
                "class_labels",
                (),
                torch.long,
                values=tuple(range(network.num_classes + 1)),
                description=f"class indices (B,); {network.num_classes} is the null class (guidance)",
            )
        )
    elif not isinstance(network, ConditionedDiffusionUNet) and network.num_class_embeds is not None:
        specs.append(
            InputSpec(
                "class_labels",
                (),
                torch.long,
                values=tuple(range(network.num_class_embeds)),
                description="class indices (B,)",
            )
        )
    return tuple(specs)


def _image_spec(parser: Any) -> InputSpec:
    shape = (
        int(parser.get_parsed_content("image_channels")),
        *(int(s) for s in parser.get_parsed_content("image_size")),
    )
    return InputSpec("images", shape, low=0.0, high=1.0, description="images scaled to [0, 1]")


def _autoencoder_targets(
    autoencoder: nn.Module,
    image: InputSpec,
    latent_shape: Sequence[int],
    scale: Numbers,
    shift: Numbers,
    encoder: bool,
    suffix: str = "",
) -> list[ExportTarget]:
    notes = {"scale_factor": _plain(scale), "latent_shift": _plain(shift)}
    latents = InputSpec(
        "latents", tuple(int(s) for s in latent_shape), description="normalised latents (the sampler's)"
    )
    targets = [
        ExportTarget(
            f"decoder{suffix}",
            LatentDecoder(autoencoder, scale, shift).eval(),
            (latents,),
            f"normalised latents -> images (B, {', '.join(map(str, image.shape))})",
            dict(notes),
        )
    ]
    if encoder:
        targets.append(
            ExportTarget(
                f"encoder{suffix}",
                LatentEncoder(autoencoder, scale, shift).eval(),
                (image,),
                f"images -> normalised latent means (B, {', '.join(map(str, latent_shape))})",
                dict(notes),
            )
        )
    return targets


def _redraw_zero_parameters(modules: Sequence[nn.Module], seed: int, std: float = 0.02) -> None:
    """Draw every all-zero floating parameter from ``N(0, std^2)``: zero-initialised layers (MONAI's U-Net output
    convolution, connectors) make an untrained network's output identically zero, which checks nothing."""
    generator = torch.Generator().manual_seed(int(seed))
    seen: set[int] = set()
    with torch.no_grad():
        for module in modules:
            for parameter in module.parameters():
                if id(parameter) in seen or not parameter.is_floating_point() or bool(parameter.any()):
                    continue
                seen.add(id(parameter))
                parameter.copy_(std * torch.randn(parameter.shape, generator=generator))


def bundle_targets(
    bundle_root: str | Path,
    weights: bool = True,
    encoder: bool = True,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
) -> list[ExportTarget]:
    """The networks a bundle runs at inference, built from its ``configs/inference.json`` on the CPU, as
    :class:`ExportTarget` s (see the module docstring for the list).

    Args:
        bundle_root: the bundle folder.
        weights: load the bundle's weights through its own config (its ``initialize`` list and ``load_diffusion``:
            :func:`medgen_monai.io.weights.load_weights`, ``weights_only=True``); ``False``: random initialisation
            and latent scale 1 (bundles without weights yet, to check a deployment pipeline): the networks' own
            initialisation from ``seed`` (the same networks on every call; the global random state is left as it
            was), with every all-zero parameter (zero-initialised output layers) drawn from ``N(0, 0.02^2)`` so that
            no output is identically zero.
        encoder: also export the autoencoder's encoder.
        overrides: config ids to set (e.g. smaller sizes), as :func:`~medgen_monai.engines.bundles.inference_parser`.
        seed: the random initialisation's seed (``weights=False`` only).

    Raises:
        ValueError: not a bundle folder; :class:`~medgen_monai.io.weights.WeightsError`: missing or foreign weights.
    """
    root = Path(bundle_root)
    if weights:
        return _bundle_targets(root, True, encoder, overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(int(seed))
        targets = _bundle_targets(root, False, encoder, overrides)
    _redraw_zero_parameters([t.module for t in targets], int(seed))
    return targets


def _bundle_targets(
    root: Path, weights: bool, encoder: bool, overrides: Mapping[str, Any] | None
) -> list[ExportTarget]:
    from .engines.bundles import inference_parser

    with _config_errors():
        # built on the CPU whatever the machine: a program exported there runs anywhere torch.export's device pass
        # moves it
        parser = inference_parser(
            root, initialize=bool(weights), **{**dict(overrides or {}), "device": "$torch.device('cpu')"}
        )
        autoencoder = parser.get_parsed_content("autoencoder").eval()
        network = parser.get_parsed_content("network").eval()
        image = _image_spec(parser)
        if "stream_extras" in parser.config:
            return _stream_targets(parser, autoencoder, network, image, weights, encoder)
        latent_shape = [int(s) for s in parser.get_parsed_content("latent_shape")]
        scale: Numbers = 1.0
        shift: Numbers = 0.0
        if weights:
            parser.get_parsed_content("load_diffusion")  # loads models/diffusion.pt into the network
            scale = _plain(parser.get_parsed_content("sampler#scale_factor"))
            if "latent_shift" in parser.get("sampler", {}):
                shift = _plain(parser.get_parsed_content("sampler#latent_shift"))
        targets = _autoencoder_targets(autoencoder, image, latent_shape, scale, shift, encoder)
        targets.append(
            ExportTarget(
                "diffusion",
                network,
                _diffusion_inputs(parser, network, latent_shape),
                f"the denoiser ({type(network).__name__}): its output for the sampler's step "
                f"(B, {', '.join(map(str, latent_shape))})",
            )
        )
        if getattr(network, "class_path", None) == "predicted":
            context = next(s for s in targets[-1].inputs if s.name == "context")
            targets.append(
                ExportTarget(
                    "report_class",
                    _ReportClass(network).eval(),
                    (context,),
                    "report token states -> class probabilities (B, K), read at timestep 0",
                )
            )
    return targets


def _stream_targets(
    parser: Any, autoencoder: nn.Module, network: nn.Module, image: InputSpec, weights: bool, encoder: bool
) -> list[ExportTarget]:
    """MedCoDi-M: a decoder (and encoder) per image stream, the aligned encoders per modality, the joint network."""
    aligned = parser.get_parsed_content("aligned").eval()
    ae_config = parser.get("stream_autoencoder", {})
    scales = {s: 1.0 for s in network.latent_shapes}
    shifts: dict[str, Any] = {s: 0.0 for s in network.latent_shapes}
    if weights:  # the streams' latent scales, as the bundle's StreamAutoencoder gets them
        scales.update(parser.get_parsed_content("stream_autoencoder#scale_factors"))
        if "latent_shifts" in ae_config:
            shifts.update(parser.get_parsed_content("stream_autoencoder#latent_shifts"))
    targets = []
    for view in aligned.image_modalities:
        targets += _autoencoder_targets(
            autoencoder, image, network.latent_shapes[view], scales[view], shifts[view], encoder, suffix=f"_{view}"
        )
    for modality in aligned.modalities:
        if modality in aligned.image_modalities:
            spec = InputSpec("x", image.shape, low=0.0, high=1.0, description=f"the {modality} image scaled to [0, 1]")
        else:
            spec = InputSpec(
                "x",
                (aligned.encoders[modality][0].in_features,),
                description=f"the {modality}'s pooled text-encoder vector",
            )
        targets.append(
            ExportTarget(
                f"aligned_{modality}",
                _AlignedEmbedding(aligned, modality).eval(),
                (spec,),
                f"{modality} -> its unit-norm embedding in the aligned condition space (B, {aligned.dim})",
            )
        )
    targets.append(
        ExportTarget(
            "diffusion",
            network,
            _diffusion_inputs(parser, network, [network.packed_size]),
            f"the joint denoiser of the streams {list(network.outputs)} on packed latents "
            f"(B, {network.packed_size}); coupled: {bool(network.connect and len(network.outputs) > 1)}",
            {
                "outputs": list(network.outputs),
                "latent_shapes": {s: list(network.latent_shapes[s]) for s in network.outputs},
            },
        )
    )
    return targets


def export_target(
    target: ExportTarget, batch_size: int = 2, generator: torch.Generator | None = None
) -> torch.export.ExportedProgram:
    """``torch.export.export`` of one target with example inputs of ``batch_size`` samples; the batch dimension of
    every input is dynamic (one shared symbol).

    Raises:
        ExportError: torch.export failed (the message names the network and the first line of torch's reason).
    """
    if int(batch_size) < 2:
        raise ValueError(f"batch_size must be >= 2 (torch.export specialises a batch of 1), got {batch_size}")
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    args, kwargs = target.example(int(batch_size), generator)
    batch = torch.export.Dim("batch", min=1)
    dynamic_shapes = {spec.name: {0: batch} for spec in target.inputs}
    target.module.eval()
    try:
        with torch.no_grad(), warnings.catch_warnings():
            # diagnostics a forward leaves on the module (CCELLA's last_class_probabilities) are not outputs
            warnings.filterwarnings("ignore", message="The tensor attribute .* was assigned during export")
            return torch.export.export(target.module, args, kwargs, dynamic_shapes=dynamic_shapes)
    except Exception as e:  # torch's export errors have no common base class
        reason = (str(e).strip().splitlines() or [type(e).__name__])[0]
        raise ExportError(f"{target.name}: torch.export failed ({type(e).__name__}: {reason})") from e


def compare_exported(
    target: ExportTarget,
    exported: nn.Module,
    batch_sizes: Sequence[int] = (2, 1),
    atol: float = 1e-4,
    rtol: float = 1e-4,
    seed: int = 1,
) -> float:
    """Run the eager network and an exported program on the same fresh inputs and return the largest absolute
    difference of their outputs.

    Raises:
        ExportError: shapes differ, or an output differs by more than ``atol + rtol * |eager|``.
    """
    generator = torch.Generator().manual_seed(int(seed))
    worst = 0.0
    for batch in batch_sizes:
        args, kwargs = target.example(int(batch), generator)
        with torch.no_grad():
            expected = target.module(*args, **kwargs)
            got = exported(*args, **kwargs)
        if got.shape != expected.shape:
            raise ExportError(
                f"{target.name}: the exported program gives {tuple(got.shape)}, the network "
                f"{tuple(expected.shape)} (batch {batch})"
            )
        difference = float((got.float() - expected.float()).abs().max()) if expected.numel() else 0.0
        if not torch.allclose(got.float(), expected.float(), atol=atol, rtol=rtol) or math.isnan(difference):
            raise ExportError(
                f"{target.name}: the exported program differs from the network by {difference:.3g} "
                f"(batch {batch}; allowed {atol} + {rtol} x |output|)"
            )
        worst = max(worst, difference)
    return worst


# inference networks of the configs (by id) that are not exported, and why
_NOT_EXPORTED = {
    "text_encoder": "the frozen transformers text encoder (its own package): the programs take its token states",
    "report_vae": "MedCoDi-M's report VAE: greedy autoregressive decoding with a data-dependent stop and a tokenizer",
}


def _check_out(root: Path, out: Path) -> None:
    inside = out.resolve() == root.resolve() or root.resolve() in out.resolve().parents
    if inside:
        raise ValueError(f"out {out}: inside the bundle folder {root}; export to a folder of your own")
    if out.exists() and (not out.is_dir() or (any(out.iterdir()) and not (out / MANIFEST).is_file())):
        raise ValueError(
            f"out {out}: exists and is neither empty nor an earlier export (no {MANIFEST}); choose a new folder"
        )


def export_bundle(
    bundle_root: str | Path,
    out: str | Path,
    weights: bool = True,
    encoder: bool = True,
    batch_size: int = 2,
    verify: bool = True,
    atol: float = 1e-4,
    rtol: float = 1e-4,
    overrides: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Export every inference network of a bundle to ``<out>/<name>.pt2`` (``torch.export.save``) with a manifest
    ``<out>/export.json``; ``out`` appears complete or not at all (an earlier export there is replaced).

    Args:
        bundle_root: the bundle folder.
        out: a new or empty folder, or an earlier export; never inside the bundle folder.
        weights: load the bundle's weights (``False``: random initialisation, see :func:`bundle_targets`).
        encoder: also export the autoencoder's encoder.
        batch_size: the example batch (>= 2); the exported batch dimension is dynamic.
        verify: load every saved program (``torch.export.load``) and compare it with the eager network on fresh
            inputs of ``batch_size`` and 1 samples (:func:`compare_exported`).
        atol, rtol: the allowed difference.
        overrides: config ids to set (:func:`bundle_targets`).

    Returns:
        the manifest (also written to ``export.json``).

    Raises:
        ValueError: a bad ``out`` or ``batch_size``; :class:`ExportError`: a network that does not export or an
        exported program that disagrees with its network.
    """
    import monai

    from .io.atomic import atomic_folder, atomic_write_text
    from .io.weights import bundle_info

    root, out = Path(bundle_root), Path(out)
    if not (root / "configs" / "inference.json").is_file():
        raise ValueError(f"bundle_root {root}: not a bundle folder (no configs/inference.json)")
    if int(batch_size) < 2:
        raise ValueError(f"batch_size must be >= 2 (torch.export specialises a batch of 1), got {batch_size}")
    _check_out(root, out)
    targets = bundle_targets(root, weights=weights, encoder=encoder, overrides=overrides)
    config = json.loads((root / "configs" / "inference.json").read_text(encoding="utf-8"))
    if weights:
        from .engines.bundles import weights_files

        files = [p for p in weights_files(root) if p.is_file()]
        joint = root / "models" / "joint.pt"
        files += [joint] if joint.is_file() and joint not in files else []
        bundle = bundle_info(root, files)
    else:
        bundle = {**bundle_info(root), "weights_sha256": {}, "weights": "none: random initialisation"}
    manifest: dict[str, Any] = {
        "format": EXPORT_FORMAT,
        "bundle": bundle,
        "torch": torch.__version__,
        "monai": monai.__version__,
        "overrides": {k: v for k, v in dict(overrides or {}).items()},
        "batch": "dynamic: dimension 0 of every input (one size shared by all inputs)",
        "networks": {},
        "not_exported": {name: reason for name, reason in _NOT_EXPORTED.items() if name in config},
    }
    generator = torch.Generator().manual_seed(0)
    with atomic_folder(out) as staging:
        for target in targets:
            program = export_target(target, int(batch_size), generator)
            path = staging / f"{target.name}.pt2"
            torch.export.save(program, str(path))
            args, kwargs = target.example(1, torch.Generator().manual_seed(0))
            with torch.no_grad():
                output = target.module(*args, **kwargs)
            entry: dict[str, Any] = {
                "file": path.name,
                "description": target.description,
                "call": target.call,
                "inputs": {spec.name: spec.describe() for spec in target.inputs},
                "output": {"shape": ["B", *output.shape[1:]], "dtype": str(output.dtype).removeprefix("torch.")},
                **({"constants": target.notes} if target.notes else {}),
            }
            if verify:
                loaded = torch.export.load(str(path)).module()
                entry["max_abs_difference"] = compare_exported(target, loaded, (int(batch_size), 1), atol, rtol)
            manifest["networks"][target.name] = entry
        atomic_write_text(staging / MANIFEST, json.dumps(manifest, indent=2) + "\n")
    return manifest


def load_exported(folder: str | Path) -> dict[str, nn.Module]:
    """The programs of an export folder as callable modules (``torch.export.load(...).module()``), by name.

    Raises:
        ValueError: no readable ``export.json`` of this format, or a program file it lists is missing.
    """
    folder = Path(folder)
    path = folder / MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ValueError(f"folder {folder}: not an export folder ({path}: {type(e).__name__}: {e})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != EXPORT_FORMAT:
        raise ValueError(f"{path}: not a medgen-monai export manifest (expected format {EXPORT_FORMAT!r})")
    modules = {}
    for name, entry in manifest["networks"].items():
        program = folder / entry["file"]
        if not program.is_file():
            raise ValueError(f"{path}: network {name!r}: {program} is missing")
        modules[name] = torch.export.load(str(program)).module()
    return modules
