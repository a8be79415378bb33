"""Colonoscopy phantom (stands in for Kvasir v2): one RGB endoscopy frame with at most one finding.

The frame
    A pink-red mucosa is lit by the endoscope: brightness falls off towards a dark lumen (the
    far end of the bowel, placed away from the finding), concentric haustral folds around the
    lumen give a bright crest and a sharp shadow line each, a network of thin dark-red submucosal
    vessels is drawn along the zero crossings of two smooth random fields, and a few small
    specular highlights saturate to white. A circular vignette cuts the corners to black, as in
    Kvasir frames. Everything is in units of the shorter image side, so other sizes show the same
    scene.

The finding (composited over the mucosa after the lighting, so the lumen never hides it)
    ``polyp``: a shaded dome (bright top, dark rim) that casts a dark shadow ring on the mucosa
    (``sessile``); the same dome on a long stalk pointing towards the image centre, or along a
    diagonal for a centred polyp (``pedunculated``);
    or a wide, low elliptical plaque with almost no shading and no shadow (``flat``). Its
    ``surface`` is ``smooth`` (one specular highlight), ``lobulated`` (a scalloped outline with
    dark clefts between lobes) or ``ulcerated`` (a central yellow-white fibrin patch inside a dark
    red crater rim). Its ``colour`` is ``pale`` (whitish pink), ``red`` or ``blue_dyed``
    (indigo carmine: a blue polyp on a wider, bluish submucosal cushion).
    ``ulcer``: an irregular depressed lesion on diffusely inflamed mucosa (redder, strongly
    granular, no vessel pattern, flattened folds), with a ``pale`` fibrin base and a dark-red
    halo, or a ``red`` haemorrhagic base with a thin fibrin rim.

Sizes step strongly (radius 8%, 14% and 21% of the shorter side) and locations are the centre
or one of the four quadrant centres, so every attribute reads at 64x64. Nuisance variation
(mucosa tone, exposure, lumen and fold placement, vessels, highlights, sensor noise) is drawn
from the render stream with a fixed number of draws, so changing one attribute of a case leaves
the rest of its frame unchanged (except that the location also moves the lumen, and an ulcer
inflames the whole mucosa). Every step is vectorised numpy.
"""

from __future__ import annotations

import functools
import hashlib
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from .base import Attribute, Phantom, choice, interp_matrix, pick

__all__ = [
    "ColonPhantom",
    "COLON_CLASSES",
    "COLON_ATTRIBUTES",
    "CLASS_SUPPORT",
    "image_identifier",
    "label_from_attributes",
]

#: Kvasir v2 folder names modelled by the phantom (a subset of its eight classes), in label order.
COLON_CLASSES: tuple[str, ...] = ("normal-cecum", "polyps", "dyed-lifted-polyps", "ulcerative-colitis")

COLON_ATTRIBUTES: tuple[Attribute, ...] = (
    Attribute(
        "finding",
        ("none", "polyp", "ulcer"),
        "the lesion in view: a raised polyp on normal vascular mucosa, or an ulcer on diffusely red, granular "
        "mucosa without vessel pattern",
    ),
    Attribute(
        "morphology",
        ("none", "sessile", "pedunculated", "flat"),
        "polyp shape: a shaded dome with a shadow ring (sessile), a dome on a long diagonal stalk pointing to the "
        "image centre (pedunculated), or a wide low elliptical plaque without shadow (flat)",
    ),
    Attribute(
        "size",
        ("none", "small", "medium", "large"),
        "finding radius: about 8%, 14% or 21% of the shorter image side",
    ),
    Attribute(
        "surface",
        ("none", "smooth", "lobulated", "ulcerated"),
        "texture of the finding: uniform with a specular highlight (smooth), scalloped outline with dark clefts "
        "between lobes (lobulated), or a yellow-white fibrin centre in a dark-red rim (ulcerated; every ulcer)",
    ),
    Attribute(
        "colour",
        ("none", "pale", "red", "blue_dyed"),
        "colour of the finding: whitish pink or white fibrin (pale), deep red (red), or indigo-carmine blue "
        "on a bluish cushion (blue_dyed)",
    ),
    Attribute(
        "location",
        ("none", "centre", "upper_left", "upper_right", "lower_left", "lower_right"),
        "where the finding sits: the image centre or the centre of one image quadrant",
    ),
)

_VALUES = {a.name: a.values for a in COLON_ATTRIBUTES}
_SITES = _VALUES["location"][1:]

#: the values each class allows for each attribute (the label follows from the attributes).
CLASS_SUPPORT: dict[str, dict[str, tuple[str, ...]]] = {
    "normal-cecum": {a.name: ("none",) for a in COLON_ATTRIBUTES},
    "polyps": {
        "finding": ("polyp",),
        "morphology": ("sessile", "pedunculated", "flat"),
        "size": ("small", "medium", "large"),
        "surface": ("smooth", "lobulated", "ulcerated"),
        "colour": ("pale", "red"),
        "location": _SITES,
    },
    "dyed-lifted-polyps": {
        "finding": ("polyp",),
        "morphology": ("sessile", "pedunculated", "flat"),
        "size": ("small", "medium", "large"),
        "surface": ("smooth", "lobulated", "ulcerated"),
        "colour": ("blue_dyed",),
        "location": _SITES,
    },
    "ulcerative-colitis": {
        "finding": ("ulcer",),
        "morphology": ("none",),
        "size": ("small", "medium", "large"),
        "surface": ("ulcerated",),
        "colour": ("pale", "red"),
        "location": _SITES,
    },
}

# Kvasir v2 holds 1000 images of each class, so the free class draw is uniform.
_CLASS_PRIOR = {c: 0.25 for c in COLON_CLASSES}
_SIZE_PRIOR = {
    "polyps": (0.4, 0.4, 0.2),
    "dyed-lifted-polyps": (0.2, 0.45, 0.35),
    "ulcerative-colitis": (0.35, 0.4, 0.25),
}
# sessile, pedunculated, flat
_MORPHOLOGY_PRIOR = {
    ("polyps", "small"): (0.6, 0.15, 0.25),
    ("polyps", "medium"): (0.5, 0.3, 0.2),
    ("polyps", "large"): (0.45, 0.4, 0.15),
    "dyed-lifted-polyps": (0.5, 0.1, 0.4),
}
# smooth, lobulated, ulcerated
_SURFACE_PRIOR = {"small": (0.7, 0.2, 0.1), "medium": (0.5, 0.35, 0.15), "large": (0.3, 0.45, 0.25)}
_LOCATION_PRIOR = (0.36, 0.16, 0.16, 0.16, 0.16)

# ---- rendering constants (RGB in [0, 1]) -----------------------------------------------------
_MUCOSA = np.array([0.88, 0.50, 0.42], dtype=np.float32)
_INFLAMED = np.array([0.80, 0.22, 0.18], dtype=np.float32)
#: how much a vessel darkens each channel (blood absorbs green and blue most)
_VESSEL_ABSORPTION = np.array([0.35, 0.65, 0.55], dtype=np.float32)
_FINDING_COLOUR = {
    "pale": np.array([0.94, 0.80, 0.74], dtype=np.float32),
    "red": np.array([0.76, 0.14, 0.11], dtype=np.float32),
    "blue_dyed": np.array([0.20, 0.30, 0.82], dtype=np.float32),
}
_FIBRIN = np.array([0.97, 0.93, 0.66], dtype=np.float32)
_CRATER = np.array([0.40, 0.06, 0.06], dtype=np.float32)
_HAEMORRHAGIC = np.array([0.46, 0.06, 0.06], dtype=np.float32)
_CUSHION = np.array([0.48, 0.52, 0.86], dtype=np.float32)
_RADIUS = {"small": 0.08, "medium": 0.14, "large": 0.21}  # in units of the shorter side
#: finding centre as (x, y) fractions of the image width and height
_SITE_CENTRE = {
    "centre": (0.5, 0.5),
    "upper_left": (0.26, 0.26),
    "upper_right": (0.74, 0.26),
    "lower_left": (0.26, 0.74),
    "lower_right": (0.74, 0.74),
}


def image_identifier(seed: int, index: int) -> str:
    """A Kvasir-style image id (a version-4 UUID string) for case ``index`` of dataset ``seed``.

    Derived from the sha256 of ``("colon", seed, index)``, so it is deterministic and, in practice,
    unique (122 random bits).
    """
    if seed < 0 or index < 0:
        raise ValueError(f"seed and index must be >= 0, got seed={seed}, index={index}")
    digest = hashlib.sha256(f"medgen-monai/colon/{seed}/{index}".encode()).digest()
    return str(uuid.UUID(bytes=digest[:16], version=4))


def label_from_attributes(attributes: Mapping[str, str]) -> str:
    """The Kvasir class implied by a complete attribute dict.

    ``finding`` none -> ``normal-cecum``; ``ulcer`` -> ``ulcerative-colitis``; ``polyp`` ->
    ``dyed-lifted-polyps`` when the colour is ``blue_dyed``, else ``polyps``.

    Raises:
        ValueError: the attributes are not a combination that class allows (see :data:`CLASS_SUPPORT`).
    """
    finding = attributes["finding"]
    if finding == "none":
        label = "normal-cecum"
    elif finding == "ulcer":
        label = "ulcerative-colitis"
    else:
        label = "dyed-lifted-polyps" if attributes["colour"] == "blue_dyed" else "polyps"
    bad = {k: attributes[k] for k, allowed in CLASS_SUPPORT[label].items() if attributes[k] not in allowed}
    if bad:
        raise ValueError(
            f"colon: attributes {bad} are not allowed for {label!r} (finding={finding!r}); "
            f"allowed: { {k: list(CLASS_SUPPORT[label][k]) for k in bad} }"
        )
    return label


@functools.lru_cache(maxsize=16)
def _grid(height: int, width: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pixel-centre coordinates ``(X, Y)`` in units of the shorter side, and the normalised vignette radius.

    All float32 ``(H, W)``; the vignette radius is 1 on the ellipse inscribed in the frame.
    """
    side = min(height, width)
    cols = (np.arange(width, dtype=np.float32) + 0.5) / side
    rows = (np.arange(height, dtype=np.float32) + 0.5) / side
    x, y = np.meshgrid(cols, rows)
    vignette = np.sqrt(
        ((x - 0.5 * width / side) / (0.5 * width / side)) ** 2
        + ((y - 0.5 * height / side) / (0.5 * height / side)) ** 2
    )
    for array in (x, y, vignette):
        array.setflags(write=False)
    return x, y, vignette


def _smooth_field(noise: np.ndarray, height: int, width: int) -> np.ndarray:
    """A coarse noise grid upsampled to ``(H, W)`` and scaled to unit standard deviation (float32)."""
    field = interp_matrix(height, noise.shape[0]) @ noise @ interp_matrix(width, noise.shape[1]).T
    return field / (field.std() + 1e-6)


def _ramp(distance_inside: np.ndarray, side: int) -> np.ndarray:
    """Anti-aliased coverage from a signed distance (positive inside) in shorter-side units: about 1 px wide."""
    return np.clip(distance_inside * side + 0.5, 0.0, 1.0)


class ColonPhantom(Phantom):
    """Colonoscopy phantom: one RGB endoscopy frame per case, Kvasir v2 classes.

    Images: ``images["image"]`` uint8 ``(H, W, 3)`` (default 64x64). Masks:
    ``masks["finding"]`` bool ``(H, W)``, the visible finding (a pedunculated polyp includes its
    stalk; the bluish cushion of a dyed polyp is not part of it), all False without a finding.
    Meta: ``image_id`` (a UUID-like Kvasir file stem, :func:`image_identifier`), ``patient_id``
    (= ``image_id``: Kvasir has no patient ids), ``lumen_centre`` (row, col in pixels) and
    ``finding_radius_px``.

    Label: one of :data:`COLON_CLASSES`, derived from the attributes (:func:`label_from_attributes`).
    """

    name = "colon"
    classes = COLON_CLASSES
    attributes = COLON_ATTRIBUTES
    views = ("image",)
    spatial_dims = 2
    channels = 3
    default_size = (64, 64)
    layout = "kvasir"

    # ---- attributes ------------------------------------------------------------------------
    def draw(self, rng: np.random.Generator, label: str | None, fixed: Mapping[str, str]) -> tuple[str, dict[str, str]]:
        """Draw ``(label, attributes)`` with Kvasir-like class frequencies and correlations.

        Classes are equally likely (Kvasir v2 has 1000 images per class) among those that allow
        the forced attributes. Inside a class: dyed-lifted polyps are larger (small 20%, medium
        45%, large 35%, against 40/40/20 for plain polyps) and more often flat (40%: lifting is
        done for flat and sessile lesions before resection); pedunculated polyps grow more common
        with size (15%, 30%, 40%); larger polyps are more often lobulated or ulcerated (smooth
        70% small, 30% large); flat plain polyps are mostly pale (70%), others mostly red (60%);
        ulcers have a pale fibrin base in 65% of cases. Findings are centred 36% of the time
        (endoscopists centre what they photograph), else in one of the quadrants.

        Raises:
            ValueError: the forced label does not allow a forced attribute value, or the forced
                attributes fit no class together (e.g. ``finding="ulcer"`` with ``morphology="flat"``).
        """
        u = rng.random(8)  # a fixed number of draws, whatever is forced
        if label is not None:
            support = CLASS_SUPPORT[label]
            for name, value in fixed.items():
                if value not in support[name]:
                    raise ValueError(
                        f"colon: label {label!r} does not allow {name}={value!r}; "
                        f"it needs {name} in {list(support[name])}"
                    )
        else:
            candidates = [c for c in COLON_CLASSES if all(v in CLASS_SUPPORT[c][k] for k, v in fixed.items())]
            if not candidates:
                raise ValueError(
                    f"colon: attributes {dict(fixed)} contradict each other: no class allows them all "
                    f"(finding 'none' needs every attribute 'none'; an ulcer has morphology 'none', surface "
                    f"'ulcerated' and colour pale or red; a polyp needs every attribute set)"
                )
            label = choice(u[0], candidates, [_CLASS_PRIOR[c] for c in candidates])
        support = CLASS_SUPPORT[label]
        attrs: dict[str, str] = {}

        def value(name: str, probabilities: Sequence[float], ui: float) -> str:
            options = support[name]
            attrs[name] = fixed[name] if name in fixed else choice(ui, options, probabilities)
            return attrs[name]

        if label == "normal-cecum":
            attrs = {a.name: "none" for a in COLON_ATTRIBUTES}
        else:
            attrs["finding"] = support["finding"][0]
            size = value("size", _SIZE_PRIOR[label], u[1])
            if label == "ulcerative-colitis":
                attrs["morphology"], attrs["surface"] = "none", "ulcerated"
                value("colour", (0.65, 0.35), u[4])
            else:
                key = (label, size) if label == "polyps" else label
                morphology = value("morphology", _MORPHOLOGY_PRIOR[key], u[2])
                value("surface", _SURFACE_PRIOR[size], u[3])
                if label == "polyps":
                    value("colour", (0.7, 0.3) if morphology == "flat" else (0.4, 0.6), u[4])
                else:
                    attrs["colour"] = "blue_dyed"
            value("location", _LOCATION_PRIOR, u[5])
        ordered = {a.name: attrs[a.name] for a in COLON_ATTRIBUTES}
        if label_from_attributes(ordered) != label:  # defensive: the support table already enforces this
            raise ValueError(f"colon: label {label!r} is inconsistent with attributes {ordered}")
        return label, ordered

    # ---- images ----------------------------------------------------------------------------
    def render(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], size: tuple[int, ...]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray], dict[str, Any]]:
        """Render one frame.

        Returns:
            ``images``: ``{"image": uint8 (H, W, 3)}``; ``masks``: ``{"finding": bool (H, W)}``;
            ``meta``: ``lumen_centre`` (row, col in pixels) and ``finding_radius_px`` (0 without a finding).
        """
        height, width = size
        side = min(height, width)
        x, y, vignette_radius = _grid(height, width)
        # every random number of the case is drawn here, in fixed shapes, before anything depends on attributes
        c = rng.random(24)
        highlights = rng.random((5, 3))
        coarse = rng.random((7, 7), dtype=np.float32) - 0.5
        fine = rng.random((13, 13), dtype=np.float32) - 0.5
        grain = rng.random((height, width), dtype=np.float32) - 0.5
        sensor = rng.random((height, width, 3), dtype=np.float32) - 0.5

        a = attributes
        present = a["finding"] != "none"
        inflamed = a["finding"] == "ulcer"
        aspect_x, aspect_y = width / side, height / side  # the frame in shorter-side units
        if present:
            fx, fy = _SITE_CENTRE[a["location"]]
            cx = (fx + 0.06 * (c[0] - 0.5)) * aspect_x
            cy = (fy + 0.06 * (c[1] - 0.5)) * aspect_y
            radius = _RADIUS[a["size"]] * (0.93 + 0.14 * c[2])
        else:
            cx, cy, radius = 0.5 * aspect_x, 0.5 * aspect_y, 0.0

        # lumen: on the far side of the frame from an off-centre finding, in a random direction otherwise
        if present and a["location"] != "centre":
            sx, sy = np.sign(fx - 0.5), np.sign(fy - 0.5)
            lx = (0.5 - sx * (0.17 + 0.08 * c[3])) * aspect_x
            ly = (0.5 - sy * (0.17 + 0.08 * c[4])) * aspect_y
        else:
            angle = 2 * np.pi * c[3]
            distance = (0.3 + 0.05 * c[4]) if present else 0.3 * c[4]
            lx, ly = 0.5 * aspect_x + distance * np.cos(angle), 0.5 * aspect_y + distance * np.sin(angle)
        lumen_radius = 0.09 + 0.05 * c[5]
        dxl, dyl = x - np.float32(lx), y - np.float32(ly)
        lumen_distance = np.sqrt(dxl * dxl + dyl * dyl)
        t = np.clip((lumen_distance - 0.5 * lumen_radius) / (1.8 * lumen_radius), 0.0, 1.0)
        light = 0.05 + 0.95 * t * t * (3 - 2 * t)  # smoothstep: a black core fading into lit mucosa
        light *= 0.78 + 0.22 * np.clip(lumen_distance / 0.7, 0.0, 1.0)
        exposure = np.float32(0.9 + 0.2 * c[6])

        # haustral folds: rings around the lumen with a bright crest and a sharp shadow on one side
        period = 0.15 + 0.08 * c[7]
        phase = (
            (2 * np.pi / period) * lumen_distance
            + 2 * np.pi * c[8]
            + 0.9 * np.sin(2 * np.arctan2(dyl, dxl) + 2 * np.pi * c[9])
        )
        fold_depth = 0.12 if inflamed else 0.26
        folds = 1 + 0.07 * np.cos(phase) - fold_depth * np.clip(np.sin(phase), 0, 1) ** 6

        if inflamed:
            tone = _INFLAMED + 0.05 * (c[10:13].astype(np.float32) - 0.5)
            texture = (1 + 0.5 * grain)[..., None] * np.array([1.0, 1.15, 1.15], dtype=np.float32)
            mucosa = tone * texture
        else:
            tone = _MUCOSA + 0.06 * (c[10:13].astype(np.float32) - 0.5)
            n1 = _smooth_field(coarse, height, width)
            n2 = _smooth_field(fine, height, width)
            vessels = np.maximum(np.exp(-((n1 / 0.11) ** 2)), 0.6 * np.exp(-((n2 / 0.09) ** 2)))
            vessels *= 0.55 + 0.3 * c[13]
            mucosa = tone * (1 + 0.08 * grain)[..., None] * (1 - vessels[..., None] * _VESSEL_ABSORPTION)
        image = mucosa * (folds * light * exposure)[..., None]

        # specular highlights: small saturated spots on the lit wall
        hx = highlights[:, 0, None, None].astype(np.float32) * aspect_x
        hy = highlights[:, 1, None, None].astype(np.float32) * aspect_y
        sigma = (0.012 + 0.01 * highlights[:, 2, None, None]).astype(np.float32)
        spots = np.exp(-((x - hx) ** 2 + (y - hy) ** 2) / (2 * sigma * sigma)).max(axis=0)
        image += (1.3 * spots * (light > 0.5))[..., None]

        mask = np.zeros((height, width), dtype=bool)
        if present:
            image, coverage = self._finding(image, x, y, a, (cx, cy, radius), c, grain, tone, exposure, side)
            mask = coverage > 0.5

        image += 0.035 * sensor
        vignette = _ramp((1.1 + 0.08 * c[23]) - vignette_radius, side // 2)
        image *= vignette[..., None]
        mask &= vignette > 0.5
        out = np.clip(np.rint(image * 255), 0, 255).astype(np.uint8)
        meta = {
            "lumen_centre": [round(float(ly * side - 0.5), 2), round(float(lx * side - 0.5), 2)],
            "finding_radius_px": round(float(radius * side), 2),
        }
        return {"image": out}, {"finding": mask}, meta

    @staticmethod
    def _finding(
        image: np.ndarray,
        x: np.ndarray,
        y: np.ndarray,
        a: Mapping[str, str],
        disc: tuple[float, float, float],
        c: np.ndarray,
        grain: np.ndarray,
        mucosa_tone: np.ndarray,
        exposure: np.float32,
        side: int,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Composite the finding over the lit mucosa ``image`` (float32 ``(H, W, 3)``).

        Returns:
            the new image (float32 ``(H, W, 3)``) and the finding's coverage (float32 ``(H, W)`` in [0, 1]).
        """
        cx, cy, r = disc
        dx, dy = x - np.float32(cx), y - np.float32(cy)
        twist = 2 * np.pi * c[14]
        polyp = a["finding"] == "polyp"
        if a["morphology"] == "flat" or not polyp:
            # rotated ellipse: a flat plaque is wide and low, an ulcer a little oval
            cos_t, sin_t = np.float32(np.cos(twist)), np.float32(np.sin(twist))
            u, v = dx * cos_t + dy * sin_t, -dx * sin_t + dy * cos_t
            axes = (1.25 * r, 0.68 * r) if polyp else (1.1 * r, 0.88 * r)
            rho = np.sqrt((u / axes[0]) ** 2 + (v / axes[1]) ** 2)
            theta = np.arctan2(v, u)
        else:
            rho = np.sqrt(dx * dx + dy * dy) / r
            theta = np.arctan2(dy, dx)
        if not polyp:
            outline = 1 + 0.12 * np.sin(3 * theta + 2 * np.pi * c[15]) + 0.06 * np.sin(5 * theta + 2 * np.pi * c[16])
        elif a["surface"] == "lobulated":
            lobes = 4 + int(c[17] * 3)
            outline = 1 + 0.13 * np.cos(lobes * theta + 2 * np.pi * c[15])
        else:
            outline = 1 + 0.04 * np.sin(2 * theta + 2 * np.pi * c[15])
        rho_raw = rho
        rho = rho / outline
        coverage = _ramp((1 - rho) * r, side)
        height = np.sqrt(np.clip(1 - rho * rho, 0, 1))  # dome profile, 1 at the top
        mottle = (1 + 0.06 * grain)[..., None]

        if not polyp:
            # ulcer: a depressed crater, darker in the middle
            shade = (0.8 + 0.2 * np.clip(rho, 0, 1))[..., None]
            if a["colour"] == "pale":
                colour = _FIBRIN * exposure * shade * (1 + 0.12 * grain)[..., None]
                halo = np.clip(1 - (rho - 1) / 0.3, 0, 1) * (rho >= 1)  # haemorrhagic edge on the mucosa
                image = image * (1 - 0.8 * halo[..., None]) + (0.8 * halo)[..., None] * _CRATER * exposure
            else:
                colour = _HAEMORRHAGIC * exposure * shade * mottle
                rim = (rho > 0.72)[..., None]
                colour = np.where(rim, _FIBRIN * exposure * 0.95, colour)
            return image * (1 - coverage[..., None]) + colour * coverage[..., None], coverage

        base = _FINDING_COLOUR[a["colour"]] + 0.04 * (c[18:21].astype(np.float32) - 0.5)
        raised = a["morphology"] != "flat"
        shade = 0.58 + 0.47 * height if raised else 0.9 + 0.12 * height
        if a["surface"] == "lobulated":
            between_lobes = np.exp(-(((1 + np.cos(lobes * theta + 2 * np.pi * c[15])) / 0.35) ** 2))
            cleft = between_lobes * np.clip((rho - 0.25) / 0.2, 0, 1)
            ring = 0.8 * np.exp(-(((rho - 0.45) / 0.08) ** 2))
            shade = shade * (1 - 0.7 * np.maximum(cleft, ring))
        colour = base * exposure * shade[..., None] * mottle
        if a["surface"] == "ulcerated":
            patch = rho_raw / (0.5 * (1 + 0.15 * np.sin(3 * theta + 2 * np.pi * c[21])))
            colour = np.where((patch < 1)[..., None], _FIBRIN * exposure, colour)
            colour = np.where(((patch >= 1) & (patch < 1.45))[..., None], _CRATER * exposure, colour)
        else:
            # the specular highlight of a wet surface, up and left of the top
            glint = np.exp(-((dx / r + 0.3) ** 2 + (dy / r + 0.35) ** 2) / (2 * 0.11**2))
            colour = colour + (1.1 if raised else 0.6) * glint[..., None]

        if a["colour"] == "blue_dyed":
            # the submucosal cushion of injected indigo carmine: a wider, softer bluish swelling
            cushion = np.clip(1 - (rho_raw - 1.1) / 0.9, 0, 1) * 0.75
            luminance = image.mean(axis=2, keepdims=True) / 0.6
            image = image * (1 - cushion[..., None]) + cushion[..., None] * _CUSHION * np.clip(luminance, 0, 1.3)
        if raised:
            # at least ~1.5 px wide so that small polyps still show it
            shadow = 0.55 * np.clip(1 - (rho - 1) / (0.3 + 1.5 / (r * side)), 0, 1) * (rho >= 1)
            image = image * (1 - shadow[..., None])

        if a["morphology"] == "pedunculated":
            # a stalk under the head, towards the image centre (along a random diagonal for a centred head)
            ex, ey = 0.5 * x.shape[1] / side - cx, 0.5 * x.shape[0] / side - cy
            norm = float(np.hypot(ex, ey))
            if norm < 0.05:
                angle = np.pi / 4 + np.pi / 2 * int(c[22] * 4)
                ex, ey, norm = np.cos(angle), np.sin(angle), 1.0
            ux, uy = np.float32(ex / norm), np.float32(ey / norm)
            along = dx * ux + dy * uy
            across = np.abs(dy * ux - dx * uy)
            # a fixed extra length and a minimum width keep the stalk of a small polyp plain to see
            half_width = max(0.3 * r, 1.6 / side)
            length = 2.2 * r + 0.06
            stalk = _ramp(np.minimum(half_width - across, np.minimum(along, length - along)), side)
            cylinder = np.sqrt(np.clip(1 - (across / half_width) ** 2, 0, 1))
            under_head = 1 - 0.5 * np.clip(1 - (rho - 1) / 0.3, 0, 1)
            stalk_shade = (0.55 + 0.45 * cylinder * under_head)[..., None]
            stalk_colour = (0.75 * base + 0.25 * mucosa_tone) * exposure * stalk_shade
            colour = colour * coverage[..., None] + stalk_colour * (1 - coverage[..., None])
            coverage = coverage + stalk * (1 - coverage)
            # the stalk's own shadow on the mucosa along both edges, so that it stands out at small sizes
            edge = np.clip(1 - (across - half_width) * side / 2.0, 0, 1) * (across >= half_width)
            image = image * (1 - (0.5 * edge * (along > 0) * (along < length))[..., None])
        return image * (1 - coverage[..., None]) + colour * coverage[..., None], coverage

    # ---- text ------------------------------------------------------------------------------
    def describe(
        self, rng: np.random.Generator, label: Any, attributes: Mapping[str, str], meta: Mapping[str, Any]
    ) -> str:
        """A 1-3 sentence endoscopy description (finding, morphology, size, surface, colour, location)."""
        return _description(rng, attributes)

    # ---- identifiers ---------------------------------------------------------------------------
    def identifiers(self, seed: int, index: int) -> dict[str, Any]:
        """``image_id`` (:func:`image_identifier`) and ``patient_id``, the same id: Kvasir images have no patient
        ids."""
        image_id = image_identifier(seed, index)
        return {"image_id": image_id, "patient_id": image_id}


# ---------------------------------------------------------------------------------------------
# text

_SIZE_WORDS = {
    "small": ("small", "small-sized"),
    "medium": ("medium-sized", "moderately sized"),
    "large": ("large", "big"),
}
_MORPHOLOGY_WORDS = {
    "sessile": ("sessile", "broad-based sessile"),
    "pedunculated": ("pedunculated", "stalked"),
    "flat": ("flat", "flat, slightly elevated"),
}
_SURFACE_WORDS = {
    "smooth": ("smooth", "regular, smooth"),
    "lobulated": ("lobulated", "nodular, lobulated"),
    "ulcerated": ("ulcerated", "ulcerated, fibrin-covered"),
}
_COLOUR_WORDS = {
    "pale": ("pale", "whitish"),
    "red": ("red", "reddish", "erythematous"),
    "blue_dyed": ("blue-dyed", "blue-stained"),
}
_LOCATION_WORDS = {
    "centre": ("in the centre of the view", "centrally in the image", "in the middle of the frame"),
    "upper_left": ("in the upper left of the view", "at the top left of the image", "in the upper-left quadrant"),
    "upper_right": ("in the upper right of the view", "at the top right of the image", "in the upper-right quadrant"),
    "lower_left": ("in the lower left of the view", "at the bottom left of the image", "in the lower-left quadrant"),
    "lower_right": (
        "in the lower right of the view",
        "at the bottom right of the image",
        "in the lower-right quadrant",
    ),
}
_NORMAL_SENTENCES = (
    "Normal cecal mucosa with a clear vascular pattern; no polyp or ulcer is seen.",
    "The mucosa is pink and smooth with visible submucosal vessels. No lesion is in view.",
    "Normal colonic mucosa without polyps, ulcers or signs of inflammation.",
    "Unremarkable mucosa with an intact vessel pattern and regular folds; no focal lesion.",
)
_COLITIS_SENTENCES = (
    "The mucosa is diffusely inflamed, red and granular, with loss of the vascular pattern.",
    "Diffuse erythema and granularity of the mucosa with an absent vascular pattern, "
    "consistent with ulcerative colitis.",
    "Inflamed, red, granular mucosa without visible vessels, in keeping with active colitis.",
)
_ULCER_BASE = {
    "pale": ("white fibrin-covered", "pale, fibrinous", "whitish fibrin-coated"),
    "red": ("red, haemorrhagic", "dark red, bleeding", "haemorrhagic red"),
}


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _description(rng: np.random.Generator, a: Mapping[str, str]) -> str:
    if a["finding"] == "none":
        return pick(rng, _NORMAL_SENTENCES)
    size, where = pick(rng, _SIZE_WORDS[a["size"]]), pick(rng, _LOCATION_WORDS[a["location"]])
    if a["finding"] == "ulcer":
        colitis = pick(rng, _COLITIS_SENTENCES)
        base = pick(rng, _ULCER_BASE[a["colour"]])
        ulcer = pick(
            rng,
            (
                f"{_article(size).capitalize()} {size} ulcer with a {base} base is seen {where}.",
                f"There is {_article(size)} {size} ulcer {where}; its base is {base}.",
                f"{where[0].upper()}{where[1:]}, {_article(size)} {size} ulcer with a {base} base.",
            ),
        )
        return f"{colitis} {ulcer}" if rng.random() < 0.5 else f"{ulcer} {colitis}"
    morphology = pick(rng, _MORPHOLOGY_WORDS[a["morphology"]])
    surface, colour = pick(rng, _SURFACE_WORDS[a["surface"]]), pick(rng, _COLOUR_WORDS[a["colour"]])
    first = pick(
        rng,
        (
            f"{_article(size).capitalize()} {size} {morphology} polyp is seen {where}.",
            f"There is {_article(size)} {size} {morphology} polyp {where}.",
            f"{where[0].upper()}{where[1:]}, {_article(size)} {size} {morphology} polyp.",
        ),
    )
    second = pick(
        rng,
        (
            f"It is {colour} with {_article(surface)} {surface} surface.",
            f"The lesion looks {colour} and its surface is {surface}.",
            f"Its surface is {surface}; its colour is {colour}.",
        ),
    )
    sentences = [first, second]
    if a["colour"] == "blue_dyed":
        sentences.append(
            pick(
                rng,
                (
                    "It is lifted on a bluish cushion after submucosal injection of indigo carmine.",
                    "The polyp sits on a blue submucosal cushion of injected dye, ready for resection.",
                    "A dyed submucosal lift surrounds the base.",
                ),
            )
        )
    return " ".join(sentences)
