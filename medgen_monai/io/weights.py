"""Bundle weights: saved with their bundle's name and role, loaded with ``weights_only=True`` and checked.

A weights file is a dict ``{"format", "bundle", "role", "state_dict", "extra"}``: ``role`` says which
network it is (``"autoencoder"``, ``"diffusion"``), ``extra`` carries what inference needs besides the
weights (the latent scale factor). Loading a file of another bundle or role, a trainer checkpoint or
a foreign ``.pt`` fails with one message naming the file and what was expected.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from .atomic import atomic_path

__all__ = ["WEIGHTS_FORMAT", "WeightsError", "save_weights", "load_weights", "file_sha256", "bundle_info"]

WEIGHTS_FORMAT = "medgen-monai-weights-1"


class WeightsError(ValueError):
    """A weights file is missing, unreadable, or belongs to another bundle or network."""


def save_weights(
    path: str | Path,
    network: nn.Module | Mapping[str, torch.Tensor],
    bundle: str,
    role: str,
    extra: Mapping[str, Any] | None = None,
    half: bool = False,
) -> Path:
    """Write ``network``'s weights (or a state dict) atomically with their bundle name and role.

    ``half`` stores floating-point tensors as float16 (half the file size; loading casts them back
    to the network's dtype), for demo weights kept in the repository.

    In a distributed run (``torch.distributed`` initialised, a bundle's ``multi_gpu_train.json``) only rank 0
    writes; every rank holds the same weights, and the others return ``path`` without writing.
    """
    if torch.distributed.is_available() and torch.distributed.is_initialized() and torch.distributed.get_rank() != 0:
        return Path(path)
    state = network.state_dict() if isinstance(network, nn.Module) else dict(network)

    def stored(value: torch.Tensor) -> torch.Tensor:
        value = value.detach().cpu().contiguous()
        return value.half() if half and value.is_floating_point() else value

    payload = {
        "format": WEIGHTS_FORMAT,
        "bundle": str(bundle),
        "role": str(role),
        "state_dict": {k: stored(v) for k, v in state.items()},
        "extra": dict(extra or {}),
    }
    path = Path(path)
    with atomic_path(path) as tmp:
        torch.save(payload, tmp)
    return path


def load_weights(
    path: str | Path, network: nn.Module | None = None, bundle: str | None = None, role: str | None = None
) -> dict[str, Any]:
    """Load a weights file (``weights_only=True``), check it, and load it into ``network``.

    Args:
        path: the ``.pt`` file.
        network: loaded in place (strictly) when given.
        bundle: the expected bundle name; ``None``: any.
        role: the expected role; ``None``: any.

    Returns:
        the file's ``extra`` dict.

    Raises:
        WeightsError: missing or unreadable file, not a medgen-monai weights file, another bundle or
            role, or weights that do not fit ``network`` (the message lists the first mismatches).
    """
    path = Path(path)
    if not path.is_file():
        raise WeightsError(f"{path}: weights file not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated zip, pickle of arbitrary objects, ...
        raise WeightsError(f"{path}: not a readable weights file ({type(e).__name__}: {e})") from None
    if not isinstance(payload, dict) or payload.get("format") != WEIGHTS_FORMAT:
        raise WeightsError(
            f"{path}: not a medgen-monai weights file (expected format {WEIGHTS_FORMAT!r}; "
            "a trainer checkpoint is exported with medgen_monai.io.save_weights)"
        )
    if bundle is not None and payload["bundle"] != bundle:
        raise WeightsError(f"{path}: weights of bundle {payload['bundle']!r}, expected {bundle!r}")
    if role is not None and payload["role"] != role:
        raise WeightsError(f"{path}: {payload['role']!r} weights, expected {role!r} weights")
    if network is not None:
        # checked before loading: load_state_dict raises a bare RuntimeError on a shape mismatch
        own, given = network.state_dict(), payload["state_dict"]
        missing = [k for k in own if k not in given]
        unexpected = [k for k in given if k not in own]
        shapes = [k for k, v in given.items() if k in own and own[k].shape != v.shape]
        if missing or unexpected or shapes:
            raise WeightsError(
                f"{path}: weights do not fit {type(network).__name__} (missing {missing[:3]}, "
                f"unexpected {unexpected[:3]}, wrong shape {shapes[:3]}); was the network configured as in training?"
            )
        network.load_state_dict(given)
    return dict(payload.get("extra") or {})


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def bundle_info(bundle_root: str | Path, weights: Sequence[str | Path] = ()) -> dict[str, Any]:
    """What output sidecars record about a bundle: name and version from ``configs/metadata.json`` and
    the sha256 of each weights file (paths as the configs build them, from ``bundle_root``; or relative to
    ``bundle_root``)."""
    root = Path(bundle_root)

    def located(path: str | Path) -> Path:
        # the configs' paths already start with bundle_root: joining it again breaks a relative bundle_root
        return Path(path) if Path(path).is_file() else root / path

    metadata_path = root / "configs" / "metadata.json"
    try:
        metadata = json.loads(metadata_path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{metadata_path}: a readable bundle metadata.json ({e})") from None
    return {
        "name": metadata.get("name", root.name),
        "version": metadata.get("version", ""),
        "weights_sha256": {Path(w).name: file_sha256(located(w)) for w in weights},
    }
