"""DICOM validation with ``dciodvfy`` (Debian package dicom3tools): every kind of file the project writes, checked
against its IOD. The tests assert zero errors; ``docs/build_docs.py`` lists the remaining warnings in docs/dicom.md."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

__all__ = ["DCIODVFY_INSTALL", "DciodvfyReport", "find_dciodvfy", "dciodvfy", "write_examples"]

#: how to get dciodvfy (``make test`` does this when it is missing).
DCIODVFY_INSTALL = "make system-deps  (or: sudo apt-get install -y dicom3tools)"


@dataclass
class DciodvfyReport:
    """What ``dciodvfy`` said about one file.

    Attributes:
        path: the file.
        errors: the lines with ``Error`` (a file the project writes has none).
        warnings: the lines with ``Warning``.
    """

    path: Path
    errors: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def find_dciodvfy() -> str | None:
    """The ``dciodvfy`` executable, or ``None`` when it is not installed."""
    return shutil.which("dciodvfy") or ("/usr/bin/dciodvfy" if os.path.exists("/usr/bin/dciodvfy") else None)


def dciodvfy(path: str | os.PathLike) -> DciodvfyReport:
    """Run ``dciodvfy`` on one file.

    Raises:
        ValueError: dciodvfy is not installed (the message says how to install it).
    """
    executable = find_dciodvfy()
    if executable is None:
        raise ValueError(f"dciodvfy not found: {DCIODVFY_INSTALL}")
    result = subprocess.run([executable, str(path)], capture_output=True, text=True, timeout=120)
    lines = [line.strip() for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    return DciodvfyReport(
        Path(path), [line for line in lines if "Error" in line], [line for line in lines if "Warning" in line]
    )


def write_examples(folder: str | os.PathLike) -> dict[str, Path]:
    """One file of every kind the project writes, as the writers write them (synthetic patient, or the allow-listed
    reference of a conditioning input).

    Returns:
        kind -> file: ``secondary capture (grayscale)``, ``secondary capture (RGB, conditioned: CHEST)``,
        ``secondary capture (conditioned: KNEE, right)``, ``MR slice``, ``Basic Text SR``.
    """
    from .marking import Provenance, synthetic_patient
    from .writer import write_basic_text_sr, write_mr_series, write_secondary_capture

    folder = Path(folder)
    rng = np.random.default_rng(0)
    provenance = Provenance("example_bundle", "0.1.0", seed=0)
    chest = {**synthetic_patient(), "PatientSex": "F", "PatientAge": "045Y", "BodyPartExamined": "CHEST"}
    knee = {**chest, "BodyPartExamined": "KNEE", "Laterality": "R"}
    affine = np.diag([0.7, 0.7, 3.0, 1.0])
    return {
        "secondary capture (grayscale)": write_secondary_capture(
            rng.integers(0, 256, (8, 8), dtype=np.uint8), folder / "sc_gray.dcm", provenance
        ),
        "secondary capture (RGB, conditioned: CHEST)": write_secondary_capture(
            rng.integers(0, 256, (8, 8, 3), dtype=np.uint8), folder / "sc_rgb.dcm", provenance, chest
        ),
        "secondary capture (conditioned: KNEE, right)": write_secondary_capture(
            np.zeros((8, 8), np.uint8), folder / "sc_knee.dcm", provenance, knee
        ),
        "MR slice": write_mr_series(rng.random((6, 5, 3)), affine, folder / "mr", provenance)[1],
        "Basic Text SR": write_basic_text_sr("Synthetic report: no acute findings.", folder / "sr.dcm", provenance),
    }
