"""Prostate MRI phantom (stands in for PI-CAI): one axial T2-weighted-like volume per case.

Coordinates
    Images are float32 ``(X, Y, Z)`` arrays in RAS voxel order, as MONAI's
    ``Orientation(axcodes="RAS")`` returns them: voxel index ``i`` grows towards the patient's
    **Right** (+x), ``j`` towards **Anterior** (+y), ``k`` towards **Superior** (+z). So a
    left-sided lesion sits at *low* ``i`` (negative world x), the rectum at low ``j`` and the
    bladder at high ``k``. The anatomy is drawn in millimetres in this RAS world frame, whose
    origin is the centre of the field of view; voxel ``(i, j, k)`` has its centre at
    ``((i - (X - 1) / 2) * sx, (j - (Y - 1) / 2) * sy, (k - (Z - 1) / 2) * sz)`` mm.
    Files keep this convention end to end: the PI-CAI ``.mha`` (:mod:`medgen_monai.data.picai`, stored
    LPS), the NIfTI and DICOM outputs of :class:`medgen_monai.io.OutputWriter` all read back as the same
    RAS array through :func:`medgen_monai.io.volumes.load_volume`, the one loader for volumes, so the
    audit networks (trained on these in-memory arrays) see files the way they were trained.

Spacing
    The field of view is fixed in millimetres (about 67-77 mm in-plane, 70-90 mm along z: a crop
    around the gland, as prostate pipelines crop PI-CAI volumes) and the grid by ``size``: at the
    default 64x64x32 the in-plane spacing is drawn in [1.05, 1.20] mm and the slice spacing in
    [2.2, 2.8] mm (PI-CAI's 0.5-0.8 mm / 3-4 mm, resampled so that a 6 mm lesion spans several voxels);
    other sizes scale the spacing by ``64 / X``, ``64 / Y`` and ``32 / Z``, so a
    structure has the same physical size at every grid size. The spacing is kept in
    ``meta["spacing"]`` ``(sx, sy, sz)`` and written to the ``.mha`` header by
    :mod:`medgen_monai.data.picai`.

Rendering model
    Painter's algorithm on one intensity volume: periprostatic fat (bright) fills the pelvis;
    the obturator internus muscles (dark) lie laterally, the pubic symphysis anteriorly, the
    rectum (dark wall, darker lumen) posteriorly and curving back as it rises; the bladder
    (very bright urine in a dark wall) sits superior-anterior to the gland, the seminal vesicles
    (bright) superior-posterior. The gland is a superellipsoid (flat apex and base) whose
    peripheral zone (posterior/lateral shell) is bright and whose transition zone
    (anterior-central, larger in older men: benign prostatic hyperplasia) is intermediate, with
    the dark anterior fibromuscular stroma in front. A lesion is an ellipsoid blended in at
    ``zone level * contrast[PI-RADS]``, with an edge that is wide (ill-defined) for PI-RADS 2 and
    sharp for 4-5; it is clipped to the gland unless it shows extraprostatic extension (a dark
    bulge into the bright fat). Each membership is soft over about one voxel (partial volume).
    Then a smooth multiplicative bias field (+-10 %) and Rician noise
    ``|s + n1 + i n2|`` are applied. Every step is vectorised numpy on separable coordinate terms.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from .base import Attribute, Phantom, choice, pick

__all__ = [
    "ProstatePhantom",
    "PROSTATE_CLASSES",
    "PROSTATE_ATTRIBUTES",
    "SIZE_BINS_MM",
    "study_identifiers",
    "label_from_attributes",
]

#: class names in the fixed order of the integer label; csPCa iff PI-RADS >= 3.
PROSTATE_CLASSES: tuple[str, ...] = ("negative", "csPCa")

#: the documented diameter range (mm) of each size bin; the phantom draws diameters well inside
#: them (whole millimetres 6-8, 11-13 and 17-22) so that neighbouring bins stay apart in voxel units
#: although the voxel spacing varies from case to case.
SIZE_BINS_MM: dict[str, tuple[float, float]] = {"small": (6.0, 9.0), "medium": (10.0, 14.0), "large": (15.0, 22.0)}
_DRAWN_DIAMETER = {"small": (7, 9), "medium": (11, 13), "large": (17, 22)}

PROSTATE_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "lesion",
        ("absent", "present"),
        "whether one focal T2-hypointense lesion is drawn inside (or bulging out of) the gland",
    ),
    Attribute(
        "zone",
        ("none", "peripheral", "transition"),
        "zone of the lesion: in the bright posterolateral peripheral-zone shell, or in the intermediate "
        "anterior-central transition zone",
    ),
    Attribute(
        "side",
        ("none", "left", "right"),
        "patient side of the lesion centre (left = low X index = negative RAS x), at least 7 mm off the midline",
    ),
    Attribute(
        "level",
        ("none", "apex", "mid", "base"),
        "craniocaudal third of the gland that holds the lesion centre: apex (inferior), mid-gland, base (superior, "
        "next to the bladder)",
    ),
    Attribute(
        "size",
        ("none", "small", "medium", "large"),
        "largest lesion diameter: small 6-9 mm (drawn 7-9), medium 10-14 mm (drawn 11-13), large 15-22 mm "
        "(drawn 17-22); the drawn value is meta['diameter_mm']",
    ),
    Attribute(
        "pirads",
        ("none", "2", "3", "4", "5"),
        "PI-RADS v2.1 score shown by the lesion's T2 signal: 2 faint and ill-defined (84 % of its zone's signal, "
        "wide edge), 3 mildly hypointense (64 %), 4 markedly hypointense and circumscribed (36 %, < 15 mm), "
        "5 as 4 but darker (20 %) and >= 15 mm or bulging through the capsule",
    ),
)

_PIRADS = ("2", "3", "4", "5")
#: lesion signal as a fraction of its zone's signal, and its edge half-width in mm
_CONTRAST = {"2": 0.84, "3": 0.64, "4": 0.36, "5": 0.20}
_EDGE_MM = {"2": 2.6, "3": 1.3, "4": 0.7, "5": 0.7}

#: joint prior of the lesion state: absent, then PI-RADS 2..5 (about 37 % csPCa)
_STATE_PRIOR = {"none": 0.40, "2": 0.23, "3": 0.12, "4": 0.14, "5": 0.11}
#: P(size | PI-RADS); PI-RADS 4 is < 15 mm by definition, PI-RADS 5 mostly >= 15 mm
_SIZE_GIVEN_PIRADS = {
    "2": {"small": 0.30, "medium": 0.50, "large": 0.20},
    "3": {"small": 0.35, "medium": 0.45, "large": 0.20},
    "4": {"small": 0.35, "medium": 0.65, "large": 0.0},
    "5": {"small": 0.05, "medium": 0.20, "large": 0.75},
}
#: P(zone | PI-RADS): about 70 % of lesions are peripheral; benign-looking (PI-RADS 2) nodules are
#: more often transitional (BPH)
_ZONE_GIVEN_PIRADS = {
    "2": {"peripheral": 0.60, "transition": 0.40},
    "3": {"peripheral": 0.70, "transition": 0.30},
    "4": {"peripheral": 0.78, "transition": 0.22},
    "5": {"peripheral": 0.78, "transition": 0.22},
}
#: P(level | zone): peripheral-zone cancers favour the apex and mid-gland, transition-zone ones mid and base
_LEVEL_GIVEN_ZONE = {
    "peripheral": {"apex": 0.35, "mid": 0.40, "base": 0.25},
    "transition": {"apex": 0.15, "mid": 0.45, "base": 0.40},
}
_LESION_ATTRIBUTES = ("zone", "side", "level", "size", "pirads")
_LEVEL_OFFSET = {"apex": -0.62, "mid": 0.0, "base": 0.62}  # lesion centre, in gland half-heights


def label_from_attributes(attributes: Mapping[str, str]) -> str:
    """``"csPCa"`` if the lesion's PI-RADS score is 3, 4 or 5, else ``"negative"``."""
    return "csPCa" if attributes.get("pirads") in ("3", "4", "5") else "negative"


def study_identifiers(seed: int, index: int) -> dict[str, str]:
    """PI-CAI-style ids of case ``index`` of dataset ``seed``, unique within a seed.

    ``patient_id`` has 5 digits (10000..99999) and ``study_id`` 7 digits (1000000..9999999), as in
    PI-CAI. Both are ``index`` times a number coprime to the id range plus a seed offset, modulo the
    range, so they never repeat for ``index < 90000``.
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if index >= 90_000:
        raise ValueError(f"index must be < 90000 for unique 5-digit PI-CAI patient ids, got {index}")
    patient = 10_000 + (index * 7_919 + seed * 1_013 + 1) % 90_000
    study = 1_000_000 + (index * 3_217_639 + seed * 2_000_029 + 1) % 9_000_000
    return {"patient_id": str(patient), "study_id": str(study)}


# ---------------------------------------------------------------------------------------------
# rendering


@dataclass(frozen=True)
class _Case:
    """Every random number one case's rendering uses, drawn in a fixed order whatever the attributes
    are, so that changing one attribute leaves the rest of the volume unchanged."""

    spacing_xy: float  # mm, at the default 64 grid
    spacing_z: float  # mm, at the default 32 slices
    gland_centre: tuple[float, float, float]  # mm, RAS
    gland_radii: tuple[float, float, float]  # mm
    bph: float  # transition-zone scale
    fat: float
    muscle: float
    pz: float
    tz: float
    urine: float
    bladder: tuple[float, float, float]  # radii, mm
    rectum_shift: float  # mm
    level_jitter: float  # gland half-heights
    angle: float  # radians off the posterior (PZ) or anterior (TZ, extraprostatic) midline
    diameter_u: float  # where in its bin the diameter falls
    aspect: np.ndarray  # (2,) lesion y and z radii factors
    tz_jitter: float  # mm
    bias: np.ndarray  # (5,) bias-field coefficients
    noise_sigma: float
    age: int
    psa_u: float
    isup_u: float
    histopath_u: float
    date: str
    center: str


def _draw_case(rng: np.random.Generator) -> _Case:
    """All nuisance and shape jitter of one case from a single vector of uniforms."""
    u = rng.random(40)

    def between(i: int, low: float, high: float) -> float:
        return float(low + (high - low) * u[i])

    age = int(np.clip(66 + 7 * 1.7 * (u[20] + u[21] + u[22] - 1.5), 45, 88))  # roughly normal(66, 7)
    bph = 0.85 + 0.25 * float(np.clip((age - 50) / 35, 0, 1)) + 0.05 * (u[23] - 0.5)
    return _Case(
        spacing_xy=between(0, 1.05, 1.20),
        spacing_z=between(1, 2.2, 2.8),
        gland_centre=(between(2, -2.0, 2.0), between(3, 1.0, 7.0), between(4, -17.0, -11.0)),
        gland_radii=(between(5, 20.0, 25.0) * (0.95 + 0.1 * bph), between(6, 14.0, 18.0), between(7, 16.0, 20.0)),
        bph=bph,
        fat=between(8, 0.74, 0.80),
        muscle=between(9, 0.20, 0.28),
        pz=between(10, 0.85, 0.92),
        tz=between(11, 0.52, 0.58),
        urine=between(12, 1.25, 1.4),
        bladder=(between(13, 30.0, 40.0), between(14, 20.0, 28.0), between(15, 14.0, 20.0)),
        rectum_shift=between(16, -3.0, 3.0),
        level_jitter=between(17, -0.06, 0.06),
        angle=between(18, np.radians(30), np.radians(55)),
        diameter_u=float(u[19]),
        aspect=(0.82 + 0.16 * u[24:26]).astype(np.float32),
        tz_jitter=between(26, -2.0, 2.0),
        bias=(0.1 * (2 * u[27:32] - 1)).astype(np.float32),
        noise_sigma=between(32, 0.02, 0.035),
        age=age,
        psa_u=float(u[33]),
        isup_u=float(u[34]),
        histopath_u=float(u[35]),
        date=f"{2012 + int(u[36] * 10)}-{1 + int(u[37] * 12):02d}-{1 + int(u[38] * 28):02d}",
        center=choice(float(u[39]), ("RUMC", "PCNN", "ZGT"), (0.6, 0.25, 0.15)),
    )


def _soft(q: np.ndarray, edge: float) -> np.ndarray:
    """Soft membership from a normalised squared radius ``q`` (1 on the surface): 1 inside, 0 outside,
    linear across ``1 +- edge`` (``edge`` ~ 2 x edge half-width / radius)."""
    return np.clip((1.0 - q) * (0.5 / edge) + 0.5, 0.0, 1.0)


def _paint(volume: np.ndarray, alpha: np.ndarray, value: float | np.ndarray) -> None:
    """``volume += alpha * (value - volume)`` in place (over-painting with partial coverage)."""
    volume += alpha * (value - volume)


def _terms(axis: np.ndarray, centre: float, radius: float, power: int = 2) -> np.ndarray:
    return ((axis - np.float32(centre)) * np.float32(1.0 / radius)) ** power


def _ellipsoid_q(
    x: np.ndarray, y: np.ndarray, z: np.ndarray, centre: Sequence[float], radii: Sequence[float], z_power: int = 2
) -> np.ndarray:
    """Normalised squared radius ``(X, Y, Z)`` float32 of an axis-aligned (super)ellipsoid; ``x``, ``y``,
    ``z`` are the broadcastable voxel-centre coordinates ``(X, 1, 1)``, ``(1, Y, 1)``, ``(1, 1, Z)``."""
    return _terms(x, centre[0], radii[0]) + _terms(y, centre[1], radii[1]) + _terms(z, centre[2], radii[2], z_power)


def _side_sign(side: str) -> float:
    """RAS sign of a patient side: the patient's right is +x, the left -x."""
    return 1.0 if side == "right" else -1.0


def _diameter(size: str, u: float) -> float | None:
    if size == "none":
        return None
    low, high = _DRAWN_DIAMETER[size]
    return float(low + min(int(u * (high - low + 1)), high - low))  # whole millimetres, as reports give them


def _lesion_geometry(
    attributes: Mapping[str, str],
    case: _Case,
    diameter: float,
    tz_centre: np.ndarray,
    tz_radii: np.ndarray,
    epe: bool,
    spacing: Sequence[float],
) -> tuple[np.ndarray, np.ndarray]:
    """Centre ``(3,)`` and radii ``(3,)`` (mm, RAS) of the lesion."""
    gx, gy, gz = case.gland_centre
    rx, ry, rz = case.gland_radii
    radius = diameter / 2
    radii = np.array([radius, radius * case.aspect[0], radius * case.aspect[1]])
    # at least about one voxel thick along each axis, so that a small lesion is never lost between voxel centres
    radii = np.maximum(radii, 0.55 * np.asarray(spacing))
    sign = _side_sign(attributes["side"])
    zc = gz + (_LEVEL_OFFSET[attributes["level"]] + case.level_jitter) * rz
    section = float(np.sqrt(max(1.0 - ((zc - gz) / rz) ** 4, 0.2)))  # the gland's cross-section scale there
    if attributes["zone"] == "transition" and not epe:
        x = sign * max(7.0, 0.38 * tz_radii[0])
        return np.array([gx + x, tz_centre[1] + case.tz_jitter, zc]), radii
    # along a ray from the gland axis: posterolateral for the peripheral zone, anterolateral for a
    # transition-zone lesion that breaks through the capsule
    dy = -np.cos(case.angle) if attributes["zone"] == "peripheral" else np.cos(case.angle)
    dx = sign * np.sin(case.angle)
    to_capsule = 1.0 / np.sqrt((dx / (rx * section)) ** 2 + (dy / (ry * section)) ** 2)
    depth = 0.25 * radius if epe else min(0.9 * radius + 1.5, 0.7 * to_capsule)
    distance = max(to_capsule - depth, 7.0 / abs(dx))  # keep the centre >= 7 mm off the midline
    return np.array([gx + distance * dx, gy + distance * dy, zc]), radii


class ProstatePhantom(Phantom):
    """Axial T2-weighted prostate MRI phantom with PI-RADS-scored lesions; label csPCa iff PI-RADS >= 3.

    Images: ``images["t2w"]`` float32 ``(X, Y, Z)`` in RAS voxel order (see the module docstring),
    values about 0-1.5 (urine brightest). Masks (bool ``(X, Y, Z)``): ``gland``,
    ``peripheral_zone``, ``transition_zone``, ``lesion`` (empty when absent), ``bladder``,
    ``rectum``. ``meta``: ``patient_id``, ``study_id`` (:func:`study_identifiers`), ``spacing``
    ``(sx, sy, sz)`` mm, ``diameter_mm`` (``None`` without a lesion), ``extraprostatic_extension``,
    ``lesion_centre_mm`` (RAS world, ``None`` without a lesion), ``age``, ``psa`` (ng/mL), ``psad``,
    ``prostate_volume`` (mL), ``mri_date``, ``center``, ``histopath_type``, ``lesion_GS``,
    ``lesion_ISUP``, ``case_ISUP`` (PI-CAI marksheet fields, consistent with the label).
    """

    name = "prostate"
    classes = PROSTATE_CLASSES
    attributes = PROSTATE_ATTRIBUTES
    views = ("t2w",)
    spatial_dims = 3
    channels = 1
    default_size = (64, 64, 32)
    layout = "picai"

    # ---- attributes ------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator, label: str | None, fixed: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """Draw ``(label, attributes)`` with PI-CAI-like prevalences and correlations.

        Free draws: a lesion in 60 % of cases, scored PI-RADS 2 / 3 / 4 / 5 in 23 / 12 / 14 / 11 % of
        all cases, so about 37 % are csPCa (PI-RADS >= 3). Size given PI-RADS: 4 is always < 15 mm
        (small 35 %, medium 65 %), 5 is large in 75 % of cases (otherwise it bulges through the
        capsule), 2 and 3 are mostly small or medium. Zone: about 70 % peripheral (60 % for PI-RADS 2,
        78 % for 4-5). Level given zone: peripheral apex / mid / base 35 / 40 / 25 %, transition
        15 / 45 / 40 %. Side: left or right with equal odds. Forced values condition the others
        (e.g. a forced ``size="large"`` makes PI-RADS 5 likely and 4 impossible).

        Raises:
            ValueError: the label and the fixed attributes contradict each other (e.g. ``csPCa`` with
                ``lesion="absent"`` or ``pirads="2"``; ``lesion="absent"`` with a zone; ``pirads="4"``
                with ``size="large"``).
        """
        u = rng.random(8)  # a fixed number of draws, whatever is forced
        given_lesion = {fixed["lesion"] == "present"} if "lesion" in fixed else set()
        given_lesion |= {fixed[a] != "none" for a in _LESION_ATTRIBUTES if a in fixed}
        if len(given_lesion) > 1:
            raise ValueError(
                f"prostate: attributes {dict(fixed)} contradict each other: with lesion='absent' every one of "
                f"{list(_LESION_ATTRIBUTES)} is 'none', with lesion='present' none of them is"
            )
        if label == "csPCa" and given_lesion == {False}:
            raise ValueError(
                f"prostate: label 'csPCa' needs a lesion (PI-RADS 3-5), but attributes {dict(fixed)} have none"
            )
        if fixed.get("pirads") == "4" and fixed.get("size") == "large":
            raise ValueError(
                "prostate: pirads='4' means a lesion < 15 mm; it cannot have size='large' (use pirads='5')"
            )
        if label is not None and "pirads" in fixed and label_from_attributes(fixed) != label:
            raise ValueError(
                f"prostate: label {label!r} contradicts pirads={fixed['pirads']!r} (csPCa iff PI-RADS is 3, 4 or 5)"
            )

        def weight_of(state: str) -> float:
            if given_lesion and (state != "none") not in given_lesion:
                return 0.0
            if label is not None and label_from_attributes({"pirads": state}) != label:
                return 0.0
            if "pirads" in fixed and fixed["pirads"] != state:
                return 0.0
            weight = _STATE_PRIOR[state]
            if state != "none":
                if "size" in fixed:
                    weight *= _SIZE_GIVEN_PIRADS[state][fixed["size"]]
                if "zone" in fixed:
                    weight *= _ZONE_GIVEN_PIRADS[state][fixed["zone"]]
            return weight

        states = tuple(_STATE_PRIOR)
        weights = [weight_of(s) for s in states]
        if sum(weights) == 0:  # defensive: the checks above name the usual contradictions
            raise ValueError(f"prostate: label {label!r} and attributes {dict(fixed)} contradict each other")
        pirads = choice(u[0], states, weights)
        if pirads == "none":
            attrs = {"lesion": "absent", **{a: "none" for a in _LESION_ATTRIBUTES}}
        else:
            attrs = {"lesion": "present", "pirads": pirads}
            sizes = _SIZE_GIVEN_PIRADS[pirads]
            attrs["size"] = fixed.get("size") or choice(u[1], tuple(sizes), tuple(sizes.values()))
            zones = dict(_ZONE_GIVEN_PIRADS[pirads])
            if "level" in fixed:  # a forced level makes the zone that favours it more likely
                zones = {z: p * _LEVEL_GIVEN_ZONE[z][fixed["level"]] for z, p in zones.items()}
            attrs["zone"] = fixed.get("zone") or choice(u[2], tuple(zones), tuple(zones.values()))
            levels = _LEVEL_GIVEN_ZONE[attrs["zone"]]
            attrs["level"] = fixed.get("level") or choice(u[3], tuple(levels), tuple(levels.values()))
            attrs["side"] = fixed.get("side") or ("left" if u[4] < 0.5 else "right")
        ordered = {a.name: attrs[a.name] for a in self.attributes}
        return label_from_attributes(ordered), ordered

    # ---- images ----------------------------------------------------------------------------
    def render(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], size: tuple[int, ...]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        """Render the T2-weighted volume.

        Returns:
            ``images``: ``{"t2w": float32 (X, Y, Z)}`` (RAS voxel order); ``masks``: name -> bool
            ``(X, Y, Z)``; ``meta``: spacing, lesion geometry and the PI-CAI clinical fields.
        """
        nx, ny, nz = size
        case = _draw_case(rng)
        noise = rng.standard_normal((2, nx, ny, nz), dtype=np.float32)
        spacing = (
            round(case.spacing_xy * 64 / nx, 4),
            round(case.spacing_xy * 64 / ny, 4),
            round(case.spacing_z * 32 / nz, 4),
        )
        x = ((np.arange(nx, dtype=np.float32) - (nx - 1) / 2) * spacing[0])[:, None, None]
        y = ((np.arange(ny, dtype=np.float32) - (ny - 1) / 2) * spacing[1])[None, :, None]
        z = ((np.arange(nz, dtype=np.float32) - (nz - 1) / 2) * spacing[2])[None, None, :]
        edge_mm = 0.6 * max(spacing[:2])  # partial volume over about one voxel

        gx, gy, gz = case.gland_centre
        rx, ry, rz = case.gland_radii
        volume = np.full((nx, ny, nz), case.fat, dtype=np.float32)

        # obturator internus muscles on both sides and the pubic symphysis in front (in-plane shapes)
        muscle_q = np.minimum(_terms(np.abs(x - gx), rx + 21.0, 8.0), 1e6) + _terms(y, gy, 30.0)
        _paint(volume, _soft(muscle_q, 2 * edge_mm / 8.0), case.muscle)
        pubis_q = _terms(x, gx, 13.0) + _terms(y, gy + ry + 13.0, 7.0) + _terms(z, gz - 4.0, 22.0, 4)
        _paint(volume, _soft(pubis_q, 2 * edge_mm / 7.0), 0.40)

        # rectum behind the gland, curving posteriorly as it rises
        rectum_y = gy - ry - 12.0 + case.rectum_shift - 0.18 * np.maximum(z - gz, 0)
        rectum_q = _terms(x, gx, 14.0) + ((y - rectum_y) * np.float32(1 / 10.5)) ** 2
        lumen_q = _terms(x, gx, 9.0) + ((y - rectum_y) * np.float32(1 / 5.5)) ** 2
        _paint(volume, _soft(rectum_q, 2 * edge_mm / 10.5), 0.32)
        _paint(volume, _soft(lumen_q, 2 * edge_mm / 5.5), 0.10)

        # seminal vesicles and bladder above the base
        vesicle_q = _terms(np.abs(x - gx), 14.0, 11.0) + _terms(y, gy - 0.55 * ry, 5.0) + _terms(z, gz + rz + 5.0, 5.5)
        _paint(volume, _soft(vesicle_q, 2 * edge_mm / 5.0), 1.05)
        bx, by, bz = case.bladder
        bladder_centre = (gx, gy + 6.0, gz + rz + bz + 2.0)
        wall_q = _ellipsoid_q(x, y, z, bladder_centre, (bx + 2.5, by + 2.5, bz + 2.5))
        _paint(volume, _soft(wall_q, 2 * edge_mm / by), 0.35)
        bladder_q = _ellipsoid_q(x, y, z, bladder_centre, (bx, by, bz))
        _paint(volume, _soft(bladder_q, 2 * edge_mm / by), case.urine)

        # the gland: peripheral-zone signal, then the transition zone and the anterior fibromuscular stroma
        gland_q = _ellipsoid_q(x, y, z, (gx, gy, gz), (rx, ry, rz), z_power=4)
        gland_a = _soft(gland_q, 2 * edge_mm / ry)
        # a dark capsule line sets the gland off from the periprostatic fat
        capsule_q = _ellipsoid_q(x, y, z, (gx, gy, gz), (rx + 1.6, ry + 1.6, rz + 1.6), z_power=4)
        _paint(volume, _soft(capsule_q, 2 * edge_mm / ry), 0.42)
        _paint(volume, gland_a, case.pz)
        tz_centre = np.array([gx, gy + 0.18 * ry, gz + 0.1 * rz])
        tz_radii = np.array([0.6 * rx, 0.56 * ry, 0.78 * rz]) * min(case.bph, 1.12)
        tz_q = _ellipsoid_q(x, y, z, tz_centre, tz_radii)
        tz_a = _soft(tz_q, 2 * edge_mm / tz_radii[1]) * gland_a
        _paint(volume, tz_a, case.tz)
        afms_q = _ellipsoid_q(x, y, z, (gx, gy + 0.95 * ry, gz), (0.5 * rx, 0.3 * ry, 0.9 * rz))
        afms_a = _soft(afms_q, 2 * edge_mm / (0.3 * ry)) * gland_a
        _paint(volume, afms_a, 0.33)

        lesion_mask = np.zeros((nx, ny, nz), dtype=bool)
        diameter = _diameter(attributes["size"], case.diameter_u)
        epe = attributes["pirads"] == "5" and attributes["size"] != "large"
        centre = None
        if attributes["lesion"] == "present" and diameter is not None:
            centre, radii = _lesion_geometry(attributes, case, diameter, tz_centre, tz_radii, epe, spacing)
            lesion_q = _ellipsoid_q(x, y, z, centre, radii)
            pirads = attributes["pirads"]
            lesion_a = _soft(lesion_q, 2 * max(_EDGE_MM[pirads], edge_mm) / radii[0])
            inside = gland_q < 1.0
            if not epe:
                lesion_a *= gland_a
            lesion_mask = (lesion_q < 1.0) & (inside | epe)
            zone_level = case.pz if attributes["zone"] == "peripheral" else case.tz
            _paint(volume, lesion_a, zone_level * _CONTRAST[pirads])

        # smooth multiplicative bias field over the field of view, then Rician noise
        half = np.float32(2.0 / max(nx * spacing[0], ny * spacing[1]))
        b = case.bias
        bias_x = 1.0 + b[0] * x * half + b[3] * (x * half) ** 2
        bias_y = b[1] * y * half + b[4] * (y * half) ** 2
        volume *= bias_x + bias_y + b[2] * z * np.float32(2.0 / (nz * spacing[2]))
        sigma = np.float32(case.noise_sigma)
        real = volume + sigma * noise[0]
        image = np.sqrt(real * real + (sigma * noise[1]) ** 2).astype(np.float32)

        gland = gland_q < 1.0
        transition = gland & (tz_q < 1.0)
        masks = {
            "gland": gland,
            "peripheral_zone": gland & ~transition & ~(afms_q < 1.0),
            "transition_zone": transition,
            "lesion": lesion_mask,
            "bladder": bladder_q < 1.0,
            "rectum": rectum_q < 1.0,
        }
        volume_ml = round(float(1.6 * np.pi * rx * ry * rz / 1000.0), 1)  # superellipsoid (z^4) volume
        meta = {
            "spacing": spacing,
            "diameter_mm": diameter,
            "extraprostatic_extension": bool(epe),
            "lesion_centre_mm": None if centre is None else tuple(round(float(c), 2) for c in centre),
            "gland_dimensions_mm": tuple(round(float(2 * r), 1) for r in case.gland_radii),
            "prostate_volume": volume_ml,
            **_clinical(case, str(label), attributes, volume_ml),
        }
        return {"t2w": image}, masks, meta

    # ---- text ------------------------------------------------------------------------------
    def describe(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], meta: Mapping[str, Any]
    ) -> str:
        """A PI-RADS v2.1 style report (``FINDINGS:`` and ``IMPRESSION:``), or ``""`` for about 15 % of
        cases (PI-CAI has no report for many studies)."""
        if rng.random() < 0.15:
            return ""
        return _report(rng, attributes, meta)

    # ---- identifiers ---------------------------------------------------------------------------
    def identifiers(self, seed: int, index: int) -> dict[str, Any]:
        """PI-CAI-style ``patient_id`` and ``study_id`` (:func:`study_identifiers`)."""
        return study_identifiers(seed, index)


def _clinical(case: _Case, label: str, attributes: Mapping[str, str], volume_ml: float) -> dict[str, Any]:
    """PI-CAI marksheet fields consistent with the label: PSA, PSA density, histopathology, ISUP grades."""
    cancer = label == "csPCa"
    # PSA grows with gland volume (benign) and with a significant cancer
    psa = round(float(0.08 * volume_ml * (0.6 + 1.2 * case.psa_u) + (4.0 + 10.0 * case.psa_u**2) * cancer + 1.0), 1)
    if cancer:
        isup = 2 + min(int(case.isup_u * 4), 3)  # ISUP 2-5
        histopath = choice(case.histopath_u, ("MRBx", "SysBx+MRBx", "RP"), (0.5, 0.3, 0.2))
    elif attributes["lesion"] == "present":  # a PI-RADS 2 finding: biopsied benign or ISUP 1, or followed up
        isup = 1 if case.isup_u < 0.3 else 0
        histopath = choice(case.histopath_u, ("", "SysBx", "MRBx"), (0.5, 0.3, 0.2))
    else:
        isup = 0
        histopath = choice(case.histopath_u, ("", "SysBx"), (0.7, 0.3))
    gleason = {0: "0+0", 1: "3+3", 2: "3+4", 3: "4+3", 4: "4+4", 5: "4+5"}[isup]
    biopsied = histopath != ""
    return {
        "age": case.age,
        "psa": psa,
        "psad": round(float(psa / volume_ml), 2),
        "mri_date": case.date,
        "center": case.center,
        "histopath_type": histopath,
        "lesion_GS": gleason if biopsied and attributes["lesion"] == "present" else ("0+0" if biopsied else "N/A"),
        "lesion_ISUP": str(isup) if biopsied and attributes["lesion"] == "present" else ("0" if biopsied else "N/A"),
        "case_ISUP": isup if biopsied or cancer else 0,
    }


# ---------------------------------------------------------------------------------------------
# reports


_ZONE_NAMES = {"peripheral": ("peripheral zone", "PZ"), "transition": ("transition zone", "TZ")}
_LEVEL_NAMES = {"apex": ("apex", "apical"), "mid": ("mid-gland", "mid-gland"), "base": ("base", "basal")}
_T2_LOOK = {
    "2": (
        "a faint, ill-defined area of mild T2 hypointensity",
        "an ill-defined, mildly hypointense area",
        "a faint, indistinct T2-hypointense area",
    ),
    "3": (
        "a mildly hypointense focus with moderately defined margins",
        "a moderately defined area of mild T2 hypointensity",
        "a mildly T2-hypointense, moderately circumscribed focus",
    ),
    "4": (
        "a circumscribed, markedly hypointense lesion",
        "a focal, markedly T2-hypointense lesion",
        "a well-defined, homogeneously and markedly hypointense lesion",
    ),
    "5": (
        "a circumscribed, markedly hypointense lesion",
        "a focal, markedly T2-hypointense mass",
        "a large, homogeneously and markedly hypointense lesion",
    ),
}
_IMPRESSION = {
    "1": (
        "PI-RADS 1: clinically significant cancer is highly unlikely.",
        "No suspicious lesion (PI-RADS 1).",
        "PI-RADS v2.1 overall assessment 1.",
    ),
    "2": (
        "PI-RADS 2: clinically significant cancer is unlikely.",
        "Overall PI-RADS 2.",
        "PI-RADS v2.1 category 2 finding",
    ),
    "3": (
        "PI-RADS 3: clinically significant cancer is equivocal.",
        "Overall PI-RADS 3 (equivocal).",
        "PI-RADS v2.1 category 3 lesion",
    ),
    "4": (
        "PI-RADS 4: clinically significant cancer is likely.",
        "Overall PI-RADS 4.",
        "PI-RADS v2.1 category 4 lesion",
    ),
    "5": (
        "PI-RADS 5: clinically significant cancer is highly likely.",
        "Overall PI-RADS 5.",
        "PI-RADS v2.1 category 5 lesion",
    ),
}


def _report(rng: np.random.Generator, attributes: Mapping[str, str], meta: Mapping[str, Any]) -> str:
    """A PI-RADS v2.1 style report written from the attributes and meta only (true facts only)."""
    a = attributes
    findings: list[str] = []
    volume = meta.get("prostate_volume")
    if volume is not None:
        dims = meta.get("gland_dimensions_mm")
        options = [f"The prostate volume is {volume:.0f} mL.", f"Prostate volume approximately {volume:.0f} cc."]
        if dims is not None:
            options.append(
                f"The prostate measures {dims[0] / 10:.1f} x {dims[1] / 10:.1f} x {dims[2] / 10:.1f} cm "
                f"(volume {volume:.0f} mL)."
            )
        findings.append(pick(rng, options))
    if meta.get("psad") is not None and rng.random() < 0.5:
        findings.append(
            pick(rng, (f"PSA density {meta['psad']:.2f} ng/mL/cc.", f"The PSA density is {meta['psad']:.2f}."))
        )

    if a["lesion"] == "absent":
        findings.append(
            pick(
                rng,
                (
                    "No focal lesion is seen in the peripheral or transition zone.",
                    "The peripheral zone is homogeneously T2-hyperintense without a focal lesion.",
                    "There is no suspicious focal abnormality.",
                    "No focal T2-hypointense lesion in either zone.",
                ),
            )
        )
        if rng.random() < 0.6:
            findings.append(
                pick(
                    rng,
                    (
                        "The transition zone shows organised benign hyperplastic change.",
                        "Benign-appearing transition zone.",
                    ),
                )
            )
        score = "1"
    else:
        zone_long, zone_short = _ZONE_NAMES[a["zone"]]
        level_noun, level_adjective = _LEVEL_NAMES[a["level"]]
        side = a["side"]
        diameter = meta.get("diameter_mm")
        measure = (
            ""
            if diameter is None
            else pick(rng, (f", measuring {diameter:.0f} mm", f" of {diameter:.0f} mm", f" ({diameter:.0f} mm)"))
        )
        look = pick(rng, _T2_LOOK[a["pirads"]])
        where = pick(
            rng,
            (
                f"in the {side} {zone_long} at the {level_noun}",
                f"in the {side} {level_adjective} {zone_long}",
                f"in the {level_adjective} {side} {zone_short}",
            ),
        )
        findings.append(
            pick(
                rng,
                (
                    f"There is {look} {where}{measure}.",
                    f"{where[0].upper()}{where[1:]} there is {look}{measure}.",
                    f"{look[0].upper()}{look[1:]}{measure} is seen {where}.",
                ),
            )
        )
        if meta.get("extraprostatic_extension"):
            findings.append(
                pick(
                    rng,
                    (
                        "It bulges through the capsule with definite extraprostatic extension.",
                        "There is extraprostatic extension with a capsular bulge.",
                        "Definite extraprostatic extension is present.",
                    ),
                )
            )
        elif rng.random() < 0.6:
            findings.append(
                pick(
                    rng,
                    (
                        "No extraprostatic extension.",
                        "The capsule is intact.",
                        "There is no evidence of extraprostatic extension.",
                    ),
                )
            )
        score = a["pirads"]
        location = f"{side} {zone_short} {level_noun}"
    if rng.random() < 0.5:
        findings.append(pick(rng, ("The seminal vesicles are unremarkable.", "Normal seminal vesicles.")))
    if rng.random() < 0.4:
        findings.append(pick(rng, ("No pelvic lymphadenopathy.", "No enlarged pelvic lymph nodes.")))

    impression = pick(rng, _IMPRESSION[score])
    if a["lesion"] == "present" and impression.startswith("PI-RADS v2.1 category"):
        impression = f"{impression} in the {location}."
    elif a["lesion"] == "present" and rng.random() < 0.5:
        impression = f"{impression} Index lesion: {location}."
    return f"FINDINGS:\n\n{' '.join(findings)}\n\nIMPRESSION:\n\n{impression}"
