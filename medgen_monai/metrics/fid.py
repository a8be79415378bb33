"""FID on a pluggable feature space, computed by MONAI's :class:`monai.metrics.FIDMetric`.

The default feature space is the audit network's penultimate layer (phantom domain; see
:mod:`medgen_monai.metrics.audit`). For real data give a local feature extractor, nothing is downloaded:

* any ``torch.nn.Module`` (e.g. a torchvision Inception-v3 with ``fc = Identity`` that you built);
* a TorchScript file (``torch.jit.save`` of any extractor: Inception, torchxrayvision's DenseNet, ...);
* a ResNet-50 ``state_dict`` file (RadImageNet in 2D, MedicalNet in 3D) loaded with
  ``weights_only=True`` into MONAI's :func:`monai.networks.nets.resnet50` without its classifier.

Outputs with spatial axes are global-average pooled to ``(B, F)``, as the FID paper does with Inception.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn
from monai.metrics import FIDMetric

from .audit import AuditNet, load_audit
from .preprocess import ImageInput, preprocess_images

__all__ = ["FeatureExtractor", "resnet50_extractor", "feature_extractor", "fid_from_features", "fid"]


class FeatureExtractor:
    """Raw images -> ``(B, F)`` features: shared preprocessing, optional normalisation, a network, pooling.

    Args:
        network: maps ``(B, C, *size)`` to ``(B, F)`` or ``(B, F, *spatial)`` (pooled here).
        spatial_dims: 2 or 3.
        in_channels: channels the network expects (grey images are repeated to 3 when it expects 3).
        size: spatial size the network sees; ``None`` keeps the image size.
        mean: per-channel mean subtracted after scaling to ``[0, 1]`` (e.g. ImageNet ``(0.485, 0.456, 0.406)``).
        std: per-channel standard deviation divided by after ``mean``.
        batch_size: images per forward.
        device: where the network runs.
    """

    def __init__(
        self,
        network: nn.Module | Callable[[torch.Tensor], torch.Tensor],
        spatial_dims: int,
        in_channels: int,
        size: Sequence[int] | None = None,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        batch_size: int = 64,
        device: str | torch.device = "cpu",
    ) -> None:
        if spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {spatial_dims}")
        if in_channels < 1 or batch_size < 1:
            raise ValueError(f"in_channels and batch_size must be >= 1, got {in_channels} and {batch_size}")
        for name, stats in (("mean", mean), ("std", std)):
            if stats is not None and len(stats) != in_channels:
                raise ValueError(f"{name} needs {in_channels} values (one per channel), got {list(stats)}")
        if std is not None and min(std) <= 0:
            raise ValueError(f"std must be positive, got {list(std)}")
        self.network = network.eval() if isinstance(network, nn.Module) else network
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.size = tuple(size) if size is not None else None
        shape = (1, in_channels) + (1,) * spatial_dims
        self.mean = torch.tensor(mean, dtype=torch.float32).reshape(shape) if mean is not None else None
        self.std = torch.tensor(std, dtype=torch.float32).reshape(shape) if std is not None else None
        self.batch_size = batch_size
        self.device = torch.device(device)

    def prepare(self, images: ImageInput) -> torch.Tensor:
        """Images -> ``(B, in_channels, *size)`` float (normalised)."""
        try:
            x = preprocess_images(images, self.spatial_dims, self.in_channels, self.size)
        except ValueError:
            if self.in_channels != 3:
                raise
            # a grey-scale image for an RGB network (Inception, RadImageNet): repeat the channel
            x = preprocess_images(images, self.spatial_dims, 1, self.size).repeat(1, 3, *([1] * self.spatial_dims))
        if self.mean is not None:
            x = x - self.mean
        if self.std is not None:
            x = x / self.std
        return x

    @torch.inference_mode()
    def __call__(self, images: ImageInput) -> torch.Tensor:
        """Features ``(B, F)`` float32 on the CPU."""
        x = self.prepare(images)
        out = []
        for start in range(0, x.shape[0], self.batch_size):
            features = self.network(x[start : start + self.batch_size].to(self.device))
            if isinstance(features, (tuple, list)):
                features = features[0]
            if features.ndim > 2:
                features = features.flatten(2).mean(dim=2)
            if features.ndim != 2:
                raise ValueError(f"the feature network returned shape {tuple(features.shape)}; expected (B, F)")
            out.append(features.float().cpu())
        return torch.cat(out)


def _audit_extractor(net: AuditNet, batch_size: int = 64) -> FeatureExtractor:
    return FeatureExtractor(
        net.features,
        net.spec.spatial_dims,
        net.spec.in_channels,
        net.spec.input_size,
        batch_size=batch_size,
        device=next(net.parameters()).device,
    )


def resnet50_extractor(
    path: str | Path, spatial_dims: int = 2, in_channels: int = 3, shortcut_type: str = "B"
) -> nn.Module:
    """MONAI ResNet-50 without its classifier, with weights from a local ``state_dict`` file.

    Keys may carry a ``module.`` prefix (MedicalNet, DataParallel checkpoints); the classifier (``fc.*``)
    and any key MONAI's ResNet does not have are refused or ignored as reported in the error.

    Args:
        path: ``.pt`` / ``.pth`` file with a ``state_dict`` (or ``{"state_dict": ...}``), read with
            ``weights_only=True``.
        spatial_dims: 2 (RadImageNet) or 3 (MedicalNet).
        in_channels: input channels (3 for RadImageNet, 1 for MedicalNet).
        shortcut_type: ResNet shortcut type of the checkpoint (``"B"`` for ResNet-50).

    Raises:
        ValueError: the file is not a ResNet-50 state dict (names the missing / mismatched keys).
    """
    from monai.networks.nets import resnet50

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: feature extractor weights not found")
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, Mapping) and "state_dict" in state:
        state = state["state_dict"]
    if not isinstance(state, Mapping):
        raise ValueError(f"{path}: expected a ResNet-50 state_dict, got {type(state).__name__}")
    state = {k.removeprefix("module."): v for k, v in state.items() if not k.removeprefix("module.").startswith("fc.")}
    net = resnet50(
        spatial_dims=spatial_dims, n_input_channels=in_channels, feed_forward=False, shortcut_type=shortcut_type
    )
    missing, unexpected = net.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(
            f"{path}: not a {spatial_dims}D ResNet-50 state_dict with {in_channels} input channels: "
            f"missing {list(missing)[:4]}, unexpected {list(unexpected)[:4]}"
        )
    return net.eval()


def feature_extractor(
    extractor: FeatureExtractor | nn.Module | str | Path | None = None,
    unit: str | None = None,
    spatial_dims: int | None = None,
    in_channels: int | None = None,
    size: Sequence[int] | None = None,
    **kwargs: Any,
) -> FeatureExtractor:
    """Build the FID feature extractor.

    Args:
        extractor: ``None``: the audit network of ``unit``; a loaded ``AuditNet``; a :class:`FeatureExtractor`
            (returned as is); an ``nn.Module``; a path to a TorchScript file or a ResNet-50 ``state_dict``.
        unit: audit unit (``"derm_image"``, ``"cxr_frontal"``, ...); required when ``extractor`` is ``None``.
        spatial_dims: 2 or 3 for a module / path (default: 2).
        in_channels: channels for a module / path (default: 3 in 2D, 1 in 3D).
        size: input size for a module / path.
        kwargs: more :class:`FeatureExtractor` arguments (``mean``, ``std``, ``batch_size``, ``device``).
    """
    if isinstance(extractor, FeatureExtractor):
        return extractor
    if isinstance(extractor, AuditNet):  # an already loaded audit network: its penultimate features
        return _audit_extractor(extractor, batch_size=int(kwargs.get("batch_size", 64)))
    if extractor is None:
        if unit is None:
            raise ValueError("fid: give either an audit unit (e.g. unit='derm_image') or a feature extractor")
        return _audit_extractor(load_audit(unit), batch_size=int(kwargs.get("batch_size", 64)))
    spatial_dims = 2 if spatial_dims is None else int(spatial_dims)
    in_channels = (3 if spatial_dims == 2 else 1) if in_channels is None else int(in_channels)
    if isinstance(extractor, (str, Path)):
        path = Path(extractor)
        if not path.is_file():
            raise ValueError(f"{path}: feature extractor file not found")
        try:
            network: nn.Module = torch.jit.load(str(path), map_location="cpu")
        except RuntimeError:  # not TorchScript: a plain state_dict
            network = resnet50_extractor(path, spatial_dims, in_channels)
    elif isinstance(extractor, nn.Module):
        network = extractor
    else:
        raise ValueError(
            f"extractor must be None, an nn.Module, a FeatureExtractor or a file path; got {type(extractor).__name__}"
        )
    return FeatureExtractor(network, spatial_dims, in_channels, size, **kwargs)


def fid_from_features(real_features: torch.Tensor | Any, generated_features: torch.Tensor | Any) -> float:
    """Fréchet distance between two feature matrices (MONAI ``FIDMetric``), for features extracted once.

    Args:
        real_features: ``(N_real, F)`` features of real images (tensor or array).
        generated_features: ``(N_generated, F)`` features of generated images, same ``F``.

    Returns:
        the FID (0 for identical feature sets).

    Raises:
        ValueError: not two 2D matrices with the same ``F``, fewer than two rows on a side (a covariance needs
            two), or non-finite features.
    """
    real_features, generated_features = torch.as_tensor(real_features), torch.as_tensor(generated_features)
    for name, features in (("real", real_features), ("generated", generated_features)):
        if features.ndim != 2:
            raise ValueError(f"fid: {name} features must be (N, F), got shape {tuple(features.shape)}")
        if features.shape[0] < 2:
            raise ValueError(f"fid: {name} needs at least 2 images, got {features.shape[0]}")
        if not torch.isfinite(features).all():
            raise ValueError(f"fid: {name} features contain NaN or inf; check the extractor's input scaling")
    if real_features.shape[1] != generated_features.shape[1]:
        raise ValueError(
            f"fid: real and generated features differ in length ({real_features.shape[1]} vs "
            f"{generated_features.shape[1]}); extract both with the same extractor"
        )
    return float(FIDMetric()(generated_features, real_features))


def fid(
    real: ImageInput | torch.Tensor,
    generated: ImageInput | torch.Tensor,
    extractor: FeatureExtractor | nn.Module | str | Path | None = None,
    unit: str | None = None,
    **kwargs: Any,
) -> float:
    """Fréchet distance between real and generated images in a feature space (MONAI ``FIDMetric``).

    Args:
        real: real images (any layout the preprocessing accepts).
        generated: generated images.
        extractor: see :func:`feature_extractor`; default the audit network of ``unit``.
        unit: audit unit for the default feature space.
        kwargs: passed to :func:`feature_extractor`.

    Returns:
        the FID (0 for identical feature distributions).

    Raises:
        ValueError: fewer than two images on a side (a covariance needs two).
    """
    extract = feature_extractor(extractor, unit=unit, **kwargs)
    return fid_from_features(extract(real), extract(generated))
