"""Bundle configs that several bundles share, kept here once.

A bundle must stand alone (the model zoo ships each as its own folder), so each bundle carries its own copy; this
package holds the one source they are copied from, and :func:`shared_config_problems` (run by the tests) reports any
copy that drifted. Each copy keeps its own values of the keys in :data:`PER_BUNDLE_KEYS` (a bundle's training
length). Edit the source, then copy it out::

    python -m medgen_monai.configs          # write every copy (keeping their own per-bundle values)
    python -m medgen_monai.configs --check  # report drift, change nothing (exit status 1 on drift)
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ..io.atomic import atomic_write_text

__all__ = ["PER_BUNDLE_KEYS", "SHARED_CONFIGS", "shared_config_problems", "sync_shared_configs"]

_HERE = Path(__file__).resolve().parent

#: source file -> the bundle config files that are copies of it (paths relative to the repository's bundles/)
SHARED_CONFIGS: dict[str, tuple[str, ...]] = {
    "vap_train_diffusion.json": tuple(
        f"vap_diffusion_{kind}/configs/train_diffusion.json" for kind in ("derm", "colon", "cxr")
    ),
}

#: top-level keys each copy keeps its own value of
PER_BUNDLE_KEYS: frozenset[str] = frozenset({"max_iterations"})


def _copy_of(source: dict[str, Any], copy: dict[str, Any]) -> dict[str, Any]:
    """``source`` with the copy's own values of :data:`PER_BUNDLE_KEYS`."""
    return {k: (copy[k] if k in PER_BUNDLE_KEYS and k in copy else v) for k, v in source.items()}


def _pairs(bundles_dir: str | Path) -> list[tuple[Path, Path]]:
    return [(_HERE / name, Path(bundles_dir) / copy) for name, copies in SHARED_CONFIGS.items() for copy in copies]


def shared_config_problems(bundles_dir: str | Path) -> list[str]:
    """The copies under ``bundles_dir`` that differ from their source outside :data:`PER_BUNDLE_KEYS`."""
    problems = []
    for source, copy in _pairs(bundles_dir):
        if not copy.is_file():
            problems.append(f"{copy}: missing (a copy of medgen_monai/configs/{source.name})")
            continue
        mine = json.loads(copy.read_text(encoding="utf-8"))
        if mine != _copy_of(json.loads(source.read_text(encoding="utf-8")), mine):
            problems.append(
                f"{copy}: differs from medgen_monai/configs/{source.name} (run python -m medgen_monai.configs)"
            )
    return problems


def sync_shared_configs(bundles_dir: str | Path) -> list[Path]:
    """Write every copy from its source, keeping the copy's own per-bundle values; returns the files written."""
    written = []
    for source, copy in _pairs(bundles_dir):
        mine = json.loads(copy.read_text(encoding="utf-8")) if copy.is_file() else {}
        wanted = _copy_of(json.loads(source.read_text(encoding="utf-8")), mine)
        if wanted != mine:
            atomic_write_text(copy, json.dumps(wanted, indent=4, ensure_ascii=False) + "\n")
            written.append(copy)
    return written
