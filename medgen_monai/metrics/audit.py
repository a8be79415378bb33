"""Audit networks: small CNNs trained on real phantom images to predict every attribute and the label.

The audited unit is one view of one phantom kind, named ``"<kind>_<view>"``: ``derm_image``,
``colon_image``, ``cxr_frontal``, ``cxr_lateral``, ``prostate_t2w``. A unit predicts the attributes
visible in its view (:attr:`Attribute.views`) and the label: one categorical head for single-label
kinds, one binary head ``"label:<class>"`` (values ``absent`` / ``present``) per class for
multi-label kinds.

Architecture (:class:`AuditNet`): the image plus ``spatial_dims`` coordinate channels (CoordConv,
so that position and laterality survive the global pooling) -> a MONAI ``Convolution`` stem ->
MONAI ``ResidualUnit`` stages -> global average and max pooling (concatenated: the max keeps small
findings such as a thin catheter from being averaged away) -> one linear layer whose outputs are
split into the heads. :meth:`AuditNet.features` is the pooled ``(B, F)`` vector, the default FID
feature space.

Shipped weights live in :data:`WEIGHTS_DIR` as ``audit_<unit>.pt`` (a plain ``state_dict`` of
tensors, loadable with ``torch.load(weights_only=True)``) and ``audit_<unit>.json`` (the
architecture, vocabulary, training arguments and held-out accuracy). Retrain them with
``medgen-monai train-audit --kind all`` (:func:`train_audit_cli`).
"""

from __future__ import annotations

import hashlib
import json
import math
import platform
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution, ResidualUnit

from ..io.atomic import atomic_path, atomic_write_text
from ..phantoms import KINDS, Phantom, PhantomSample, get_phantom
from ..phantoms.seeds import AUDIT_SEEDS, audit_seed_access, seed_use
from .preprocess import ImageInput, preprocess_images

__all__ = [
    "WEIGHTS_DIR",
    "AuditSpec",
    "AuditNet",
    "audit_units",
    "parse_unit",
    "unit_name",
    "audit_spec",
    "sample_targets",
    "augment",
    "train_audit",
    "train_audit_cli",
    "load_audit",
    "evaluate_audit",
    "evaluate_validity",
    "calibrate_temperatures",
    "expected_calibration_error",
    "VALIDITY_TARGET",
    "DEFAULT_BUDGETS",
    "BELOW_TARGET",
    "QUICK_BUDGET",
]

#: the shipped audit weights (package data).
WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

#: values of a multi-label kind's per-class binary head.
BINARY_VALUES: tuple[str, str] = ("absent", "present")

#: the maximum length of a unit name stored in the weights (as UTF-8 bytes in a uint8 buffer).
_UNIT_ID_BYTES = 64


# ---- units --------------------------------------------------------------------------------------
def unit_name(kind: str, view: str) -> str:
    """``("cxr", "frontal")`` -> ``"cxr_frontal"`` (validated against the phantom's views)."""
    phantom = get_phantom(kind)
    if view not in phantom.views:
        raise ValueError(f"{kind}: unknown view {view!r}; expected one of {list(phantom.views)}")
    return f"{kind}_{view}"


def parse_unit(unit: str) -> tuple[str, str]:
    """``"cxr_frontal"`` -> ``("cxr", "frontal")``; ``ValueError`` listing the known units otherwise."""
    kind, _, view = str(unit).partition("_")
    if kind not in KINDS or not view:
        raise ValueError(f"unknown audit unit {unit!r}; expected one of {_known_units_text()}")
    phantom = get_phantom(kind)
    if view not in phantom.views:
        raise ValueError(f"unknown audit unit {unit!r}; expected one of {_known_units_text()}")
    return kind, view


def _known_units_text() -> str:
    try:
        return str(audit_units())
    except ImportError:  # a phantom module is missing: still say what the names look like
        return "'<kind>_<view>' names such as 'derm_image', 'cxr_frontal'"


def audit_units(kind: str = "all") -> list[str]:
    """The audit units of ``kind`` (``"all"``: of every kind), e.g. ``["cxr_frontal", "cxr_lateral"]``."""
    kinds = KINDS if kind == "all" else (kind,)
    if kind != "all" and kind not in KINDS:
        raise ValueError(f"unknown phantom kind {kind!r}; expected 'all' or one of {list(KINDS)}")
    return [f"{k}_{v}" for k in kinds for v in get_phantom(k).views]


# ---- specification -----------------------------------------------------------------------------
@dataclass(frozen=True)
class AuditSpec:
    """Everything that fixes an audit network's shape and meaning.

    Args:
        unit: ``"<kind>_<view>"``.
        spatial_dims: 2 or 3.
        in_channels: image channels (3 RGB, 1 grey / MRI).
        input_size: spatial size the network sees, ``(H, W)`` or ``(X, Y, Z)`` (the phantom's default size).
        heads: ``(head name, values)`` pairs in output order: attributes visible in the view, then the label head(s).
        channels: output channels of the stem and of each residual stage.
        strides: stride of the stem and of each residual stage.
        dropout: dropout before the heads (training only).
    """

    unit: str
    spatial_dims: int
    in_channels: int
    input_size: tuple[int, ...]
    heads: tuple[tuple[str, tuple[str, ...]], ...]
    channels: tuple[int, ...] = (16, 32, 64, 128)
    strides: tuple[int, ...] = (2, 2, 2, 2)
    dropout: float = 0.1

    def __post_init__(self) -> None:
        if self.spatial_dims not in (2, 3):
            raise ValueError(f"spatial_dims must be 2 or 3, got {self.spatial_dims}")
        if len(self.input_size) != self.spatial_dims:
            raise ValueError(f"input_size {self.input_size} must have {self.spatial_dims} entries")
        if len(self.channels) < 2 or len(self.channels) != len(self.strides):
            raise ValueError(
                f"channels {self.channels} and strides {self.strides} need the same length >= 2 (stem + stages)"
            )
        if not self.heads or any(len(values) < 2 for _, values in self.heads):
            raise ValueError(f"every head needs >= 2 values, got {self.heads}")
        if len({name for name, _ in self.heads}) != len(self.heads):
            raise ValueError(f"head names must be unique, got {[name for name, _ in self.heads]}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if len(self.unit.encode()) > _UNIT_ID_BYTES:
            raise ValueError(f"unit name {self.unit!r} is longer than {_UNIT_ID_BYTES} bytes")

    @property
    def head_names(self) -> list[str]:
        return [name for name, _ in self.heads]

    @property
    def feature_dim(self) -> int:
        """Length of :meth:`AuditNet.features` (average- and max-pooled last stage, concatenated)."""
        return 2 * self.channels[-1]

    def vocabulary_digest(self) -> bytes:
        """SHA-256 of the heads and their values: weights trained on another vocabulary are refused."""
        return hashlib.sha256(json.dumps([[n, list(v)] for n, v in self.heads]).encode()).digest()

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["heads"] = {name: list(values) for name, values in self.heads}
        data["input_size"] = list(self.input_size)
        data["channels"] = list(self.channels)
        data["strides"] = list(self.strides)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AuditSpec:
        return cls(
            unit=str(data["unit"]),
            spatial_dims=int(data["spatial_dims"]),
            in_channels=int(data["in_channels"]),
            input_size=tuple(int(s) for s in data["input_size"]),
            heads=tuple((str(n), tuple(str(v) for v in values)) for n, values in dict(data["heads"]).items()),
            channels=tuple(int(c) for c in data["channels"]),
            strides=tuple(int(s) for s in data["strides"]),
            dropout=float(data.get("dropout", 0.1)),
        )


#: per-unit architecture overrides of the AuditSpec defaults (3D: fewer channels to fit the CPU budget).
_ARCHITECTURES: dict[str, dict[str, tuple[int, ...]]] = {
    "prostate_t2w": {"channels": (8, 16, 32, 64), "strides": (2, 2, 2, 2)},
}


def audit_spec(
    unit: str, channels: Sequence[int] | None = None, strides: Sequence[int] | None = None, dropout: float = 0.1
) -> AuditSpec:
    """The :class:`AuditSpec` of ``unit`` built from its phantom's current vocabulary.

    Args:
        unit: ``"<kind>_<view>"``.
        channels: override the stem + stage channels (default per unit).
        strides: override the stem + stage strides.
        dropout: dropout before the heads.
    """
    kind, view = parse_unit(unit)
    phantom = get_phantom(kind)
    heads: list[tuple[str, tuple[str, ...]]] = [
        (a.name, tuple(a.values)) for a in phantom.attributes if a.visible_in(view)
    ]
    if any(name == "label" or name.startswith("label:") for name, _ in heads):
        raise ValueError(f"{kind}: an attribute may not be called 'label' (reserved for the class head)")
    if phantom.multilabel:
        heads += [(f"label:{c}", BINARY_VALUES) for c in phantom.classes]
    else:
        heads.append(("label", tuple(phantom.classes)))
    arch = _ARCHITECTURES.get(unit, {})
    return AuditSpec(
        unit=unit,
        spatial_dims=phantom.spatial_dims,
        in_channels=phantom.channels,
        input_size=tuple(phantom.default_size),
        heads=tuple(heads),
        channels=tuple(channels) if channels is not None else arch.get("channels", (16, 32, 64, 128)),
        strides=tuple(strides) if strides is not None else arch.get("strides", (2, 2, 2, 2)),
        dropout=dropout,
    )


# ---- network -----------------------------------------------------------------------------------
class AuditNet(nn.Module):
    """Multi-head classifier of one audit unit.

    Args:
        spec: the unit's :class:`AuditSpec`.

    Input: ``(B, C, *input_size)`` float in ``[0, 1]`` (use :meth:`prepare` on raw images).
    """

    def __init__(self, spec: AuditSpec) -> None:
        super().__init__()
        self.spec = spec
        sd = spec.spatial_dims
        # CoordConv: a global pool is translation invariant; coordinates let it tell left from right.
        stem_in = spec.in_channels + sd
        layers: list[nn.Module] = [
            Convolution(sd, stem_in, spec.channels[0], strides=spec.strides[0], kernel_size=3, norm="batch", act="relu")
        ]
        for c_in, c_out, stride in zip(spec.channels[:-1], spec.channels[1:], spec.strides[1:]):
            layers.append(ResidualUnit(sd, c_in, c_out, strides=stride, subunits=2, norm="batch", act="relu"))
        self.backbone = nn.Sequential(*layers)
        self.dropout = nn.Dropout(spec.dropout)
        self.head = nn.Linear(spec.feature_dim, sum(len(values) for _, values in spec.heads))
        # "is this an image of my kind at all?": one logit, trained on real images against NEGATIVE_FAMILIES
        self.validity_head = nn.Linear(spec.feature_dim, 1)
        # per-head softmax temperatures, fitted on held-out phantoms after training (calibrate_temperatures)
        self.register_buffer("temperature", torch.ones(len(spec.heads)))
        axes = [torch.linspace(-1.0, 1.0, n) for n in spec.input_size]
        coords = torch.stack(torch.meshgrid(*axes, indexing="ij"))[None]
        self.register_buffer("coords", coords, persistent=False)
        # Identity of the weights, stored in the state_dict as tensors (weights_only loading stays possible).
        unit_bytes = spec.unit.encode().ljust(_UNIT_ID_BYTES, b"\0")
        self.register_buffer("unit_id", torch.tensor(list(unit_bytes), dtype=torch.uint8))
        self.register_buffer("vocabulary_digest", torch.tensor(list(spec.vocabulary_digest()), dtype=torch.uint8))

    @property
    def unit(self) -> str:
        return self.spec.unit

    def _check_input(self, x: torch.Tensor) -> None:
        expected = (self.spec.in_channels, *self.spec.input_size)
        if x.ndim != 2 + self.spec.spatial_dims or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"audit {self.unit}: expected input (B, {', '.join(map(str, expected))}), got {tuple(x.shape)}; "
                "pass raw images through AuditNet.prepare()"
            )

    def features(self, x: torch.Tensor) -> torch.Tensor:
        """Penultimate features.

        Args:
            x: ``(B, C, *input_size)`` float in ``[0, 1]``.

        Returns:
            ``(B, F)`` with ``F = spec.feature_dim``.
        """
        self._check_input(x)
        x = torch.cat([x, self.coords.expand(x.shape[0], *self.coords.shape[1:]).to(x.dtype)], dim=1)
        h = self.backbone(x).flatten(2)
        return torch.cat([h.mean(dim=2), h.amax(dim=2)], dim=1)

    def outputs(self, x: torch.Tensor) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Head logits (uncalibrated) and the validity logit from one pass.

        Args:
            x: ``(B, C, *input_size)`` float in ``[0, 1]``.

        Returns:
            (head name -> ``(B, n_values)`` logits in :attr:`AuditSpec.heads` order, ``(B,)`` validity logit:
            > 0 means "an image of this unit's kind").
        """
        features = self.dropout(self.features(x))
        logits = self.head(features)
        sizes = [len(values) for _, values in self.spec.heads]
        return dict(zip(self.spec.head_names, torch.split(logits, sizes, dim=1))), self.validity_head(features)[:, 0]

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Logits per head (uncalibrated; see :meth:`assess` for calibrated confidences and validity).

        Args:
            x: ``(B, C, *input_size)`` float in ``[0, 1]``.

        Returns:
            head name -> ``(B, n_values)`` logits, in :attr:`AuditSpec.heads` order.
        """
        return self.outputs(x)[0]

    def prepare(self, images: ImageInput) -> torch.Tensor:
        """Raw images (any layout :func:`preprocess_images` accepts) -> network input, resized to ``input_size``."""
        return preprocess_images(images, self.spec.spatial_dims, self.spec.in_channels, self.spec.input_size)

    @torch.inference_mode()
    def assess(self, images: ImageInput, batch_size: int = 64) -> dict[str, Any]:
        """Validity, predicted values and calibrated confidences of raw images (eval mode, batched).

        The confidence of a head is ``P(valid) * max softmax(logits / T_head)``: the probability that the
        image is of this kind *and* shows the predicted value, so no head reports high confidence on an image
        the validity output rejects (it is below ``P(valid) < 0.5`` there).

        Returns:
            ``{"valid": list of B bools (P(valid) >= 0.5), "p_valid": list of B floats,
            "values": {head: list of B value names}, "confidence": {head: list of B floats}}``.
        """
        was_training = self.training
        self.eval()
        try:
            x = self.prepare(images)
            device = next(self.parameters()).device
            indices: dict[str, list[int]] = {name: [] for name in self.spec.head_names}
            confidence: dict[str, list[float]] = {name: [] for name in self.spec.head_names}
            p_valid: list[float] = []
            for start in range(0, x.shape[0], batch_size):
                logits, validity = self.outputs(x[start : start + batch_size].to(device))
                p = torch.sigmoid(validity.float())
                p_valid += p.tolist()
                for k, (name, head_logits) in enumerate(logits.items()):
                    probabilities = torch.softmax(head_logits.float() / self.temperature[k], dim=1)
                    top, index = probabilities.max(dim=1)
                    indices[name] += index.tolist()
                    confidence[name] += (top * p).tolist()
        finally:
            self.train(was_training)
        values = dict(self.spec.heads)
        return {
            "valid": [p >= 0.5 for p in p_valid],
            "p_valid": p_valid,
            "values": {name: [values[name][i] for i in idx] for name, idx in indices.items()},
            "confidence": confidence,
        }

    def predict(self, images: ImageInput, batch_size: int = 64) -> dict[str, list[str]]:
        """Predicted value names per head for raw images (eval mode, batched; see :meth:`assess` for validity).

        Returns:
            head name -> list of ``B`` predicted values.
        """
        return self.assess(images, batch_size)["values"]


# ---- targets -----------------------------------------------------------------------------------
def sample_targets(spec: AuditSpec, attributes: Mapping[str, str], label: Any = None) -> dict[str, int]:
    """Target index per head of one case; heads whose truth is not given are left out.

    Args:
        spec: the unit's spec.
        attributes: attribute name -> value (names the unit does not predict are ignored).
        label: class name (single-label kinds) or a sequence of positive class names (multi-label);
            ``None`` leaves the label head(s) out.

    Raises:
        ValueError: a value or class outside the vocabulary.
    """
    targets: dict[str, int] = {}
    for name, values in spec.heads:
        if name == "label":
            if label is not None:
                if label not in values:
                    raise ValueError(f"{spec.unit}: unknown class {label!r}; expected one of {list(values)}")
                targets[name] = values.index(label)
        elif name.startswith("label:"):
            if label is not None:
                positives = [label] if isinstance(label, str) else list(label)
                known = {n.split(":", 1)[1] for n, _ in spec.heads if n.startswith("label:")}
                unknown = [p for p in positives if p not in known]
                if unknown:
                    raise ValueError(f"{spec.unit}: unknown class(es) {unknown}; expected among {sorted(known)}")
                targets[name] = int(name.split(":", 1)[1] in positives)
        elif name in attributes:
            if attributes[name] not in values:
                raise ValueError(
                    f"{spec.unit}: attribute {name!r} has unknown value {attributes[name]!r}; "
                    f"expected one of {list(values)}"
                )
            targets[name] = values.index(attributes[name])
    return targets


# ---- data --------------------------------------------------------------------------------------
def _generate(phantom: Phantom, n: int, seed: int, balance: float, progress: bool, desc: str) -> list[PhantomSample]:
    """``n`` cases of dataset ``seed``; a fraction ``balance`` has one attribute forced to a uniformly drawn
    value so that rare values (a left pneumothorax) are seen often enough to be learnt."""
    from tqdm import tqdm

    rng = np.random.default_rng([seed, 7])
    samples = []
    for index in tqdm(range(n), desc=desc, disable=not progress, unit="case", leave=False):
        forced: dict[str, str] = {}
        if rng.random() < balance:
            attribute = phantom.attributes[int(rng.integers(len(phantom.attributes)))]
            forced[attribute.name] = attribute.values[int(rng.integers(len(attribute.values)))]
        samples.append(phantom.generate(index, seed=seed, attributes=forced))
    return samples


def _tensors(
    spec: AuditSpec, samples: Sequence[PhantomSample], view: str
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Images ``(N, C, *input_size)`` float16 (preprocessed once, to halve memory) and targets per head ``(N,)``."""
    x = torch.cat(
        [
            preprocess_images(
                [s.images[view] for s in samples[i : i + 256]], spec.spatial_dims, spec.in_channels, spec.input_size
            ).half()
            for i in range(0, len(samples), 256)
        ]
    )
    rows = [sample_targets(spec, s.attributes, s.label) for s in samples]
    y = {name: torch.tensor([r[name] for r in rows], dtype=torch.long) for name in spec.head_names}
    return x, y


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Attribute-preserving augmentation of a batch in ``[0, 1]``.

    Per image: brightness shift in [-0.04, 0.04], contrast scale in [0.9, 1.1] about the image mean (the
    same for every channel, so hue, i.e. a colour attribute, is unchanged), Gaussian noise with standard
    deviation in [0, 0.03]. No flips or rotations: they would swap left/right and position attributes.

    Args:
        x: ``(B, C, *spatial)`` float.
        generator: a seeded ``torch.Generator``.

    Returns:
        ``(B, C, *spatial)`` float in ``[0, 1]``.
    """
    shape = (x.shape[0],) + (1,) * (x.ndim - 1)
    shift = (torch.rand(shape, generator=generator) - 0.5) * 0.08
    scale = 0.9 + 0.2 * torch.rand(shape, generator=generator)
    sigma = 0.03 * torch.rand(shape, generator=generator)
    mean = x.mean(dim=tuple(range(1, x.ndim)), keepdim=True)
    noise = torch.randn(x.shape, generator=generator) * sigma
    return ((x - mean) * scale + mean + shift + noise).clamp(0.0, 1.0)


# ---- evaluation --------------------------------------------------------------------------------
def expected_calibration_error(probabilities: torch.Tensor, target: torch.Tensor, bins: int = 15) -> float:
    """Expected calibration error: the confidence-weighted gap between confidence and accuracy.

    Args:
        probabilities: ``(N, K)`` softmax outputs.
        target: ``(N,)`` true indices.
        bins: equal-width confidence bins on [0, 1].
    """
    confidence, prediction = probabilities.max(dim=1)
    correct = (prediction == target).float()
    edges = torch.linspace(0, 1, bins + 1)
    error = 0.0
    for low, high in zip(edges[:-1], edges[1:]):
        inside = (confidence > low) & (confidence <= high)
        if inside.any():
            error += float(inside.float().mean() * (confidence[inside].mean() - correct[inside].mean()).abs())
    return error


@torch.no_grad()  # not inference_mode: temperature scaling differentiates through these logits' use
def _logits(net: AuditNet, x: torch.Tensor, batch_size: int = 128) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    net.eval()
    heads: dict[str, list[torch.Tensor]] = {name: [] for name in net.spec.head_names}
    validity = []
    for start in range(0, x.shape[0], batch_size):
        out, v = net.outputs(x[start : start + batch_size].float())
        for name in heads:
            heads[name].append(out[name])
        validity.append(v)
    return {name: torch.cat(parts) for name, parts in heads.items()}, torch.cat(validity)


def evaluate_audit(
    net: AuditNet, x: torch.Tensor, y: Mapping[str, torch.Tensor], batch_size: int = 128
) -> dict[str, Any]:
    """Held-out accuracy, balanced accuracy, per-value recall, support and calibration error per head.

    Args:
        net: the audit network (switched to eval mode).
        x: ``(N, C, *input_size)`` preprocessed real images.
        y: head name -> ``(N,)`` target indices.

    Returns:
        ``{"accuracy": {head: float}, "balanced_accuracy": {head: float}, "recall": {head: {value: float}},
        "support": {head: {value: int}}, "ece": {head: float} (with the network's temperatures),
        "pass_rate": fraction of the images the validity output accepts}``.
    """
    logits, validity = _logits(net, x, batch_size)
    values = dict(net.spec.heads)
    temperature = dict(zip(net.spec.head_names, net.temperature.tolist()))
    report: dict[str, Any] = {"accuracy": {}, "balanced_accuracy": {}, "recall": {}, "support": {}, "ece": {}}
    for name, target in y.items():
        pred = logits[name].argmax(dim=1)
        report["accuracy"][name] = float((pred == target).float().mean())
        recalls, support = {}, {}
        for index, value in enumerate(values[name]):
            mask = target == index
            support[value] = int(mask.sum())
            if support[value]:
                recalls[value] = float((pred[mask] == index).float().mean())
        report["recall"][name], report["support"][name] = recalls, support
        report["balanced_accuracy"][name] = float(np.mean(list(recalls.values())))
        report["ece"][name] = expected_calibration_error(torch.softmax(logits[name] / temperature[name], dim=1), target)
    report["pass_rate"] = float((validity > 0).float().mean())
    return report


def calibrate_temperatures(net: AuditNet, x: torch.Tensor, y: Mapping[str, torch.Tensor]) -> dict[str, float]:
    """Fit one softmax temperature per head on held-out images (temperature scaling, Guo et al. 2017) and
    store them in ``net.temperature``.

    Args:
        net: the trained audit network.
        x: ``(N, C, *input_size)`` calibration images (real, not used for training or testing).
        y: head name -> ``(N,)`` target indices.

    Returns:
        head name -> temperature (minimising the negative log-likelihood, searched in [0.05, 20]).
    """
    logits, _ = _logits(net, x)
    fitted = {}
    for k, name in enumerate(net.spec.head_names):
        log_t = torch.zeros(1, requires_grad=True)
        optimizer = torch.optim.LBFGS([log_t], lr=0.1, max_iter=200, line_search_fn="strong_wolfe")

        def closure(
            name: str = name, log_t: torch.Tensor = log_t, optimizer: torch.optim.Optimizer = optimizer
        ) -> torch.Tensor:
            optimizer.zero_grad()
            loss = F.cross_entropy(logits[name] / log_t.clamp(math.log(0.05), math.log(20)).exp(), y[name])
            loss.backward()
            return loss

        optimizer.step(closure)
        fitted[name] = float(log_t.detach().clamp(math.log(0.05), math.log(20)).exp())
        net.temperature[k] = fitted[name]
    return fitted


@torch.inference_mode()
def evaluate_validity(
    net: AuditNet, real: torch.Tensor, negatives: Any, n: int, seed: int, reconstructions: torch.Tensor | None = None
) -> dict[str, Any]:
    """Pass rate on real images and rejection rate per negative family, on held-out data.

    Args:
        net: the audit network.
        real: ``(N, C, *S)`` held-out real images.
        negatives: a :class:`~medgen_monai.metrics.negatives.NegativeSampler` built from held-out data.
        n: negatives per family.
        seed: seeds the negatives.
        reconstructions: held-out real images through the kind's bundle autoencoder (reported, not a family).

    Returns:
        ``{"real_pass": float, "n_real": int, "rejected": {family: float}, "n_per_family": n,
        "max_confidence": {family: mean over images of the largest reported head confidence}}``
        (plus ``"autoencoder_reconstruction_pass"`` when reconstructions are given).
    """
    g = torch.Generator().manual_seed(seed)
    _, validity = _logits(net, real)
    report: dict[str, Any] = {
        "real_pass": float((validity > 0).float().mean()),
        "n_real": int(real.shape[0]),
        "rejected": {},
        "n_per_family": int(n),
        "max_confidence": {},
    }
    for family in negatives.families:
        x = negatives.family(family, n, g)
        logits, validity = _logits(net, x)
        report["rejected"][family] = float((validity <= 0).float().mean())
        p = torch.sigmoid(validity)
        confidences = [
            torch.softmax(logits[name] / net.temperature[k], dim=1).amax(dim=1) * p
            for k, name in enumerate(net.spec.head_names)
        ]
        report["max_confidence"][family] = float(torch.stack(confidences).amax(dim=0).mean())
    if reconstructions is not None:
        _, validity = _logits(net, reconstructions)
        report["autoencoder_reconstruction_pass"] = float((validity > 0).float().mean())
    return report


# ---- training ----------------------------------------------------------------------------------
#: budget per unit: cases, epochs. Sized for <= ~8 min per 2D unit (~20 min 3D) on 2 CPU cores.
DEFAULT_BUDGETS: dict[str, dict[str, int]] = {
    # derm: 32 epochs, not 24: with the validity output learnt beside the heads, 24 left pattern at 0.88
    "derm_image": {"n_train": 4000, "n_val": 600, "epochs": 32},
    "colon_image": {"n_train": 4000, "n_val": 600, "epochs": 24},
    "cxr_frontal": {"n_train": 4000, "n_val": 600, "epochs": 24},
    "cxr_lateral": {"n_train": 4000, "n_val": 600, "epochs": 24},
    # small lesions (about 20 voxels) need more optimisation steps than 2D attributes: smaller batches, more epochs
    "prostate_t2w": {"n_train": 2000, "n_val": 300, "epochs": 40, "batch_size": 16, "lr": 1e-3},
}
#: attributes whose shipped audit network stays below the 0.9 target, with the floor its recorded held-out
#: accuracy must keep (tests check it) and why; docs/audit.md explains them. Generators are judged
#: against these lower ceilings.
BELOW_TARGET: dict[str, dict[str, float]] = {
    # small (7-9 mm) vs medium (11-13 mm) lesions are 6-8 vs 10-12 voxels across and lose contrast to
    # partial volume at 2.2-2.8 mm slices; PI-RADS 3 vs 4 (64 % vs 36 % of the zone signal) overlap
    # when a small lesion's centre is blurred by the same partial volume.
    "prostate_t2w": {"size": 0.80, "pirads": 0.80},
    # a small lesion (radius about 4 pixels at 64x64) holds one or two periods of a 3.6-pixel network, so its
    # network, dots and homogeneous pigment look alike; learnt beside the validity output the head reaches 0.89
    "derm_image": {"pattern": 0.87},
}
#: a smoke-test budget (accuracy is not meaningful).
QUICK_BUDGET: dict[str, int] = {"n_train": 48, "n_val": 24, "epochs": 1}
#: validity targets (issue 12): held-out real phantoms accepted, and every negative family rejected, at least this
#: often.
VALIDITY_TARGET = 0.99
#: negatives per family in the held-out validity table.
VALIDITY_TEST_N = 500


def _bar_plot(report: Mapping[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(report["accuracy"])
    acc = [report["accuracy"][n] for n in names]
    bal = [report["balanced_accuracy"][n] for n in names]
    validity = report.get("validity", {})
    families = list(validity.get("rejected", {}))
    fig, (ax, bx) = plt.subplots(
        1,
        2,
        figsize=(max(5.0, 0.55 * len(names) + 1.5) + 4.5, 3.8),
        gridspec_kw={"width_ratios": [max(len(names), 1), max(len(families) + 1, 1)]},
    )
    positions = np.arange(len(names))
    ax.bar(positions - 0.2, acc, width=0.4, label="accuracy")
    ax.bar(positions + 0.2, bal, width=0.4, label="balanced accuracy")
    ax.axhline(0.9, color="k", linestyle="--", linewidth=0.8)
    ax.set_xticks(positions, names, rotation=45, ha="right", fontsize=8)
    ax.set_ylim(0, 1.02)
    ax.set_title(f"audit {report['unit']}: held-out (n={report['n_val']}, seed {report['val_seed']})", fontsize=9)
    ax.legend(fontsize=7, loc="lower left")
    if families:
        rates = [validity["real_pass"]] + [validity["rejected"][f] for f in families]
        bx.bar(np.arange(len(rates)), rates, color=["tab:green"] + ["tab:red"] * len(families))
        bx.axhline(VALIDITY_TARGET, color="k", linestyle="--", linewidth=0.8)
        bx.set_xticks(
            np.arange(len(rates)),
            ["real passed"] + [f"{f} rejected" for f in families],
            rotation=45,
            ha="right",
            fontsize=7,
        )
        bx.set_ylim(min(0.9, min(rates) - 0.02), 1.005)
        bx.set_title("validity output, held out", fontsize=9)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110)
    plt.close(fig)


def _save(net: AuditNet, report: dict[str, Any], out_dir: Path) -> dict[str, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    unit = net.unit
    paths = {
        "weights": out_dir / f"audit_{unit}.pt",
        "json": out_dir / f"audit_{unit}.json",
        "plot": out_dir / f"audit_{unit}.png",
    }
    state = {k: v.detach().cpu().clone() for k, v in net.state_dict().items()}
    with atomic_path(paths["weights"]) as tmp:
        torch.save(state, tmp)
    report["weights_sha256"] = hashlib.sha256(paths["weights"].read_bytes()).hexdigest()
    report["weights_bytes"] = paths["weights"].stat().st_size
    atomic_write_text(paths["json"], json.dumps(report, indent=2) + "\n")
    _bar_plot(report, paths["plot"])
    return paths


def _train_one(
    spec: AuditSpec,
    train: tuple[torch.Tensor, dict[str, torch.Tensor]],
    negatives: Any,
    reconstructions: torch.Tensor | None,
    epochs: int,
    batch_size: int,
    lr: float,
    weight_decay: float,
    seed: int,
    progress: bool,
) -> tuple[AuditNet, float]:
    """Train the heads on real images and the validity output on real images (and their autoencoder
    reconstructions, which are images of the kind too) against half a batch of negatives."""
    from tqdm import tqdm

    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    x_train, y_train = train
    n = x_train.shape[0]
    n_negative, n_reconstruction = batch_size // 2, (batch_size // 8 if reconstructions is not None else 0)
    net = AuditNet(spec)
    optimizer = torch.optim.AdamW(net.parameters(), lr=lr, weight_decay=weight_decay)
    steps_per_epoch = math.ceil(n / batch_size)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=lr, total_steps=epochs * steps_per_epoch)
    start = time.time()
    bar = tqdm(total=epochs * steps_per_epoch, desc=f"audit {spec.unit}", disable=not progress, unit="step")
    for _epoch in range(epochs):
        net.train()
        order = torch.randperm(n, generator=generator)
        for step in range(steps_per_epoch):
            index = order[step * batch_size : (step + 1) * batch_size]
            if len(index) < 2:  # BatchNorm cannot train on one image
                continue
            parts = [augment(x_train[index].float(), generator)]
            if n_reconstruction:
                pick = torch.randint(reconstructions.shape[0], (n_reconstruction,), generator=generator)
                parts.append(augment(reconstructions[pick].float(), generator))
            parts.append(negatives(n_negative, generator))
            n_real, n_positive = len(index), len(index) + n_reconstruction
            logits, validity = net.outputs(torch.cat(parts))
            loss = sum(F.cross_entropy(logits[name][:n_real], y_train[name][index]) for name in spec.head_names)
            is_valid = torch.zeros_like(validity)
            is_valid[:n_positive] = 1.0
            loss = loss + F.binary_cross_entropy_with_logits(validity, is_valid)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
            bar.set_postfix(loss=f"{loss.detach().item():.3f}", refresh=False)
            bar.update()
    bar.close()
    # The last epoch is kept (no model selection on held-out data, so the test figures are unbiased).
    return net, time.time() - start


def train_audit(
    kind: str,
    view: str | None = None,
    n_train: int | None = None,
    n_val: int | None = None,
    epochs: int | None = None,
    seed: int = AUDIT_SEEDS["train"],
    out_dir: str | Path | None = None,
    val_seed: int = AUDIT_SEEDS["test"],
    calibration_seed: int = AUDIT_SEEDS["calibration"],
    batch_size: int | None = None,
    lr: float | None = None,
    weight_decay: float = 1e-4,
    balance: float = 0.5,
    channels: Sequence[int] | None = None,
    strides: Sequence[int] | None = None,
    validity_n: int = VALIDITY_TEST_N,
    progress: bool = True,
) -> dict[str, dict[str, Any]]:
    """Train the audit network(s) of ``kind`` on freshly generated phantoms and write them to ``out_dir``.

    Cases are generated in memory from the audit's own dataset seeds (:data:`~medgen_monai.phantoms.seeds.AUDIT_SEEDS`,
    which nothing else may draw from): ``n_train`` from ``seed`` (half of them with one attribute forced to
    a uniform value, see ``balance``), ``n_val`` natural cases from ``calibration_seed`` to fit the per-head
    temperatures, and ``n_val`` natural cases from ``val_seed`` for the held-out tables. The validity
    output is trained against :mod:`~medgen_monai.metrics.negatives` built from the training seed and
    tested against negatives built from ``val_seed``. Writes, per unit, atomically: ``audit_<unit>.pt``
    (plain ``state_dict``), ``audit_<unit>.json`` (spec, vocabulary, arguments, held-out accuracy,
    calibration, validity, seeds, seconds) and ``audit_<unit>.png`` (bar plots).

    Args:
        kind: phantom kind.
        view: one view; ``None`` trains every view of the kind (the cases are generated once).
        n_train: training cases (default :data:`DEFAULT_BUDGETS`).
        n_val: calibration and held-out cases, each (default :data:`DEFAULT_BUDGETS`).
        epochs: passes over the training cases (default :data:`DEFAULT_BUDGETS`).
        seed: training dataset seed (also seeds initialisation, shuffling, augmentation and negatives).
        out_dir: output folder (default :data:`WEIGHTS_DIR`, the shipped weights).
        val_seed: held-out (test) dataset seed.
        calibration_seed: dataset seed of the temperature-scaling cases.
        batch_size: real cases per step (default :data:`DEFAULT_BUDGETS`, else 64); half as many negatives join.
        lr: AdamW peak learning rate of the one-cycle schedule (default :data:`DEFAULT_BUDGETS`, else 3e-3).
        weight_decay: AdamW weight decay.
        balance: fraction of training cases with one attribute forced to a uniformly drawn value.
        channels: override the network's stem + stage channels.
        strides: override the network's stem + stage strides.
        validity_n: held-out negatives per family in the validity table.
        progress: show tqdm progress bars.

    Returns:
        unit -> the report written to its JSON file.
    """
    from .negatives import NegativeSampler, bundle_autoencoders, negative_pools, reconstructions

    phantom = get_phantom(kind)
    views = list(phantom.views) if view is None else [view]
    units = [unit_name(kind, v) for v in views]
    budget = {k: max(DEFAULT_BUDGETS.get(u, QUICK_BUDGET)[k] for u in units) for k in ("n_train", "n_val", "epochs")}
    n_train = budget["n_train"] if n_train is None else int(n_train)
    n_val = budget["n_val"] if n_val is None else int(n_val)
    epochs = budget["epochs"] if epochs is None else int(epochs)
    if batch_size is None:
        batch_size = min(DEFAULT_BUDGETS.get(u, {}).get("batch_size", 64) for u in units)
    if lr is None:
        lr = min(DEFAULT_BUDGETS.get(u, {}).get("lr", 3e-3) for u in units)
    if n_train < 2 or n_val < 1 or epochs < 1 or batch_size < 2 or validity_n < 1:
        raise ValueError(
            f"need n_train >= 2, n_val >= 1, epochs >= 1, batch_size >= 2, validity_n >= 1; got "
            f"{n_train}, {n_val}, {epochs}, {batch_size}, {validity_n}"
        )
    if not 0.0 <= balance <= 1.0:
        raise ValueError(f"balance must be in [0, 1], got {balance}")
    if len({seed, val_seed, calibration_seed}) != 3 or min(seed, val_seed, calibration_seed) < 0:
        raise ValueError(
            f"seed, calibration_seed and val_seed must be >= 0 and distinct, got {seed}, {calibration_seed}, {val_seed}"
        )
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    if out.resolve() == WEIGHTS_DIR.resolve() and not all(
        seed_use(s) == "audit" for s in (seed, val_seed, calibration_seed)
    ):
        raise ValueError(
            f"the shipped audit weights ({WEIGHTS_DIR}) train and test on the audit seeds only "
            f"(medgen_monai.phantoms.seeds.AUDIT_SEEDS); got seed {seed}, calibration_seed "
            f"{calibration_seed}, val_seed {val_seed}. Write experiments elsewhere with out_dir"
        )
    arguments = {
        "kind": kind,
        "view": view,
        "n_train": n_train,
        "n_val": n_val,
        "epochs": epochs,
        "seed": seed,
        "val_seed": val_seed,
        "calibration_seed": calibration_seed,
        "batch_size": batch_size,
        "lr": lr,
        "weight_decay": weight_decay,
        "balance": balance,
        "channels": list(channels) if channels else None,
        "strides": list(strides) if strides else None,
        "validity_n": validity_n,
    }

    t0 = time.time()
    autoencoders = bundle_autoencoders(kind)
    with audit_seed_access():
        train = _generate(phantom, n_train, seed, balance, progress, f"{kind} training phantoms")
        calibration = _generate(phantom, n_val, calibration_seed, 0.0, progress, f"{kind} calibration phantoms")
        val = _generate(phantom, n_val, val_seed, 0.0, progress, f"{kind} held-out phantoms")
        pool_n = min(max(n_train // 2, 64), 2000)
        pools = {
            u: (
                negative_pools(u, seed, pool_n, autoencoders, generator_seed=seed),
                negative_pools(u, val_seed, validity_n, autoencoders, generator_seed=val_seed),
            )
            for u in units
        }
    generation_seconds = time.time() - t0

    reports: dict[str, dict[str, Any]] = {}
    for v, unit in zip(views, units):
        spec = audit_spec(unit, channels=channels, strides=strides)
        x_train, y_train = _tensors(spec, train, v)
        x_val, y_val = _tensors(spec, val, v)
        shape = tuple(x_train.shape[1:])
        train_negatives = NegativeSampler(kind, shape, x_train, pools[unit][0])
        test_negatives = NegativeSampler(kind, shape, x_val, pools[unit][1])
        train_reconstructions = reconstructions(autoencoders, unit, x_train[:pool_n])
        net, seconds = _train_one(
            spec,
            (x_train, y_train),
            train_negatives,
            train_reconstructions,
            epochs,
            batch_size,
            lr,
            weight_decay,
            seed,
            progress,
        )
        x_cal, y_cal = _tensors(spec, calibration, v)
        uncalibrated = evaluate_audit(net, x_val, y_val)["ece"]
        temperatures = calibrate_temperatures(net, x_cal, y_cal)
        evaluation = evaluate_audit(net, x_val, y_val)
        validity = evaluate_validity(
            net, x_val, test_negatives, validity_n, val_seed, reconstructions(autoencoders, unit, x_val)
        )
        report: dict[str, Any] = {
            "unit": unit,
            "kind": kind,
            "view": v,
            "architecture": {
                "class": "medgen_monai.metrics.audit.AuditNet",
                **spec.to_dict(),
                "feature_dim": spec.feature_dim,
                "parameters": sum(p.numel() for p in net.parameters()),
            },
            "vocabulary": get_phantom(kind).vocabulary(),
            "command": " ".join(sys.argv),
            "arguments": arguments,
            "n_train": n_train,
            "n_val": n_val,
            "seed": seed,
            "val_seed": val_seed,
            "calibration_seed": calibration_seed,
            "generation_seconds": round(generation_seconds, 1),
            "training_seconds": round(seconds, 1),
            **evaluation,
            "ece_uncalibrated": uncalibrated,
            "temperature": temperatures,
            "validity": validity,
            "negative_families": list(train_negatives.families),
            "autoencoders": [a["bundle"] for a in autoencoders],
            "min_accuracy": min(evaluation["accuracy"].values()),
            "versions": {"torch": torch.__version__, "monai": _monai_version(), "python": platform.python_version()},
        }
        _save(net, report, out)
        reports[unit] = report
    return reports


def _monai_version() -> str:
    import monai

    return monai.__version__


def train_audit_cli(
    kind: str = "all",
    out_dir: str | Path | None = None,
    quick: bool = False,
    seed: int = AUDIT_SEEDS["train"],
    progress: bool = True,
) -> Path:
    """Entry point of ``medgen-monai train-audit``: train the units of ``kind`` (or all) one after another.

    Args:
        kind: ``"all"`` or a phantom kind.
        out_dir: weights folder (default :data:`WEIGHTS_DIR`, the shipped weights).
        quick: a tiny budget (:data:`QUICK_BUDGET`) for smoke tests; accuracy is not meaningful.
        seed: training seed (an audit seed; calibration and test seeds are the other :data:`AUDIT_SEEDS`).
        progress: show progress bars.

    Returns:
        the weights folder. A table of held-out accuracy and validity per unit is printed.
    """
    kinds = list(KINDS) if kind == "all" else [kind]
    if kind != "all" and kind not in KINDS:
        raise ValueError(f"--kind: unknown phantom kind {kind!r}; expected 'all' or one of {list(KINDS)}")
    out = Path(out_dir) if out_dir is not None else WEIGHTS_DIR
    for k in kinds:
        budget = dict(QUICK_BUDGET, validity_n=16) if quick else {}
        reports = train_audit(k, out_dir=out, seed=seed, progress=progress, **budget)
        for unit, report in reports.items():
            rows = ", ".join(f"{h} {a:.3f}" for h, a in report["accuracy"].items())
            validity = report["validity"]
            rejected = ", ".join(f"{f} {r:.3f}" for f, r in validity["rejected"].items())
            print(f"{unit}: held-out accuracy (n={report['n_val']}): {rows}", flush=True)
            print(f"{unit}: validity: real passed {validity['real_pass']:.3f}; rejected: {rejected}", flush=True)
    return out


# ---- loading -----------------------------------------------------------------------------------
def load_audit(unit: str, weights_dir: str | Path | None = None, map_location: str | torch.device = "cpu") -> AuditNet:
    """Load the audit network of ``unit`` in eval mode.

    The architecture comes from ``audit_<unit>.json`` when present (else the defaults), the
    vocabulary from the phantom as it is now; weights of another unit, of another vocabulary or of
    another shape are refused.

    Args:
        unit: ``"<kind>_<view>"``.
        weights_dir: folder with ``audit_<unit>.pt`` (default :data:`WEIGHTS_DIR`).
        map_location: device to load to.

    Raises:
        FileNotFoundError: no weights file (the message says how to train one).
        ValueError: the file holds weights of another unit / vocabulary / shape.
    """
    parse_unit(unit)
    folder = Path(weights_dir) if weights_dir is not None else WEIGHTS_DIR
    path = folder / f"audit_{unit}.pt"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path}: no audit weights for {unit!r}; train them with "
            f"`medgen-monai train-audit --kind {unit.split('_')[0]} --out {folder}`"
        )
    overrides: dict[str, Any] = {}
    json_path = folder / f"audit_{unit}.json"
    if json_path.is_file():
        arch = json.loads(json_path.read_text(encoding="utf-8")).get("architecture", {})
        if arch.get("unit", unit) != unit:
            raise ValueError(f"{json_path}: describes audit unit {arch['unit']!r}, expected {unit!r}")
        overrides = {k: arch[k] for k in ("channels", "strides", "dropout") if k in arch}
    spec = audit_spec(unit, **overrides)
    try:
        state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001 - any unpickling failure means "not our weights"
        raise ValueError(f"{path}: not a weights file readable with torch.load(weights_only=True): {e}") from e
    if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise ValueError(f"{path}: expected a state_dict of tensors for audit unit {unit!r}")
    if "unit_id" in state:
        found = bytes(state["unit_id"].tolist()).rstrip(b"\0").decode(errors="replace")
        if found != unit:
            raise ValueError(f"{path}: holds the audit weights of unit {found!r}, expected {unit!r}")
    if "vocabulary_digest" in state and bytes(state["vocabulary_digest"].tolist()) != spec.vocabulary_digest():
        raise ValueError(
            f"{path}: trained on another vocabulary than the current {unit!r} phantom "
            f"(heads {spec.head_names}); retrain with `medgen-monai train-audit --kind {unit.split('_')[0]}`"
        )
    net = AuditNet(spec)
    expected = {k: tuple(v.shape) for k, v in net.state_dict().items()}
    found = {k: tuple(v.shape) for k, v in state.items()}
    problems = [f"missing {k} {s}" for k, s in expected.items() if k not in found]
    problems += [f"unexpected {k} {s}" for k, s in found.items() if k not in expected]
    problems += [f"{k}: file has {found[k]}, expected {s}" for k, s in expected.items() if k in found and found[k] != s]
    if problems:
        raise ValueError(
            f"{path}: weights do not fit the audit network of {unit!r} (channels {list(spec.channels)}, "
            f"heads {spec.head_names}): " + "; ".join(problems[:6]) + (" ..." if len(problems) > 6 else "")
        )
    net.load_state_dict(state, strict=True)
    return net.to(map_location).eval()
