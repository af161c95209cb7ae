"""Gray Level Run Length Matrix features, batched (PyRadiomics ``glrlm``, 16 features).

A run is a maximal line of consecutive ROI pixels with the same gray level along one of the four 2D
angles; a background pixel ends a run. The canvas keys (region, level) are laid out once per angle so
that consecutive elements are consecutive pixels of a line (transposed for columns, sheared shelf by
shelf for the two diagonals); a run starts where the key changes to a region's key and ends where it
changes away. One bincount fills the matrices of all regions and angles; the features are sums over
the non-empty cells, so no dense (Ng x Nr) matrix is processed.

As PyRadiomics (``cmatrices.calculate_glrlm``): an angle along which no line holds more than one ROI
pixel is emptied, empty angles are dropped, and every feature is a nanmean over the remaining angles.
Reference: Galloway, "Texture analysis using gray level run lengths", CGIP 1975; Chu et al. 1990
(low/high gray-level run emphasis); Dasarathy and Holder 1991 (the joint emphases).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .discretisation import Canvas, entropy_terms, fast_view, flat_nonzero, masked_mean
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


def line_layouts(key: Tensor, shelves: list[tuple[int, int]]) -> tuple[Tensor, list[int]]:
    """The canvas keys laid out once per 2D angle (FORWARD_4 order) in one flat tensor, consecutive
    elements being consecutive pixels of one line of the angle; with each angle's start offset.

    Rows and columns are the canvas and its transpose. The diagonals are laid out shelf by shelf (a
    shelf's last row is background, so no run crosses shelves): a shelf of h rows is copied into an
    (h, W + h) zero buffer and re-read with a row stride of W + h - 1, which shifts row y by y, so line c
    of direction (1, -1) holds shelf[y, c - y] (no index tensor); direction (1, 1) is the same on the
    mirrored shelf. Every line ends with background, so a run never continues into the next line.
    """
    h_all, w = key.shape
    diag = sum((w + h - 1) * h for _, h in shelves)
    sizes = [diag, h_all * w, diag, h_all * w]
    offsets = [0, sizes[0], sizes[0] + sizes[1], sizes[0] + sizes[1] + sizes[2]]
    flat = torch.empty(sum(sizes), dtype=key.dtype, device=key.device)
    flat[offsets[1] : offsets[2]].view(w, h_all).copy_(key.t())  # (1, 0): columns
    flat[offsets[3] :].copy_(key.reshape(-1))  # (0, 1): rows
    for angle, mirror in ((0, True), (2, False)):
        pos = offsets[angle]
        for y, h in shelves:
            band = key[y : y + h]
            buf = torch.zeros(h, w + h, dtype=key.dtype, device=key.device)
            buf[:, :w] = band.flip(1) if mirror else band
            lines = buf.as_strided((h, w + h - 1), (w + h - 1, 1)).t()
            flat[pos : pos + lines.numel()].view(w + h - 1, h).copy_(lines)
            pos += lines.numel()
    return flat, offsets


def run_cells(canvas: Canvas) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, int]:
    """The non-empty cells of all run-length matrices: (region, angle, level, length, count), each (C,),
    and Nr.

    A run of a region's level starts where the key (region, level) changes to a nonzero value and ends
    where it changes away; the k-th start pairs with the k-th end. One bincount over
    (key, angle, length) gives the matrices of all regions and angles at once.
    """
    k = canvas.n_bins
    layout, offsets = line_layouts(canvas.key, canvas.shelves)
    flat = fast_view(layout)  # numpy on CPU
    change = flat[1:] != flat[:-1]
    inside = flat > 0
    start = flat_nonzero(change & inside[1:]) + 1  # element 0 is background
    length = flat_nonzero(change & inside[:-1]) - start + 1
    key = layout[start].long()
    per_angle = torch.diff(torch.searchsorted(start, torch.tensor(offsets[1:] + [layout.numel()], device=start.device)), prepend=start.new_zeros(1))
    nr = int(length.max().item())
    angle_term = torch.repeat_interleave(torch.arange(4, device=start.device) * nr, per_angle)
    n_bins = (canvas.n_regions + 1) * k * 4 * nr
    counts = torch.bincount(key * (4 * nr) + angle_term + (length - 1), minlength=n_bins)
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

    def per_angle(values: Tensor) -> Tensor:  # (R, 4) sums over cells
        return torch.zeros(r * 4, dtype=dt, device=dev).index_add_(0, ra, values).view(r, 4)

    i = lvl.to(dt)
    j = ln.to(dt)
    n_runs = per_angle(cnt)
    valid = n_runs > 0
    nrs = torch.where(valid, n_runs, torch.ones_like(n_runs))
    n_pix = per_angle(cnt * j)
    pr = torch.zeros(r * 4 * nr, dtype=dt, device=dev).index_add_(0, ra * nr + (ln - 1), cnt).view(r, 4, nr)
    pg = torch.zeros(r * 4 * ng, dtype=dt, device=dev).index_add_(0, ra * ng + (lvl - 1), cnt).view(r, 4, ng)
    iv = torch.arange(1, ng + 1, dtype=dt, device=dev)
    jv = torch.arange(1, nr + 1, dtype=dt, device=dev)
    pg_n = pg / nrs[:, :, None]
    u_i = (pg_n * iv).sum(2, keepdim=True)
    pr_n = pr / nrs[:, :, None]
    u_j = (pr_n * jv).sum(2, keepdim=True)
    p_cell = cnt / nrs.flatten()[ra]

    out = {
        "GrayLevelNonUniformity": (pg**2).sum(2) / nrs,
        "GrayLevelNonUniformityNormalized": (pg**2).sum(2) / nrs**2,
        "GrayLevelVariance": (pg_n * (iv - u_i) ** 2).sum(2),
        "HighGrayLevelRunEmphasis": per_angle(cnt * i**2) / nrs,
        "LongRunEmphasis": per_angle(cnt * j**2) / nrs,
        "LongRunHighGrayLevelEmphasis": per_angle(cnt * i**2 * j**2) / nrs,
        "LongRunLowGrayLevelEmphasis": per_angle(cnt * j**2 / i**2) / nrs,
        "LowGrayLevelRunEmphasis": per_angle(cnt / i**2) / nrs,
        "RunEntropy": per_angle(entropy_terms(p_cell)),
        "RunLengthNonUniformity": (pr**2).sum(2) / nrs,
        "RunLengthNonUniformityNormalized": (pr**2).sum(2) / nrs**2,
        "RunPercentage": n_runs / torch.where(valid, n_pix, torch.ones_like(n_pix)),
        "RunVariance": (pr_n * (jv - u_j) ** 2).sum(2),
        "ShortRunEmphasis": per_angle(cnt / j**2) / nrs,
        "ShortRunHighGrayLevelEmphasis": per_angle(cnt * i**2 / j**2) / nrs,
        "ShortRunLowGrayLevelEmphasis": per_angle(cnt / (i**2 * j**2)) / nrs,
    }
    return torch.stack([masked_mean(out[k], valid) for k in FEATURE_NAMES], dim=1)
