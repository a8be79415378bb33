"""A bundle's inference objects, built from its own ``configs/inference.json`` (for benchmarks and diagnostics).

The same objects ``python -m monai.bundle run`` builds; only the overridden config keys differ.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from monai.bundle import ConfigParser

__all__ = ["inference_parser", "shipped_bundles", "unshipped_bundles", "weights_files"]


def inference_parser(bundle_root: str | Path, initialize: bool = True, **overrides: Any) -> ConfigParser:
    """A MONAI ``ConfigParser`` of the bundle's ``configs/inference.json`` with ``bundle_root`` and ``overrides`` set.

    Args:
        bundle_root: the bundle folder.
        initialize: evaluate the config's ``initialize`` list (loads the autoencoder weights).
        overrides: config ids to set, e.g. ``n=4``, ``output_dir="out"``, ``**{"sampler#eta": 1.0}``.

    Returns:
        the parser; ``parser.get_parsed_content("evaluator")`` gives the generation run (MONAI's
        inference workflow property), ``"inferer"``, ``"sampler"``, ``"network"``, ``"autoencoder"``, ``"conditioner"``
        its parts.

    Raises:
        ValueError: ``bundle_root`` has no ``configs/inference.json``.
    """
    from monai.bundle import ConfigParser

    root = Path(bundle_root)
    config = root / "configs" / "inference.json"
    if not config.is_file():
        raise ValueError(f"{root}: not a bundle folder (no configs/inference.json)")
    parser = ConfigParser()
    parser.read_config(str(config))
    metadata = root / "configs" / "metadata.json"
    if metadata.is_file():
        parser.read_meta(str(metadata))
    parser.update({"bundle_root": str(root), **overrides})
    if initialize and "initialize" in parser.config:
        parser.get_parsed_content("initialize")
    return parser


def _bundle_folders(bundles_dir: str | Path) -> list[Path]:
    return sorted(p.parents[1] for p in Path(bundles_dir).glob("*/configs/inference.json"))


def weights_files(root: str | Path) -> list[Path]:
    """The weights files the bundle's ``configs/inference.json`` loads: every ``models/<name>.pt`` it names, and one
    per stream of a multi-stream bundle (its ``modalities``; MedCoDi-M's joint connectors are optional)."""
    import json
    import re

    root = Path(root)
    text = (root / "configs" / "inference.json").read_text(encoding="utf-8")
    names = set(re.findall(r"/(\w+)\.pt'", text)) | set(json.loads(text).get("modalities", []))
    return sorted(root / "models" / f"{name}.pt" for name in names)


def _ships_weights(root: Path) -> bool:
    files = weights_files(root)
    return bool(files) and all(path.is_file() for path in files)


def shipped_bundles(bundles_dir: str | Path) -> list[Path]:
    """The bundle folders under ``bundles_dir`` that ship weights (both ``models/autoencoder.pt`` and
    ``models/diffusion.pt``): the ones benchmarks measure and health checks sample."""
    return [root for root in _bundle_folders(bundles_dir) if _ships_weights(root)]


def unshipped_bundles(bundles_dir: str | Path) -> list[Path]:
    """The bundle folders under ``bundles_dir`` without weights (in development: configs and tests only)."""
    return [root for root in _bundle_folders(bundles_dir) if not _ships_weights(root)]
