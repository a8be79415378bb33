"""The ``medgen-monai`` command line (one ``fire`` entry point; also ``python -m medgen_monai``).

Commands::

    medgen-monai phantoms --kind {derm,colon,cxr,prostate} --n N --out DIR [--seed S] [--size ...]
    medgen-monai vocabulary --kind K
    medgen-monai gallery --out FILE.png [--n 4] [--seed 0]
    medgen-monai demo --out DIR
    medgen-monai train-audit --kind {all,derm,colon,cxr,prostate} [--out DIR] [--quick]
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

__all__ = ["phantoms", "vocabulary", "gallery", "demo", "train_audit", "main"]

# Nothing is downloaded at run time: the defaults work offline.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")


def _size(size: int | str | Sequence[int] | None) -> tuple[int, ...] | int | None:
    """``--size 128``, ``--size 128,128`` or ``--size [128,128,64]`` -> int or tuple."""
    if size is None or isinstance(size, int):
        return size
    if isinstance(size, str):
        parts = [p for p in size.strip("[]() ").replace("x", ",").split(",") if p.strip()]
        try:
            return tuple(int(p) for p in parts)
        except ValueError:
            raise ValueError(f"--size: expected integers like 64 or 64,64,32, got {size!r}") from None
    return tuple(int(s) for s in size)


def phantoms(kind: str, n: int, out: str, seed: int = 0, size: int | str | Sequence[int] | None = None, progress: bool = True) -> str:
    """Write ``n`` phantom cases of ``kind`` under ``out`` in the real dataset's layout.

    Args:
        kind: derm (ISIC 2019 layout), colon (Kvasir), cxr (MIMIC-CXR-JPG), prostate (PI-CAI).
        n: number of cases.
        out: output folder (created).
        seed: dataset seed; the same seed and arguments give byte-identical files.
        size: spatial size, e.g. 128 or 128,128 (2D) or 128,128,64 (3D); default 64x64 / 64x64x32.
        progress: show a progress bar.
    """
    from tqdm import tqdm

    from .data import write_dataset
    from .phantoms import get_phantom

    phantom = get_phantom(kind)
    if int(n) < 1:
        raise ValueError(f"--n must be >= 1, got {n}")
    samples = phantom.generate_many(int(n), seed=int(seed), size=_size(size))
    samples = tqdm(samples, total=int(n), desc=f"{kind} phantoms -> {phantom.layout}", disable=not progress, unit="case")
    return str(write_dataset(phantom.layout, samples, out))


def vocabulary(kind: str) -> str:
    """Print the fixed attribute vocabulary of a phantom kind as JSON."""
    from .phantoms import get_phantom

    return json.dumps(get_phantom(kind).vocabulary(), indent=2)


def gallery(out: str, n: int = 4, seed: int = 0, kinds: str | Sequence[str] = "derm,colon,cxr,prostate") -> str:
    """Save a gallery PNG with ``n`` cases of every kind."""
    from .phantoms import get_phantom
    from .phantoms.gallery import save_gallery

    names = kinds.split(",") if isinstance(kinds, str) else list(kinds)
    samples = {k: list(get_phantom(k).generate_many(int(n), seed=int(seed))) for k in names}
    return str(save_gallery(samples, out))


def demo(out: str = "out/demo") -> str:
    """What ``make demo`` runs: for now a gallery of every phantom kind (bundles come with later issues)."""
    Path(out).mkdir(parents=True, exist_ok=True)
    return gallery(str(Path(out) / "gallery.png"))


def train_audit(kind: str = "all", out: str | None = None, quick: bool = False) -> str:
    """Train the audit network(s) of ``kind`` (or all) on fresh phantoms and write weights + held-out accuracy.

    Args:
        kind: all, derm, colon, cxr or prostate.
        out: weights folder; default the package's shipped ``medgen_monai/metrics/weights``.
        quick: a tiny budget for smoke tests (accuracy not meaningful).
    """
    from .metrics.audit import train_audit_cli

    return str(train_audit_cli(kind=kind, out_dir=out, quick=quick))


def main(argv: Sequence[str] | None = None) -> None:
    import fire

    commands = {
        "phantoms": phantoms,
        "vocabulary": vocabulary,
        "gallery": gallery,
        "demo": demo,
        "train-audit": train_audit,
    }
    try:
        fire.Fire(commands, command=list(sys.argv[1:] if argv is None else argv), name="medgen-monai")
    except ValueError as e:  # bad input (DatasetError is a ValueError): one clear line, no traceback
        print(f"medgen-monai: error: {e}", file=sys.stderr)
        sys.exit(2)
