"""Non-images: what a failing generator produces, for training and checking the audits' validity output.

An audit network must say "this is not an image of my kind" before it reads attributes, or a generator
that draws noise is credited with whatever the heads happen to say (Gaussian noise read as a large
blue-grey lesion at confidence 1.00 before this existed). The families (:data:`NEGATIVE_FAMILIES`):

* ``gaussian_noise``, ``uniform_noise``: i.i.d. pixels around a random mean, per channel;
* ``constant``: one colour, or a constant disc / ellipse on a constant background (a "grey disc");
* ``smooth_field``: a random low-resolution field upsampled (blobs and gradients, no anatomy);
* ``patch_shuffle``: a real phantom cut into square patches (side 4 or 8 pixels / voxels) and shuffled:
  local texture and colour right, structure wrong (the "one texture" a collapsed sampler draws);
* ``autoencoder_decode``: random latents (standard deviation 0.5-3 in the bundle's scaled latent space,
  the range a diverging sampler ends in) decoded by every bundle autoencoder of the kind;
* ``other_kind``: images of the other units (another view of the same kind included), converted to this
  unit's channels and size (an RGB image is averaged to grey; a 2D image becomes a volume by repeating it
  along Z; a volume gives its middle axial slice);
* ``kind_specific``: derm: the same frame with bare skin (:meth:`DermPhantom.skin_only`), an ISIC image
  always shows a lesion; colon: colour channels permuted so that red moves; cxr and prostate: intensities inverted.

Families drawn on the fly take a ``torch.Generator``; the pools (``autoencoder_decode``, ``other_kind``,
derm ``kind_specific``) are built by :func:`negative_pools` from a dataset seed, so training and held-out
negatives come from disjoint seeds.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from ..engines.latents import denormalise_latents
from ..phantoms import KINDS, get_phantom
from .preprocess import preprocess_images

__all__ = [
    "NEGATIVE_FAMILIES",
    "BUNDLES_DIR",
    "bundle_autoencoders",
    "negative_pools",
    "LATENT_SCALES",
    "NegativeSampler",
    "reconstructions",
    "gaussian_noise",
    "uniform_noise",
    "constant_field",
    "smooth_field",
    "patch_shuffle",
]

NEGATIVE_FAMILIES: tuple[str, ...] = (
    "gaussian_noise",
    "uniform_noise",
    "constant",
    "smooth_field",
    "patch_shuffle",
    "autoencoder_decode",
    "other_kind",
    "kind_specific",
)

#: the repository's bundles (their autoencoders give the ``autoencoder_decode`` family).
BUNDLES_DIR = Path(__file__).resolve().parents[2] / "bundles"

#: standard deviations of the random latents, in the bundle's scaled latent space.
LATENT_SCALES: tuple[float, ...] = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)


def _rand(shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    return torch.rand(tuple(shape), generator=g)


def gaussian_noise(n: int, shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """``(n, C, *S)`` i.i.d. Gaussian pixels: mean in [0.2, 0.8] and sd in [0.05, 0.4] per image and channel."""
    c, sd = shape[0], len(shape) - 1
    stat = (n, c) + (1,) * sd
    mean, std = 0.2 + 0.6 * _rand(stat, g), 0.05 + 0.35 * _rand(stat, g)
    return (mean + std * torch.randn((n, *shape), generator=g)).clamp(0, 1)


def uniform_noise(n: int, shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """``(n, C, *S)`` i.i.d. uniform pixels on a random sub-interval of [0, 1] per image and channel."""
    c, sd = shape[0], len(shape) - 1
    stat = (n, c) + (1,) * sd
    low = 0.6 * _rand(stat, g)
    width = (1 - low) * (0.2 + 0.8 * _rand(stat, g))
    return low + width * _rand((n, *shape), g)


def constant_field(n: int, shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """``(n, C, *S)``: one colour per image, half of them with a constant disc / ellipse(oid) of another colour."""
    c, spatial = shape[0], shape[1:]
    stat = (n, c) + (1,) * len(spatial)
    background, foreground = _rand(stat, g), _rand(stat, g)
    d = len(spatial)
    coords = torch.stack(torch.meshgrid(*[torch.linspace(-1, 1, s) for s in spatial], indexing="ij"))  # (d, *S)
    centre = ((_rand((n, d), g) - 0.5) * 0.8).view(n, d, *([1] * d))
    radii = (0.2 + 0.6 * _rand((n, d), g)).view(n, d, *([1] * d))
    inside = (((coords[None] - centre) / radii) ** 2).sum(dim=1) <= 1.0  # (n, *S)
    with_shape = (_rand((n,), g) < 0.5).view(n, *([1] * len(spatial)))
    mask = (inside & with_shape)[:, None].float()
    return background * (1 - mask) + foreground * mask


def smooth_field(n: int, shape: Sequence[int], g: torch.Generator) -> torch.Tensor:
    """``(n, C, *S)``: random fields at 2-16 cells per side, upsampled (linear) and stretched to a random range."""
    c, spatial = shape[0], tuple(shape[1:])
    out = torch.empty((n, *shape))
    mode = "bilinear" if len(spatial) == 2 else "trilinear"
    for i in range(n):
        cells = int(2 ** (1 + 3 * float(_rand((1,), g))))
        coarse = _rand((1, c) + (cells,) * len(spatial), g)
        field = F.interpolate(coarse, size=spatial, mode=mode, align_corners=False)[0]
        low = 0.5 * float(_rand((1,), g))
        high = low + (1 - low) * (0.2 + 0.8 * float(_rand((1,), g)))
        span = field.amax() - field.amin()
        out[i] = low + (field - field.amin()) / (span + 1e-6) * (high - low)
    return out


def patch_shuffle(real: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Real images ``(n, C, *S)`` cut into square patches and shuffled, a new order per image.

    The patch side is drawn per call from 4 or 8 and shrunk to divide every spatial size (16 is left out: a
    16-pixel block can hold a whole small lesion, and the shuffle is then a plausible image, not a failure).
    """
    x = real.float()
    n, c, spatial = x.shape[0], x.shape[1], tuple(x.shape[2:])
    d = len(spatial)
    sides = (4, 8)
    p = int(np.gcd.reduce([sides[int(torch.randint(len(sides), (1,), generator=g))], *spatial]))
    grid = [s // p for s in spatial]
    # (n, c, g0, p, g1, p[, g2, p]) -> (n, blocks, c, p, p[, p])
    split = x.reshape(n, c, *[v for s in grid for v in (s, p)])
    order = [0] + [2 + 2 * i for i in range(d)] + [1] + [3 + 2 * i for i in range(d)]
    blocks = split.permute(*order).reshape(n, -1, c, *([p] * d))
    perm = torch.rand(blocks.shape[:2], generator=g).argsort(dim=1)
    blocks = torch.take_along_dim(blocks, perm.view(n, -1, *([1] * (d + 1))), dim=1)
    back = blocks.reshape(n, *grid, c, *([p] * d))
    inverse = [0, d + 1] + [v for i in range(d) for v in (1 + i, d + 2 + i)]
    return back.permute(*inverse).reshape(n, c, *spatial)


def _kind_transform(kind: str, real: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """The on-the-fly kind-specific negatives of colon (channels permuted), cxr and prostate (inverted)."""
    x = real.float()
    if kind == "colon":
        # every permutation that moves the red channel (swapping green and blue alone leaves a pink mucosa
        # whose green and blue are nearly equal almost unchanged: not a failure, so not a negative)
        perms = ((1, 0, 2), (1, 2, 0), (2, 0, 1), (2, 1, 0))
        out = torch.empty_like(x)
        for i in range(x.shape[0]):
            out[i] = x[i, list(perms[int(torch.randint(len(perms), (1,), generator=g))])]
        return out
    return 1.0 - x


# ---- pools --------------------------------------------------------------------------------------
def bundle_autoencoders(kind: str, bundles_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """The autoencoders of the repository's bundles whose audit unit is of ``kind``.

    Returns:
        one ``{"bundle", "unit", "autoencoder" (eval mode), "scale_factor", "latent_shift", "latent_shape"}`` per
        bundle (the latent normalisation its diffusion model was trained with);
        empty when the bundles folder is not there (an installed package without the repository). Bundles without
        shipped weights are left out.
    """
    from ..engines.bundles import inference_parser, shipped_bundles
    from ..io.weights import load_weights

    root = Path(bundles_dir) if bundles_dir is not None else BUNDLES_DIR
    found = []
    for bundle in shipped_bundles(root):  # a bundle in development has no autoencoder yet
        evaluate = bundle / "configs" / "evaluate.json"
        unit = json.loads(evaluate.read_text(encoding="utf-8")).get("audit_unit", "") if evaluate.is_file() else ""
        if not unit.startswith(f"{kind}_"):
            continue
        # the network definition only: neither the diffusion U-Net nor the text encoder is built
        parser = inference_parser(bundle, initialize=False)
        autoencoder = parser.get_parsed_content("autoencoder_def", instantiate=True)
        load_weights(bundle / "models" / "autoencoder.pt", autoencoder, role="autoencoder")
        extra = load_weights(bundle / "models" / "diffusion.pt", role="diffusion")
        found.append(
            {
                "bundle": bundle.name,
                "unit": unit,
                "autoencoder": autoencoder.eval(),
                "scale_factor": extra.get("scale_factor", 1.0),
                "latent_shift": extra.get("latent_shift", 0.0),
                "latent_shape": [int(s) for s in parser.get_parsed_content("latent_shape")],
            }
        )
    return found


@torch.inference_mode()
def _decodes(
    autoencoders: Sequence[Mapping[str, Any]],
    n: int,
    g: torch.Generator,
    spatial_dims: int,
    channels: int,
    size: Sequence[int],
) -> torch.Tensor | None:
    if not autoencoders:
        return None
    parts = []
    per = int(np.ceil(n / len(autoencoders)))
    for entry in autoencoders:
        for start in range(0, per, 64):
            b = min(64, per - start)
            scale = torch.tensor(LATENT_SCALES)[torch.randint(len(LATENT_SCALES), (b,), generator=g)]
            z = torch.randn((b, *entry["latent_shape"]), generator=g) * scale.view(
                b, *([1] * len(entry["latent_shape"]))
            )
            z = denormalise_latents(z, entry["scale_factor"], entry["latent_shift"])
            images = entry["autoencoder"].decode_stage_2_outputs(z).clamp(0, 1)
            parts.append(preprocess_images(images, spatial_dims, channels, size).half())
    return torch.cat(parts)[:n]


@torch.inference_mode()
def reconstructions(autoencoders: Sequence[Mapping[str, Any]], unit: str, real: torch.Tensor) -> torch.Tensor | None:
    """Real images ``(n, C, *S)`` through the autoencoders of bundles judged by ``unit`` (split evenly), or ``None``."""
    own = [a for a in autoencoders if a["unit"] == unit]
    if not own:
        return None
    parts = []
    for k, chunk in enumerate(torch.chunk(real, len(own))):
        ae = own[k]["autoencoder"]
        for start in range(0, chunk.shape[0], 64):
            parts.append(ae.reconstruct(chunk[start : start + 64].float()).clamp(0, 1).half())
    return torch.cat(parts)


def _as_unit_input(image: np.ndarray, spatial_dims: int, channels: int, size: Sequence[int]) -> torch.Tensor:
    """One image of any kind -> ``(1, channels, *size)`` in [0, 1] for another unit."""
    if image.ndim == 3 and image.dtype != np.uint8:  # a volume (X, Y, Z)
        volume = preprocess_images(image[None], 3, 1)[0, 0]
        if spatial_dims == 3:
            return preprocess_images(volume[None, None], 3, 1, size)
        middle = volume[:, :, volume.shape[2] // 2].numpy()
        x = torch.from_numpy(middle)[None, None].expand(1, channels, *middle.shape).float()
        return preprocess_images(x, 2, channels, size)
    x = preprocess_images(image, 2, image.shape[-1] if image.ndim == 3 else 1)  # (1, c, H, W)
    if x.shape[1] != channels:
        x = x.mean(dim=1, keepdim=True) if channels == 1 else x.expand(1, channels, *x.shape[2:])
    if spatial_dims == 2:
        return preprocess_images(x, 2, channels, size)
    plane = F.interpolate(x[:, :1], size=tuple(size[:2]), mode="bilinear", align_corners=False)
    return plane[..., None].expand(1, 1, *size[:2], size[2]).clone()


def negative_pools(
    unit: str, seed: int, n: int, autoencoders: Sequence[Mapping[str, Any]] | None = None, generator_seed: int = 0
) -> dict[str, torch.Tensor]:
    """The pooled families of ``unit``: ``autoencoder_decode``, ``other_kind`` and (derm) ``kind_specific``.

    Args:
        unit: ``"<kind>_<view>"``.
        seed: dataset seed of the other kinds' and the bare-skin images (an audit seed: call inside
            :func:`~medgen_monai.phantoms.seeds.audit_seed_access`).
        n: images per pool.
        autoencoders: :func:`bundle_autoencoders` of the kind (default: loaded here).
        generator_seed: seeds the random latents.

    Returns:
        family -> ``(n, C, *S)`` float16 in [0, 1]; a family with nothing to draw from is absent.
    """
    from .audit import audit_spec, parse_unit

    kind, view = parse_unit(unit)
    spec = audit_spec(unit)
    sd, c, size = spec.spatial_dims, spec.in_channels, spec.input_size
    g = torch.Generator().manual_seed(generator_seed)
    pools: dict[str, torch.Tensor] = {}
    if autoencoders is None:
        autoencoders = bundle_autoencoders(kind)
    decodes = _decodes(autoencoders, n, g, sd, c, size)
    if decodes is not None:
        pools["autoencoder_decode"] = decodes
    others = [(k, v) for k in KINDS for v in get_phantom(k).views if (k, v) != (kind, view)]
    per = int(np.ceil(n / len(others)))
    images = []
    for k, v in others:
        phantom = get_phantom(k)
        for sample in phantom.generate_many(per, seed=seed):
            images.append(_as_unit_input(sample.images[v], sd, c, size).half())
    order = torch.randperm(len(images), generator=g)[:n]
    pools["other_kind"] = torch.cat([images[int(i)] for i in order])
    if kind == "derm":
        phantom = get_phantom("derm")
        skins = np.stack([phantom.skin_only(i, seed=seed) for i in range(n)])
        pools["kind_specific"] = preprocess_images(skins, 2, c, size).half()
    return pools


class NegativeSampler:
    """Draws batches of negatives of one unit, families in equal shares.

    Args:
        kind: phantom kind of the unit.
        shape: ``(C, *S)`` of the unit's input.
        real: ``(N, C, *S)`` real images of the unit (patch shuffles and on-the-fly kind-specific negatives).
        pools: :func:`negative_pools`.
    """

    def __init__(self, kind: str, shape: Sequence[int], real: torch.Tensor, pools: Mapping[str, torch.Tensor]) -> None:
        if kind not in KINDS:
            raise ValueError(f"unknown kind {kind!r}; expected one of {list(KINDS)}")
        if tuple(real.shape[1:]) != tuple(shape):
            raise ValueError(
                f"real images {tuple(real.shape)} do not match the unit input (N, {', '.join(map(str, shape))})"
            )
        self.kind, self.shape, self.real, self.pools = kind, tuple(shape), real, dict(pools)
        on_the_fly = {"gaussian_noise", "uniform_noise", "constant", "smooth_field", "patch_shuffle"}
        if kind != "derm":
            on_the_fly.add("kind_specific")
        self.families = [f for f in NEGATIVE_FAMILIES if f in on_the_fly or f in self.pools]

    def family(self, name: str, n: int, g: torch.Generator) -> torch.Tensor:
        """``(n, C, *S)`` float negatives of family ``name``."""
        if name not in self.families:
            raise ValueError(f"family {name!r} is not available for {self.kind}; available: {self.families}")
        if name == "gaussian_noise":
            return gaussian_noise(n, self.shape, g)
        if name == "uniform_noise":
            return uniform_noise(n, self.shape, g)
        if name == "constant":
            return constant_field(n, self.shape, g)
        if name == "smooth_field":
            return smooth_field(n, self.shape, g)
        if name in self.pools:
            pool = self.pools[name]
            # distinct images while the pool has enough (the held-out tables draw as many as the pool holds)
            index = (
                torch.randperm(pool.shape[0], generator=g)[:n]
                if n <= pool.shape[0]
                else torch.randint(pool.shape[0], (n,), generator=g)
            )
            return pool[index].float()
        real = self.real[torch.randint(self.real.shape[0], (n,), generator=g)]
        return patch_shuffle(real, g) if name == "patch_shuffle" else _kind_transform(self.kind, real, g)

    def __call__(self, n: int, g: torch.Generator) -> torch.Tensor:
        """``(n, C, *S)``: ``n`` negatives, each of a family drawn uniformly."""
        picks = torch.randint(len(self.families), (n,), generator=g)
        out = torch.empty((n, *self.shape))
        for k, name in enumerate(self.families):
            index = (picks == k).nonzero().flatten()
            if len(index):
                out[index] = self.family(name, len(index), g)
        return out
