"""Chest X-ray phantom (stands in for MIMIC-CXR-JPG): a PA frontal and a lateral view of ONE 3D scene.

The scene
    A small attenuation volume ``V[z, x, y]`` (relative linear attenuation, soft tissue = 1)
    holds the torso, both lungs (with a hilar density gradient), heart, mediastinum, aorta,
    trachea, spine, stomach bubble and the findings (pleural fluid, lobar consolidation,
    pleural air). Thin or periodic structures whose voxels would alias at the volume's
    resolution (ribs, clavicles, device wires and the pacemaker generator) are part of the
    same 3D scene but are projected analytically (ray / rib-cage intersections, splatted 3D
    polylines) at the output resolution.

Coordinates (patient frame, before the small rotation and the thorax scale)
    ``z`` runs from the top of the image (-1, the neck) to the bottom (+1, upper abdomen);
    ``x`` from the patient's right (-1) to the patient's left (+1); ``y`` from anterior (-)
    to posterior (+). The frontal view is a PA projection along ``y`` displayed in the
    radiological convention (patient's right on the viewer's LEFT); the lateral view is a
    projection along ``x`` displayed with anterior on the viewer's left and the spine on the
    right. Both views share the vertical axis, so a finding sits at the same height in both.

Projection
    Beer-Lambert: the detector sees ``I = I0 exp(-L)`` with ``L`` the line integral of the
    attenuation along the ray, so ``-log(I / I0) = L``. ``L`` is mapped to grey levels by a
    film characteristic curve ``b = L^g / (L^g + L50^g)`` (exposure and contrast vary per case),
    which gives the radiograph look: air black, lungs dark, heart and bone bright.

The volume is sampled at half the output resolution (32^3 for the default 64x64) and its
projections are upsampled with linear interpolation matrices; every step is vectorised numpy.
"""

from __future__ import annotations

import bisect
import functools
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Attribute, Phantom, choice, interp_matrix, pick

__all__ = [
    "CXRPhantom",
    "CXR_CLASSES",
    "CXR_ATTRIBUTES",
    "CLASS_ATTRIBUTES",
    "absent_value",
    "study_identifiers",
    "label_from_attributes",
]

#: CheXpert class names modelled by the phantom, in the fixed order of the multi-hot label.
CXR_CLASSES: tuple[str, ...] = (
    "No Finding",
    "Cardiomegaly",
    "Pleural Effusion",
    "Lung Opacity",
    "Pneumothorax",
    "Support Devices",
)

CXR_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "heart_size",
        ("normal", "enlarged"),
        "cardiac silhouette width: cardiothoracic ratio about 0.41 (normal, 0.37-0.46) or 0.56 (enlarged, "
        "0.50-0.60); on the lateral view an enlarged heart fills the retrosternal and retrocardiac spaces",
    ),
    Attribute(
        "effusion_side",
        ("none", "left", "right", "bilateral"),
        "side of the pleural effusion (patient's left is on the viewer's right of the PA view); a lateral view "
        "superimposes both sides",
        views=("frontal",),
    ),
    Attribute(
        "effusion_size",
        ("none", "small", "large"),
        "pleural fluid: small blunts the costophrenic angle (posterior costophrenic recess on the lateral view), "
        "large rises as a meniscus to about the middle of the hemithorax",
    ),
    Attribute(
        "opacity_lobe",
        ("none", "upper", "middle", "lower"),
        "lobe of a focal airspace opacity: upper lobe (upper zone, anterior-superior on the lateral view), middle "
        "lobe or lingula (next to the heart border, anterior over the heart on the lateral view), lower lobe "
        "(lung base over the hemidiaphragm, posterior-inferior on the lateral view)",
    ),
    Attribute(
        "opacity_side",
        ("none", "left", "right"),
        "lung that holds the opacity (patient's side; the middle lobe on the left is the lingula)",
        views=("frontal",),
    ),
    Attribute(
        "pneumothorax",
        ("none", "left", "right"),
        "side of a pneumothorax: a lucent apical and lateral rim without lung markings outside the visible "
        "edge of the collapsed lung",
        views=("frontal",),
    ),
    Attribute(
        "device",
        ("none", "pacemaker", "central_line"),
        "support device: a left chest wall pacemaker with a lead to the right ventricle, or a right internal "
        "jugular central venous catheter ending in the superior vena cava",
    ),
)

#: the attribute(s) behind each class (No Finding is positive iff none of the others is).
CLASS_ATTRIBUTES: dict[str, tuple[str, ...]] = {
    "Cardiomegaly": ("heart_size",),
    "Pleural Effusion": ("effusion_side", "effusion_size"),
    "Lung Opacity": ("opacity_lobe", "opacity_side"),
    "Pneumothorax": ("pneumothorax",),
    "Support Devices": ("device",),
}
_ABSENT = {"heart_size": "normal"}  # every other attribute is absent when "none"

_Y_HALF_WIDTH = 0.8  # the lateral view shows y in [-0.8, 0.8]: the chest is less deep than it is wide


def absent_value(name: str) -> str:
    """The value of cxr attribute ``name`` that means "no finding" (``normal`` for heart_size, ``none`` otherwise)."""
    return _ABSENT.get(name, "none")


def label_from_attributes(attributes: Mapping[str, str]) -> tuple[str, ...]:
    """The CheXpert-style label tuple implied by a complete attribute dict.

    Returns:
        the positive class names in :data:`CXR_CLASSES` order; ``("No Finding",)`` when no
        finding is present.
    """
    positive = [c for c, names in CLASS_ATTRIBUTES.items() if attributes[names[0]] != absent_value(names[0])]
    return tuple(positive) if positive else ("No Finding",)


def study_identifiers(seed: int, index: int) -> dict[str, Any]:
    """MIMIC-style identifiers of case ``index`` of dataset ``seed``, unique within a seed.

    ``subject_id`` is 8 digits in 10000000..19999999 (folders ``p10``..``p19`` as in MIMIC),
    ``study_id`` 8 digits in 50000000..59999999, and each view's ``dicom_id`` five dash-joined
    groups of 8 hex digits. Both integers are ``index`` times a number coprime to 10^7 plus a
    seed offset, modulo 10^7, so they never repeat for ``index < 10^7``.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if index >= 10**7:
        raise ValueError(f"index must be < 10^7 for unique MIMIC-style ids, got {index}")
    subject = 10_000_000 + (index * 7_654_321 + seed * 1_000_003 + 32) % 10_000_000
    study = 50_000_000 + (index * 3_217_639 + seed * 2_000_029 + 414_267) % 10_000_000

    def dicom_id(view: str) -> str:
        digest = hashlib.sha256(f"medgen-monai/cxr/{seed}/{index}/{view}".encode()).hexdigest()
        return "-".join(digest[i : i + 8] for i in range(0, 40, 8))

    return {
        "patient_id": str(subject),
        "study_id": str(study),
        "dicom_ids": {"frontal": dicom_id("frontal"), "lateral": dicom_id("lateral")},
    }


# ---------------------------------------------------------------------------------------------
# attribute drawing


def _finding_presence(name: str, fixed: Mapping[str, str], forced_label: tuple[str, ...] | None) -> bool | None:
    """Whether class ``name`` is forced present/absent by the label or by fixed attributes (None: free)."""
    names = CLASS_ATTRIBUTES[name]
    from_attributes = {fixed[a] != absent_value(a) for a in names if a in fixed}
    if len(from_attributes) > 1:
        raise ValueError(
            f"cxr: attributes { ({a: fixed[a] for a in names if a in fixed}) } contradict each other: "
            f"either all of {list(names)} are 'none' or none of them is"
        )
    from_label = None if forced_label is None else name in forced_label
    if from_attributes and from_label is not None and from_attributes != {from_label}:
        raise ValueError(
            f"cxr: label {list(forced_label or ())} {'includes' if from_label else 'excludes'} {name!r} but "
            f"attributes { ({a: fixed[a] for a in names if a in fixed}) } say the opposite"
        )
    if from_label is not None:
        return from_label
    return from_attributes.pop() if from_attributes else None


# ---------------------------------------------------------------------------------------------
# rendering helpers


@dataclass(frozen=True)
class _Grid:
    """Sampling of the scene for one output size ``(H, W)``.

    ``z`` ``(nz,)``, ``x`` ``(nx,)``, ``y`` ``(ny,)``: voxel-centre coordinates; ``pz`` ``(H,)``,
    ``px`` ``(W,)``, ``py`` ``(W,)``: pixel-centre coordinates of the frontal rows, frontal
    columns and lateral columns; ``up_*``: the linear interpolation matrices voxel -> pixel;
    ``nearest_*``: the voxel index of each pixel (nearest neighbour, for masks).
    """

    height: int
    width: int
    z: np.ndarray
    x: np.ndarray
    y: np.ndarray
    pz: np.ndarray
    px: np.ndarray
    py: np.ndarray
    up_z: np.ndarray
    up_x: np.ndarray
    up_y: np.ndarray
    nearest_z: np.ndarray
    nearest_x: np.ndarray
    nearest_y: np.ndarray


def _centres(n: int, half_width: float) -> np.ndarray:
    return ((np.arange(n, dtype=np.float32) + 0.5) * (2 * half_width / n) - half_width).astype(np.float32)


def _nearest_index(n_out: int, n_in: int) -> np.ndarray:
    """``(n_out,)`` index of the input cell that holds each output cell's centre."""
    return np.minimum(((np.arange(n_out) + 0.5) * n_in / n_out).astype(np.int64), n_in - 1)


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int) -> _Grid:
    nz, nx = max(16, height // 2), max(16, width // 2)
    ny = nx
    return _Grid(
        height=height,
        width=width,
        z=_centres(nz, 1.0),
        x=_centres(nx, 1.0),
        y=_centres(ny, _Y_HALF_WIDTH),
        pz=_centres(height, 1.0),
        px=_centres(width, 1.0),
        py=_centres(width, _Y_HALF_WIDTH),
        up_z=interp_matrix(height, nz),
        up_x=interp_matrix(width, nx),
        up_y=interp_matrix(width, ny),
        nearest_z=_nearest_index(height, nz),
        nearest_x=_nearest_index(width, nx),
        nearest_y=_nearest_index(width, ny),
    )


def _splat(rows: np.ndarray, cols: np.ndarray, weights: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Bilinear splat of weighted points at fractional pixel positions into a float32 image of ``shape``.

    Points are clipped to a one-pixel ring around the image, which is cut off afterwards, so
    points outside the image deposit nothing inside it.
    """
    height, width = shape
    padded_width = width + 2
    rows = np.clip(rows, -1.0, float(height)) + 1.0
    cols = np.clip(cols, -1.0, float(width)) + 1.0
    r0, c0 = np.floor(rows), np.floor(cols)
    fc = cols - c0
    lower = (rows - r0) * weights  # the share of the next row
    upper = weights - lower
    base = (r0 * padded_width + c0).astype(np.int64)
    index = np.concatenate([base, base + 1, base + padded_width, base + padded_width + 1])
    share = np.concatenate([upper - upper * fc, upper * fc, lower - lower * fc, lower * fc])
    canvas = np.bincount(index, weights=share, minlength=(height + 3) * padded_width)[: (height + 2) * padded_width]
    return canvas.reshape(height + 2, padded_width)[1:-1, 1:-1].astype(np.float32)


def _blur(image: np.ndarray) -> np.ndarray:
    """``image`` ``(H, W)`` blurred by a separable [1, 2, 1] / 4 kernel (edges replicated)."""
    for axis in (0, 1):
        image = np.moveaxis(image, axis, 0)
        out = image * 0.5
        out[1:] += 0.25 * image[:-1]
        out[:-1] += 0.25 * image[1:]
        out[0] += 0.25 * image[0]
        out[-1] += 0.25 * image[-1]
        image = np.moveaxis(out, 0, axis)
    return image


def _catmull_rom(points: np.ndarray, samples_per_segment: int) -> np.ndarray:
    """Smooth curve through ``points`` ``(K, 3)``; returns ``((K - 1) * samples_per_segment + 1, 3)``."""
    padded = np.vstack([points[:1], points, points[-1:]])
    p0, p1, p2, p3 = padded[:-3, None], padded[1:-2, None], padded[2:-1, None], padded[3:, None]  # (K-1, 1, 3)
    t = np.linspace(0, 1, samples_per_segment, endpoint=False)[None, :, None]
    curve = 0.5 * (
        2 * p1 + (-p0 + p2) * t + (2 * p0 - 5 * p1 + 4 * p2 - p3) * t**2 + (-p0 + 3 * p1 - 3 * p2 + p3) * t**3
    )
    return np.vstack([curve.reshape(-1, 3), points[-1:]])


@dataclass(frozen=True)
class _Case:
    """Every random number the rendering of one case uses, drawn in a fixed order whatever the
    attributes are, so that changing one attribute leaves the rest of the picture unchanged."""

    rotation: float  # radians about the vertical axis
    thorax: float  # thorax scale
    fat: float  # soft tissue outside the rib cage
    inspiration: float  # diaphragm shift (+ = lower, deeper inspiration)
    heart: np.ndarray  # (3,) jitter of the heart size
    lung_density: float
    effusion: np.ndarray  # (4,) level / meniscus jitter
    opacity: np.ndarray  # (5,) centre jitter (3), radius, density
    collapse: float  # pneumothorax: fraction of the lung size kept
    device: np.ndarray  # (6,) device path jitter
    exposure: float
    contrast: float
    noise_sigma: float
    rib_phase: float
    age: int
    sex: str
    study_date: str
    study_time: str


def _draw_case(rng: np.random.Generator) -> _Case:
    """All nuisance and shape jitter of one case from a single vector of uniforms (one generator call)."""
    u = rng.random(40)
    jitter = (2 * u[20:38] - 1).astype(np.float32)  # uniform on [-1, 1)

    def between(i: int, low: float, high: float) -> float:
        return float(low + (high - low) * u[i])

    clock = int(u[7] * 86_400_000)  # milliseconds since midnight
    return _Case(
        rotation=between(0, -0.09, 0.09),
        thorax=between(1, 0.9, 1.04),
        fat=between(2, 0.04, 0.15),
        inspiration=between(3, -0.06, 0.06),
        heart=jitter[0:3],
        lung_density=between(4, 0.16, 0.22),
        effusion=jitter[3:7],
        opacity=jitter[7:12],
        collapse=between(5, 0.5, 0.64),
        device=jitter[12:18],
        exposure=float(np.exp(between(6, -0.12, 0.12))),
        contrast=between(8, 2.0, 2.6),
        noise_sigma=between(9, 0.006, 0.022),
        rib_phase=between(10, 0.0, 1.0),
        age=int(np.clip(62 + 17 * 1.7 * (u[11] + u[12] + u[13] - 1.5), 18, 95)),  # roughly normal(62, 17)
        sex="F" if u[14] < 0.47 else "M",
        study_date=f"{2110 + int(u[15] * 100)}{1 + int(u[16] * 12):02d}{1 + int(u[17] * 28):02d}",
        study_time=f"{clock // 3_600_000:02d}{clock // 60_000 % 60:02d}{clock // 1000 % 60:02d}.{clock % 1000:03d}",
    )


_LUNG_CENTRE_X, _LUNG_RADII = 0.40, (0.36, 0.50, 0.95)  # |x| of the centre; x, y radii; apex height above z = 0.15
_LUNG_TAPER_Z = 0.15  # the lungs have their full cross-section below this height
_DOME = {"right": 0.37, "left": 0.43}  # the right hemidiaphragm sits higher
_CAGE = (0.80, 0.56, 0.02)  # rib-cage ellipse: x radius, y radius, y centre


def _side_sign(side: str) -> float:
    """+1 for the patient's left (+x), -1 for the right."""
    return 1.0 if side == "left" else -1.0


class _Scene:
    """Patient-frame sampling of the volume for one case and helpers that fill 3D masks cheaply.

    ``x``, ``y``: ``(nx, ny)`` patient coordinates of the voxel columns (rotation and thorax scale
    applied); ``z``: ``(nz,)`` increasing heights. Structures that span few slices are evaluated
    on their slab of slices only.
    """

    def __init__(self, grid: _Grid, case: _Case) -> None:
        cos_r, sin_r = np.cos(case.rotation), np.sin(case.rotation)
        xs, ys = grid.x[:, None], grid.y[None, :]
        t = case.thorax
        self.x = ((xs * cos_r - ys * sin_r) / t).astype(np.float32)
        self.y = ((xs * sin_r + ys * cos_r) / t).astype(np.float32)
        self.z = (grid.z / t).astype(np.float32)
        self._z_list = self.z.tolist()  # bisect on a list is much cheaper than np.searchsorted for one value
        self.shape = (len(self.z), *self.x.shape)

    def slab(self, low: float, high: float) -> slice:
        """The slices with ``low < z < high``."""
        return slice(bisect.bisect_right(self._z_list, low), bisect.bisect_left(self._z_list, high))

    def prism(self, section: np.ndarray, low: float = -np.inf, high: float = np.inf) -> np.ndarray:
        """Bool volume: the 2D ``section`` ``(nx, ny)`` repeated on the slices with ``low < z < high``."""
        out = np.zeros(self.shape, dtype=bool)
        out[self.slab(low, high)] = section
        return out

    def ellipse(self, cx: float, cy: float, rx: float, ry: float, x: np.ndarray | None = None) -> np.ndarray:
        """``(nx, ny)`` normalised squared radius of an ellipse in the x-y plane (< 1 inside); ``x`` replaces
        the x coordinates (e.g. ``|x|`` for a mirrored pair)."""
        dx = ((self.x if x is None else x) - cx) * (1.0 / rx)
        dy = (self.y - cy) * (1.0 / ry)
        dx *= dx
        dy *= dy
        dx += dy
        return dx

    def ellipsoid_slab(
        self, centre: Sequence[float], radii: Sequence[float], x: np.ndarray | None = None
    ) -> tuple[slice, np.ndarray]:
        """An axis-aligned ellipsoid as ``(slab, inside)``: its slices and a bool ``(slab length, nx, ny)``."""
        slab = self.slab(centre[2] - radii[2], centre[2] + radii[2])
        dz = (self.z[slab] - centre[2]) * (1.0 / radii[2])
        inside = self.ellipse(centre[0], centre[1], radii[0], radii[1], x)[None] + (dz * dz)[:, None, None] < 1.0
        return slab, inside

    def ellipsoid(
        self,
        centre: Sequence[float],
        radii: Sequence[float],
        out: np.ndarray | None = None,
        x: np.ndarray | None = None,
    ) -> np.ndarray:
        """Bool volume of an axis-aligned ellipsoid (or'ed into ``out`` when given)."""
        out = np.zeros(self.shape, dtype=bool) if out is None else out
        slab, inside = self.ellipsoid_slab(centre, radii, x)
        out[slab] |= inside
        return out

    def between(self, bottom_of_top: np.ndarray, top_of_bottom: np.ndarray) -> np.ndarray:
        """Bool volume of the voxels with ``bottom_of_top < z < top_of_bottom`` (both ``(nx, ny)``)."""
        z = self.z[:, None, None]
        return (z > bottom_of_top[None]) & (z < top_of_bottom[None])


def _build_volume(grid: _Grid, attributes: Mapping[str, str], case: _Case) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """The attenuation volume and the 3D region masks.

    Returns:
        ``V`` ``(nz, nx, ny)`` float32 and ``regions``: name -> ``(nz, nx, ny)`` bool for ``lungs``,
        ``heart``, ``effusion``, ``opacity``, ``pneumothorax``, and ``lung_tissue`` (float32 0/1).
    """
    scene = _Scene(grid, case)
    x, y, z = scene.x, scene.y, scene.z
    left = x > 0  # (nx, ny): the patient's left half
    cage_x, cage_y, cage_c = _CAGE

    # torso with rounded shoulders (narrower on the top slices), plus the neck
    torso_x, torso_y = cage_x + case.fat + 0.04, cage_y + 0.8 * case.fat + 0.03
    body = scene.prism(scene.ellipse(0, cage_c, torso_x, torso_y) < 1.0)
    top = scene.slab(-np.inf, -0.74)
    shoulder = np.sqrt(1 - np.minimum((-0.74 - z[top]) / 0.3, 1) ** 2) * torso_x + 1e-3
    body[top] = (x[None] / shoulder[:, None, None]) ** 2 + (((y - cage_c) / torso_y) ** 2)[None] < 1
    body |= scene.prism(scene.ellipse(0, -0.02, 0.21, 0.24) < 1.0, high=-0.5)

    # heart (ventricles + right atrium); enlarged scales it up and to the left
    enlarged = attributes["heart_size"] == "enlarged"
    grow = (1.38 if enlarged else 1.0) * (1 + 0.05 * case.heart)
    shift = 0.05 if enlarged else 0.0
    heart = scene.ellipsoid((0.13 + shift, -0.10, 0.27 + shift / 2), (0.30 * grow[0], 0.31 * grow[1], 0.24 * grow[2]))
    scene.ellipsoid((-0.06, -0.06, 0.22), (0.15 * grow[0], 0.24, 0.17 * grow[2]), out=heart)
    # superior mediastinum, descending aorta, aortic knob, hila
    solid = scene.prism(scene.ellipse(0, -0.04, 0.12, 0.40) < 1.0, high=0.3)
    solid |= scene.prism(scene.ellipse(0.09, 0.30, 0.065, 0.065) < 1.0, low=-0.42)
    scene.ellipsoid((0.12, 0.08, -0.42), (0.09, 0.10, 0.075), out=solid)
    scene.ellipsoid((0.19, 0.0, -0.08), (0.07, 0.09, 0.10), out=solid, x=np.abs(x))  # both hila
    solid |= heart

    # lungs: a full cross-section below _LUNG_TAPER_Z, tapering to the apex, cut below by the hemidiaphragm only,
    # which gives deep, sharp costophrenic angles (laterally and posteriorly)
    lung_section = ((np.abs(x) - _LUNG_CENTRE_X) / _LUNG_RADII[0]) ** 2 + ((y - 0.03) / _LUNG_RADII[1]) ** 2
    lung_section[np.abs(x) < 0.05] = np.inf
    apex = np.where(lung_section < 1, _LUNG_TAPER_Z - _LUNG_RADII[2] * np.sqrt(np.maximum(1 - lung_section, 0)), np.inf)
    u, v = (np.abs(x) - 0.36) / 0.38, y / 0.5
    dome = np.where(left, _DOME["left"], _DOME["right"]) + case.inspiration
    diaphragm = dome + 0.24 * u**2 + 0.10 * v**2 + 0.12 * np.maximum(v, 0)
    lungs = scene.between(apex, diaphragm) & ~solid

    # pleural fluid: the region of the lung below a surface that rises laterally (meniscus) and posteriorly
    no_surface = np.full(x.shape, np.inf, dtype=np.float32)
    surface = no_surface.copy()
    fluid_levels: dict[str, float] = {}  # side -> medial surface height of a large effusion
    sides = {"bilateral": ("right", "left"), "left": ("left",), "right": ("right",)}.get(
        attributes["effusion_side"], ()
    )
    for k, side in enumerate(sides):
        if attributes["effusion_size"] == "small":
            level, meniscus, posterior = _DOME[side] + 0.12 + 0.02 * case.effusion[k], 0.08, 0.05
        else:
            level = _DOME[side] - 0.26 + 0.05 * case.effusion[k]
            meniscus, posterior = 0.34 + 0.05 * case.effusion[2], 0.08
        lateral = np.minimum(np.maximum((np.abs(x) - 0.1) / 0.65, 0), 1)
        side_surface = level + case.inspiration - meniscus * lateral**2 - posterior * np.minimum(np.maximum(v, 0), 1)
        if attributes["effusion_size"] == "large":
            fluid_levels[side] = level + case.inspiration
        on_side = left if side == "left" else ~left
        surface[on_side] = side_surface[on_side]
    effusion = lungs & scene.between(surface, no_surface) if sides else np.zeros(scene.shape, dtype=bool)

    # focal consolidation in one lobe: a ball around the lobe's usual centre, clipped to the lobe
    opacity = np.zeros(scene.shape, dtype=bool)
    opacity_density = 0.85 + 0.07 * float(case.opacity[4])
    if attributes["opacity_lobe"] != "none":
        side, lobe, j = attributes["opacity_side"], attributes["opacity_lobe"], case.opacity
        sign = _side_sign(side)
        centre, radius = {
            "upper": ((0.40, -0.02, -0.40), 0.36),
            "middle": ((0.34, -0.26, 0.08), 0.32),
            "lower": ((0.50, 0.22, 0.28), 0.38),
        }[lobe]
        if lobe == "lower" and side in fluid_levels:
            # the fluid would hide a basal consolidation: show the part of the lobe above the fluid
            centre = (centre[0], centre[1], min(centre[2], fluid_levels[side] - 0.02))
        centre = (sign * (centre[0] + 0.04 * j[0]), centre[1] + 0.04 * j[1], centre[2] + 0.04 * j[2])
        radius *= 1 + 0.12 * float(j[3])
        oblique = 0.12 - 0.9 * y  # the oblique fissure: the lower lobe lies behind / below it
        horizontal = np.full(x.shape, -0.04, dtype=np.float32)  # horizontal fissure (right), lingula boundary (left)
        top, bottom = {
            "lower": (oblique, no_surface),
            "middle": (horizontal, oblique),
            "upper": (no_surface * -1, np.minimum(oblique, horizontal)),
        }[lobe]
        on_side = (left if sign > 0 else ~left)[None]
        slab, ball = scene.ellipsoid_slab(centre, (radius, radius, radius))
        zs = z[slab, None, None]
        ball &= lungs[slab] & on_side & (zs > top[None]) & (zs < bottom[None]) & ~effusion[slab]
        opacity[slab] = ball

    # pneumothorax: the lung shrinks towards its hilum; upright, the air collects at the apex and laterally.
    # A consolidated lobe is stiff and keeps its volume, so the air goes around it.
    air = np.zeros(scene.shape, dtype=bool)
    collapsed = pleural_line = air
    if attributes["pneumothorax"] != "none":
        sign, c = _side_sign(attributes["pneumothorax"]), case.collapse
        centre = (sign * (0.08 + 0.32 * c), 0.03, 0.2 + 0.1 * (1 - c))
        radii = (_LUNG_RADII[0] * c, _LUNG_RADII[1] * (0.35 + 0.6 * c), 0.75 * c)
        kept = scene.ellipsoid(centre, radii)
        lung_side = lungs & (left if sign > 0 else ~left)[None] & ~effusion & ~opacity
        air = lung_side & ~kept
        collapsed = lung_side & kept  # the collapsed lung is denser than the aerated one
        # its surface (the visceral pleura) shows as a thin white line where the rays graze it
        inner = scene.ellipsoid(centre, (radii[0] - 0.05, radii[1] - 0.05, radii[2] - 0.05))
        pleural_line = collapsed & ~inner

    lung_tissue = lungs & ~(effusion | air | opacity)
    # lung parenchyma: denser towards the hila (vessels); the hilar factor is separable (x-y times z)
    hilar = np.exp(-((np.abs(x) - 0.2) ** 2 + y**2) / 0.08).astype(np.float32)
    hilar_z = np.exp(-((z + 0.05) ** 2) / 0.3).astype(np.float32)
    lung_density = np.float32(case.lung_density) * (1 + 0.9 * hilar[None] * hilar_z[:, None, None])
    if attributes["pneumothorax"] != "none":
        lung_density += np.float32(0.3 * case.lung_density) * collapsed + np.float32(0.5) * pleural_line

    volume = body.astype(np.float32)
    volume -= lung_tissue * (1.0 - lung_density)
    if attributes["pneumothorax"] != "none":
        volume -= air  # pleural air attenuates nothing
    if attributes["opacity_lobe"] != "none":
        volume -= opacity * np.float32(1.0 - opacity_density)  # consolidation: nearly water density
    # spine: vertebral bodies (bone) with darker disc spaces
    vertebra = 1.8 * (0.6 + 0.4 * np.cos(2 * np.pi * (z - 0.03 * case.rib_phase) / 0.14)) ** 2
    volume += (scene.ellipse(0, 0.40, 0.09, 0.10) < 1.0)[None] * vertebra.astype(np.float32)[:, None, None]
    # air in the trachea and the stomach bubble
    trachea = scene.slab(-np.inf, -0.22)
    volume[trachea] -= (scene.ellipse(0, -0.06, 0.04, 0.045) < 1.0).astype(np.float32)
    slab, stomach = scene.ellipsoid_slab((0.36, 0.05, _DOME["left"] + case.inspiration + 0.17), (0.13, 0.13, 0.08))
    volume[slab] -= stomach
    regions = {
        "lungs": lungs,
        "heart": heart,
        "effusion": effusion,
        "opacity": opacity,
        "pneumothorax": air,
        "lung_tissue": lung_tissue.astype(np.float32),
    }
    return volume, regions


def _cage_crossings(
    p0x: np.ndarray, p0y: np.ndarray, dx: np.ndarray, dy: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Where rays ``p0 + s d`` (patient x-y plane, ``d`` unit) cross the rib-cage ellipse.

    Args:
        p0x, p0y: a point of each ray, any broadcastable shape ``S``; dx, dy: the ray directions.

    Returns:
        ``hit`` ``S`` (bool) and, stacked over the two crossings ``(2, *S)``: the cosine of the
        angle around the cage (``+1`` posterior, ``-1`` anterior), ``|x|`` at the crossing, and the
        obliquity factor ``1 / |cos(incidence)|`` (clipped at 3: a tangent ray sees a bright margin).
    """
    a, b, c = _CAGE
    qx, qy = p0x, p0y - c
    qa = (dx / a) ** 2 + (dy / b) ** 2
    qb = 2 * (qx * dx / a**2 + qy * dy / b**2)
    qc = (qx / a) ** 2 + (qy / b) ** 2 - 1
    disc = qb**2 - 4 * qa * qc
    root = np.sqrt(np.maximum(disc, 0))
    s = np.stack([(-qb - root) / (2 * qa), (-qb + root) / (2 * qa)])
    x, y = qx + s * dx, qy + s * dy
    gx, gy = x / a**2, y / b**2
    obliquity = np.sqrt(gx**2 + gy**2) / np.maximum(np.abs(gx * dx + gy * dy), 1e-6)
    return disc > 0, np.clip(y / b, -1, 1), np.abs(x), np.minimum(obliquity, 3.0)


def _rib_projections(grid: _Grid, case: _Case) -> np.ndarray:
    """Line integrals through the ribs ``(2, H, W)`` for the frontal and lateral views.

    The rib cage is a thin elliptic-cylinder shell whose bone is modulated in bands that descend
    from posterior to anterior (ribs slope down towards the front); each ray crosses the shell
    twice, so both crossings of both views are evaluated at once.
    """
    t = case.thorax
    cos_r, sin_r = np.cos(case.rotation), np.sin(case.rotation)
    # frontal: rays along scanner y at scanner x = column; lateral: along scanner x at scanner y = column
    p0x = np.stack([grid.px * cos_r, -grid.py * sin_r]) / t  # (2 views, W)
    p0y = np.stack([grid.px * sin_r, grid.py * cos_r]) / t
    dx, dy = np.array([[-sin_r], [cos_r]]), np.array([[cos_r], [sin_r]])
    hit, cos_angle, abs_x, obliquity = _cage_crossings(p0x, p0y, dx, dy)  # (2 crossings, 2 views, W)
    zq = grid.pz / t
    # ribs exist from the apex to the lower chest
    height_window = (np.clip((zq + 0.84) / 0.1, 0, 1) * np.clip((0.8 - zq) / 0.15, 0, 1)).astype(np.float32)
    row_angle = 2 * np.pi * (zq / 0.2 + case.rib_phase)  # (H,)
    col_angle = (2 * np.pi * 0.42 / 2 / 0.2) * (1 - cos_angle)  # (2, 2, W): anterior rib ends lie lower
    # anterior ends are cartilage (invisible) near the sternum; anterior ribs are fainter than posterior
    weight = np.where(cos_angle < -0.6, np.clip((abs_x - 0.3) / 0.25, 0, 1), 1.0) * (0.5 + 0.25 * (cos_angle + 1))
    weight *= hit * obliquity * np.array([[0.035], [0.02]])  # lateral: both sides superimpose, keep them faint
    # band = (0.5 + 0.5 cos(row - col))^4 with cos(a - b) = cos a cos b + sin a sin b: outer products only
    row_cos = (0.5 * np.cos(row_angle)).astype(np.float32)[:, None]  # (H, 1)
    row_sin = (0.5 * np.sin(row_angle)).astype(np.float32)[:, None]
    col_cos = np.cos(col_angle).astype(np.float32)[..., None, :]  # (2, 2, 1, W)
    col_sin = np.sin(col_angle).astype(np.float32)[..., None, :]
    band = row_cos * col_cos
    band += row_sin * col_sin
    band += np.float32(0.5)
    band *= band
    band *= band
    band *= weight.astype(np.float32)[..., None, :]
    ribs = band[0] + band[1]  # (2 views, H, W)
    ribs *= height_window[:, None]
    return ribs


def _to_pixels(grid: _Grid, points: np.ndarray, case: _Case, view: str) -> tuple[np.ndarray, np.ndarray]:
    """Fractional (row, column) of patient-frame points ``(K, 3)`` in ``view``."""
    t = case.thorax
    cos_r, sin_r = np.cos(case.rotation), np.sin(case.rotation)
    rows = (points[:, 2] * t + 1.0) * (grid.height / 2) - 0.5
    if view == "frontal":
        xs = (points[:, 0] * cos_r + points[:, 1] * sin_r) * t  # patient -> scanner (inverse of _build_volume)
        cols = (xs + 1.0) * (grid.width / 2) - 0.5
    else:
        ys = (points[:, 1] * cos_r - points[:, 0] * sin_r) * t
        cols = (ys + _Y_HALF_WIDTH) * (grid.width / (2 * _Y_HALF_WIDTH)) - 0.5
    return rows, cols


@dataclass(frozen=True)
class _Tubes:
    """Thin 3D tubes (clavicles, wires) as one point list for splatting.

    ``points`` ``(N, 3)`` patient frame, densely sampled along each tube; ``strength`` ``(N,)``
    attenuation x cross-section of the tube a point belongs to, 0 on the last point of each tube
    (so no segment joins two tubes).
    """

    points: np.ndarray
    strength: np.ndarray

    @staticmethod
    def join(parts: Sequence[tuple[np.ndarray, float]]) -> _Tubes:
        strengths = []
        for curve, strength in parts:
            s = np.full(len(curve), strength)
            s[-1] = 0.0
            strengths.append(s)
        return _Tubes(np.vstack([c for c, _ in parts]), np.concatenate(strengths))


def _samples_per_segment(height: int, width: int) -> int:
    """Catmull-Rom samples per control segment so that steps stay under ~0.5 pixel (segments <= 0.4 units)."""
    return max(12, int(0.4 * max(height, width)))


def _tube_projections(grid: _Grid, case: _Case, tubes: _Tubes) -> np.ndarray:
    """Projections ``(2 views, H, W)`` of thin tubes: each point carries ``strength x step length``.

    Both views are splatted (bilinearly) side by side on one canvas, 4 empty columns apart so
    nothing bleeds across, and blurred once by [1, 2, 1] / 4 in each direction.
    """
    height, width, gap = grid.height, grid.width, 4
    frontal_rows, frontal_cols = _to_pixels(grid, tubes.points, case, "frontal")
    lateral_rows, lateral_cols = _to_pixels(grid, tubes.points, case, "lateral")
    rows = np.concatenate([frontal_rows, lateral_rows])
    cols = np.concatenate([frontal_cols, lateral_cols + (width + gap)])
    strength = np.concatenate([tubes.strength, tubes.strength])  # 0 on each tube's last point: no joining step
    weights = np.zeros_like(rows)
    weights[:-1] = strength[:-1] * np.hypot(np.diff(rows), np.diff(cols)) * (height / 2.0)  # per pixel area
    inside = np.concatenate(
        [(frontal_cols > -1) & (frontal_cols < width), (lateral_cols > -1) & (lateral_cols < width)]
    )
    canvas = _blur(_splat(rows[inside], cols[inside], weights[inside], (height, 2 * width + gap)))
    return np.stack([canvas[:, :width], canvas[:, width + gap :]])


@functools.lru_cache(maxsize=16)
def _clavicles(samples: int) -> tuple[tuple[np.ndarray, float], ...]:
    """Both clavicles (bone rods from the sternum to the shoulders), each as three strands across its thickness."""
    control = np.array([[0.1, -0.50, -0.66], [0.3, -0.45, -0.71], [0.55, -0.25, -0.76], [0.74, -0.02, -0.86]])
    curve = _catmull_rom(control, samples)
    strands = []
    for mirror in (1.0, -1.0):
        for dz in (-0.025, 0.0, 0.025):
            strands.append((curve * np.array([mirror, 1.0, 1.0]) + np.array([0.0, 0.0, dz]), 0.05 / 3))
    return tuple(strands)


def _device_parts(
    attributes: Mapping[str, str], case: _Case, samples: int
) -> tuple[list[tuple[np.ndarray, float]], np.ndarray | None]:
    """The device's wires ``[(curve (K, 3), strength)]`` and the pacemaker generator's centre ``(3,)`` (or None)."""
    device = attributes["device"]
    j = case.device
    enlarged = attributes["heart_size"] == "enlarged"
    apex = np.array([0.30 + (0.14 if enlarged else 0.0), -0.33, 0.40 + (0.06 if enlarged else 0.0)])
    if device == "pacemaker":
        generator = np.array([0.50 + 0.05 * j[0], -0.64 - 0.6 * case.fat, -0.56 + 0.05 * j[1]])
        lead = np.array(
            [
                generator + [-0.04, 0.02, 0.0],
                [0.30 + 0.04 * j[2], -0.48, -0.68],  # loop up towards the subclavian vein
                [0.08, -0.30, -0.62],
                [-0.07, -0.17, -0.42],  # superior vena cava
                [-0.09, -0.17, -0.10],
                [-0.10, -0.20, 0.14],  # right atrium
                [0.08 + 0.04 * j[3], -0.30, 0.30],
                apex + [0.0, 0.0, 0.03 * j[4]],  # right ventricular apex
            ]
        )
        return [(_catmull_rom(lead, samples), 0.035)], generator
    if device == "central_line":
        tip_z = -0.22 + 0.07 * j[0]
        line = np.array(
            [
                [-0.22 + 0.03 * j[1], -0.15, -1.05],  # right internal jugular vein, from above the image
                [-0.16, -0.15, -0.80],
                [-0.09, -0.16, -0.58],
                [-0.07, -0.17, -0.42],
                [-0.07 + 0.01 * j[2], -0.17, tip_z],  # tip in the superior vena cava
            ]
        )
        return [(_catmull_rom(line, samples), 0.045)], None
    return [], None


def _generator_projection(grid: _Grid, case: _Case, view: str, centre: np.ndarray) -> np.ndarray:
    """Line integral ``(H, W)`` through the pacemaker generator, a flat rounded metal can."""
    rows, cols = _to_pixels(grid, centre[None], case, view)
    half = np.array([0.08, 0.025, 0.06]) * case.thorax  # x (wide), y (flat), z (tall)
    if view == "frontal":
        along, across, column_size = half[1], half[0], 2.0 / grid.width
    else:
        along, across, column_size = half[0], half[1], 2 * _Y_HALF_WIDTH / grid.width
    rr = ((np.arange(grid.height) - rows[0]) * (2.0 / grid.height) / half[2])[:, None] ** 4
    cc = ((np.arange(grid.width) - cols[0]) * column_size / across)[None, :] ** 4
    return (np.sqrt(np.clip(1 - rr - cc, 0, 1)) * 2 * along * 100.0).astype(np.float32)  # metal: far denser than bone


_MASK_REGIONS = ("lungs", "heart", "effusion", "opacity", "pneumothorax")


def _project_layers(grid: _Grid, layers: Sequence[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Line integrals of ``K`` volumes ``(nz, nx, ny)`` along y (frontal) and x (lateral), at voxel resolution.

    Sums over an axis are done as matrix-vector products, which are several times faster than
    ``ndarray.sum`` on these small arrays.

    Returns:
        ``frontal`` ``(K, nz, nx)`` and ``lateral`` ``(K, nz, ny)``, in frame units.
    """
    nz, nx, ny = layers[0].shape
    stack = np.empty((len(layers), nz, nx, ny), dtype=np.float32)
    for k, layer in enumerate(layers):
        stack[k] = layer
    frontal = stack.reshape(-1, ny) @ np.full(ny, 2 * _Y_HALF_WIDTH / ny, dtype=np.float32)
    frontal = frontal.reshape(len(layers), nz, nx)
    lateral = np.full(nx, 2.0 / nx, dtype=np.float32) @ stack
    return frontal, lateral


def _silhouettes(grid: _Grid, projection: np.ndarray, view: str) -> np.ndarray:
    """Bool ``(K, H, W)``: where the projections ``(K, nz, n)`` of region masks are non-zero (nearest neighbour)."""
    cols = grid.nearest_x if view == "frontal" else grid.nearest_y
    return np.take(np.take(projection > 0, grid.nearest_z, axis=1), cols, axis=2)  # take: cheaper than fancy indexing


# ---------------------------------------------------------------------------------------------
# reports

_NORMAL_IMPRESSION = (
    "No acute cardiopulmonary process.",
    "No acute cardiopulmonary abnormality.",
    "No acute intrathoracic process.",
    "Normal chest radiograph.",
)
_LOBE_NAMES = {
    ("upper", "right"): "right upper lobe",
    ("upper", "left"): "left upper lobe",
    ("middle", "right"): "right middle lobe",
    ("middle", "left"): "lingula",
    ("lower", "right"): "right lower lobe",
    ("lower", "left"): "left lower lobe",
}


def _capitalised(text: str) -> str:
    return text[0].upper() + text[1:]


def _effusion_sentences(side: str, size: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(findings phrasings, impression phrasings) of a pleural effusion of ``size`` on ``side``."""
    both = side == "bilateral"
    phrase = f"{size} bilateral pleural effusions" if both else f"{size} {side} pleural effusion"
    there = f"There are {phrase}." if both else f"There is a {phrase}."
    if size == "small":
        angle = "both costophrenic angles" if both else f"the {side} costophrenic angle"
        findings = (
            there,
            f"Blunting of {angle}, consistent with {'' if both else 'a '}{phrase}.",
            f"{_capitalised(phrase)}, with fluid in the posterior costophrenic sulcus on the lateral view.",
        )
    else:
        obscured = "obscure both hemidiaphragms" if both else f"obscures the {side} hemidiaphragm"
        findings = (
            there,
            f"{_capitalised(phrase)} with {'menisci' if both else 'a meniscus'}.",
            f"{_capitalised(phrase)} {obscured}.",
        )
    impression = (f"{_capitalised(phrase)}.", f"{_capitalised(phrase.replace(' pleural', ''))}.")
    return findings, impression


def _report(rng: np.random.Generator, attributes: Mapping[str, str]) -> str:
    """A MIMIC-style report (FINDINGS and IMPRESSION) written from the attributes only."""
    a = attributes
    findings: list[str] = []
    impression: list[str] = []

    if a["device"] == "pacemaker":
        findings.append(
            pick(
                rng,
                (
                    "A left chest wall pacemaker is present with its lead terminating in the right ventricle.",
                    "Left-sided pacemaker with a single lead in the right ventricle.",
                    "There is a left pectoral pacing device; the lead tip projects over the right ventricular apex.",
                ),
            )
        )
        impression.append(pick(rng, ("Pacemaker in standard position.", "Left-sided pacemaker in place.")))
    elif a["device"] == "central_line":
        findings.append(
            pick(
                rng,
                (
                    "A right internal jugular central venous catheter terminates in the superior vena cava.",
                    "Right IJ line with its tip in the SVC.",
                    "There is a right internal jugular catheter whose tip projects over the superior vena cava.",
                ),
            )
        )
        impression.append(
            pick(
                rng,
                (
                    "Right internal jugular line terminates in the SVC.",
                    "Central venous catheter in appropriate position.",
                ),
            )
        )

    if a["opacity_lobe"] == "none":
        findings.append(
            pick(
                rng,
                (
                    "The lungs are clear.",
                    "No focal consolidation.",
                    "There is no focal airspace opacity.",
                    "The lungs are clear without focal consolidation.",
                ),
            )
        )
    else:
        where = _LOBE_NAMES[(a["opacity_lobe"], a["opacity_side"])]
        findings.append(
            pick(
                rng,
                (
                    f"There is a focal airspace opacity in the {where}.",
                    f"Consolidation is seen in the {where}.",
                    f"Patchy opacity in the {where}.",
                    f"Opacity in the {where}, seen on both views.",
                ),
            )
        )
        impression.append(
            pick(
                rng,
                (
                    f"{_capitalised(where)} opacity.",
                    f"Focal opacity in the {where}.",
                    f"{_capitalised(where)} consolidation.",
                ),
            )
        )

    effusion, pneumothorax = a["effusion_size"] != "none", a["pneumothorax"] != "none"
    if not effusion and not pneumothorax and rng.random() < 0.5:
        findings.append(
            pick(
                rng,
                (
                    "No pleural effusion or pneumothorax.",
                    "There is no pleural effusion or pneumothorax.",
                    "No effusion or pneumothorax is seen.",
                ),
            )
        )
    else:
        if effusion:
            effusion_findings, effusion_impression = _effusion_sentences(a["effusion_side"], a["effusion_size"])
            findings.append(pick(rng, effusion_findings))
            impression.append(pick(rng, effusion_impression))
        else:
            findings.append(
                pick(
                    rng,
                    (
                        "No pleural effusion.",
                        "No effusion is seen.",
                        "The costophrenic angles are sharp.",
                        "There is no pleural effusion.",
                    ),
                )
            )
        if pneumothorax:
            side = a["pneumothorax"]
            findings.append(
                pick(
                    rng,
                    (
                        f"There is a {side} pneumothorax.",
                        f"A {side} apical pneumothorax is present; the visceral pleural line is visible.",
                        f"{side.capitalize()}-sided pneumothorax with partial collapse of the {side} lung.",
                    ),
                )
            )
            impression.append(
                pick(rng, (f"{side.capitalize()} pneumothorax.", f"{side.capitalize()}-sided pneumothorax."))
            )
        else:
            findings.append(pick(rng, ("No pneumothorax.", "There is no pneumothorax.", "No pneumothorax is seen.")))

    if a["heart_size"] == "enlarged":
        findings.append(
            pick(
                rng,
                (
                    "The heart is enlarged.",
                    "The cardiac silhouette is enlarged.",
                    "Cardiomegaly is present.",
                    "The heart size is enlarged.",
                ),
            )
        )
        after_device = 0 if a["device"] == "none" else 1
        impression.insert(after_device, pick(rng, ("Cardiomegaly.", "Enlarged cardiac silhouette.")))
    else:
        findings.append(
            pick(
                rng,
                (
                    "The heart size is normal.",
                    "The cardiac silhouette is within normal limits.",
                    "Normal heart size.",
                    "Heart size is normal.",
                ),
            )
        )
    if rng.random() < 0.6:
        findings.append(
            pick(
                rng,
                (
                    "The mediastinal and hilar contours are normal.",
                    "Mediastinal contours are unremarkable.",
                    "The hilar and mediastinal contours are within normal limits.",
                ),
            )
        )
    if rng.random() < 0.3:
        findings.append(pick(rng, ("No acute osseous abnormality.", "The osseous structures are unremarkable.")))

    if label_from_attributes(a) in (("No Finding",), ("Support Devices",)):  # nothing acute to report
        # "Normal chest radiograph" does not fit a study with a device in it
        impression.append(pick(rng, _NORMAL_IMPRESSION[:3] if a["device"] != "none" else _NORMAL_IMPRESSION))
    if len(impression) > 1 and rng.random() < 0.5:
        impression_text = "\n".join(f"{i}. {line}" for i, line in enumerate(impression, 1))
    else:
        impression_text = " ".join(impression)
    return f"FINDINGS:\n\n{' '.join(findings)}\n\nIMPRESSION:\n\n{impression_text}"


# ---------------------------------------------------------------------------------------------


class CXRPhantom(Phantom):
    """Chest radiograph phantom: PA frontal + lateral views of one 3D scene, CheXpert-style labels.

    Images are uint8 ``(H, W)`` per view (default 64x64). Masks (bool ``(H, W)``) give each
    region's silhouette per view: ``lungs_*``, ``heart_*``, ``effusion_*``, ``opacity_*``,
    ``pneumothorax_*`` with ``*`` in ``frontal`` / ``lateral``. ``meta`` holds MIMIC-style ids
    (:func:`study_identifiers`), age, sex, study date/time, view positions and the rendered
    cardiothoracic ratio.

    Label: the tuple of positive :data:`CXR_CLASSES`, derived from the attributes
    (:func:`label_from_attributes`). A forced label is the complete set of positives:
    ``("Pleural Effusion",)`` means an effusion and nothing else.
    """

    name = "cxr"
    classes = CXR_CLASSES
    attributes = CXR_ATTRIBUTES
    views = ("frontal", "lateral")
    spatial_dims = 2
    channels = 1
    default_size = (64, 64)
    multilabel = True
    layout = "mimic_cxr"

    # ---- attributes ------------------------------------------------------------------------
    def draw(
        self, rng: np.random.Generator, label: Sequence[str] | None, fixed: Mapping[str, str]
    ) -> tuple[tuple[str, ...], dict[str, str]]:
        """Draw ``(label, attributes)`` with MIMIC-like prevalences and correlations.

        Prevalences (free draws): device 38% (pacemaker 13%, central line 25%); cardiomegaly 18%,
        50% with a pacemaker; effusion 15%, +30% with cardiomegaly (then often bilateral), +10%
        with a central line; opacity 20%, +15% with an effusion (then mostly lower lobe, same side);
        pneumothorax 6%, +12% with a central line. About a third of cases are No Finding.
        """
        forced = None
        if label is not None:
            forced = tuple(label)
            if not forced:
                raise ValueError("cxr: label must name at least one class; use ('No Finding',) for a normal study")
            if "No Finding" in forced and len(forced) > 1:
                raise ValueError(f"cxr: 'No Finding' cannot be combined with other classes, got {list(forced)}")
        u = rng.random(16)  # a fixed number of draws, whatever is forced

        def decide(name: str, probability: float, ui: float) -> bool:
            given = _finding_presence(name, fixed, forced)
            return bool(ui < probability) if given is None else given

        attrs: dict[str, str] = {}

        def value(name: str, options: Sequence[str], probabilities: Sequence[float], ui: float) -> str:
            attrs[name] = fixed[name] if name in fixed else choice(ui, options, probabilities)
            return attrs[name]

        # device first: it raises the chance of cardiomegaly (pacemaker) and pneumothorax (central line)
        if decide("Support Devices", 0.38, u[0]):
            value("device", ("pacemaker", "central_line"), (0.34, 0.66), u[1])
        else:
            attrs["device"] = "none"
        pacemaker, line = attrs["device"] == "pacemaker", attrs["device"] == "central_line"
        enlarged = decide("Cardiomegaly", 0.5 if pacemaker else 0.18, u[2])
        attrs["heart_size"] = "enlarged" if enlarged else "normal"

        if decide("Pleural Effusion", 0.15 + 0.3 * enlarged + 0.1 * line, u[3]):
            sides = (0.2, 0.3, 0.5) if enlarged else (0.3, 0.4, 0.3)
            value("effusion_side", ("left", "right", "bilateral"), sides, u[4])
            value("effusion_size", ("small", "large"), (0.6, 0.4), u[5])
        else:
            attrs["effusion_side"] = attrs["effusion_size"] = "none"
        effusion = attrs["effusion_side"] != "none"

        if decide("Lung Opacity", 0.2 + 0.15 * effusion, u[6]):
            lobes = (0.2, 0.15, 0.65) if effusion else (0.3, 0.2, 0.5)
            value("opacity_lobe", ("upper", "middle", "lower"), lobes, u[7])
            same_side = attrs["effusion_side"] if attrs["effusion_side"] in ("left", "right") else None
            probabilities = (0.5, 0.5) if same_side is None else ((0.7, 0.3) if same_side == "left" else (0.3, 0.7))
            value("opacity_side", ("left", "right"), probabilities, u[8])
        else:
            attrs["opacity_lobe"] = attrs["opacity_side"] = "none"

        if decide("Pneumothorax", 0.06 + 0.12 * line, u[9]):
            value("pneumothorax", ("left", "right"), (0.4, 0.6) if line else (0.5, 0.5), u[10])
        else:
            attrs["pneumothorax"] = "none"

        ordered = {a.name: attrs[a.name] for a in self.attributes}
        derived = label_from_attributes(ordered)
        if forced is not None and set(derived) != set(forced):  # defensive: decide() already enforces this
            raise ValueError(f"cxr: label {list(forced)} is inconsistent with attributes {ordered}")
        return derived, ordered

    # ---- images ----------------------------------------------------------------------------
    def render(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], size: tuple[int, ...]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        """Render both views of one scene.

        Returns:
            ``images``: view -> uint8 ``(H, W)``; ``masks``: ``<region>_<view>`` -> bool ``(H, W)``;
            ``meta``: age, sex, study date/time, view positions, cardiothoracic ratio.
        """
        height, width = size
        grid = _grid(height, width)
        case = _draw_case(rng)
        # zero-mean, unit-variance uniform noise: as good as Gaussian here and several times cheaper to draw
        unit = np.float32(12**0.5)
        markings = (rng.random((2, max(4, height // 4), max(4, width // 4)), dtype=np.float32) - 0.5) * unit
        noise = (rng.random((2, height, width), dtype=np.float32) - 0.5) * unit

        volume, regions = _build_volume(grid, attributes, case)
        # the regions known to be empty (absent findings) are not projected
        present = ["lungs", "heart"] + [
            r
            for r, a in (("effusion", "effusion_size"), ("opacity", "opacity_lobe"), ("pneumothorax", "pneumothorax"))
            if attributes[a] != "none"
        ]
        projections = _project_layers(grid, [volume, regions["lung_tissue"]] + [regions[r] for r in present])
        samples = _samples_per_segment(height, width)
        wires, generator = _device_parts(attributes, case, samples)
        tubes = _tube_projections(grid, case, _Tubes.join(list(_clavicles(samples)) + wires))
        ribs = _rib_projections(grid, case)
        mh, mw = markings.shape[1:]
        images, masks = {}, {}
        for k, view in enumerate(self.views):
            columns = grid.up_x if view == "frontal" else grid.up_y
            line_integral, tissue = grid.up_z @ projections[k][:2] @ columns.T  # (2, H, W)
            # lung markings: a smooth random texture weighted by the lung parenchyma on the ray, so a
            # pneumothorax rim (no parenchyma) shows none
            texture = interp_matrix(height, mh) @ markings[k] @ interp_matrix(width, mw).T
            line_integral += 0.6 * case.lung_density * tissue * texture
            line_integral += ribs[k]
            line_integral += tubes[k]
            if generator is not None:
                line_integral += _generator_projection(grid, case, view, generator)
            images[view] = self._display(line_integral, case, view, noise[k])
            silhouettes = dict(zip(present, _silhouettes(grid, projections[k][2:], view)))
            for region in _MASK_REGIONS:
                masks[f"{region}_{view}"] = silhouettes.get(region, np.zeros((height, width), dtype=bool))

        heart_cols = np.nonzero(masks["heart_frontal"].any(axis=0))[0]
        lung_cols = np.nonzero(masks["lungs_frontal"].any(axis=0))[0]
        ctr = (np.ptp(heart_cols) + 1) / (np.ptp(lung_cols) + 1) if len(heart_cols) and len(lung_cols) else float("nan")
        meta = {
            "age": case.age,
            "sex": case.sex,
            "study_date": case.study_date,
            "study_time": case.study_time,
            "view_positions": {"frontal": "PA", "lateral": "LL"},
            "cardiothoracic_ratio": round(float(ctr), 3),
        }
        return images, masks, meta

    @staticmethod
    def _display(line_integral: np.ndarray, case: _Case, view: str, noise: np.ndarray) -> np.ndarray:
        """Film curve ``L^g / (L^g + L50^g)`` plus detector noise -> uint8 ``(H, W)``."""
        half_level = (0.78 if view == "frontal" else 1.12) * case.exposure
        lg = np.power(np.maximum(line_integral, 0) / half_level, case.contrast)
        brightness = lg / (1 + lg) + case.noise_sigma * noise
        return np.clip(np.rint(brightness * 255), 0, 255).astype(np.uint8)

    # ---- text ------------------------------------------------------------------------------
    def describe(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], meta: Mapping[str, Any]
    ) -> str:
        """A MIMIC-style report: ``FINDINGS:`` and ``IMPRESSION:`` sections, several phrasings per fact."""
        return _report(rng, attributes)

    # ---- identifiers ---------------------------------------------------------------------------
    def identifiers(self, seed: int, index: int) -> dict[str, Any]:
        """MIMIC-style ids: ``patient_id`` (subject_id), ``study_id`` and ``dicom_ids`` per view
        (:func:`study_identifiers`)."""
        return study_identifiers(seed, index)
