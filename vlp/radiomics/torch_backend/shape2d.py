"""2D shape features of the ROI, batched (PyRadiomics ``shape2D``, 9 features).

PyRadiomics (``shape2D.py`` and its C helper ``cshape.calculate_coefficients2D``) builds a contour
with marching squares on the mask padded by one background pixel: every 2x2 window of pixel centres
is a square whose corners are in or out of the ROI, and each of the 16 cases contributes fixed line
segments between edge midpoints. Here every window's case index is computed at once on the canvas, and
the boundary windows (neither all in nor all out) are weighted with per-case tables:

* Perimeter: sum of the segment lengths (sqrt(1/2) for a corner cut, 1 for a straight cut).
* MeshSurface: PyRadiomics' shoelace sum over the segments equals the sum over windows of the part of
  the window inside the contour (0, 1/8, 1/4, 1/2, 7/8 or 1 by case), which needs no coordinates.
* MaximumDiameter: the largest distance between contour vertices (the edge midpoints between an ROI
  pixel and a background pixel). The farthest pair of a point set lies on its convex hull, and a hull
  vertex is the first or last vertex of its row and of its column, so only those candidates are compared.
* Major/MinorAxisLength, Elongation: 4 * sqrt of the eigenvalues of the covariance of the ROI pixel
  coordinates (population covariance), Elongation = sqrt(minor / major eigenvalue); the coordinate
  moments are summed in closed form over the ROI runs of each row.

Pixel spacing is 1 (the images carry none), so PixelSurface is the pixel count.
The deprecated SphericalDisproportion is not computed (PyRadiomics does not enable it either).
Reference: Lorensen and Cline, "Marching cubes", SIGGRAPH 1987 (the 2D case is marching squares).
"""
from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor

from .discretisation import Canvas, as_tensor, fast_view, flat_nonzero

FEATURE_NAMES: tuple[str, ...] = (
    "Elongation",
    "MajorAxisLength",
    "MaximumDiameter",
    "MeshSurface",
    "MinorAxisLength",
    "Perimeter",
    "PerimeterSurfaceRatio",
    "PixelSurface",
    "Sphericity",
)

# Marching-squares cases: corner bits 1 = (0, 0), 2 = (0, 1), 4 = (1, 1), 8 = (1, 0) of a window of pixel
# centres. PyRadiomics' contour has its vertices at edge midpoints and resolves both saddle cases (5, 10)
# as two separate corner cuts. Per case: the contour length inside the window, and the area of the
# window's part inside the contour minus a quarter per ROI corner. Every pixel is a corner of four
# windows, so the mesh area is the pixel count plus the sum of these corrections over the boundary
# windows; it equals PyRadiomics' shoelace sum over the contour segments.
_R = 0.5**0.5
_CASE_PERIMETER = (0, _R, _R, 1, _R, 2 * _R, 1, _R, _R, 1, 2 * _R, _R, 1, _R, _R, 0)
_CASE_AREA = (0, 1 / 8, 1 / 8, 1 / 2, 1 / 8, 1 / 4, 1 / 2, 7 / 8, 1 / 8, 1 / 2, 1 / 4, 7 / 8, 1 / 2, 7 / 8, 7 / 8, 1)
_CASE_CORNERS = tuple(bin(c).count("1") for c in range(16))
_CASE_AREA_CORRECTION = tuple(a - n / 4 for a, n in zip(_CASE_AREA, _CASE_CORNERS))


def _positions(flags):
    """(row, column) int64 of the True entries of a 2D bool array (numpy or tensor, the result likewise), in raster
    order."""
    w = flags.shape[1]
    if isinstance(flags, np.ndarray):
        idx = np.flatnonzero(flags)
    else:
        idx = torch.nonzero(flags.flatten()).flatten()
    return idx // w, idx % w


def _maximum(a, b):
    return np.maximum(a, b) if isinstance(a, np.ndarray) else torch.maximum(a, b)


def _per_region(n: int, index: Tensor, values: Tensor) -> Tensor:
    return torch.zeros(n + 1, dtype=values.dtype, device=values.device).index_add_(0, index, values)[1:]


def _max_diameter(canvas: Canvas, hy: Tensor, hx: Tensor, hr: Tensor, vy: Tensor, vx: Tensor, vr: Tensor) -> Tensor:
    """Largest distance between contour vertices per region, (R,).

    Vertices sit on the midpoints of pixel edges between ROI and background; in doubled coordinates a
    horizontal-neighbour edge of row y between columns x and x+1 is (2y, 2x+1), a vertical-neighbour edge
    of column x between rows y and y+1 is (2y+1, 2x). Only a vertex that is the first or last of its
    region's doubled row and also of its doubled column can be a convex-hull vertex, and the farthest
    pair of a point set is a pair of hull vertices; those few candidates are compared pairwise.
    """
    r = canvas.n_regions
    dev = hy.device
    y0, x0 = canvas.boxes[:, 0], canvas.boxes[:, 1]
    ys = torch.cat([2 * hy, 2 * vy + 1])
    xs = torch.cat([2 * hx + 1, 2 * vx])
    reg = torch.cat([hr, vr])  # region index 1..R
    yl = ys - 2 * y0[reg - 1]  # local doubled coordinates, >= 0
    xl = xs - 2 * x0[reg - 1]
    span_y = int(2 * canvas.boxes[:, 2].max().item()) + 2
    span_x = int(2 * canvas.boxes[:, 3].max().item()) + 2

    def extremes(key: Tensor, size: int, coord: Tensor) -> tuple[Tensor, Tensor]:
        big = torch.iinfo(torch.int64).max
        lo = torch.full((size,), big, dtype=torch.int64, device=dev).scatter_reduce(0, key, coord, "amin")
        hi = torch.full((size,), -1, dtype=torch.int64, device=dev).scatter_reduce(0, key, coord, "amax")
        return lo[key], hi[key]

    row_key = reg * span_y + yl
    col_key = reg * span_x + xl
    rlo, rhi = extremes(row_key, (r + 1) * span_y, xl)
    clo, chi = extremes(col_key, (r + 1) * span_x, yl)
    cand = flat_nonzero(((xl == rlo) | (xl == rhi)) & ((yl == clo) | (yl == chi)))
    cy, cx, cr = yl[cand].double(), xl[cand].double(), reg[cand]
    order = torch.argsort(cr, stable=True)
    cy, cx, cr = cy[order], cx[order], cr[order]
    counts = torch.bincount(cr, minlength=r + 1)[1:]
    k = int(counts.max().item())
    first = torch.cumsum(counts, 0) - counts
    slot = torch.arange(cr.numel(), device=dev) - first[cr - 1]
    py = torch.zeros(r, k, dtype=torch.float64, device=dev)
    px = torch.zeros(r, k, dtype=torch.float64, device=dev)
    ok = torch.zeros(r, k, dtype=torch.bool, device=dev)
    py[cr - 1, slot] = cy
    px[cr - 1, slot] = cx
    ok[cr - 1, slot] = True
    d2 = (py[:, :, None] - py[:, None, :]) ** 2 + (px[:, :, None] - px[:, None, :]) ** 2
    d2 = torch.where(ok[:, :, None] & ok[:, None, :], d2, torch.zeros_like(d2))
    return torch.sqrt(d2.flatten(1).amax(dim=1)) / 2


def _sum_squares(t: Tensor) -> Tensor:
    return t * (t + 1) * (2 * t + 1) / 6


def _canvas_sums(canvas: Canvas) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """(perimeter, mesh surface, maximum diameter, cov yy, cov xx, cov xy), each (R,), from canvas-wide array ops
    (the path without the compiled kernels)."""
    r = canvas.n_regions
    dt = torch.float64
    dev = canvas.levels.device
    m = canvas.mask
    reg_map = canvas.region
    n = canvas.count

    # Canvas-wide work in numpy on CPU (several times faster there than torch for these ops), torch elsewhere.
    mv = fast_view(m)
    mu = mv.view(np.uint8) if isinstance(mv, np.ndarray) else mv.to(torch.uint8)
    reg = fast_view(reg_map)
    # marching squares: only boundary windows (not all-in, not all-out) contribute
    case = mu[:-1, :-1] + 2 * mu[:-1, 1:] + 4 * mu[1:, 1:] + 8 * mu[1:, :-1]
    wy, wx = _positions((case != 0) & (case != 15))
    wcase = as_tensor(case[wy, wx]).long()
    wreg = _maximum(_maximum(reg[wy, wx], reg[wy, wx + 1]), _maximum(reg[wy + 1, wx], reg[wy + 1, wx + 1]))
    wreg = as_tensor(wreg).long()
    perimeter = _per_region(r, wreg, torch.tensor(_CASE_PERIMETER, dtype=dt, device=dev)[wcase])
    surface = n + _per_region(r, wreg, torch.tensor(_CASE_AREA_CORRECTION, dtype=dt, device=dev)[wcase])

    # contour vertices: ROI/background edges between horizontal and vertical neighbours
    hy, hx = _positions(mv[:, :-1] != mv[:, 1:])
    hr = _maximum(reg[hy, hx], reg[hy, hx + 1])
    opens = as_tensor(mv[hy, hx + 1])
    vy, vx = _positions(mv[:-1, :] != mv[1:, :])
    vr = _maximum(reg[vy, vx], reg[vy + 1, vx])
    hy, hx, hr, vy, vx, vr = (as_tensor(t).long() for t in (hy, hx, hr, vy, vx, vr))
    diameter = _max_diameter(canvas, hy, hx, hr, vy, vx, vr)

    # coordinate moments from the ROI runs of each row: a horizontal vertex whose right pixel is in the
    # ROI opens a run, one whose left pixel is in the ROI closes it; in raster order they alternate
    a = hx[opens] + 1
    b = hx[~opens]
    ry = hy[opens]
    rr = hr[opens]
    y0 = canvas.boxes[rr - 1, 0]
    x0 = canvas.boxes[rr - 1, 1]
    yl = (ry - y0).to(dt)
    al = (a - x0).to(dt)
    bl = (b - x0).to(dt)
    cnt = bl - al + 1
    sx = (al + bl) * cnt / 2
    sxx = _sum_squares(bl) - _sum_squares(al - 1)
    my = _per_region(r, rr, yl * cnt) / n
    mx = _per_region(r, rr, sx) / n
    cyy = _per_region(r, rr, yl**2 * cnt) / n - my**2
    cxx = _per_region(r, rr, sxx) / n - mx**2
    cxy = _per_region(r, rr, yl * sx) / n - mx * my
    return perimeter, surface, diameter, cyy, cxx, cxy


def compute(canvas: Canvas) -> Tensor:
    """(R, 9) shape2D features in FEATURE_NAMES order (the sums from `kernels.shape_sums` with `canvas.kernels`)."""
    n = canvas.count

    if canvas.kernels:
        from .kernels import shape_sums

        sums = torch.from_numpy(shape_sums(canvas.levels.numpy(), canvas.boxes.numpy())).to(torch.float64)
        cases = sums[:, :16]
        perimeter = cases @ torch.tensor(_CASE_PERIMETER, dtype=torch.float64)
        surface = n + cases @ torch.tensor(_CASE_AREA_CORRECTION, dtype=torch.float64)
        my, mx = sums[:, 16] / n, sums[:, 17] / n
        cyy = sums[:, 18] / n - my**2
        cxx = sums[:, 19] / n - mx**2
        cxy = sums[:, 20] / n - mx * my
        diameter = torch.sqrt(sums[:, 21]) / 2
    else:
        perimeter, surface, diameter, cyy, cxx, cxy = _canvas_sums(canvas)
    half_tr = (cyy + cxx) / 2
    root = torch.sqrt(((cyy - cxx) / 2) ** 2 + cxy**2)
    major_ev = half_tr + root
    minor_ev = half_tr - root
    # PyRadiomics rounds eigenvalues in (-1e-10, 0) to 0 and returns NaN for more negative ones.
    zero = torch.zeros_like(minor_ev)
    minor_ev = torch.where((minor_ev < 0) & (minor_ev > -1e-10), zero, minor_ev)
    major_axis = 4 * torch.sqrt(major_ev)
    minor_axis = 4 * torch.sqrt(minor_ev)
    elongation = torch.sqrt(minor_ev / major_ev)

    out = {
        "Elongation": elongation,
        "MajorAxisLength": major_axis,
        "MaximumDiameter": diameter,
        "MeshSurface": surface,
        "MinorAxisLength": minor_axis,
        "Perimeter": perimeter,
        "PerimeterSurfaceRatio": perimeter / surface,
        "PixelSurface": n,
        "Sphericity": 2 * torch.sqrt(math.pi * surface) / perimeter,
    }
    return torch.stack([out[k] for k in FEATURE_NAMES], dim=1)
