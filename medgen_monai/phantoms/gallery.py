"""Pictures of phantoms: the README gallery and the per-kind figures of docs/phantoms.md."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..io.atomic import atomic_path
from ..io.writers import radiological_axial
from .base import PhantomSample

__all__ = ["display_panels", "save_gallery", "save_kind_figure"]


def _axial(volume: np.ndarray, fraction: float) -> np.ndarray:
    """The axial slice at ``fraction`` of the height, in radiological display (see :func:`radiological_axial`)."""
    return radiological_axial(volume, int(round(fraction * (volume.shape[2] - 1))))


def display_panels(sample: PhantomSample, slices: Sequence[float] = (0.35, 0.5, 0.65)) -> list[tuple[str, np.ndarray]]:
    """2D panels that show a sample: the image (2D), each view (cxr), or axial slices (3D).

    Returns:
        list of ``(title, array)``; arrays are ``(H, W)`` or ``(H, W, 3)``.
    """
    panels = []
    for view, image in sample.images.items():
        if image.ndim == 3 and image.shape[-1] != 3:  # a volume
            lesion = sample.masks.get("lesion")
            if lesion is not None and lesion.any():  # centre the slices on the lesion, same panel count
                z = np.nonzero(lesion.any(axis=(0, 1)))[0]
                centre = float(z.mean()) / max(image.shape[2] - 1, 1)
                slices = (max(0.0, centre - 0.15), centre, min(1.0, centre + 0.15))
            panels += [(f"{view} z={f:.2f}", _axial(image, f)) for f in slices]
        else:
            panels.append((view, image))
    return panels


def _caption(sample: PhantomSample, width: int) -> str:
    label = sample.label if isinstance(sample.label, str) else ", ".join(sample.label) or "No Finding"
    attrs = ", ".join(f"{k}={v}" for k, v in sample.attributes.items() if v not in ("none", "absent"))
    return "\n".join(textwrap.wrap(f"{label}: {attrs}", width)[:4])


def _save(fig, path: str | Path) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format=path.suffix.lstrip(".") or "png")
    return path


def save_kind_figure(samples: Sequence[PhantomSample], path: str | Path, columns: int = 4) -> Path:
    """One kind: a grid of samples, each with its label and attributes as caption."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    per_sample = len(display_panels(samples[0]))
    columns = max(1, columns // per_sample) if per_sample > 1 else columns
    rows = -(-len(samples) // columns)
    fig, axes = plt.subplots(
        rows, columns * per_sample, figsize=(2.1 * columns * per_sample, 2.6 * rows), squeeze=False
    )
    for ax in axes.flat:
        ax.axis("off")
    for i, sample in enumerate(samples):
        r, c = divmod(i, columns)
        for j, (title, image) in enumerate(display_panels(sample)):
            ax = axes[r, c * per_sample + j]
            ax.imshow(
                image,
                cmap="gray" if image.ndim == 2 else None,
                vmin=0 if image.dtype == np.uint8 else None,
                vmax=255 if image.dtype == np.uint8 else None,
            )
            ax.set_title(title, fontsize=7)
        axes[r, c * per_sample].text(
            0,
            -0.04,
            _caption(sample, 26 * per_sample),
            transform=axes[r, c * per_sample].transAxes,
            fontsize=6,
            va="top",
        )
    fig.suptitle(f"{samples[0].kind} phantom", fontsize=10)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out


def save_gallery(samples_by_kind: dict[str, Sequence[PhantomSample]], path: str | Path) -> Path:
    """All kinds, one row each (cxr shows frontal and lateral side by side, prostate axial slices)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [
        [panel for s in samples for panel in display_panels(s, slices=(0.5,))] for samples in samples_by_kind.values()
    ]
    width = max(len(r) for r in rows)
    fig, axes = plt.subplots(len(rows), width, figsize=(1.6 * width, 1.9 * len(rows)), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for r, (kind, panels) in enumerate(zip(samples_by_kind, rows)):
        for c, (title, image) in enumerate(panels):
            axes[r, c].imshow(image, cmap="gray" if image.ndim == 2 else None)
            axes[r, c].set_title(f"{kind}: {title}" if c == 0 else title, fontsize=7)
    fig.tight_layout()
    out = _save(fig, path)
    plt.close(fig)
    return out
