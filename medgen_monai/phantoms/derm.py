"""Dermoscopy phantom (stands in for ISIC 2019): a pigmented or vascular skin lesion on skin with hair.

The picture
    Skin of a per-case tone with low-frequency mottling and fine texture, seen through a
    dermoscope: slightly uneven illumination, often a dark circular vignette where the contact
    plate ends, sometimes a few dark hairs crossing the field. The lesion is a star-shaped region
    around its centre: its radius at polar angle ``t`` is ``R * e(t) * (1 + sum_k a_k cos(k t + p_k))``
    with ``e`` an ellipse (the ``shape`` attribute sets the aspect and the harmonics), and it blends
    into the skin through a sigmoid whose width is the ``border`` attribute (a sharp or a fading
    edge). Its pigment (``colour``) is multiplied onto the skin, and the dermoscopic structure
    (``pattern``) modulates the pigment inside the lesion: a reticular network of dark lines, brown
    dots and globules, or a structureless (homogeneous) area.

Geometry
    Image coordinates ``(u, v)`` run over ``[-1, 1]`` across the shorter side (rows down, columns
    right), so shapes keep their aspect on non-square images. Texture periods (network mesh, globule
    size) are set in pixels of the default 64x64 frame and scale with the image, so a network is
    still a network at 256x256.

Everything is vectorised numpy on ``(H, W)`` grids: about 1-2 ms per 64x64 image.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import Attribute, Phantom, choice, pick, sample_rng
from .seeds import check_dataset_seed

__all__ = ["DermPhantom", "DERM_CLASSES", "DERM_CLASS_NAMES", "DERM_ATTRIBUTES", "image_identifiers"]

#: ISIC 2019 diagnostic classes modelled by the phantom (the 7 of ISIC 2018 / HAM10000), in column order.
DERM_CLASSES: tuple[str, ...] = ("MEL", "NV", "BCC", "AK", "BKL", "DF", "VASC")
DERM_CLASS_NAMES: dict[str, str] = {
    "MEL": "melanoma",
    "NV": "melanocytic nevus",
    "BCC": "basal cell carcinoma",
    "AK": "actinic keratosis",
    "BKL": "benign keratosis",
    "DF": "dermatofibroma",
    "VASC": "vascular lesion",
}

DERM_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "shape",
        ("round", "oval", "irregular"),
        "outline of the lesion: round (aspect about 1), oval (aspect 1.6-2.0, any orientation) or irregular "
        "(lobulated outline with deep notches)",
    ),
    Attribute(
        "size",
        ("small", "medium", "large"),
        "mean lesion radius as a share of the frame's shorter side: about 0.13 (small), 0.21 (medium) or 0.30 (large)",
    ),
    Attribute(
        "colour",
        ("light_brown", "dark_brown", "black", "red", "blue_grey"),
        "dominant pigment of the lesion: light brown, dark brown, black, red-pink (vascular or inflamed) or "
        "blue-grey (deep pigment)",
    ),
    Attribute(
        "border",
        ("well_defined", "ill_defined"),
        "how the lesion meets the skin: a sharp edge (well defined) or pigment fading out over a wide rim "
        "(ill defined)",
    ),
    Attribute(
        "pattern",
        ("network", "globules", "homogeneous"),
        "dermoscopic structure inside the lesion: a reticular network of dark lines, dark dots and globules, "
        "or a structureless homogeneous area",
    ),
    Attribute(
        "position",
        ("centre", "upper_left", "upper_right", "lower_left", "lower_right"),
        "where the lesion centre sits in the field of view (centre, or shifted to one quadrant)",
    ),
)

_VALUES = {a.name: a.values for a in DERM_ATTRIBUTES}

#: class prevalences of ISIC 2019 restricted to the 7 classes (NV dominates, as in the real data).
_CLASS_PRIOR = {"MEL": 0.18, "NV": 0.50, "BCC": 0.13, "AK": 0.04, "BKL": 0.10, "DF": 0.025, "VASC": 0.025}

#: P(value | class) per attribute, in :data:`DERM_ATTRIBUTES` value order. Every entry is > 0, so any
#: combination of a class and attributes can be asked for; forced attributes shift the class posterior.
_CONDITIONALS: dict[str, dict[str, tuple[float, ...]]] = {
    #          shape: round oval irregular
    "shape": {
        "MEL": (0.10, 0.20, 0.70),
        "NV": (0.55, 0.35, 0.10),
        "BCC": (0.25, 0.30, 0.45),
        "AK": (0.20, 0.40, 0.40),
        "BKL": (0.25, 0.50, 0.25),
        "DF": (0.70, 0.25, 0.05),
        "VASC": (0.60, 0.35, 0.05),
    },
    #          size: small medium large
    "size": {
        "MEL": (0.10, 0.35, 0.55),
        "NV": (0.40, 0.45, 0.15),
        "BCC": (0.25, 0.45, 0.30),
        "AK": (0.40, 0.45, 0.15),
        "BKL": (0.20, 0.45, 0.35),
        "DF": (0.65, 0.30, 0.05),
        "VASC": (0.50, 0.40, 0.10),
    },
    #          colour: light_brown dark_brown black red blue_grey
    "colour": {
        "MEL": (0.10, 0.35, 0.30, 0.05, 0.20),
        "NV": (0.45, 0.40, 0.05, 0.05, 0.05),
        "BCC": (0.05, 0.10, 0.05, 0.40, 0.40),
        "AK": (0.25, 0.05, 0.02, 0.65, 0.03),
        "BKL": (0.45, 0.40, 0.08, 0.04, 0.03),
        "DF": (0.55, 0.25, 0.02, 0.15, 0.03),
        "VASC": (0.02, 0.03, 0.05, 0.65, 0.25),
    },
    #          border: well_defined ill_defined
    "border": {
        "MEL": (0.25, 0.75),
        "NV": (0.80, 0.20),
        "BCC": (0.60, 0.40),
        "AK": (0.25, 0.75),
        "BKL": (0.80, 0.20),
        "DF": (0.30, 0.70),
        "VASC": (0.90, 0.10),
    },
    #          pattern: network globules homogeneous
    "pattern": {
        "MEL": (0.45, 0.35, 0.20),
        "NV": (0.45, 0.35, 0.20),
        "BCC": (0.05, 0.35, 0.60),
        "AK": (0.10, 0.20, 0.70),
        "BKL": (0.15, 0.40, 0.45),
        "DF": (0.60, 0.10, 0.30),
        "VASC": (0.03, 0.60, 0.37),
    },
    #          position: centre upper_left upper_right lower_left lower_right (dermoscopists centre the lesion)
    "position": {c: (0.40, 0.15, 0.15, 0.15, 0.15) for c in DERM_CLASSES},
}

#: lesion colour (RGB in [0, 1]) per colour value; it replaces the skin colour under the lesion, so the
#: colour reads the same on light and dark skin
_PIGMENT = {
    "light_brown": (0.74, 0.52, 0.34),
    "dark_brown": (0.42, 0.24, 0.13),
    "black": (0.15, 0.12, 0.11),
    "red": (0.86, 0.30, 0.32),
    "blue_grey": (0.44, 0.50, 0.64),
}
_SIZE_RADIUS = {"small": 0.26, "medium": 0.42, "large": 0.60}  # in units of half the shorter side
_POSITION = {
    "centre": (0.0, 0.0),
    "upper_left": (-0.36, -0.36),
    "upper_right": (-0.36, 0.36),
    "lower_left": (0.36, -0.36),
    "lower_right": (0.36, 0.36),
}
_SKIN_LIGHT = np.array([0.95, 0.80, 0.70], dtype=np.float32)
_SKIN_DARK = np.array([0.72, 0.52, 0.40], dtype=np.float32)
_HAIR = np.array([0.12, 0.09, 0.07], dtype=np.float32)
_SITES = ("anterior torso", "posterior torso", "upper extremity", "lower extremity", "head/neck", "lateral torso")


def image_identifiers(seed: int, index: int) -> dict[str, str]:
    """ISIC-style ids of case ``index`` of dataset ``seed``, unique within a seed for ``index < 10^7``.

    Returns:
        ``{"image_id": "ISIC_<7 digits>", "lesion_id": "BCN_<7 digits>", "patient_id": <lesion_id>}``:
        one image per lesion, and the lesion is the unit the splits group by (ISIC has no patient ids).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    if index >= 10**7:
        raise ValueError(f"index must be < 10^7 for unique ISIC-style ids, got {index}")
    image = (index * 3_456_793 + seed * 1_000_037 + 24_306) % 10_000_000
    lesion = (index * 7_777_781 + seed * 2_000_081 + 1_917) % 10_000_000
    return {"image_id": f"ISIC_{image:07d}", "lesion_id": f"BCN_{lesion:07d}", "patient_id": f"BCN_{lesion:07d}"}


def _posterior(fixed: Mapping[str, str]) -> tuple[float, ...]:
    """P(class | forced attributes) in :data:`DERM_CLASSES` order (Bayes over the tables above)."""
    weights = []
    for c in DERM_CLASSES:
        w = _CLASS_PRIOR[c]
        for name, value in fixed.items():
            w *= _CONDITIONALS[name][c][_VALUES[name].index(value)]
        weights.append(w)
    return tuple(weights)


def _smooth_noise(rng: np.random.Generator, height: int, width: int, cells: int) -> np.ndarray:
    """Zero-mean smooth random field ``(H, W)`` float32, ~unit amplitude: a ``cells x cells`` grid upsampled
    bilinearly."""
    coarse = rng.random((cells + 1, cells + 1), dtype=np.float32) * 2 - 1
    r = np.linspace(0, cells, height, dtype=np.float32)
    c = np.linspace(0, cells, width, dtype=np.float32)
    r0 = np.minimum(r.astype(int), cells - 1)
    c0 = np.minimum(c.astype(int), cells - 1)
    fr, fc = (r - r0)[:, None], (c - c0)[None, :]
    top = coarse[r0][:, c0] * (1 - fc) + coarse[r0][:, c0 + 1] * fc
    bottom = coarse[r0 + 1][:, c0] * (1 - fc) + coarse[r0 + 1][:, c0 + 1] * fc
    return top * (1 - fr) + bottom * fr


def _distance_to_polyline_squared(rows: np.ndarray, cols: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Squared distance from every pixel to a polyline.

    Args:
        rows: ``(H, 1)`` pixel row coordinates; cols: ``(1, W)``.
        points: ``(P, 2)`` polyline vertices as (row, col), in the same units.

    Returns:
        ``(H, W)`` float32.
    """
    start, end = points[:-1], points[1:]
    direction = end - start  # (S, 2)
    length2 = np.maximum((direction**2).sum(axis=1), 1e-12)[:, None, None]
    dr = rows[None] - start[:, 0, None, None]  # (S, H, 1)
    dc = cols[None] - start[:, 1, None, None]  # (S, 1, W)
    along = np.clip((dr * direction[:, 0, None, None] + dc * direction[:, 1, None, None]) / length2, 0, 1)
    return np.min(
        (dr - along * direction[:, 0, None, None]) ** 2 + (dc - along * direction[:, 1, None, None]) ** 2, axis=0
    )


class DermPhantom(Phantom):
    """Dermoscopy phantom in the ISIC 2019 layout.

    Images are uint8 RGB ``(H, W, 3)`` (default 64x64) under the view ``"image"``. Masks: ``"lesion"``
    (bool ``(H, W)``, where the lesion covers more than half of the skin) and ``"hair"``. ``meta`` holds
    ISIC-style ids (:func:`image_identifiers`), ``age_approx``, ``sex``, ``anatom_site_general`` and the
    rendered lesion centre (``centre_rc``, pixels) and mean radius (``radius_px``).

    Label: one of :data:`DERM_CLASSES`. The attributes are drawn conditionally on the class with
    ISIC-like correlations (melanoma: large, irregular, dark or blue-grey, ill-defined; nevus: small,
    round, brown, well defined; vascular lesions red and globular, ...), and every class can show
    every attribute value, so the label alone does not determine the image.
    """

    name = "derm"
    classes = DERM_CLASSES
    attributes = DERM_ATTRIBUTES
    views = ("image",)
    spatial_dims = 2
    channels = 3
    default_size = (64, 64)
    layout = "isic"

    # ---- attributes ------------------------------------------------------------------------
    def skin_only(self, index: int, seed: int = 0, size: Sequence[int] | int | None = None) -> np.ndarray:
        """Case ``index`` of dataset ``seed`` without its lesion: skin, hair, vignette and noise only.

        Not a dermoscopy image of the dataset (every ISIC image shows a lesion): the audit networks use it
        as a negative, the failure of a generator that draws skin and forgets the lesion.

        Returns:
            uint8 ``(H, W, 3)``.
        """
        check_dataset_seed(seed)
        label, attrs = self.draw(sample_rng(seed, index, 0), None, {})
        images, _, _ = self.render(sample_rng(seed, index, 1), label, attrs, self.check_size(size), lesion=False)
        return images["image"]

    def draw(self, rng: np.random.Generator, label: str | None, fixed: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """Draw ``(label, attributes)``.

        The class comes from ISIC-like prevalences (NV 50%, MEL 18%, BCC 13%, BKL 10%, AK 4%, DF and
        VASC 2.5% each), updated by Bayes' rule on any forced attributes; each free attribute is then
        drawn from its class-conditional table. Every table entry is positive, so no combination of
        forced class and attributes is contradictory.
        """
        u = rng.random(1 + len(self.attributes))  # a fixed number of draws, whatever is forced
        if label is None:
            label = choice(u[0], DERM_CLASSES, _posterior(fixed))
        attrs = {
            a.name: fixed[a.name] if a.name in fixed else choice(u[1 + i], a.values, _CONDITIONALS[a.name][label])
            for i, a in enumerate(self.attributes)
        }
        return label, attrs

    # ---- image -----------------------------------------------------------------------------
    def render(
        self,
        rng: np.random.Generator,
        label: Any,
        attributes: Mapping[str, str],
        size: tuple[int, ...],
        lesion: bool = True,
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        """Render the dermoscopy frame (``lesion=False``: the same frame with bare skin, see :meth:`skin_only`).

        Returns:
            ``images``: ``{"image": uint8 (H, W, 3)}``; ``masks``: ``{"lesion", "hair"}`` bool ``(H, W)``;
            ``meta``: age, sex, site, lesion centre and radius in pixels.
        """
        height, width = size
        short = min(height, width)
        u = rng.random(32)
        # (rows, cols) in units of half the shorter side, centred
        rows = ((np.arange(height, dtype=np.float32) + 0.5) - height / 2) / (short / 2)
        cols = ((np.arange(width, dtype=np.float32) + 0.5) - width / 2) / (short / 2)
        rr, cc = rows[:, None], cols[None, :]

        # skin: tone, mottling, fine texture, illumination
        tone = float(u[0])
        skin = (_SKIN_LIGHT * (1 - tone) + _SKIN_DARK * tone)[None, None, :]
        mottle = _smooth_noise(rng, height, width, 4)[..., None] * np.float32(0.05)
        grain = (rng.random((height, width), dtype=np.float32)[..., None] - 0.5) * np.float32(0.05)
        light_dir = 2 * np.pi * u[1]
        illumination = 1.0 + 0.08 * (np.cos(light_dir) * rr + np.sin(light_dir) * cc)
        background = skin * (1 + mottle + grain) * illumination[..., None]

        # lesion outline: radius(t) = R * ellipse(t) * (1 + harmonics)
        dr, dc = _POSITION[attributes["position"]]
        centre_r = dr + 0.08 * (2 * u[2] - 1)
        centre_c = dc + 0.08 * (2 * u[3] - 1)
        radius = _SIZE_RADIUS[attributes["size"]] * (1 + 0.08 * (2 * u[4] - 1))
        y, x = rr - centre_r, cc - centre_c
        rho = np.sqrt(x * x + y * y) + 1e-6
        theta = np.arctan2(y, x)
        shape = attributes["shape"]
        aspect = 1.0 + 0.06 * u[5] if shape == "round" else (1.6 + 0.4 * u[5] if shape == "oval" else 1.0 + 0.15 * u[5])
        tilt = np.pi * u[6]
        # ellipse radius at angle theta with semi-axes (a, b) = (R sqrt(aspect), R / sqrt(aspect)): same area as the
        # circle
        phi = theta - tilt
        ellipse = 1.0 / np.sqrt(np.cos(phi) ** 2 / aspect + np.sin(phi) ** 2 * aspect)
        harmonics = np.zeros_like(theta)
        if shape == "irregular":
            for k, (a_index, p_index) in zip((2, 3, 5), ((7, 8), (9, 10), (11, 12))):
                harmonics += (0.15 + 0.07 * u[a_index]) * np.cos(k * theta + 2 * np.pi * u[p_index])
        else:
            harmonics += 0.03 * u[7] * np.cos(3 * theta + 2 * np.pi * u[8])
        outline = radius * ellipse * (1 + harmonics)
        distance = (rho - outline) / radius  # < 0 inside, in units of the mean radius
        width_edge = 0.035 if attributes["border"] == "well_defined" else 0.28
        coverage = 1.0 / (1.0 + np.exp(np.clip(distance / width_edge, -30, 30)))  # (H, W) in [0, 1]

        # pattern inside the lesion (periods in 64x64 pixels -> our units: 2 / 64 per pixel)
        pixel = 2.0 / 64.0
        pattern = attributes["pattern"]
        structure = np.zeros_like(coverage)
        if pattern == "network":
            period = (3.6 + 0.6 * u[13]) * pixel
            angle = np.pi * u[14]
            warp = 3.5 * _smooth_noise(rng, height, width, 3)  # bends the mesh into a reticulum
            a = (np.cos(angle) * cc + np.sin(angle) * rr) * (2 * np.pi / period) + warp
            b = (-np.sin(angle) * cc + np.cos(angle) * rr) * (2 * np.pi / period) - warp
            lines = np.maximum(np.cos(a), np.cos(b))  # bright where either set of lines passes
            structure = np.clip((lines - 0.35) / 0.65, 0, 1) * 0.75
        elif pattern == "globules":
            n = 14 + int(26 * u[15] * radius / 0.6)
            angles = rng.random(n) * 2 * np.pi
            reach = np.sqrt(rng.random(n)) * 0.8
            sizes = (0.9 + 0.9 * rng.random(n)) * pixel
            gy = centre_r + reach * radius * np.sin(angles)
            gx = centre_c + reach * radius * np.cos(angles)
            d2 = (rr[None] - gy[:, None, None].astype(np.float32)) ** 2 + (
                cc[None] - gx[:, None, None].astype(np.float32)
            ) ** 2
            structure = np.clip(
                np.max(np.exp(-d2 / (2 * (sizes[:, None, None].astype(np.float32)) ** 2)), axis=0), 0, 1
            )
        else:  # homogeneous: only a gentle smooth variation of the pigment
            structure = 0.12 * (_smooth_noise(rng, height, width, 3) + 1) / 2

        pigment = np.asarray(_PIGMENT[attributes["colour"]], dtype=np.float32)
        pigment = pigment * np.float32(1 + 0.06 * (2 * u[16] - 1))
        # dark structures darken the pigment towards a deeper shade of itself
        shading = (1 + mottle + grain) * illumination[..., None]  # the lesion shares the skin's light and grain
        lesion_rgb = pigment[None, None, :] * (1 - 0.65 * structure[..., None]) * shading
        if not lesion:  # after every draw, so the rest of the frame (hair, vignette, noise) is the same
            coverage = np.zeros_like(coverage)
        image = background * (1 - coverage[..., None]) + lesion_rgb * coverage[..., None]

        # hair: 0-4 dark curved strands (quadratic Bezier), drawn over the lesion
        hair = np.zeros((height, width), dtype=bool)
        n_hair = int(u[17] * 5) if u[18] < 0.6 else 0
        if n_hair:
            t = np.linspace(0, 1, 17, dtype=np.float32)[:, None]
            ends = rng.random((n_hair, 3, 2)).astype(np.float32) * 2.6 - 1.3
            hair_width = (0.45 + 0.3 * rng.random(n_hair)).astype(np.float32) * pixel
            darkness = np.zeros((height, width), dtype=np.float32)
            for k in range(n_hair):
                p0, p1, p2 = ends[k]
                curve = (1 - t) ** 2 * p0 + 2 * (1 - t) * t * p1 + t**2 * p2  # (17, 2) points (row, col)
                d2 = _distance_to_polyline_squared(rr, cc, curve)
                darkness = np.maximum(darkness, np.exp(-d2 / (2 * hair_width[k] ** 2)))
            hair = darkness > 0.5
            image = image * (1 - 0.85 * darkness[..., None]) + _HAIR * 0.85 * darkness[..., None]

        # dermoscope: contact-plate vignette in about half of the images, then sensor noise
        if u[19] < 0.5:
            edge = 1.05 + 0.3 * u[20]
            r_norm = np.sqrt(rr * rr + cc * cc)
            vignette = np.clip((edge - r_norm) / 0.08, 0, 1)
            image = image * vignette[..., None]
        noise = (rng.random((height, width, 3), dtype=np.float32) - 0.5) * np.float32(0.03)
        image = np.clip(np.rint((image + noise) * 255), 0, 255).astype(np.uint8)

        ages = {"MEL": 62, "NV": 42, "BCC": 68, "AK": 70, "BKL": 60, "DF": 44, "VASC": 50}
        age = int(np.clip(ages[label] + 14 * (2 * u[21] - 1) + 8 * (2 * u[22] - 1), 5, 85) // 5 * 5)
        sites = (
            _SITES
            if label != "AK"
            else ("head/neck", "head/neck", "upper extremity", "anterior torso", "head/neck", "lateral torso")
        )
        meta = {
            "age_approx": age,
            "sex": "male" if u[23] < 0.52 else "female",
            "anatom_site_general": sites[int(u[24] * len(sites))],
            "centre_rc": ((centre_r * short / 2 + height / 2 - 0.5), (centre_c * short / 2 + width / 2 - 0.5)),
            "radius_px": float(radius * short / 2),
        }
        masks = {"lesion": coverage > 0.5, "hair": hair}
        return {"image": image}, masks, meta

    # ---- text ------------------------------------------------------------------------------
    def describe(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], meta: Mapping[str, Any]
    ) -> str:
        """A step-by-step style description of what the image shows (attributes only, not the diagnosis)."""
        return _description(rng, attributes)

    # ---- identifiers ---------------------------------------------------------------------------
    def identifiers(self, seed: int, index: int) -> dict[str, Any]:
        """ISIC-style ``image_id``, ``lesion_id`` and ``patient_id`` (the lesion id) (:func:`image_identifiers`)."""
        return dict(image_identifiers(seed, index))


# ---------------------------------------------------------------------------------------------
# text

_SIZE_WORDS = {
    "small": ("small", "small", "little"),
    "medium": ("medium-sized", "moderately sized", "mid-sized"),
    "large": ("large", "large", "big"),
}
_SHAPE_WORDS = {
    "round": ("round", "circular", "rounded"),
    "oval": ("oval", "elliptical", "ovoid"),
    "irregular": ("irregular", "irregularly shaped", "asymmetric, lobulated"),
}
_COLOUR_WORDS = {
    "light_brown": ("light brown", "tan", "light brown"),
    "dark_brown": ("dark brown", "deep brown", "dark brown"),
    "black": ("black", "black", "very dark, almost black"),
    "red": ("red", "pink-red", "reddish"),
    "blue_grey": ("blue-grey", "bluish-grey", "blue-gray"),
}
_BORDER_PHRASES = {
    "well_defined": (
        "with a well-defined border",
        "with sharp, well-demarcated borders",
        "sharply demarcated from the surrounding skin",
    ),
    "ill_defined": (
        "with an ill-defined border",
        "with blurred borders that fade into the skin",
        "poorly demarcated from the surrounding skin",
    ),
}
_PATTERN_PHRASES = {
    "network": (
        "A reticular pigment network is visible inside the lesion.",
        "The lesion shows a pigment network of thin dark lines.",
        "Dermoscopy shows a reticular network pattern.",
    ),
    "globules": (
        "Multiple dots and globules are scattered inside the lesion.",
        "The lesion contains numerous dark dots and globules.",
        "A globular pattern of small round clods is seen.",
    ),
    "homogeneous": (
        "The lesion is structureless with homogeneous pigmentation.",
        "No network or globules are seen; the pigment is homogeneous.",
        "Dermoscopy shows a homogeneous, structureless pattern.",
    ),
}
_POSITION_WORDS = {
    "centre": ("in the centre of the image", "at the centre of the field", "centrally"),
    "upper_left": ("in the upper left of the image", "in the upper-left quadrant", "towards the top left"),
    "upper_right": ("in the upper right of the image", "in the upper-right quadrant", "towards the top right"),
    "lower_left": ("in the lower left of the image", "in the lower-left quadrant", "towards the bottom left"),
    "lower_right": ("in the lower right of the image", "in the lower-right quadrant", "towards the bottom right"),
}


def _description(rng: np.random.Generator, a: Mapping[str, str]) -> str:
    size, shape, colour = (
        pick(rng, _SIZE_WORDS[a["size"]]),
        pick(rng, _SHAPE_WORDS[a["shape"]]),
        pick(rng, _COLOUR_WORDS[a["colour"]]),
    )
    border, where = pick(rng, _BORDER_PHRASES[a["border"]]), pick(rng, _POSITION_WORDS[a["position"]])
    pattern = pick(rng, _PATTERN_PHRASES[a["pattern"]])
    article = "An" if size[0] in "aeiou" else "A"
    first = pick(
        rng,
        (
            f"{article} {size}, {shape}, {colour} lesion {border} lies {where}.",
            f"Dermoscopy image of {article.lower()} {size} {shape} {colour} skin lesion {where}, {border}.",
            f"{where[0].upper() + where[1:]} there is {article.lower()} {size}, {colour} lesion of {shape} shape, "
            f"{border}.",
        ),
    )
    return f"{first} {pattern}"
