"""Built-in demo data: synthetic chest X-ray "phantoms" with reports, deterministic by seed.

No dataset can be downloaded at run time, so `vlp` draws its own. Each phantom is a frontal (PA)
chest radiograph in the radiological convention (the patient's RIGHT is on the image LEFT) with
lungs, mediastinum, heart, diaphragm domes, ribs, clavicles, spine and body outline, plus any of six
findings drawn at known positions. Every positive finding has a ground-truth box in image pixels and
the report sentence that describes it, so the data serves two purposes:

- the demo (a tiny model trained for minutes, then zero-shot per-finding AUROC on held-out images):
  the findings are large and contrasted enough to be seen at 128x128, and the reports carry them;
- a controlled benchmark for local alignment (phrase grounding of a sentence against its box).

Geometry is drawn in normalised coordinates (0..1 across the image), so `image_size` only changes the
sampling. Every random component (anatomy, per-study jitter, each finding, the report, the noise)
draws from its own generator, so forcing a finding on or off (``make_phantom(..., labels=...)``)
leaves the rest of the picture unchanged: the tests compare the same patient with and without it.

Layout written by `generate_demo_dataset` (see docs/demo_data.md)::

    out_dir/images/tr00012_s1.png  8-bit grayscale PNG (patient tr00012 of the train split, study 1)
    out_dir/manifest.jsonl         one study per line
    out_dir/demo_info.json         config, seed and counts; written last (marks a complete dataset)
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import hashlib
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal, Mapping

import numpy as np
from scipy import ndimage

FINDINGS: tuple[str, ...] = (
    "cardiomegaly",
    "pleural effusion",
    "nodule",
    "mass",
    "pneumothorax",
    "consolidation",
)
"""The findings drawn by the generator; `label_vector` in the manifest follows this order."""

GENERATOR_VERSION = 1
"""Bumped whenever the pixels or the reports change, so that a cached dataset is regenerated. The cache also
records a hash of this file (`_info`), so an edit that forgets the bump regenerates it too."""

Side = Literal["right", "left"]
"""The patient's side (right = image left, in the radiological convention)."""
Zone = Literal["upper", "middle", "lower"]
"""Vertical third of a lung field as projected on the frontal view."""

DEFAULT_PREVALENCE: dict[str, float] = {
    "cardiomegaly": 0.2,
    "pleural effusion": 0.15,
    "nodule": 0.15,
    "mass": 0.1,
    "pneumothorax": 0.1,
    "consolidation": 0.15,
}
"""Independent per-finding probabilities; the product of (1 - p) is the normal fraction (about 0.40)."""


@dataclass
class DemoConfig:
    """How phantoms are drawn.

    image_size: side of the square image in pixels.
    prevalence: probability of each finding (independent draws); keys must be in `FINDINGS`, missing
        ones keep their `DEFAULT_PREVALENCE`.
    noise: standard deviation of the additive pixel noise (intensity range 0..1).
    seed: the dataset seed (used by `generate_demo_dataset` when it is not given a seed).
    max_studies_per_patient: each patient gets 1..this many studies (same anatomy, new findings).
    negation_prob: probability that the report mentions a given absent finding as negative.
    """

    image_size: int = 256
    prevalence: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_PREVALENCE))
    noise: float = 0.02
    seed: int = 0
    max_studies_per_patient: int = 3
    negation_prob: float = 0.65

    def __post_init__(self) -> None:
        unknown = sorted(set(self.prevalence) - set(FINDINGS))
        if unknown:
            raise ValueError(f"DemoConfig.prevalence: unknown finding(s) {unknown}; known: {list(FINDINGS)}")
        for name, p in self.prevalence.items():
            if not 0.0 <= float(p) <= 1.0:
                raise ValueError(f"DemoConfig.prevalence[{name!r}] = {p}; must be within [0, 1]")
        self.prevalence = {name: float(self.prevalence.get(name, DEFAULT_PREVALENCE[name])) for name in FINDINGS}
        if self.image_size < 32:
            raise ValueError(f"DemoConfig.image_size = {self.image_size}; use at least 32 pixels")
        if self.noise < 0:
            raise ValueError(f"DemoConfig.noise = {self.noise}; must be >= 0")
        if self.max_studies_per_patient < 1:
            raise ValueError("DemoConfig.max_studies_per_patient must be >= 1")
        if not 0.0 <= self.negation_prob <= 1.0:
            raise ValueError(f"DemoConfig.negation_prob = {self.negation_prob}; must be within [0, 1]")


@dataclass
class Anatomy:
    """One patient's body, in normalised image coordinates (x right, y down, both 0..1)."""

    midline: float
    thorax_half: float  # half the internal thoracic width (lateral lung borders at their widest)
    lung_top: float  # y of the lung apices
    dome_right: float  # y of the top of the right hemidiaphragm (image left)
    dome_left: float  # y of the top of the left hemidiaphragm (image right), usually lower
    dome_depth: float  # how far the domes fall towards the costophrenic angles
    medial: float  # lateral distance from the midline where the lungs begin
    apex_frac: float  # where across the lung its apex lies (0 medial, 1 lateral)
    body_margin: float  # chest wall thickness outside the lungs
    mediastinum_half: float
    ctr: float  # cardiothoracic ratio when the heart is normal
    heart_aspect: float  # minor / major axis of the heart ellipse
    heart_tilt: float  # radians; the long axis runs down towards the image right
    rib_spacing: float
    rib_phase: float
    rib_curve: float
    clavicles: bool
    gastric_bubble: bool
    lung_level: float
    soft_level: float
    bone_level: float
    thorax_width_cm: float  # physical internal thoracic width: sets the cm scale of the report


@dataclass
class DemoSample:
    """One phantom study.

    image: float32 (H, W) in [0, 1]. report: "FINDINGS: ...\\nIMPRESSION: ...".
    labels: finding -> 0/1 for every name in `FINDINGS`.
    boxes: one dict per drawn lesion: finding, x, y, w, h (pixels, x/y the top-left corner), sentence
    (the findings-section sentence that describes it, verbatim in `report`), side ("right"/"left"/None,
    the patient's side), zone ("upper"/"middle"/"lower"/None), location (lobe name or None).
    masks: boolean (H, W) masks: "lungs", "heart", "mediastinum" and one per positive finding.
    attributes: measured values such as "cardiothoracic_ratio" (from the heart mask).
    """

    image: np.ndarray
    report: str
    findings: str
    impression: str
    labels: dict[str, int]
    boxes: list[dict[str, Any]]
    masks: dict[str, np.ndarray] = field(default_factory=dict)
    attributes: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------------------------
# Sampling helpers


def _u(rng: np.random.Generator, lo: float, hi: float) -> float:
    return float(rng.uniform(lo, hi))


def _child(rng: np.random.Generator) -> np.random.Generator:
    return np.random.default_rng(int(rng.integers(0, 2**63 - 1)))


def sample_anatomy(rng: np.random.Generator) -> Anatomy:
    """Draw one patient's anatomy (position, size and contrast all vary within plausible ranges)."""
    dome_right = _u(rng, 0.66, 0.74)
    return Anatomy(
        midline=0.5 + float(rng.normal(0.0, 0.012)),
        thorax_half=_u(rng, 0.33, 0.39),
        lung_top=_u(rng, 0.10, 0.15),
        dome_right=dome_right,
        dome_left=dome_right + _u(rng, 0.01, 0.035),
        dome_depth=_u(rng, 0.06, 0.1),
        medial=_u(rng, 0.025, 0.04),
        apex_frac=_u(rng, 0.35, 0.5),
        body_margin=_u(rng, 0.05, 0.09),
        mediastinum_half=_u(rng, 0.07, 0.085),
        ctr=_u(rng, 0.38, 0.46),
        heart_aspect=_u(rng, 0.72, 0.85),
        heart_tilt=_u(rng, 0.35, 0.6),
        rib_spacing=_u(rng, 0.052, 0.062),
        rib_phase=_u(rng, 0.0, 1.0),
        rib_curve=_u(rng, 0.8, 1.2),
        clavicles=bool(rng.random() < 0.85),
        gastric_bubble=bool(rng.random() < 0.6),
        lung_level=_u(rng, 0.13, 0.22),
        soft_level=_u(rng, 0.5, 0.62),
        bone_level=_u(rng, 0.8, 0.9),
        thorax_width_cm=_u(rng, 26.0, 32.0),
    )


def _jitter_study(anat: Anatomy, rng: np.random.Generator) -> Anatomy:
    """The same patient on another day: small shift, depth of inspiration, exposure."""
    dx, dy, insp = float(rng.normal(0, 0.01)), float(rng.normal(0, 0.008)), float(rng.normal(0, 0.012))
    return dataclasses.replace(
        anat,
        midline=anat.midline + dx,
        lung_top=anat.lung_top + dy,
        dome_right=anat.dome_right + dy + insp,
        dome_left=anat.dome_left + dy + insp,
        ctr=float(np.clip(anat.ctr + rng.normal(0, 0.01), 0.36, 0.47)),
        lung_level=float(np.clip(anat.lung_level + rng.normal(0, 0.015), 0.1, 0.26)),
        soft_level=float(np.clip(anat.soft_level + rng.normal(0, 0.02), 0.45, 0.66)),
    )


# ----------------------------------------------------------------------------------------------
# Geometry


def _sigmoid(z: np.ndarray) -> np.ndarray:
    """Soft step 0 -> 1 across z = 0 (a clipped ramp of slope 1/4, like the logistic's at 0; cheaper)."""
    return np.clip(z * np.float32(0.25) + np.float32(0.5), 0.0, 1.0)


@functools.lru_cache(maxsize=32)
def _interp_matrix(size: int, cells: int) -> np.ndarray:
    """(size, cells + 2) Gaussian interpolation weights from a coarse grid to pixel centres."""
    centres = (np.arange(cells + 2) - 0.5) / cells
    u = (np.arange(size) + 0.5) / size
    w = np.exp(-(((u[:, None] - centres[None, :]) * cells / 0.8) ** 2))
    return (w / w.sum(axis=1, keepdims=True)).astype(np.float32)


@functools.lru_cache(maxsize=1)
def _blas_controller():
    try:
        from threadpoolctl import ThreadpoolController
    except ImportError:  # optional: only speed depends on it
        return None
    return ThreadpoolController()


def _one_blas_thread():
    """Context that keeps BLAS on one thread: the tiny products below get slower, not faster, with more."""
    ctl = _blas_controller()
    return ctl.limit(limits=1, user_api="blas") if ctl is not None else contextlib.nullcontext()


def _smooth_noise(rng: np.random.Generator, size: int, cells: int) -> np.ndarray:
    """Smooth random field (unit-ish amplitude) with about `cells` bumps across the image.

    Separable Gaussian interpolation of a coarse normal grid: two small matrix products, much faster
    than spline zooming, which matters for generating thousands of images.
    """
    w = _interp_matrix(size, cells)
    coarse = rng.standard_normal((cells + 2, cells + 2)).astype(np.float32)
    return (w @ coarse @ w.T) * np.float32(1.6)


@dataclass
class _Grid:
    size: int
    x: np.ndarray  # (1, S) pixel centres, normalised
    y: np.ndarray  # (S, 1)
    px: float  # one pixel in normalised units


def _grid(size: int) -> _Grid:
    c = (np.arange(size, dtype=np.float32) + 0.5) / size
    return _Grid(size, c[None, :], c[:, None], 1.0 / size)


def _lung_margin(
    d: np.ndarray, y: np.ndarray, anat: Anatomy, dome: float, shrink_lat: float = 0.0, shrink_top: float = 0.0,
    use_dome: bool = True,
) -> np.ndarray:
    """Approximate signed distance (positive inside) to one lung outline, in normalised units.

    `d` is the lateral distance from the midline towards this lung's side. The outline is a
    ellipse whose centre sits at the dome level (so the lungs are widest at the bases and the
    lateral walls are vertical below it), cut from below by the diaphragm dome. `shrink_*` draws the
    edge of a collapsed lung (pneumothorax).
    """
    d_c = anat.medial + anat.apex_frac * (anat.thorax_half - anat.medial)
    a_lat = anat.thorax_half - d_c - shrink_lat
    a_med = d_c - anat.medial - 0.3 * shrink_lat
    b = dome - anat.lung_top - shrink_top
    dx = d - d_c
    a = np.where(dx > 0, a_lat, a_med)
    t = np.maximum(dome - y, 0.0) / b
    rho = np.sqrt((dx / a) ** 2 + t**2)
    margin = (1.0 - rho) * np.minimum(a, b * 0.6)
    if use_dome:
        dome_y = dome + anat.dome_depth * ((d - d_c) / (anat.thorax_half - d_c)) ** 2
        margin = np.minimum(margin, dome_y - y)
    return margin


def _dome_y(d: np.ndarray, anat: Anatomy, dome: float) -> np.ndarray:
    d_c = anat.medial + anat.apex_frac * (anat.thorax_half - anat.medial)
    return dome + anat.dome_depth * ((d - d_c) / (anat.thorax_half - d_c)) ** 2


def _heart_geometry(anat: Anatomy, ctr: float) -> tuple[float, float, float, float, float]:
    """Centre (x, y), semi-axes (a, b) and tilt of the heart ellipse for a cardiothoracic ratio.

    The ellipse is sized so that its horizontal extent is exactly `ctr` times the internal thoracic
    width (2 * thorax_half); about 65% of it lies to the patient's left (image right), as in life.
    """
    width = ctr * 2.0 * anat.thorax_half
    th, k = anat.heart_tilt, anat.heart_aspect
    a = (width / 2.0) / np.sqrt(np.cos(th) ** 2 + (k * np.sin(th)) ** 2)
    b = k * a
    half_h = a * np.sqrt(np.sin(th) ** 2 + (k * np.cos(th)) ** 2)
    hx = anat.midline + 0.15 * width
    hy = anat.dome_left - 0.35 * half_h
    return hx, float(hy), float(a), float(b), th


def _window(g: _Grid, x0: float, x1: float, y0: float, y1: float) -> tuple[slice, slice]:
    """Rows and columns of the pixels within [x0, x1] x [y0, y1] (normalised), clipped to the image."""
    S = g.size
    return (
        slice(min(max(int(np.floor(y0 * S)), 0), S), min(max(int(np.ceil(y1 * S)), 0), S)),
        slice(min(max(int(np.floor(x0 * S)), 0), S), min(max(int(np.ceil(x1 * S)), 0), S)),
    )


def _ellipse_field(g: _Grid, cx: float, cy: float, a: float, b: float, tilt: float) -> np.ndarray:
    """Signed distance-like field of a rotated ellipse, positive inside (normalised units).

    Computed only in the ellipse's bounding window (plus a margin); elsewhere it is -1 (far outside).
    """
    reach = max(a, b) + 4.0 * g.px
    win = _window(g, cx - reach, cx + reach, cy - reach, cy + reach)
    out = np.full((g.size, g.size), -1.0, np.float32)
    dx, dy = g.x[:, win[1]] - cx, g.y[win[0], :] - cy
    c, s = np.cos(tilt), np.sin(tilt)
    u = (dx * c + dy * s) / a
    v = (-dx * s + dy * c) / b
    out[win] = (1.0 - np.sqrt(u * u + v * v)) * min(a, b)
    return out


def _box_from_mask(mask: np.ndarray) -> tuple[int, int, int, int] | None:
    rows, cols = np.nonzero(mask.any(axis=1))[0], np.nonzero(mask.any(axis=0))[0]
    if rows.size == 0:
        return None
    return int(cols[0]), int(rows[0]), int(cols[-1] - cols[0] + 1), int(rows[-1] - rows[0] + 1)


# ----------------------------------------------------------------------------------------------
# Findings: parameters are drawn for every finding (present or not) from the finding's own generator,
# so that switching one on changes nothing else.

_LOBES: dict[tuple[str, str], str] = {
    ("right", "upper"): "right upper lobe",
    ("right", "middle"): "right middle lobe",
    ("right", "lower"): "right lower lobe",
    ("left", "upper"): "left upper lobe",
    ("left", "middle"): "lingula",
    ("left", "lower"): "left lower lobe",
}
_ZONE_PHRASES: dict[tuple[str, str], list[str]] = {
    ("right", "upper"): ["right upper lobe", "right upper lung zone", "right upper lung"],
    ("right", "middle"): ["right middle lobe", "right mid lung zone", "right midlung"],
    ("right", "lower"): ["right lower lobe", "right lower lung zone", "right lung base"],
    ("left", "upper"): ["left upper lobe", "left upper lung zone", "left upper lung"],
    ("left", "middle"): ["lingula", "left mid lung zone", "left midlung"],
    ("left", "lower"): ["left lower lobe", "left lower lung zone", "left lung base"],
}
_ZONE_RANGE: dict[str, tuple[float, float]] = {"upper": (0.12, 0.35), "middle": (0.42, 0.6), "lower": (0.66, 0.86)}


def _side_sign(side: str) -> float:
    """+1 when the patient's side lies on the image right (the patient's left), -1 otherwise."""
    return 1.0 if side == "left" else -1.0


def _place_in_lung(
    rng: np.random.Generator, anat: Anatomy, vis: dict[str, np.ndarray], g: _Grid, side: str, zone: str, radius: float
) -> tuple[float, float]:
    """A centre in the given lung zone such that a disc of `radius` lies (almost) inside visible lung."""
    s = _side_sign(side)
    dome = anat.dome_left if side == "left" else anat.dome_right
    lo, hi = _ZONE_RANGE[zone]
    best, best_score = (0.0, 0.0), -1.0
    angles = np.linspace(0, 2 * np.pi, 8, endpoint=False)
    for _ in range(40):
        fy = _u(rng, lo, hi)
        cy = anat.lung_top + fy * (dome - anat.lung_top)
        d = _u(rng, anat.medial + 0.3 * (anat.thorax_half - anat.medial), anat.thorax_half - radius - 0.01)
        cx = anat.midline + s * d
        pts_x = cx + radius * np.cos(angles)
        pts_y = cy + radius * np.sin(angles)
        xs = np.clip(np.concatenate([[cx], pts_x]) * g.size, 0, g.size - 1).astype(int)
        ys = np.clip(np.concatenate([[cy], pts_y]) * g.size, 0, g.size - 1).astype(int)
        score = float(vis[side][ys, xs].mean())
        if score > best_score:
            best, best_score = (cx, cy), score
        if score > 0.97:
            break
    return best


@dataclass
class _Lesion:
    finding: str
    side: Side | None
    zone: Zone | None
    mask: np.ndarray  # bool
    attrs: dict[str, Any]


def _random_side(rng: np.random.Generator) -> Side:
    return "right" if rng.random() < 0.5 else "left"


def _random_zone(rng: np.random.Generator) -> Zone:
    draw = rng.random()
    return "upper" if draw < 0.4 else ("middle" if draw < 0.65 else "lower")


# ----------------------------------------------------------------------------------------------
# Rendering

_NR, _NT, _RMAX = 48, 360, 0.5  # polar table of the vascular tree: radius bins, angle bins, extent


@functools.lru_cache(maxsize=1)
def _vessel_bank(n: int = 12) -> np.ndarray:
    """A fixed bank of vessel trees (seeded, so deterministic); each image picks and rotates two."""
    rng = np.random.default_rng(20240101)
    return np.stack([_vessel_table(rng) for _ in range(n)])


def _vessel_table(rng: np.random.Generator) -> np.ndarray:
    """Pulmonary vessels around one hilum as a polar (radius, angle) intensity table.

    Trunks leave the hilum, curve gently, taper and end; smaller branches start further out. Drawing
    them in a 48 x 360 polar table and looking the table up per pixel costs far less than drawing
    segments in the image, and the vessels' physical width (not their angle) tapers with distance.
    """
    r = ((np.arange(_NR, dtype=np.float32) + 0.5) * (_RMAX / _NR))[None, :, None]
    t = ((np.arange(_NT, dtype=np.float32) + 0.5) * (2 * np.pi / _NT) - np.pi)[None, None, :]
    n_trunk, n_branch = 14, 22
    n = n_trunk + n_branch
    theta0 = rng.uniform(-np.pi, np.pi, n).astype(np.float32)
    parents = rng.integers(0, n_trunk, n_branch)
    theta0[n_trunk:] = theta0[parents] + rng.choice([-1.0, 1.0], n_branch) * rng.uniform(0.12, 0.35, n_branch)
    start = np.concatenate([np.full(n_trunk, 0.015), rng.uniform(0.06, 0.18, n_branch)]).astype(np.float32)
    length = np.concatenate([rng.uniform(0.18, 0.32, n_trunk), rng.uniform(0.06, 0.16, n_branch)]).astype(np.float32)
    width0 = np.concatenate([rng.uniform(0.009, 0.014, n_trunk), rng.uniform(0.005, 0.008, n_branch)]).astype(np.float32)
    amp = np.concatenate([rng.uniform(0.7, 1.0, n_trunk), rng.uniform(0.4, 0.8, n_branch)]).astype(np.float32)
    bend = rng.normal(0.0, 0.4, n).astype(np.float32)
    shape = (n, 1, 1)
    theta0, start, length, width0, amp, bend = (v.reshape(shape) for v in (theta0, start, length, width0, amp, bend))
    along = (r - start) / length  # 0 at the vessel's origin, 1 at its end
    dth = t - (theta0 + bend * (r - start))
    dth = (dth + np.pi) % (2 * np.pi) - np.pi
    width = width0 * np.clip(1.0 - 0.7 * along, 0.3, 1.0)
    on = np.clip(along * 8.0, 0, 1) * np.clip((1.0 - along) * 4.0, 0, 1)
    return (amp * on * np.exp(-((dth * r / width) ** 2))).max(axis=0)




def _render(
    anat: Anatomy, labels: Mapping[str, int], finding_rngs: Mapping[str, np.random.Generator],
    tex_rng: np.random.Generator, config: DemoConfig, study_rng: np.random.Generator,
) -> tuple[np.ndarray, list[_Lesion], dict[str, np.ndarray], dict[str, Any]]:
    """Draw the image; returns it, the drawn lesions (with masks), anatomy masks and measurements.

    Large structures are composited (each replaces what lies behind it with its own intensity, weighted
    by a soft mask); thin ones (ribs, clavicles, vessels, nodules) are added on top, as attenuations add.
    """
    S = config.image_size
    g = _grid(S)
    px = g.px
    soft = 1.2 * px  # edge softness of the organs
    cx = anat.midline
    X, Y = g.x, g.y
    dxs = X - cx  # signed: positive towards the image right (the patient's left)
    ax = np.abs(dxs)
    cm_per_unit = anat.thorax_width_cm / (2.0 * anat.thorax_half)
    dome_lo = max(anat.dome_left, anat.dome_right)

    # --- the heart's size is the one finding that changes the anatomy -----------------------------
    ctr_big = _u(finding_rngs["cardiomegaly"], 0.54, 0.66)
    ctr = ctr_big if labels["cardiomegaly"] else anat.ctr

    # --- anatomy masks ----------------------------------------------------------------------------
    dome_of_x = np.where(dxs > 0, anat.dome_left, anat.dome_right).astype(np.float32)
    below_dome = _sigmoid((Y - _dome_y(ax, anat, dome_of_x)) / soft)
    hx, hy, ha, hb, ht = _heart_geometry(anat, ctr)
    heart = _sigmoid(_ellipse_field(g, hx, hy, ha, hb, ht) / soft) * (1.0 - below_dome)

    mh = anat.mediastinum_half
    widen = np.clip((Y - anat.lung_top - 0.1) / 0.35, 0, 1)
    half_med = np.where(dxs > 0, mh * (0.8 + 0.3 * widen), mh * (0.75 + 0.25 * widen))
    knob = _sigmoid(_ellipse_field(g, cx + 0.9 * mh, anat.lung_top + 0.17, 0.032, 0.028, 0.0) / soft)
    med = np.maximum(_sigmoid((half_med - ax) / soft), knob) * _sigmoid((dome_lo + 0.02 - Y) / soft)

    lungs_raw: dict[str, np.ndarray] = {}
    lung_win: dict[str, tuple[slice, slice]] = {}
    lung_margin: dict[str, np.ndarray] = {}  # inside each lung's window
    vis: dict[str, np.ndarray] = {}
    occl = np.maximum(heart, med)
    for side in ("right", "left"):
        s = _side_sign(side)
        dome = anat.dome_left if side == "left" else anat.dome_right
        x_a, x_b = sorted((cx + s * (anat.medial - 0.01), cx + s * (anat.thorax_half + 0.02)))
        lung_win[side] = _window(g, x_a, x_b, anat.lung_top - 0.02, dome + anat.dome_depth + 0.03)
        win = lung_win[side]
        lungs_raw[side] = np.zeros((S, S), np.float32)
        lung_margin[side] = _lung_margin(s * dxs[:, win[1]], Y[win[0], :], anat, dome)
        lungs_raw[side][win] = _sigmoid(lung_margin[side] / soft)
        vis[side] = lungs_raw[side] * (1.0 - occl)

    # body outline: neck, shoulders running off the image, chest wall outside the lungs
    body_half = anat.thorax_half + anat.body_margin
    sh = np.clip((Y - 0.02) / 0.1, 0, 1)
    sh = sh * sh * (3 - 2 * sh)
    half_w = 0.09 + (body_half - 0.09) * sh + 0.12 * np.exp(-(((Y - 0.13) / 0.1) ** 2)) * sh
    body = _sigmoid((half_w - ax) / (2 * px))
    thick = np.sqrt(np.clip(1.0 - (ax / np.maximum(half_w, 1e-3)) ** 2, 0.0, 1.0))

    # --- base: soft tissue, abdomen, mediastinum, heart, trachea, spine -------------------------
    img = np.full((S, S), 0.04, np.float32)
    soft_I = anat.soft_level * (0.68 + 0.32 * thick) + 0.13 * below_dome * thick
    img = img * (1 - body) + soft_I * body
    if anat.gastric_bubble:
        gb = _sigmoid(_ellipse_field(g, cx + 0.55 * anat.thorax_half, anat.dome_left + 0.05, 0.045, 0.022, 0.1) / soft)
        img = img - 0.2 * gb * below_dome * body
    centre_I = anat.soft_level + 0.2
    img = img * (1 - med) + centre_I * med
    img = img * (1 - heart) + (centre_I - 0.01) * heart
    carina = anat.lung_top + 0.2
    trachea = _sigmoid((0.019 - np.abs(dxs - 0.003)) / soft) * _sigmoid((carina - Y) / (3 * px))
    img = img - 0.17 * trachea * body
    spine = _sigmoid((0.03 - ax) / soft)
    vert = 0.5 + 0.5 * np.cos(2 * np.pi * (Y / 0.042 + anat.rib_phase))
    img = img + (0.02 + 0.035 * vert**6) * spine * body * (0.3 + 0.3 * below_dome + 0.6 * med)

    # --- lungs: parenchyma, vascular markings; pneumothorax -------------------------------------
    lesions: list[_Lesion] = []
    texture = _smooth_noise(tex_rng, S, max(8, S // 6)) * np.float32(0.015)
    wiggle = _smooth_noise(tex_rng, S, 6) * np.float32(0.07)
    bank = _vessel_bank()
    vessel_tables = [np.roll(bank[int(tex_rng.integers(len(bank)))], int(tex_rng.integers(_NT)), axis=1) for _ in range(2)]
    r_ptx = finding_rngs["pneumothorax"]
    ptx_side = _random_side(r_ptx)
    ptx_size = _u(r_ptx, 0.15, 0.35)  # fraction of the lung width that has collapsed away from the wall
    lung_I = np.zeros((S, S), np.float32)
    for i, side in enumerate(("right", "left")):
        s = _side_sign(side)
        dome = anat.dome_left if side == "left" else anat.dome_right
        win = lung_win[side]  # work inside the lung's bounding box only
        Xw, Yw = X[:, win[1]], Y[win[0], :]
        d = s * (Xw - cx)
        height = dome - anat.lung_top
        fy = np.clip((Yw - anat.lung_top) / height, 0, 1)
        I_side = anat.lung_level + 0.08 * fy**2 + 0.03 * (1 - np.clip(d / anat.thorax_half, 0, 1))
        # vessels: looked up in a polar table around the hilum, fading towards the periphery
        hil_x, hil_y = cx + s * (mh + 0.02), anat.lung_top + 0.45 * height
        rx_, ry_ = Xw - hil_x, Yw - hil_y
        r = np.sqrt(rx_ * rx_ + ry_ * ry_)
        theta = np.arctan2(ry_, rx_) + wiggle[win]
        ti = ((theta + np.pi) * (_NT / (2 * np.pi))).astype(np.int32) % _NT
        ri = np.minimum((r * (_NR / _RMAX)).astype(np.int32), _NR - 1)
        I_side = I_side + 0.09 * vessel_tables[i][ri, ti] + 0.1 * np.exp(-((r / 0.035) ** 2)) + texture[win]
        if labels["pneumothorax"] and side == ptx_side:
            # the lung edge (visceral pleura) falls away from the apex and the lateral wall; the gap
            # is air without markings, the edge a thin bright line; it tapers off towards the base
            a_lat = anat.thorax_half - (anat.medial + anat.apex_frac * (anat.thorax_half - anat.medial))
            shrink = min(ptx_size * (anat.thorax_half - anat.medial), 0.8 * a_lat)
            taper = np.clip((anat.lung_top + 0.85 * height - Yw) / (0.35 * height), 0, 1)
            m_coll = _lung_margin(d, Yw, anat, dome, shrink_lat=shrink * taper, shrink_top=1.3 * shrink, use_dome=False)
            lung_w = lungs_raw[side][win]
            air = _sigmoid(-m_coll / soft) * lung_w
            I_side = I_side * (1 - air) + (0.4 * anat.lung_level - 0.03) * air + 0.04 * (1 - air) * lung_w
            lw = max(0.8 * px, 0.8 / 256)  # the line sits just inside the collapsed lung's edge
            line = np.exp(-(((m_coll - 1.5 * lw) / lw) ** 2)) * lung_w * taper
            I_side = I_side + 0.2 * line
            ptx_mask = np.zeros((S, S), bool)
            ptx_mask[win] = (air * (1 - occl[win])) > 0.5
            lesions.append(_Lesion("pneumothorax", side, None, ptx_mask, {"size": ptx_size}))
        lung_I[win] += I_side * vis[side][win]
    lung_any = np.clip(vis["right"] + vis["left"], 0, 1)
    img = img * (1 - lung_any) + lung_I

    # --- consolidation: patchy opacity with air bronchograms --------------------------------------
    r_con = finding_rngs["consolidation"]
    con_side, con_zone = _random_side(r_con), _random_zone(r_con)
    con_rad = _u(r_con, 0.07, 0.1)
    con_c = _place_in_lung(r_con, anat, vis, g, con_side, con_zone, 0.7 * con_rad)
    con_noise = _smooth_noise(r_con, S, max(10, S // 12))
    con_dirs = [(_u(r_con, -0.6, 0.6), _u(r_con, 0.6, 1.0)) for _ in range(4)]
    if labels["consolidation"]:
        rr = ((X - con_c[0]) ** 2 + (Y - con_c[1]) ** 2) / con_rad**2
        blob = np.exp(-rr) * (1 + 0.4 * con_noise)
        cons = _sigmoid((blob - 0.45) / 0.08) * vis[con_side]
        img = img + 0.34 * cons * (0.75 + 0.25 * np.clip(con_noise, -1, 1))
        s = _side_sign(con_side)
        bron = np.zeros((S, S), np.float32)
        for lat, down in con_dirs:  # dark air-filled bronchi running away from the hilum
            vx, vy = s * (0.55 + 0.45 * abs(lat)), down * 0.8 + lat * 0.2
            n = float(np.hypot(vx, vy))
            vx, vy = vx / n, vy / n
            sx, sy = con_c[0] - vx * con_rad, con_c[1] - vy * con_rad
            t = np.clip((X - sx) * vx + (Y - sy) * vy, 0, 2 * con_rad)
            dist2 = (X - (sx + t * vx)) ** 2 + (Y - (sy + t * vy)) ** 2
            width = max(1.1 * px, 0.006) * (1.0 - 0.5 * t / (2 * con_rad))
            bron = np.maximum(bron, np.exp(-dist2 / width**2))
        img = img - 0.13 * bron * cons
        lesions.append(_Lesion("consolidation", con_side, con_zone, cons > 0.5, {"location": _LOBES[(con_side, con_zone)]}))

    # --- nodule (small, round) and mass (large, lobulated) -------------------------------------
    for name, (dlo, dhi), amp in (("nodule", (1.2, 3.0), 0.32), ("mass", (3.5, 7.0), 0.34)):
        r_f = finding_rngs[name]
        f_side, f_zone = _random_side(r_f), _random_zone(r_f)
        diam_cm = round(_u(r_f, dlo, dhi), 1)
        rad = max(diam_cm / 2.0 / cm_per_unit, 1.5 * px)
        centre = _place_in_lung(r_f, anat, vis, g, f_side, f_zone, rad)
        lobes = [(_u(r_f, -0.5, 0.5) * rad, _u(r_f, -0.5, 0.5) * rad, _u(r_f, 0.55, 0.8) * rad) for _ in range(3)]
        if not labels[name]:
            continue
        if name == "nodule":
            fld = _ellipse_field(g, centre[0], centre[1], rad, rad, 0.0)
        else:
            fld = _ellipse_field(g, centre[0], centre[1], 0.8 * rad, 0.8 * rad, 0.0)
            for ox, oy, rl in lobes:
                fld = np.maximum(fld, _ellipse_field(g, centre[0] + ox, centre[1] + oy, rl, rl, 0.0))
        inside = _sigmoid(fld / (0.8 * px))
        img = img + amp * inside * (0.6 + 0.4 * np.sqrt(np.clip(fld / (0.5 * rad), 0, 1)))
        attrs = {"diameter_cm": diam_cm, "location": _LOBES[(f_side, f_zone)]}
        lesions.append(_Lesion(name, f_side, f_zone, inside > 0.5, attrs))

    # --- pleural effusion: dependent homogeneous opacity, meniscus, blunted angle ---------------
    r_eff = finding_rngs["pleural effusion"]
    eff_sides = ["right", "left"] if r_eff.random() < 0.2 else [_random_side(r_eff)]
    eff_frac = _u(r_eff, 0.15, 0.45)
    fluid = np.zeros((S, S), np.float32)
    if labels["pleural effusion"]:
        if labels["pneumothorax"] and ptx_side in eff_sides:  # no hydropneumothorax in the phantoms
            eff_sides = [sd for sd in ("right", "left") if sd != ptx_side]
        for side in eff_sides:
            s = _side_sign(side)
            dome = anat.dome_left if side == "left" else anat.dome_right
            q = np.clip((s * dxs - anat.medial) / (anat.thorax_half - anat.medial), 0, 1)
            height = dome - anat.lung_top
            level = dome + anat.dome_depth - eff_frac * height  # the fluid climbs the lateral wall...
            surface = level + 0.5 * eff_frac * height * (1 - q) ** 2  # ...and dips medially: a meniscus
            # the fluid reaches a little past the lung edge, so it merges with the diaphragm (no seam)
            reach = np.zeros((S, S), np.float32)
            reach[lung_win[side]] = _sigmoid(lung_margin[side] / soft + 3.0)
            fl = _sigmoid((Y - surface) / (1.5 * px)) * reach * (1 - occl)
            fluid = np.maximum(fluid, fl)
            lesions.append(_Lesion("pleural effusion", side, None, fl > 0.5, {"size": eff_frac, "bilateral": len(eff_sides) == 2}))
        fluid_I = anat.soft_level * (0.68 + 0.32 * thick) + 0.12 * thick + texture  # as dense as the abdomen
        img = img * (1 - fluid) + fluid_I * fluid

    # --- ribs and clavicles (computed in the thorax window) -------------------------------------
    wobble = _smooth_noise(tex_rng, S, 5) * np.float32(0.2)
    tw = anat.thorax_half * 1.15
    win = _window(g, cx - tw, cx + tw, anat.lung_top - 0.07, dome_lo + 0.06)
    Yw = Y[win[0], :]
    q = ax[:, win[1]] / anat.thorax_half
    sp = anat.rib_spacing
    curve = anat.rib_curve * sp * (2.6 * q**2 - 0.9 * q)  # posterior ribs: up from the spine, then down
    rho = (Yw - anat.lung_top + 0.02 - curve) / sp + anat.rib_phase + wobble[win]
    ph = rho - np.floor(rho)
    width = 0.4  # of the spacing
    band = _sigmoid((width / 2 - np.abs(ph - width / 2)) * sp / px)
    cortex = np.exp(-((np.minimum(ph, np.abs(ph - width)) * sp / (1.2 * px)) ** 2))
    extent = _sigmoid((1.12 - q) / 0.03) * _sigmoid((q - 0.06) / 0.03)
    extent = extent * (_sigmoid((dome_lo + 0.03 - Yw) / 0.02) * _sigmoid((Yw - anat.lung_top + 0.04) / 0.02))
    curve2 = -1.8 * sp * q  # anterior ribs: from the lateral wall down towards the midline
    rho2 = (Yw - anat.lung_top - 0.05 - curve2) / (1.1 * sp) + 0.5 * anat.rib_phase + wobble[win]
    ph2 = rho2 - np.floor(rho2)
    band2 = _sigmoid((0.16 - np.abs(ph2 - 0.16)) * sp / px) * _sigmoid((q - 0.4) / 0.05)
    ribs = (0.65 * band + 0.35 * cortex * band + 0.35 * band2) * extent
    rib_amp = (0.015 + 0.045 * lung_any[win] * (1 - 0.6 * fluid[win])) * (anat.bone_level / 0.85)
    img[win] += rib_amp * ribs
    if anat.clavicles:
        cw = _window(g, cx - 0.85 * anat.thorax_half, cx + 0.85 * anat.thorax_half, anat.lung_top - 0.06, anat.lung_top + 0.06)
        q = ax[:, cw[1]] / anat.thorax_half
        qq = np.clip((q - 0.06) / 0.7, 0, 1)
        yc = anat.lung_top + 0.03 - 0.05 * qq + 0.012 * np.sin(np.pi * qq * 2)
        clav = _sigmoid((0.012 - np.abs(Y[cw[0], :] - yc)) / soft) * _sigmoid((q - 0.06) / 0.02) * _sigmoid((0.8 - q) / 0.03)
        img[cw] += 0.12 * clav * (anat.bone_level / 0.85)

    # --- exposure, blur, noise ------------------------------------------------------------------
    img = img + 0.035 * _smooth_noise(tex_rng, S, 4) * body
    img = np.clip(img, 0, 1)
    img = img + _u(study_rng, -0.3, 0.3) * img * (1 - img)  # a gamma-like curve, cheaper than a power
    img = img * _u(study_rng, 0.92, 1.05) + _u(study_rng, -0.03, 0.03)
    if S >= 128:
        img = ndimage.gaussian_filter(img, sigma=0.5 * S / 256, truncate=3.0)
    if config.noise > 0:
        img = img + np.float32(config.noise) * tex_rng.standard_normal((S, S), dtype=np.float32)
    img = np.clip(img, 0.0, 1.0).astype(np.float32)

    heart_mask = heart > 0.5
    box = _box_from_mask(heart_mask)
    measured_ctr = (box[2] if box else 0) / (2.0 * anat.thorax_half * S)
    if labels["cardiomegaly"]:
        lesions.insert(0, _Lesion("cardiomegaly", None, None, heart_mask, {"ctr": measured_ctr}))
    masks = {"lungs": lung_any > 0.5, "heart": heart_mask, "mediastinum": med > 0.5}
    attrs = {
        "cardiothoracic_ratio": measured_ctr,
        "thoracic_width_px": 2.0 * anat.thorax_half * S,
        "pixel_spacing_cm": cm_per_unit / S,
    }
    return img, lesions, masks, attrs


# ----------------------------------------------------------------------------------------------
# Reports


def _cap(s: str) -> str:
    return s[0].upper() + s[1:]


def _size_word(frac: float, cuts: tuple[float, float]) -> str:
    return "small" if frac < cuts[0] else ("moderate" if frac < cuts[1] else "large")


def _positive_sentence(rng: np.random.Generator, les: _Lesion, sides: list[str]) -> str:
    """One sentence describing one finding (and only it), with its side/lobe and size."""
    pick = lambda options: str(options[int(rng.integers(len(options)))])  # noqa: E731
    f = les.finding
    if f == "cardiomegaly":
        ctr = les.attrs["ctr"]
        sev = "mild" if ctr < 0.57 else ("moderate" if ctr < 0.62 else "marked")
        return pick([
            "The heart is enlarged.",
            "Enlarged cardiac silhouette.",
            "Cardiomegaly.",
            f"There is {sev} cardiomegaly.",
            "The cardiac silhouette is enlarged.",
            f"{_cap(sev)} enlargement of the cardiac silhouette.",
            "Heart size is enlarged.",
        ])
    if f == "pleural effusion":
        size = _size_word(les.attrs["size"], (0.2, 0.3))
        if len(sides) == 2:
            return pick([
                f"{_cap(size)} bilateral pleural effusions.",
                f"There are {size} bilateral pleural effusions.",
                "Bilateral pleural effusions with blunting of both costophrenic angles.",
            ])
        side = sides[0]
        return pick([
            f"There is a {size} {side} pleural effusion.",
            f"{_cap(size)} {side} pleural effusion.",
            f"{_cap(side)} pleural effusion with blunting of the costophrenic angle.",
            f"Blunting of the {side} costophrenic angle consistent with a {size} pleural effusion.",
            f"Layering fluid at the {side} base compatible with a pleural effusion.",
        ])
    if f == "pneumothorax":
        size = _size_word(les.attrs["size"], (0.21, 0.28))
        side = les.side
        return pick([
            f"There is a {size} {side} pneumothorax.",
            f"{_cap(side)} apical pneumothorax with a visible pleural line.",
            f"A {size} {side}-sided pneumothorax is present.",
            f"{_cap(size)} {side} pneumothorax.",
            f"{_cap(side)}-sided pneumothorax with the visceral pleural line displaced from the chest wall.",
        ])
    place = pick(_ZONE_PHRASES[(les.side, les.zone)])
    if f == "nodule":
        cm = les.attrs["diameter_cm"]
        return pick([
            f"There is a {cm} cm nodule in the {place}.",
            f"A {cm} cm nodular opacity projects over the {place}.",
            f"{cm} cm pulmonary nodule in the {place}.",
            f"Rounded nodule in the {place} measuring {cm} cm.",
            f"Small nodule in the {place}.",
        ])
    if f == "mass":
        cm = les.attrs["diameter_cm"]
        return pick([
            f"There is a {cm} cm mass in the {place}.",
            f"Large mass in the {place} measuring {cm} cm.",
            f"A lobulated mass measuring {cm} cm is seen in the {place}.",
            f"{_cap(place)} mass measuring {cm} cm.",
        ])
    if f == "consolidation":
        return pick([
            f"There is consolidation in the {place}.",
            f"Patchy airspace consolidation in the {place} with air bronchograms.",
            f"Focal consolidation in the {place}.",
            f"Airspace opacity in the {place} compatible with consolidation.",
        ])
    raise ValueError(f"unknown finding {f!r}")


def _short_name(les_list: list[_Lesion]) -> str:
    """The finding as named in the impression (e.g. "right pleural effusion")."""
    les = les_list[0]
    f = les.finding
    if f == "pleural effusion":
        return "bilateral pleural effusions" if len(les_list) == 2 else f"{les.side} pleural effusion"
    if f == "pneumothorax":
        return f"{les.side} pneumothorax"
    if f in ("nodule", "mass", "consolidation"):
        return f"{les.attrs['location']} {f}"
    return f


_NEGATIVE: dict[str, list[str]] = {
    "cardiomegaly": [
        "Heart size is normal.",
        "The cardiac silhouette is within normal limits.",
        "Normal heart size.",
        "No cardiomegaly.",
        "The cardiomediastinal silhouette is normal.",
    ],
    "pleural effusion": [
        "No pleural effusion.",
        "No pleural effusion is seen.",
        "There is no pleural effusion.",
        "The costophrenic angles are sharp.",
    ],
    "nodule": ["No pulmonary nodules.", "No suspicious pulmonary nodule.", "No nodule is identified."],
    "mass": ["No pulmonary mass.", "No mass lesion.", "No focal mass is seen."],
    "pneumothorax": ["No pneumothorax.", "There is no pneumothorax.", "No evidence of pneumothorax."],
    "consolidation": ["No focal consolidation.", "No consolidation.", "No focal airspace disease."],
}
_NEGATIVE_PAIRS: dict[tuple[str, str], list[str]] = {
    ("pleural effusion", "pneumothorax"): [
        "No pleural effusion or pneumothorax.",
        "There is no pleural effusion or pneumothorax.",
        "No pneumothorax or pleural effusion.",
    ],
    ("nodule", "mass"): ["No nodules or masses.", "No pulmonary nodule or mass."],
}
_FILLER = [
    "The mediastinal contours are normal.",
    "The trachea is midline.",
    "The osseous structures are intact.",
    "No acute bony abnormality.",
    "Visualized upper abdomen is unremarkable.",
    "The pulmonary vasculature is normal.",
    "The hila are unremarkable.",
]
_NORMAL_IMPRESSION = [
    "No acute cardiopulmonary abnormality.",
    "Normal chest radiograph.",
    "No acute cardiopulmonary process.",
    "No active disease.",
]


def _write_report(
    rng: np.random.Generator, labels: Mapping[str, int], lesions: list[_Lesion], config: DemoConfig
) -> tuple[str, str, dict[str, str]]:
    """Findings and impression; returns them and the findings sentence of each positive finding."""
    by_finding: dict[str, list[_Lesion]] = {}
    for les in lesions:
        by_finding.setdefault(les.finding, []).append(les)
    sentences: list[str] = []
    sentence_of: dict[str, str] = {}
    for f in FINDINGS:
        if f in by_finding:
            sides = [les.side for les in by_finding[f] if les.side]
            sent = _positive_sentence(rng, by_finding[f][0], sides)
            sentence_of[f] = sent
            sentences.append(sent)
    absent = [f for f in FINDINGS if f not in by_finding and rng.random() < config.negation_prob]
    for pair, options in _NEGATIVE_PAIRS.items():
        if all(p in absent for p in pair) and rng.random() < 0.5:
            sentences.append(str(options[int(rng.integers(len(options)))]))
            absent = [f for f in absent if f not in pair]
    for f in absent:
        sentences.append(str(_NEGATIVE[f][int(rng.integers(len(_NEGATIVE[f])))]))
    lung_findings = ("pleural effusion", "nodule", "mass", "pneumothorax", "consolidation")
    if not any(labels[f] for f in lung_findings) and rng.random() < 0.6:
        sentences.append("The lungs are clear." if rng.random() < 0.7 else "The lungs are clear without focal abnormality.")
    for i in rng.permutation(len(_FILLER))[: int(rng.integers(0, 3))]:
        sentences.append(_FILLER[int(i)])
    order = rng.permutation(len(sentences))
    findings_text = " ".join(sentences[int(i)] for i in order)

    if not by_finding:
        impression = _NORMAL_IMPRESSION[int(rng.integers(len(_NORMAL_IMPRESSION)))]
    else:
        names = [_short_name(by_finding[f]) for f in FINDINGS if f in by_finding]
        names = [names[int(i)] for i in rng.permutation(len(names))]
        joined = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
        impression = _cap(joined) + "."
    return findings_text, impression, sentence_of


# ----------------------------------------------------------------------------------------------
# Public API


def make_phantom(
    rng: np.random.Generator,
    config: DemoConfig | None = None,
    anatomy: Anatomy | None = None,
    labels: Mapping[str, int | bool] | None = None,
) -> DemoSample:
    """Draw one phantom study with its report, labels, boxes and masks.

    rng: the study's generator (the same state gives the same sample).
    anatomy: the patient (from `sample_anatomy`); drawn from `rng` when None. A study jitter (shift,
        inspiration, exposure) is applied on top, so two studies of one patient differ slightly.
    labels: force the findings (finding -> 0/1; names not given are absent). None draws them from
        `config.prevalence`. Forcing changes only the forced findings: the rest of the picture, drawn
        from separate generators, stays the same.
    """
    config = config or DemoConfig()
    streams = {name: _child(rng) for name in ("anatomy", "study", "labels", "texture", "report")}
    finding_rngs = {f: _child(rng) for f in FINDINGS}
    anat = anatomy if anatomy is not None else sample_anatomy(streams["anatomy"])
    anat = _jitter_study(anat, streams["study"])
    if labels is None:
        draws = streams["labels"].random(len(FINDINGS))
        lab = {f: int(draws[i] < config.prevalence[f]) for i, f in enumerate(FINDINGS)}
    else:
        unknown = sorted(set(labels) - set(FINDINGS))
        if unknown:
            raise ValueError(f"make_phantom(labels=...): unknown finding(s) {unknown}; known: {list(FINDINGS)}")
        lab = {f: int(bool(labels.get(f, 0))) for f in FINDINGS}
    with _one_blas_thread():
        image, lesions, masks, attrs = _render(anat, lab, finding_rngs, streams["texture"], config, streams["study"])
    findings_text, impression, sentence_of = _write_report(streams["report"], lab, lesions, config)
    boxes = []
    for les in lesions:
        box = _box_from_mask(les.mask)
        if box is None:  # cannot happen for the drawn sizes; kept as a guard for tiny images
            continue
        x, y, w, h = box
        boxes.append({
            "finding": les.finding, "x": x, "y": y, "w": w, "h": h,
            "sentence": sentence_of[les.finding],
            "side": les.side, "zone": les.zone, "location": les.attrs.get("location"),
        })
        masks[les.finding] = masks.get(les.finding, np.zeros_like(les.mask)) | les.mask
    report = f"FINDINGS: {findings_text}\nIMPRESSION: {impression}"
    return DemoSample(image, report, findings_text, impression, lab, boxes, masks, attrs)


def default_demo_dir() -> Path:
    """Where the demo data is cached: `$VLP_CACHE/demo` if VLP_CACHE is set, else `~/.cache/vlp/demo`."""
    root = os.environ.get("VLP_CACHE")
    return Path(root).expanduser() / "demo" if root else Path.home() / ".cache" / "vlp" / "demo"


def _generator_hash() -> str:
    """SHA-256 (first 16 hex digits) of this module's source: a cache written by other generator code is stale."""
    return hashlib.sha256(Path(__file__).read_bytes()).hexdigest()[:16]


def _info(config: DemoConfig, n_train: int, n_test: int) -> dict[str, Any]:
    return {
        "generator_version": GENERATOR_VERSION,
        "generator_hash": _generator_hash(),
        "config": dataclasses.asdict(config),
        "n_train": n_train,
        "n_test": n_test,
        "findings": list(FINDINGS),
        "label_vector_order": list(FINDINGS),
    }


def _is_complete(out_dir: Path, info: dict[str, Any]) -> bool:
    info_path, manifest = out_dir / "demo_info.json", out_dir / "manifest.jsonl"
    if not (info_path.is_file() and manifest.is_file()):
        return False
    try:
        if json.loads(info_path.read_text()) != info:
            return False
        rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    except (json.JSONDecodeError, OSError):
        return False
    if len(rows) != info["n_train"] + info["n_test"]:
        return False
    return all((out_dir / row["image"]).is_file() for row in rows)


def iter_demo_studies(n_train: int, n_test: int, config: DemoConfig) -> Iterator[tuple[str, str, str, DemoSample]]:
    """Yield (split, patient_id, study_id, DemoSample) for the whole dataset, deterministically.

    Patients are drawn one after another (1..`max_studies_per_patient` studies each) and belong to one
    split only. Each patient and study has its own generator keyed by (seed, split, patient, study).
    """
    for split_code, (split, n) in enumerate((("train", n_train), ("test", n_test))):
        made, patient = 0, 0
        while made < n:
            p_rng = np.random.default_rng([config.seed, split_code, patient])
            anat = sample_anatomy(p_rng)
            n_studies = int(p_rng.integers(1, config.max_studies_per_patient + 1))
            pid = f"{'tr' if split == 'train' else 'te'}{patient:05d}"
            for k in range(min(n_studies, n - made)):
                s_rng = np.random.default_rng([config.seed, split_code, patient, k + 1])
                yield split, pid, f"{pid}_s{k + 1}", make_phantom(s_rng, config, anatomy=anat)
                made += 1
            patient += 1


def generate_demo_dataset(
    out_dir: str | Path | None = None,
    n_train: int = 2000,
    n_test: int = 500,
    seed: int | None = None,
    config: DemoConfig | None = None,
) -> Path:
    """Write the demo dataset (PNGs + manifest.jsonl + demo_info.json) and return the manifest path.

    out_dir: target folder (default `default_demo_dir()`).
    seed: dataset seed; None uses `config.seed` (0 by default). It is stored in the config.
    Idempotent: when the folder already holds a complete dataset made with the same config, seed,
    counts and generator version, nothing is regenerated.

    Manifest columns: image (path relative to the manifest), text (the report), findings, impression,
    labels (positive finding names), label_vector (0/1 in `FINDINGS` order), boxes (see `DemoSample`),
    split ("train"/"test", split by patient), patient_id, study_id, cardiothoracic_ratio.
    """
    from PIL import Image

    config = dataclasses.replace(config or DemoConfig())
    if seed is not None:
        config.seed = int(seed)
    if n_train < 0 or n_test < 0:
        raise ValueError(f"n_train={n_train}, n_test={n_test}: counts must be >= 0")
    out_dir = Path(out_dir) if out_dir is not None else default_demo_dir()
    info = _info(config, n_train, n_test)
    manifest = out_dir / "manifest.jsonl"
    if _is_complete(out_dir, info):
        return manifest
    (out_dir / "images").mkdir(parents=True, exist_ok=True)
    info_path = out_dir / "demo_info.json"
    info_path.unlink(missing_ok=True)
    tmp = out_dir / f"manifest.jsonl.tmp{os.getpid()}"
    with tmp.open("w") as fh:
        for split, pid, sid, sample in iter_demo_studies(n_train, n_test, config):
            rel = f"images/{sid}.png"
            Image.fromarray(np.round(sample.image * 255).astype(np.uint8)).save(out_dir / rel, compress_level=1)
            row = {
                "image": rel,
                "text": sample.report,
                "findings": sample.findings,
                "impression": sample.impression,
                "labels": [f for f in FINDINGS if sample.labels[f]],
                "label_vector": [sample.labels[f] for f in FINDINGS],
                "boxes": sample.boxes,
                "split": split,
                "patient_id": pid,
                "study_id": sid,
                "cardiothoracic_ratio": round(float(sample.attributes["cardiothoracic_ratio"]), 4),
            }
            fh.write(json.dumps(row) + "\n")
    tmp.replace(manifest)
    tmp_info = out_dir / f"demo_info.json.tmp{os.getpid()}"
    tmp_info.write_text(json.dumps(info, indent=2) + "\n")
    tmp_info.replace(info_path)
    return manifest


def main(argv: list[str] | None = None) -> None:
    """`python -m vlp.data.demo [--out DIR] [--n-train N] [--n-test N] [--seed S] [--image-size PX]`."""
    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--out", type=Path, default=None, help="output folder (default: the vlp cache)")
    parser.add_argument("--n-train", type=int, default=2000)
    parser.add_argument("--n-test", type=int, default=500)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--image-size", type=int, default=256)
    args = parser.parse_args(argv)
    path = generate_demo_dataset(args.out, args.n_train, args.n_test, args.seed, DemoConfig(image_size=args.image_size))
    print(path)


if __name__ == "__main__":
    main()
