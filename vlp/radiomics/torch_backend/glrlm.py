"""Gray Level Run Length Matrix features, batched (PyRadiomics ``glrlm``, 16 features).

A run is a maximal line of consecutive ROI pixels with the same gray level along one of the four 2D
angles; a background pixel ends a run. The canvas keys (region, level) are laid out once per angle so
that consecutive elements are consecutive pixels of a line (the canvas itself for rows, transposed for
columns, sheared shelf by shelf for the two diagonals; numpy arrays on the CPU); one pass finds the change
points of a layout, and a change point ends a run where the key before it is a region's and starts one where
the key after it is. One bincount fills the matrices of all regions and angles; the features are sums over
the non-empty cells, so no dense (Ng x Nr) matrix is processed. The row runs are cached on the canvas:
GLSZM joins them into zones.

As PyRadiomics (``cmatrices.calculate_glrlm``): an angle along which no line holds more than one ROI
pixel is emptied, empty angles are dropped, and every feature is a nanmean over the remaining angles.
Reference: Galloway, "Texture analysis using gray level run lengths", CGIP 1975; Chu et al. 1990
(low/high gray-level run emphasis); Dasarathy and Holder 1991 (the joint emphases).
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .discretisation import Canvas, entropy_terms, fast_view, flat_nonzero, masked_mean
from .glcm import glcm_matrices

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


def _diagonal_lines(key: Tensor, shelves: list[tuple[int, int]], mirror: bool) -> Tensor | np.ndarray:
    """The canvas keys along one diagonal, line after line, in one flat tensor (a numpy array on the CPU).

    Shelf by shelf (a shelf's last row is background, so no run crosses shelves): a shelf of h rows is copied into
    an (h, W + h) zero buffer and re-read with a row stride of W + h - 1, which shifts row y by y, so line c of
    direction (1, -1) holds shelf[y, c - y] (no index tensor); direction (1, 1) is the same on the mirrored shelf.
    Every line ends with background, so a run never continues into the next line.
    """
    w = key.shape[1]
    if key.device.type == "cpu":  # numpy: its strided copies are several times faster than torch's
        kn = key.numpy()
        out = np.empty(sum(h * (w + h - 1) for _, h in shelves), dtype=kn.dtype)
        pos = 0
        for y, h in shelves:
            buf = np.zeros((h, w + h), dtype=kn.dtype)
            buf[:, :w] = kn[y : y + h, ::-1] if mirror else kn[y : y + h]
            sheared = np.lib.stride_tricks.as_strided(buf, (h, w + h - 1), ((w + h - 1) * kn.itemsize, kn.itemsize))
            n = h * (w + h - 1)
            out[pos : pos + n].reshape(w + h - 1, h)[...] = sheared.T
            pos += n
        return out
    parts = []
    for y, h in shelves:
        band = key[y : y + h]
        buf = torch.zeros(h, w + h, dtype=key.dtype, device=key.device)
        buf[:, :w] = band.flip(1) if mirror else band
        parts.append(buf.as_strided((h, w + h - 1), (w + h - 1, 1)).t().reshape(-1))
    return torch.cat(parts) if len(parts) > 1 else parts[0]


def line_layouts(key: Tensor, shelves: list[tuple[int, int]]) -> list[Tensor | np.ndarray]:
    """The canvas keys laid out once per 2D angle (FORWARD_4 order), each a flat tensor (numpy array on the CPU)
    in which consecutive elements are consecutive pixels of one line of the angle, starting and ending with
    background.

    Rows need no copy (every canvas row ends with a background column); columns are the transposed canvas; the
    diagonals are sheared shelf by shelf (`_diagonal_lines`).
    """
    k = fast_view(key)
    cols = np.ascontiguousarray(k.T).reshape(-1) if isinstance(k, np.ndarray) else key.t().contiguous().reshape(-1)
    return [_diagonal_lines(key, shelves, mirror=True), cols, _diagonal_lines(key, shelves, mirror=False),
            k.reshape(-1)]


def _runs(line: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(key, first, last) of every run of a flat line layout, in order: key int64, first and last the indices of
    the run's first and last element.

    One pass finds every change point i (element i differs from i + 1); a change point is the end of a run where
    element i is nonzero and the start of one after it where element i + 1 is nonzero (both between two adjacent
    runs of different keys). Only the change points are gathered and split, so the layout is read twice in all.
    The layout starts and ends with background, so the k-th start pairs with the k-th end.
    """
    flat = fast_view(line)  # numpy on CPU: its comparisons, nonzero and take are several times faster there
    if isinstance(flat, np.ndarray):
        ch = np.flatnonzero(flat[1:] != flat[:-1])
        after = ch + 1
        right = flat.take(after)
        is_start = right > 0
        return (torch.from_numpy(right[is_start].astype(np.int64)), torch.from_numpy(after[is_start]),
                torch.from_numpy(ch[flat.take(ch) > 0]))
    ch = flat_nonzero(flat[1:] != flat[:-1])
    right = flat[ch + 1]
    is_start = right > 0
    return right[is_start].long(), ch[is_start] + 1, ch[flat[ch] > 0]


def row_runs(canvas: Canvas) -> tuple[Tensor, Tensor, Tensor]:
    """(key, first, last) of the runs along the canvas rows (flat pixel indices; cached: GLSZM joins them into
    zones)."""
    if "row_runs" not in canvas.cache:
        canvas.cache["row_runs"] = _runs(canvas.key.reshape(-1))
    return canvas.cache["row_runs"]


def box_row_runs(canvas: Canvas) -> tuple[np.ndarray, ...]:
    """The row runs of every region's box on the kernel path (`kernels.row_runs`: start, end, level, row and each
    region's first run), cached: GLRLM counts them along its horizontal angle, GLSZM joins them into zones."""
    if "box_row_runs" not in canvas.cache:
        from .kernels import row_runs as runs

        canvas.cache["box_row_runs"] = runs(fast_view(canvas.levels), canvas.boxes.numpy())
    return canvas.cache["box_row_runs"]


def run_cells(canvas: Canvas) -> tuple[Tensor, Tensor, Tensor, Tensor, int]:
    """The non-empty cells of all run-length matrices: (region * 4 + angle, level, length, count), each (C,),
    and Nr (the longest run).

    One bincount over the codes (key, angle, length) of every run gives the matrices of all regions and angles
    at once (in numpy on the CPU, where its integer arithmetic is several times faster).
    """
    k = canvas.n_bins
    layouts = line_layouts(canvas.key, canvas.shelves)
    runs = [_runs(line) for line in layouts[:3]] + [row_runs(canvas)]
    runs = [(fast_view(key), fast_view(last) - fast_view(first)) for key, first, last in runs]  # length - 1
    nr = max(int(length.max()) for _, length in runs) + 1
    codes = [key * (4 * nr) + (a * nr) + length for a, (key, length) in enumerate(runs)]
    n_codes = (canvas.n_regions + 1) * k * 4 * nr
    if isinstance(codes[0], Tensor):
        counts = torch.bincount(torch.cat(codes), minlength=n_codes)
    else:
        counts = torch.from_numpy(np.bincount(np.concatenate(codes), minlength=n_codes))
    cell = flat_nonzero(fast_view(counts) > 0).to(counts.device)
    count = counts[cell]
    key = cell // (4 * nr)
    return (key // k - 1) * 4 + (cell // nr) % 4, key % k, cell % nr + 1, count, nr


def run_sums(canvas: Canvas) -> tuple[Tensor, Tensor, Tensor]:
    """What the features need of the run-length matrices, per region and angle:

    - by_level (4, R, 4, Ng) float64: sums over the run lengths j of count(i, j) * w(j), w = 1, j, j^2, 1 / j^2;
    - length_sq (R, 4) float64: the sum over j of pr(j)^2, pr(j) the number of runs of length j;
    - entropy (R, 4) float64: -sum over the non-empty cells of p log2(p + eps), p = count / number of runs.

    From the non-empty cells (`run_cells`, a few weighted bincounts) or, with `canvas.kernels`, summed by the
    compiled pass that walks the runs (`kernels.glrlm_sums`, no list of cells).
    """
    r, ng = canvas.n_regions, canvas.n_levels
    if canvas.kernels:
        from .kernels import glrlm_sums

        start, end, level, _, first = box_row_runs(canvas)
        by_level, length_sq, entropy = glrlm_sums(fast_view(canvas.levels), canvas.boxes.numpy(),
                                                  canvas.max_level.numpy().astype(np.int64), ng, start, end, level,
                                                  first)
        return torch.from_numpy(by_level), torch.from_numpy(length_sq), torch.from_numpy(entropy)
    ra, lvl, ln, cnt, nr = run_cells(canvas)
    cnt = cnt.to(torch.float64)
    j = ln.to(torch.float64)
    j2 = j**2
    cell_rag = ra * ng + (lvl - 1)
    by_level = torch.stack([torch.bincount(cell_rag, weights=w, minlength=r * 4 * ng)
                            for w in (cnt, cnt * j, cnt * j2, cnt / j2)]).view(4, r, 4, ng)
    by_length = torch.bincount(ra * nr + (ln - 1), weights=cnt, minlength=r * 4 * nr).view(r, 4, nr)
    n_runs = by_level[0].sum(2).flatten()
    entropy = torch.bincount(ra, weights=entropy_terms(cnt / n_runs[ra]), minlength=r * 4).view(r, 4)
    return by_level, (by_length * by_length).sum(2), entropy


def _multi_element(canvas: Canvas) -> Tensor:
    """(R, 4) whether some line of the angle holds more than one ROI pixel of the region (PyRadiomics
    empties the angle otherwise). Two ROI pixels adjacent along the angle settle it; only the regions
    without such a pair (rare, sparse masks) have their lines counted, from their pixel coordinates."""
    multi = glcm_matrices(canvas).flatten(2).sum(2) > 0  # shared with GLCM: every adjacent pair
    for k in torch.nonzero(~multi.all(1)).flatten().tolist():
        y0, x0, hh, ww = canvas.boxes[k].tolist()
        ys, xs = torch.nonzero(canvas.region[y0 : y0 + hh, x0 : x0 + ww] == k + 1, as_tuple=True)
        for a, line in enumerate((xs - ys, xs, xs + ys, ys)):
            multi[k, a] = bool(torch.bincount(line - line.min()).max() > 1)
    return multi


def compute(canvas: Canvas) -> Tensor:
    """(R, 16) GLRLM features in FEATURE_NAMES order, from sums over the matrices (`run_sums`).

    Per (region, angle): Nr runs, pr(j) runs of length j, pg(i) runs of level i; the joint emphases are the
    sums by level of count * g(j) times a column f(i). Angles of a region without a multi-pixel line are dropped
    (the nanmean skips them). RunVariance, sum_j pr(j) / Nr (j - mean)^2, is (Nr S2 - S1^2) / Nr^2 with the
    integer sums S1 = sum_j pr(j) j (the pixels) and S2 = sum_j pr(j) j^2: exact until the last division.
    """
    dt = torch.float64
    dev = canvas.levels.device
    # every emphasis is a sum of count * g(j) * f(i): the sums by level of count * g(j), times the f columns
    by_level, length_sq, run_entropy = run_sums(canvas)
    ng = by_level.shape[3]
    iv = torch.arange(1, ng + 1, dtype=dt, device=dev)
    i2 = iv**2
    sums = by_level @ torch.stack([torch.ones_like(iv), i2, 1 / i2], dim=1)  # (4 g, R, 4, 3 f)
    n_runs, n_pix, s2 = sums[0, :, :, 0], sums[1, :, :, 0], sums[2, :, :, 0]
    valid = (n_runs > 0) & _multi_element(canvas)
    nrs = torch.where(n_runs > 0, n_runs, torch.ones_like(n_runs))
    emphasis = sums / nrs[:, :, None]
    pg = by_level[0]  # (R, 4, Ng)
    pg_n = pg / nrs[:, :, None]
    u_i = (pg_n * iv).sum(2, keepdim=True)
    gln = (pg**2).sum(2) / nrs
    rln = length_sq / nrs

    out = {
        "GrayLevelNonUniformity": gln,
        "GrayLevelNonUniformityNormalized": gln / nrs,
        "GrayLevelVariance": (pg_n * (iv - u_i) ** 2).sum(2),
        "HighGrayLevelRunEmphasis": emphasis[0, :, :, 1],
        "LongRunEmphasis": emphasis[2, :, :, 0],
        "LongRunHighGrayLevelEmphasis": emphasis[2, :, :, 1],
        "LongRunLowGrayLevelEmphasis": emphasis[2, :, :, 2],
        "LowGrayLevelRunEmphasis": emphasis[0, :, :, 2],
        "RunEntropy": run_entropy,
        "RunLengthNonUniformity": rln,
        "RunLengthNonUniformityNormalized": rln / nrs,
        "RunPercentage": n_runs / torch.where(n_runs > 0, n_pix, torch.ones_like(n_pix)),
        "RunVariance": (nrs * s2 - n_pix * n_pix) / (nrs * nrs),
        "ShortRunEmphasis": emphasis[3, :, :, 0],
        "ShortRunHighGrayLevelEmphasis": emphasis[3, :, :, 1],
        "ShortRunLowGrayLevelEmphasis": emphasis[3, :, :, 2],
    }
    return masked_mean(torch.stack([out[k] for k in FEATURE_NAMES], dim=1), valid[:, None, :], dim=2)
