"""Who may draw phantoms from which dataset seeds.

A phantom case is a function of ``(dataset seed, index)`` only, so two users of one seed see the same
images. Measurement is only honest when the judge (the audit networks) never saw the images it judges
and the generators never trained on the images they are compared with. The seeds are therefore split
into named ranges (:data:`SEED_RANGES`, one table in docs/audit.md), and the audit networks' seeds
(:data:`AUDIT_SEEDS`) are *reserved*: :meth:`Phantom.generate <medgen_monai.phantoms.Phantom.generate>`
refuses them unless the caller is inside :func:`audit_seed_access` (audit training and the audit's own
checks), so a bundle config or benchmark that draws from an audit seed fails at once.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator

__all__ = [
    "SEED_RANGES",
    "AUDIT_SEEDS",
    "QUALITY_SEEDS",
    "CCELLA_SEEDS",
    "MEDCODI_SEEDS",
    "seed_use",
    "check_dataset_seed",
    "audit_seed_access",
]

#: name -> (first, last, what uses it). Ranges are inclusive and disjoint.
SEED_RANGES: dict[str, tuple[int, int, str]] = {
    "training": (0, 9_999, "bundle training data (`data/<kind>`, seed 0), demos, unit tests, the phantom benchmark"),
    "evaluation": (30_000, 39_999, "references of bundle evaluations and of the VAP ablation (seed 30000)"),
    "quality": (40_000, 49_999, "benchmarks/quality.py: references, ceilings, label-only baselines, floors"),
    "ccella": (50_000, 59_999, "benchmarks/ccella.py: held-out reports, the classifier study's test volumes"),
    "medcodi": (
        60_000,
        69_999,
        "benchmarks/medcodi.py: held-out studies (the tasks' inputs) and the real reference views",
    ),
    "audit": (900_000, 900_099, "audit networks only: training, temperature calibration, held-out tables, re-checks"),
}

#: the audit networks' dataset seeds (inside the reserved ``audit`` range).
AUDIT_SEEDS: dict[str, int] = {
    "train": 900_000,  # training cases (and the training negatives' other-kind images)
    "calibration": 900_001,  # per-head temperature scaling
    "test": 900_002,  # the held-out tables of docs/audit.md (never used for a choice)
    "recheck": 900_003,  # make test-slow: the shipped weights on a fresh set
}

#: the quality benchmark's dataset seeds (inside the ``quality`` range).
QUALITY_SEEDS: dict[str, int] = {
    "reference": 40_000,  # the real images generated images are compared with (FID, KID, diversity, label-only)
    "ceiling": 40_001,  # fresh phantoms drawn with exactly the requested attributes
    "autoencoder": 40_002,  # real images passed through a bundle's autoencoder
}

#: the CCELLA benchmark's dataset seeds (inside the ``ccella`` range).
CCELLA_SEEDS: dict[str, int] = {
    "reports": 50_000,  # held-out reports: the class the connector reads from each
    "classifier_test": 50_001,  # the low-data classifier study's held-out real volumes
}

#: the MedCoDi-M benchmark's dataset seeds (inside the ``medcodi`` range).
MEDCODI_SEEDS: dict[str, int] = {
    "studies": 60_000,  # held-out studies whose views and reports condition the tasks (and are their truth)
    "reference": 60_001,  # real views generated views are compared with (FID, its floor)
}

_AUDIT_ACCESS: contextvars.ContextVar[bool] = contextvars.ContextVar("medgen_monai_audit_seed_access", default=False)


def seed_use(seed: int) -> str | None:
    """The name of the :data:`SEED_RANGES` range holding dataset ``seed`` (``None``: unassigned)."""
    for name, (first, last, _) in SEED_RANGES.items():
        if first <= int(seed) <= last:
            return name
    return None


def check_dataset_seed(seed: int) -> None:
    """Refuse a reserved audit seed outside :func:`audit_seed_access`.

    Raises:
        ValueError: ``seed`` lies in the audit range and the caller is not the audit code.
    """
    if seed_use(seed) == "audit" and not _AUDIT_ACCESS.get():
        first, last, _ = SEED_RANGES["audit"]
        raise ValueError(
            f"dataset seed {seed} is reserved for the audit networks ({first}-{last}); a generator trained or "
            "compared on it would be judged on the audit's own images. Use a seed of another range "
            f"({', '.join(f'{n} {a}-{b}' for n, (a, b, _) in SEED_RANGES.items() if n != 'audit')}; docs/audit.md)"
        )


@contextlib.contextmanager
def audit_seed_access() -> Iterator[None]:
    """Allow the audit seeds inside this block (audit training and its own checks only)."""
    token = _AUDIT_ACCESS.set(True)
    try:
        yield
    finally:
        _AUDIT_ACCESS.reset(token)
