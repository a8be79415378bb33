"""MedCoDi-M's streams: one diffusion model per modality, generated alone or jointly (CoDi's composition).

MedCoDi-M generates any subset of {frontal view, lateral view, report} from any other subset. Each modality is a
latent diffusion *stream* with its own denoiser (image streams: MONAI's ``DiffusionModelUNet``; the report: a fully
connected U-Net over the report VAE's latent vector, :class:`VectorDiffusionNet`), conditioned through
cross-attention on one token of the aligned condition space (:mod:`medgen_monai.nets.aligned`). When several streams
are generated together, each stream's *environment encoder* summarises its current latent as a few tokens, and
*connectors* (zero-initialised cross-attention after the middle block and each up block of every stream) let a
stream attend to the other streams' environment tokens. Only environment encoders and connectors train in the joint
stage (CoDi's recipe), with each stream's denoising loss and a contrastive term that aligns the streams'
pooled environment embeddings of the same study.

The paper's figure feeds each stream the *other* streams' environment; the authors' public code feeds a stream its
own. This module follows the paper.

For the project's one trainer and one sampler, :class:`JointDiffusion` takes and returns the generated streams'
latents *packed* into one ``(B, N)`` vector per sample, and :class:`StreamAutoencoder` maps packed inputs to packed
(normalised) latents and back, so a joint stage trains with :class:`~medgen_monai.engines.LatentDiffusionTrainer`
and any task samples with :class:`~medgen_monai.engines.DiffusionSampler`.
"""

from __future__ import annotations

import contextlib
import copy
import math
from collections.abc import Iterator, Mapping, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.nets.diffusion_model_unet import get_timestep_embedding

from .aligned import clip_loss
from .auxiliary import AuxiliaryLosses

__all__ = [
    "EnvironmentEncoder",
    "JointDiffusion",
    "StreamAutoencoder",
    "StreamConnector",
    "VectorDiffusionNet",
    "pack",
    "unpack",
]


def _numel(shape: Sequence[int]) -> int:
    return int(math.prod(int(s) for s in shape))


def pack(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Per-stream tensors ``(B, *shape_s)`` -> one ``(B, sum_s numel(shape_s))`` tensor."""
    return torch.cat([p.reshape(p.shape[0], -1) for p in parts], dim=1)


def unpack(x: torch.Tensor, shapes: Sequence[Sequence[int]]) -> list[torch.Tensor]:
    """Inverse of :func:`pack`: ``(B, N)`` -> per-stream ``(B, *shape_s)``."""
    sizes = [_numel(s) for s in shapes]
    if x.ndim != 2 or x.shape[1] != sum(sizes):
        raise ValueError(
            f"packed tensor must be (B, {sum(sizes)}) for streams of shapes {[tuple(s) for s in shapes]}, "
            f"got {tuple(x.shape)}"
        )
    return [part.reshape(x.shape[0], *shape) for part, shape in zip(x.split(sizes, dim=1), shapes)]


class _ResidualBlock(nn.Module):
    """LayerNorm -> Linear -> SiLU (+ timestep) -> Linear, with a projected skip."""

    def __init__(self, width_in: int, width_out: int, time_dim: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width_in)
        self.fc1 = nn.Linear(width_in, width_out)
        self.time = nn.Linear(time_dim, width_out)
        self.fc2 = nn.Linear(width_out, width_out)
        self.skip = nn.Identity() if width_in == width_out else nn.Linear(width_in, width_out)

    def forward(self, h: torch.Tensor, temb: torch.Tensor) -> torch.Tensor:
        x = F.silu(self.fc1(self.norm(h)) + self.time(temb))
        return self.skip(h) + self.fc2(x)


class _CrossAttention(nn.Module):
    """The hidden vector, split into ``tokens`` tokens, attends to the context (residual)."""

    def __init__(self, width: int, context_dim: int, tokens: int, heads: int) -> None:
        super().__init__()
        if width % tokens or (width // tokens) % heads:
            raise ValueError(f"width {width} must split into {tokens} tokens whose width divides by {heads} heads")
        self.tokens = tokens
        self.norm = nn.LayerNorm(width // tokens)
        self.attention = nn.MultiheadAttention(
            width // tokens, heads, kdim=context_dim, vdim=context_dim, batch_first=True
        )

    def forward(self, h: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        q = h.view(h.shape[0], self.tokens, -1)
        out, _ = self.attention(self.norm(q), context, context, need_weights=False)
        return h + out.reshape_as(h)


class _VectorLevel(nn.Module):
    """One level of :class:`VectorDiffusionNet`: a residual block, then cross-attention to the context."""

    def __init__(
        self, width_in: int, width_out: int, time_dim: int, context_dim: int | None, tokens: int, heads: int
    ) -> None:
        super().__init__()
        self.block = _ResidualBlock(width_in, width_out, time_dim)
        self.attention = None if context_dim is None else _CrossAttention(width_out, context_dim, tokens, heads)

    def forward(self, h: torch.Tensor, temb: torch.Tensor, context: torch.Tensor | None) -> torch.Tensor:
        h = self.block(h, temb)
        if self.attention is not None and context is not None:
            h = self.attention(h, context)
        return h


class VectorDiffusionNet(nn.Module):
    """A fully connected U-Net over one latent vector (MedCoDi-M's report stream, after CoDi's text diffusion).

    Args:
        latent_dim: width ``D`` of the latent vector.
        channels: widths of the down levels (the up levels mirror them, with skips).
        cross_attention_dim: width of the context tokens; ``None``: unconditional.
        attention_tokens: tokens a level's hidden vector is split into for cross-attention.
        heads: attention heads.

    Forward: ``x`` ``(B, 1, D)``, ``timesteps`` ``(B,)``, ``context`` ``(B, L, cross_attention_dim)`` ->
    ``(B, 1, D)``. ``middle_block`` and ``up_blocks`` (each returning ``(B, width)``) are where joint generation's
    connectors attach, as on MONAI's U-Net; ``block_out_channels`` gives their widths.
    """

    def __init__(
        self,
        latent_dim: int = 64,
        channels: Sequence[int] = (256, 256, 128),
        cross_attention_dim: int | None = 128,
        attention_tokens: int = 4,
        heads: int = 2,
    ) -> None:
        super().__init__()
        if latent_dim < 1 or not channels or min(channels) < 1:
            raise ValueError(
                f"latent_dim must be >= 1 and channels non-empty and positive; got {latent_dim}, {channels}"
            )
        self.latent_dim = int(latent_dim)
        self.block_out_channels = tuple(int(c) for c in channels)
        self.time_dim = 4 * self.block_out_channels[0]
        self.time_embed = nn.Sequential(
            nn.Linear(self.block_out_channels[0], self.time_dim), nn.SiLU(), nn.Linear(self.time_dim, self.time_dim)
        )
        level = dict(time_dim=self.time_dim, context_dim=cross_attention_dim, tokens=attention_tokens, heads=heads)
        self.input = nn.Linear(latent_dim, self.block_out_channels[0])
        widths = self.block_out_channels
        self.down_blocks = nn.ModuleList(_VectorLevel(widths[max(i - 1, 0)], w, **level) for i, w in enumerate(widths))
        self.middle_block = _VectorLevel(widths[-1], widths[-1], **level)
        reversed_widths = list(reversed(widths))
        self.up_blocks = nn.ModuleList(
            _VectorLevel(reversed_widths[max(i - 1, 0)] + w, w, **level) for i, w in enumerate(reversed_widths)
        )
        self.out = nn.Sequential(nn.LayerNorm(widths[0]), nn.SiLU(), nn.Linear(widths[0], latent_dim))
        nn.init.zeros_(self.out[-1].weight)
        nn.init.zeros_(self.out[-1].bias)

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        if x.shape[-1] != self.latent_dim:
            raise ValueError(f"x must end in the latent width {self.latent_dim}, got {tuple(x.shape)}")
        temb = self.time_embed(get_timestep_embedding(timesteps, self.block_out_channels[0]).to(x.dtype))
        h = self.input(x.reshape(x.shape[0], -1))
        skips = []
        for block in self.down_blocks:
            h = block(h, temb, context)
            skips.append(h)
        h = self.middle_block(h, temb, context)
        for block in self.up_blocks:
            h = block(torch.cat([h, skips.pop()], dim=1), temb, context)
        return self.out(h).view_as(x)


class EnvironmentEncoder(nn.Module):
    """A stream's current latent -> a few environment tokens for the other streams, and one pooled embedding.

    Args:
        latent_shape: ``(C, *spatial)`` of the stream's latent (an image stream) or ``(1, D)`` (a vector stream).
        dim: width of the environment tokens.
        align_dim: width of the pooled embedding aligned across streams.
        tokens: tokens of a vector stream (an image stream gives one token per position of its 2x-downsampled
            latent).

    Forward: ``(B, *latent_shape)`` -> tokens ``(B, M, dim)``, pooled ``(B, align_dim)`` unit-norm.
    """

    def __init__(self, latent_shape: Sequence[int], dim: int = 64, align_dim: int = 64, tokens: int = 4) -> None:
        super().__init__()
        shape = tuple(int(s) for s in latent_shape)
        if len(shape) < 2 or min(shape) < 1:
            raise ValueError(f"latent_shape must be (C, *spatial) or (1, D), got {shape}")
        self.spatial = len(shape) > 2
        if self.spatial:
            conv = nn.Conv2d if len(shape) == 3 else nn.Conv3d
            self.body = nn.Sequential(
                conv(shape[0], dim, 3, padding=1), nn.SiLU(), conv(dim, dim, 3, stride=2, padding=1)
            )
        else:
            self.tokens = int(tokens)
            self.body = nn.Sequential(nn.Linear(_numel(shape), 2 * dim), nn.SiLU(), nn.Linear(2 * dim, tokens * dim))
        self.dim = int(dim)
        self.pool = nn.Linear(dim, align_dim)

    def forward(self, z: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.spatial:
            tokens = self.body(z).flatten(2).transpose(1, 2)
        else:
            tokens = self.body(z.reshape(z.shape[0], -1)).view(z.shape[0], self.tokens, self.dim)
        return tokens, F.normalize(self.pool(tokens.mean(1)), dim=-1)


class StreamConnector(nn.Module):
    """Cross-attention from a stream's block output to the other streams' environment tokens, added as a residual
    through a zero-initialised projection (a connector added to trained streams starts as the identity).

    Args:
        channels: the block output's channels (or vector width).
        env_dim: width of the environment tokens.
        heads: attention heads (a divisor of ``channels``).
    """

    def __init__(self, channels: int, env_dim: int, heads: int = 4) -> None:
        super().__init__()
        heads = math.gcd(int(heads), int(channels))
        self.norm = nn.LayerNorm(channels)
        self.attention = nn.MultiheadAttention(channels, heads, kdim=env_dim, vdim=env_dim, batch_first=True)
        self.out = nn.Linear(channels, channels)
        nn.init.zeros_(self.out.weight)
        nn.init.zeros_(self.out.bias)

    def forward(self, h: torch.Tensor, environment: torch.Tensor) -> torch.Tensor:
        """``h`` ``(B, C, *spatial)`` or ``(B, C)``; ``environment`` ``(B, M, env_dim)`` -> ``h`` plus the attended."""
        tokens = h.flatten(2).transpose(1, 2) if h.ndim > 2 else h.unsqueeze(1)
        attended, _ = self.attention(self.norm(tokens), environment, environment, need_weights=False)
        delta = self.out(attended)
        return h + (delta.transpose(1, 2).reshape_as(h) if h.ndim > 2 else delta.squeeze(1))


class JointDiffusion(AuxiliaryLosses, nn.Module):
    """The streams of a MedCoDi-M model, generating ``outputs`` alone or jointly, on packed latents.

    Args:
        streams: stream name -> denoiser (MONAI ``DiffusionModelUNet`` with cross-attention, or
            :class:`VectorDiffusionNet`), each called ``(z, timesteps, context=...)``.
        latent_shapes: stream name -> ``(C, *spatial)`` of its latent (``(1, D)`` for a vector).
        condition_dim: width of the aligned condition token the streams cross-attend to.
        outputs: the streams this instance generates, in packed order (the same weights serve every choice).
        env_dim: width of the environment tokens.
        align_dim: width of the pooled environment embeddings the joint stage aligns.
        heads: connector attention heads.
        connect: let jointly generated streams attend to each other (``False``: independent generation, the
            ablation's arm).

    Forward: ``x`` ``(B, N)`` (the packed latents of ``outputs``), ``timesteps`` ``(B,)``, ``context``
    ``(B, 1, c)`` (one aligned condition token for every stream) or ``(B, len(outputs), c)`` (one per stream, in
    ``outputs`` order) -> ``(B, N)``. In training mode with two or more streams it publishes
    ``auxiliary_losses["environment_alignment"]``: the mean CLIP loss between the streams' pooled environment
    embeddings of the same study.

    ``streams[name]`` holds each stream's denoiser (its own weights file) and ``coupling`` what the joint stage
    trains (``coupling.environment``, ``coupling.connectors``, ``coupling.logit_scale``; one weights file).
    """

    def __init__(
        self,
        streams: Mapping[str, nn.Module],
        latent_shapes: Mapping[str, Sequence[int]],
        condition_dim: int,
        outputs: Sequence[str] | None = None,
        env_dim: int = 64,
        align_dim: int = 64,
        heads: int = 4,
        connect: bool = True,
    ) -> None:
        super().__init__()
        if not streams or set(streams) != set(latent_shapes):
            raise ValueError(
                f"streams {sorted(streams)} and latent_shapes {sorted(latent_shapes)} must name the same "
                "streams (at least one)"
            )
        if condition_dim < 1:
            raise ValueError(f"condition_dim must be >= 1 (the aligned space's width), got {condition_dim}")
        self.condition_dim = int(condition_dim)
        self.streams = nn.ModuleDict(dict(streams))
        self.latent_shapes = {k: tuple(int(s) for s in v) for k, v in latent_shapes.items()}
        # what the joint stage trains, in one module (one weights file): environment encoders, connectors and the
        # alignment's logit scale
        self.coupling = nn.Module()
        self.coupling.environment = nn.ModuleDict(
            {k: EnvironmentEncoder(self.latent_shapes[k], env_dim, align_dim) for k in streams}
        )
        self.coupling.connectors = nn.ModuleDict()
        for name, net in self.streams.items():
            widths = getattr(net, "block_out_channels", None)
            if widths is None:
                raise ValueError(
                    f"stream {name!r}: {type(net).__name__} has no block_out_channels (a MONAI "
                    "DiffusionModelUNet or a VectorDiffusionNet is expected)"
                )
            # the middle block keeps the deepest width; up block i ends at the i-th width from the deepest
            self.coupling.connectors[name] = nn.ModuleList(
                StreamConnector(w, env_dim, heads) for w in [widths[-1], *reversed(widths)]
            )
        self.coupling.logit_scale = nn.Parameter(torch.tensor(math.log(1.0 / 0.07)))
        self.connect = bool(connect)
        self.outputs: tuple[str, ...] = ()
        self.set_outputs(outputs if outputs is not None else list(streams))
        self.auxiliary_losses: dict[str, torch.Tensor] = {}

    def set_outputs(self, outputs: Sequence[str]) -> JointDiffusion:
        """Choose the generated streams (packed in this order)."""
        outputs = tuple(outputs)
        unknown = sorted(set(outputs) - set(self.streams))
        if not outputs or unknown or len(set(outputs)) != len(outputs):
            raise ValueError(f"outputs must name distinct streams of {sorted(self.streams)}; got {list(outputs)}")
        self.outputs = outputs
        return self

    @property
    def packed_size(self) -> int:
        """``N``: the packed latent width of the current outputs."""
        return sum(_numel(self.latent_shapes[s]) for s in self.outputs)

    @staticmethod
    def _blocks(net: nn.Module) -> list[nn.Module]:
        return [net.middle_block, *net.up_blocks]

    @contextlib.contextmanager
    def _connected(self, name: str, environment: torch.Tensor) -> Iterator[None]:
        """While inside, the stream's block outputs attend to ``environment`` through its connectors."""
        handles = [
            block.register_forward_hook(lambda _m, _a, out, c=connector: c(out, environment))
            for block, connector in zip(self._blocks(self.streams[name]), self.coupling.connectors[name])
        ]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def forward(self, x: torch.Tensor, timesteps: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        parts = unpack(x, [self.latent_shapes[s] for s in self.outputs])
        if context is not None and context.shape[1] not in (1, len(self.outputs)):
            raise ValueError(
                f"context must be (B, 1, c) or (B, {len(self.outputs)}, c) for outputs {list(self.outputs)}, "
                f"got {tuple(context.shape)}"
            )
        joint = self.connect and len(self.outputs) > 1
        environments = [self.coupling.environment[s](z) for s, z in zip(self.outputs, parts)] if joint else []
        results = []
        for i, (name, z) in enumerate(zip(self.outputs, parts)):
            ctx = None if context is None else (context if context.shape[1] == 1 else context[:, i : i + 1])
            if joint:
                others = torch.cat([tokens for j, (tokens, _) in enumerate(environments) if j != i], dim=1)
                with self._connected(name, others):
                    results.append(self.streams[name](z, timesteps, context=ctx))
            else:
                results.append(self.streams[name](z, timesteps, context=ctx))
        if joint and self.training:
            pooled = [p for _, p in environments]
            scale = self.coupling.logit_scale.clamp(max=math.log(100.0))
            losses = [
                clip_loss(pooled[i], pooled[j], scale)[0] for i in range(len(pooled)) for j in range(i + 1, len(pooled))
            ]
            self.auxiliary_losses = {"environment_alignment": torch.stack(losses).mean()}
        return pack(results)

    def joint_parameters(self) -> list[nn.Parameter]:
        """What the joint stage trains: ``coupling`` (environment encoders, connectors, the alignment's logit scale)."""
        return list(self.coupling.parameters())


class StreamAutoencoder(nn.Module):
    """Packed inputs <-> packed normalised latents of several streams, each through its own autoencoder.

    Args:
        autoencoders: stream name -> autoencoder (``encode(x) -> (mu, sigma)``, ``decode_stage_2_outputs(z)``):
            a MONAI ``AutoencoderKL`` for an image stream, a :class:`~medgen_monai.nets.ReportVAE` for the report.
            Streams may share one autoencoder (both views).
        input_shapes: stream name -> shape of one input (``(C, H, W)`` for an image, ``(L,)`` for token ids).
        latent_shapes: stream name -> ``(C, *spatial)`` of one latent.
        scale_factors: stream name -> the factor its latents were normalised by in its stream stage.
        latent_shifts: stream name -> the shift subtracted before scaling (default 0).
        outputs: the streams packed, in order (default: all, in ``autoencoders`` order).

    ``encode``: ``(B, sum numel(input_shapes))`` -> packed ``mu`` and ``sigma`` (both scaled: the joint stage trains
    on them with a scale factor of 1). ``decode_stage_2_outputs``: packed latents -> ``{stream: decoded}``.
    """

    def __init__(
        self,
        autoencoders: Mapping[str, nn.Module],
        input_shapes: Mapping[str, Sequence[int]],
        latent_shapes: Mapping[str, Sequence[int]],
        scale_factors: Mapping[str, float],
        latent_shifts: Mapping[str, float] | None = None,
        outputs: Sequence[str] | None = None,
    ) -> None:
        super().__init__()
        names = list(autoencoders)
        for field, given in (
            ("input_shapes", input_shapes),
            ("latent_shapes", latent_shapes),
            ("scale_factors", scale_factors),
        ):
            if set(given) != set(names):
                raise ValueError(f"{field} must name the streams {names}, got {sorted(given)}")
        if any(float(v) <= 0 for v in scale_factors.values()):
            raise ValueError(f"scale_factors must be > 0, got {dict(scale_factors)}")
        self.autoencoders = nn.ModuleDict()
        shared: dict[int, str] = {}
        self.owner: dict[str, str] = {}
        for name, ae in autoencoders.items():  # a shared autoencoder is registered once
            owner = shared.setdefault(id(ae), name)
            self.owner[name] = owner
            if owner == name:
                self.autoencoders[name] = ae
        self.input_shapes = {k: tuple(int(s) for s in v) for k, v in input_shapes.items()}
        self.latent_shapes = {k: tuple(int(s) for s in v) for k, v in latent_shapes.items()}
        self.scale_factors = {k: float(v) for k, v in scale_factors.items()}
        self.latent_shifts = {k: float((latent_shifts or {}).get(k, 0.0)) for k in names}
        self.outputs = tuple(outputs) if outputs is not None else tuple(names)
        if set(self.outputs) - set(names) or not self.outputs:
            raise ValueError(f"outputs must name streams of {names}, got {list(self.outputs)}")

    def with_outputs(self, outputs: Sequence[str]) -> StreamAutoencoder:
        """The same autoencoders (shared, not copied) packing ``outputs`` instead."""
        unknown = sorted(set(outputs) - set(self.owner))
        if unknown or not outputs:
            raise ValueError(f"outputs must name streams of {list(self.owner)}, got {list(outputs)}")
        view = copy.copy(self)
        view.outputs = tuple(outputs)
        return view

    def autoencoder(self, stream: str) -> nn.Module:
        return self.autoencoders[self.owner[stream]]

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        inputs = unpack(x, [self.input_shapes[s] for s in self.outputs])
        mus, sigmas = [], []
        for stream, item in zip(self.outputs, inputs):
            mu, sigma = self.autoencoder(stream).encode(item)
            mus.append((mu - self.latent_shifts[stream]) * self.scale_factors[stream])
            sigmas.append(sigma * self.scale_factors[stream])
        return pack(mus), pack(sigmas)

    def decode_stage_2_outputs(self, z: torch.Tensor) -> dict[str, torch.Tensor]:
        parts = unpack(z, [self.latent_shapes[s] for s in self.outputs])
        return {
            s: self.autoencoder(s).decode_stage_2_outputs(p / self.scale_factors[s] + self.latent_shifts[s])
            for s, p in zip(self.outputs, parts)
        }
