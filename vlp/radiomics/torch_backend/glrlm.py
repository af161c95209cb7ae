"""Gray Level Run Length Matrix features, batched (PyRadiomics ``glrlm``, 16 features).

A run is a maximal line of consecutive ROI pixels with the same gray level along one of the four 2D
angles; a background pixel ends a run. The canvas keys (region, level) are laid out once per angle so
that consecutive elements are consecutive pixels of a line (the canvas itself for rows, transposed for
columns, sheared shelf by shelf for the two diagonals); a run starts where the key changes to a region's
key and ends where it changes away. One bincount fills the matrices of all regions and angles; the
features are sums over the non-empty cells, so no dense (Ng x Nr) matrix is processed.

As PyRadiomics (``cmatrices.calculate_glrlm``): an angle along which no line holds more than one ROI
pixel is emptied, empty angles are dropped, and every feature is a nanmean over the remaining angles.
Reference: Galloway, "Texture analysis using gray level run lengths", CGIP 1975; Chu et al. 1990
(low/high gray-level run emphasis); Dasarathy and Holder 1991 (the joint emphases).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .discretisation import Canvas, as_tensor, entropy_terms, fast_view, flat_nonzero, masked_mean
from .glcm import pair_counts

FEATURE_NAMES: tuple[str, ...] = (
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelRunEmphasis",
    "LongRunEmphasis",
    "LongRunHighGrayLevelEmphasis",
    "LongRunLowGrayLevelEmphasis",
    "LowGrayLevelRunEmphasis",
    "RunEntropy",
    "RunLengthNonUniformity",
    "RunLengthNonUniformityNormalized",
    "RunPercentage",
    "RunVariance",
    "ShortRunEmphasis",
    "ShortRunHighGrayLevelEmphasis",
    "ShortRunLowGrayLevelEmphasis",
)


def _diagonal_lines(key: Tensor, shelves: list[tuple[int, int]], mirror: bool) -> Tensor:
    """The canvas keys along one diagonal, line after line, in one flat tensor.

    Shelf by shelf (a shelf's last row is background, so no run crosses shelves): a shelf of h rows is copied into
    an (h, W + h) zero buffer and re-read with a row stride of W + h - 1, which shifts row y by y, so line c of
    direction (1, -1) holds shelf[y, c - y] (no index tensor); direction (1, 1) is the same on the mirrored shelf.
    Every line ends with background, so a run never continues into the next line.
    """
    w = key.shape[1]
    parts = []
    for y, h in shelves:
        band = key[y : y + h]
        buf = torch.zeros(h, w + h, dtype=key.dtype, device=key.device)
        buf[:, :w] = band.flip(1) if mirror else band
        parts.append(buf.as_strided((h, w + h - 1), (w + h - 1, 1)).t().reshape(-1))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def line_layouts(key: Tensor, shelves: list[tuple[int, int]]) -> list[Tensor]:
    """The canvas keys laid out once per 2D angle (FORWARD_4 order), each a flat tensor in which consecutive
    elements are consecutive pixels of one line of the angle, starting and ending with background.

    Rows need no copy (every canvas row ends with a background column); columns are the transposed canvas; the
    diagonals are sheared shelf by shelf (`_diagonal_lines`).
    """
    return [_diagonal_lines(key, shelves, mirror=True), key.t().contiguous().reshape(-1),
            _diagonal_lines(key, shelves, mirror=False), key.reshape(-1)]


def _runs(line: Tensor) -> tuple[Tensor, Tensor]:
    """(key, length) of every run of a flat line layout (int64 tensors), in order.

    A run starts after element i where the key changes to a nonzero one and ends at element i where it changes
    away from a nonzero one; the layout starts and ends with background, so the k-th start pairs with the k-th end.
    """
    flat = fast_view(line)  # numpy on CPU: its comparisons and nonzero are several times faster there
    change = flat[1:] != flat[:-1]
    starts = flat_nonzero(change & (flat[1:] > 0))
    ends = flat_nonzero(change & (flat[:-1] > 0))
    return as_tensor(flat[fast_view(starts + 1)]).long(), ends - starts


def run_cells(canvas: Canvas) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """The non-empty cells of all run-length matrices: (region, angle, level, length, count), each (C,),
    and Nr (the longest run).

    One bincount over (key, angle, length) gives the matrices of all regions and angles at once.
    """
    k = canvas.n_bins
    runs = [_runs(line) for line in line_layouts(canvas.key, canvas.shelves)]
    nr = max(int(length.max().item()) for _, length in runs)
    codes = torch.cat([key * (4 * nr) + (a * nr) + (length - 1) for a, (key, length) in enumerate(runs)])
    counts = torch.bincount(codes, minlength=(canvas.n_regions + 1) * k * 4 * nr)
    cell = flat_nonzero(counts > 0)
    count = counts[cell]
    length = cell % nr + 1
    angle = (cell // nr) % 4
    key = cell // (4 * nr)
    return key // k - 1, angle, key % k, length, count, nr


def _multi_element(canvas: Canvas) -> Tensor:
    """(R, 4) whether some line of the angle holds more than one ROI pixel of the region (PyRadiomics
    empties the angle otherwise). Two ROI pixels adjacent along the angle settle it; only the regions
    without such a pair (rare, sparse masks) have their lines counted, from their pixel coordinates."""
    reg = canvas.region
    multi = pair_counts(canvas).flatten(2).sum(2) > 0  # shared with GLCM: every adjacent pair
    for k in torch.nonzero(~multi.all(1)).flatten().tolist():
        y0, x0, hh, ww = canvas.boxes[k].tolist()
        ys, xs = torch.nonzero(reg[y0 : y0 + hh, x0 : x0 + ww] == k + 1, as_tuple=True)
        for a, line in enumerate((xs - ys, xs, xs + ys, ys)):
            multi[k, a] = bool(torch.bincount(line - line.min()).max() > 1)
    return multi


def compute(canvas: Canvas) -> Tensor:
    """(R, 16) GLRLM features in FEATURE_NAMES order, from the non-empty matrix cells.

    Per (region, angle): Nr runs, pr(j) runs of length j, pg(i) runs of level i; the joint emphases and
    the entropy are sums over the cells. Angles of a region without a multi-pixel line are dropped.
    """
    r = canvas.n_regions
    ng = canvas.n_levels
    dt = torch.float64
    dev = canvas.levels.device
    reg, ang, lvl, ln, cnt, nr = run_cells(canvas)
    keep = _multi_element(canvas)[reg, ang]
    reg, ang, lvl, ln, cnt = reg[keep], ang[keep], lvl[keep], ln[keep], cnt[keep].to(dt)
    ra = reg * 4 + ang

    i2 = lvl.to(dt) ** 2
    j = ln.to(dt)
    j2 = j**2
    # every sum over cells at once: one index_add of the (C, 10) per-cell terms into (R * 4, 10)
    terms = torch.stack([cnt, cnt * j, cnt * i2, cnt * j2, cnt * i2 * j2, cnt * j2 / i2, cnt / i2, cnt / j2,
                         cnt * i2 / j2, cnt / (i2 * j2)], dim=1)
    sums = torch.zeros(r * 4, terms.shape[1], dtype=dt, device=dev).index_add_(0, ra, terms).view(r, 4, -1)
    n_runs, n_pix = sums[..., 0], sums[..., 1]
    valid = n_runs > 0
    nrs = torch.where(valid, n_runs, torch.ones_like(n_runs))
    emphasis = sums[..., 2:] / nrs[:, :, None]
    pr = torch.zeros(r * 4 * nr, dtype=dt, device=dev).index_add_(0, ra * nr + (ln - 1), cnt).view(r, 4, nr)
    pg = torch.zeros(r * 4 * ng, dtype=dt, device=dev).index_add_(0, ra * ng + (lvl - 1), cnt).view(r, 4, ng)
    iv = torch.arange(1, ng + 1, dtype=dt, device=dev)
    jv = torch.arange(1, nr + 1, dtype=dt, device=dev)
    pg_n = pg / nrs[:, :, None]
    u_i = (pg_n * iv).sum(2, keepdim=True)
    pr_n = pr / nrs[:, :, None]
    u_j = (pr_n * jv).sum(2, keepdim=True)
    p_cell = cnt / nrs.flatten()[ra]
    run_entropy = torch.zeros(r * 4, dtype=dt, device=dev).index_add_(0, ra, entropy_terms(p_cell)).view(r, 4)
    gln = (pg**2).sum(2) / nrs
    rln = (pr**2).sum(2) / nrs

    out = {
        "GrayLevelNonUniformity": gln,
        "GrayLevelNonUniformityNormalized": gln / nrs,
        "GrayLevelVariance": (pg_n * (iv - u_i) ** 2).sum(2),
        "HighGrayLevelRunEmphasis": emphasis[..., 0],
        "LongRunEmphasis": emphasis[..., 1],
        "LongRunHighGrayLevelEmphasis": emphasis[..., 2],
        "LongRunLowGrayLevelEmphasis": emphasis[..., 3],
        "LowGrayLevelRunEmphasis": emphasis[..., 4],
        "RunEntropy": run_entropy,
        "RunLengthNonUniformity": rln,
        "RunLengthNonUniformityNormalized": rln / nrs,
        "RunPercentage": n_runs / torch.where(valid, n_pix, torch.ones_like(n_pix)),
        "RunVariance": (pr_n * (jv - u_j) ** 2).sum(2),
        "ShortRunEmphasis": emphasis[..., 5],
        "ShortRunHighGrayLevelEmphasis": emphasis[..., 6],
        "ShortRunLowGrayLevelEmphasis": emphasis[..., 7],
    }
    return torch.stack([masked_mean(out[k], valid) for k in FEATURE_NAMES], dim=1)
