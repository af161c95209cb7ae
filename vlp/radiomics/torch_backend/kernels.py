"""Compiled CPU kernels (numba) for the torch radiomics backend: one pass per feature class over the canvas.

Each kernel reads the packed canvas (numpy views of its tensors; the masks for the region bounds and the packing)
and returns what the feature formulas of its class need: the region bounds, the packing and the level histograms,
the co-occurrence counts (GLCM), the sums over the run-length matrices (GLRLM: by level, by length, entropy), the
sums over the zones (GLSZM), the dependence counts (GLDM), the neighbourhood-difference sums (NGTDM) and the
marching-squares case counts and moment sums of shape2D. They equal what the numpy/torch path computes (integer
counts exactly, float sums to rounding); the feature formulas stay in the class modules and are shared by both
paths, so the features agree to rounding (tests/radiomics/test_kernels.py). Counting loops are written for this
CPU's pipeline, each choice timed against the alternative (docs/radiomics_engine.md, Speed): tables interleaved
by column mod 4 where neighbouring pixels often hit the same cell, branches where the event is rare or clustered.

The kernels are used only when numba imports, ``ENABLED`` is true (``VLP_RADIOMICS_NUMBA=0`` turns it off) and the
canvas is on the CPU and packed without the vectorised (GPU) path; the canvas records the choice
(``Canvas.kernels``). Most kernels walk region by region over the region's box on the canvas: the packing leaves a
background pixel around every box, so a neighbour look-up one pixel outside a box reads background and a run or
a zone never leaves its box. Compiled code is cached on disk (``cache=True``, numba's ``__pycache__`` files next to
this module): the first call in a fresh environment compiles for about 10-15 s (`warm_up`), later processes load
the cache in a fraction of a second. ``nogil=True``: the kernels release the GIL (threads may run them at once).
"""
from __future__ import annotations

import os

import numpy as np

try:
    from numba import njit

    AVAILABLE = True
except ImportError:  # numba is optional: the numpy/torch path is used instead
    AVAILABLE = False

    def njit(*args, **kwargs):
        return lambda f: f


ENABLED: bool = AVAILABLE and os.environ.get("VLP_RADIOMICS_NUMBA", "1") != "0"

_EPS = np.spacing(1)  # the epsilon PyRadiomics adds inside its logarithms (discretisation.EPS)


def active() -> bool:
    """Whether the compiled kernels are used for CPU canvases (numba imports and ``ENABLED``)."""
    return AVAILABLE and ENABLED


def warm_up() -> float:
    """Compile (or load from numba's on-disk cache) the kernels for 8-bit images with the default settings, by
    extracting every feature of two small regions; returns the seconds it took. The first call in a fresh
    environment compiles (tens of seconds on a slow CPU); later processes load the cache (about a second).
    Other image dtypes and settings compile their own variants on first use."""
    import time

    import torch

    from . import extract

    start = time.perf_counter()
    images = torch.arange(2 * 12 * 12, dtype=torch.int64).remainder(251).to(torch.uint8).view(2, 12, 12)
    masks = torch.zeros(2, 12, 12, dtype=torch.bool)
    masks[0, 2:9, 3:11] = True
    masks[1, 1:11, 4:7] = True
    boxes = np.array([[2, 8, 3, 10], [1, 10, 4, 6]])
    extract(images, masks, boxes, ("firstorder", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm"))
    return time.perf_counter() - start


# --------------------------------------------------------------------------------------------------------------
# packing and discretisation


@njit(cache=True, nogil=True)
def mask_bounds(masks):
    """(B, 6) int64 per mask (B, H, W, uint8 0/1): the first and last row and column that hold a region pixel (r0,
    r1, c0, c1) and the numbers of such rows and columns; an empty mask gives (0, H - 1, 0, W - 1, 0, 0), as
    `discretisation.region_boxes` does. Each row is reduced with max (vectorised); only the rows that hold a region
    pixel are merged into the column profile."""
    b, h, w = masks.shape
    out = np.zeros((b, 6), dtype=np.int64)
    cols = np.zeros(w, dtype=np.uint8)
    for k in range(b):
        cols[:] = 0
        r0, r1, n_rows = h, -1, 0
        for y in range(h):
            row = masks[k, y]
            hit = np.uint8(0)
            for x in range(w):
                hit = max(hit, row[x])
            if hit:
                r0 = min(r0, y)
                r1 = y
                n_rows += 1
                for x in range(w):
                    cols[x] = max(cols[x], row[x])
        c0, c1, n_cols = w, -1, 0
        for x in range(w):
            if cols[x]:
                c0 = min(c0, x)
                c1 = x
                n_cols += 1
        if n_rows == 0:
            r0, r1, c0, c1 = 0, h - 1, 0, w - 1
        out[k, 0], out[k, 1], out[k, 2], out[k, 3], out[k, 4], out[k, 5] = r0, r1, c0, c1, n_rows, n_cols
    return out


@njit(cache=True, nogil=True)
def region_min_max(images, masks, boxes, mn, mx):
    """Smallest and largest intensity inside each region's mask, into mn[k] and mx[k] (preallocated in the images'
    dtype and set to that dtype's largest and smallest value).

    images, masks (B, H, W); boxes (B, 4) inclusive bounds (r0, r1, c0, c1) of each non-empty mask.
    """
    for k in range(boxes.shape[0]):
        r0, r1, c0, c1 = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        top, bottom = mn[k], mx[k]  # neutral for min and max
        lo, hi = top, bottom
        for y in range(r0, r1 + 1):
            src = images[k, y, c0 : c1 + 1]
            inside = masks[k, y, c0 : c1 + 1]
            for x in range(c1 - c0 + 1):  # a select against a constant: the compiler vectorises this loop
                v = src[x]
                m = inside[x]
                lo = min(lo, v if m else top)
                hi = max(hi, v if m else bottom)
        mn[k], mx[k] = lo, hi


@njit(cache=True, nogil=True)
def fill_canvas(images, masks, boxes, flip, y0, x0, mn, lut, lut_min, edges, edge_start, subtract_min,
                levels, values, hist, value_hist):
    """Copy every region onto the canvas with its gray levels (PyRadiomics' ``binImage``).

    Region k's box (boxes[k] = r0, r1, c0, c1) goes to canvas rows y0[k].. and columns x0[k].., transposed when
    flip[k] (an image column then fills a canvas row). Levels: with a lookup table (integer intensities, integer
    bin width w) ``lut[v - lut_min] = v // w`` and the level is ``v // w - (mn // w - 1)`` (no division per
    pixel); without one (``lut`` empty) ``numpy.digitize(v, e)`` with the region's edges
    e = edges[edge_start[k] : edge_start[k + 1]] (the number of edges <= v). Writes levels (0 outside the mask)
    and the (B, Ng + 1) level histogram `hist` (column 0 counts the box pixels outside the mask), and either

    - (`value_hist` of width 0) values: v - mn[k] when subtract_min, else v; 0 outside the mask; or
    - (`value_hist` (B, S), lookup table only) the histogram of the intensity offsets v - mn[k] (< S) instead:
      the first-order features need nothing else of the values, and counting them costs about what writing them
      and counting the levels did. The level histogram is then read off it (a level per offset).
    """
    n_lut = lut.shape[0]
    use_lut = n_lut > 0
    count_values = value_hist.shape[1] > 0
    copies = _copies(hist.shape[1])
    table = np.zeros((copies, hist.shape[1]), dtype=np.int64)  # the histogram in copies, by column mod 4
    v_copies = _copies(value_hist.shape[1])
    v_table = np.zeros((v_copies, value_hist.shape[1]), dtype=np.int64)
    for k in range(boxes.shape[0]):
        r0, r1, c0, c1 = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        base = 0
        if use_lut:
            base = lut[np.int64(mn[k]) - lut_min] - 1
        e0, e1 = edge_start[k], edge_start[k + 1]
        low = mn[k] if subtract_min else mn[k] - mn[k]
        outside = 0
        # canvas row i of the box holds image row r0 + i, or image column c0 + i when flipped: written row by row
        # (strided reads of a flipped box's columns cost less than strided writes)
        rows = c1 - c0 + 1 if flip[k] else r1 - r0 + 1
        w = r1 - r0 + 1 if flip[k] else c1 - c0 + 1
        for i in range(rows):
            if flip[k]:
                src = images[k, r0 : r1 + 1, c0 + i]
                inside = masks[k, r0 : r1 + 1, c0 + i]
            else:
                src = images[k, r0 + i, c0 : c1 + 1]
                inside = masks[k, r0 + i, c0 : c1 + 1]
            lv_out = levels[y0[k] + i, x0[k] : x0[k] + w]
            if count_values:  # pixels outside the mask count at offset 0, and are taken off there below
                n_in = 0
                for x in range(w):
                    m = inside[x]
                    v = src[x]
                    lv_out[x] = (lut[min(max(np.int64(v) - lut_min, 0), n_lut - 1)] - base) * m
                    v_table[x & (v_copies - 1), np.int64(v - low) * m] += 1  # (int64: also compiles for floats)
                    n_in += m
                outside += w - n_in
                continue
            val_out = values[y0[k] + i, x0[k] : x0[k] + w]
            if use_lut:  # (clamped: pixels outside the mask may lie outside the table)
                for x in range(w):  # (levels and values in separate loops: each one vectorises)
                    lv_out[x] = (lut[min(max(np.int64(src[x]) - lut_min, 0), n_lut - 1)] - base) * inside[x]
            else:  # binary search: the number of edges <= v
                for x in range(w):
                    v = src[x]
                    lo, hi = e0, e1
                    while lo < hi:
                        mid = (lo + hi) // 2
                        if edges[mid] <= v:
                            lo = mid + 1
                        else:
                            hi = mid
                    lv_out[x] = (lo - e0) * inside[x]
            for x in range(w):
                val_out[x] = (src[x] - low) * inside[x]
            for x in range(w):
                table[x & (copies - 1), lv_out[x]] += 1
        if count_values:
            vh = value_hist[k]
            _sum_copies(v_table, vh)
            vh[0] -= outside
            hist[k, 0] = outside
            for u in range(vh.shape[0]):  # the level of offset u, as in the loop above
                if vh[u] > 0:
                    hist[k, lut[min(max(np.int64(mn[k]) + u - lut_min, 0), n_lut - 1)] - base] += vh[u]
        else:
            _sum_copies(table, hist[k])


# --------------------------------------------------------------------------------------------------------------
# texture matrices


@njit(cache=True, nogil=True)
def glcm_counts(levels, boxes, n_levels):
    """Symmetric co-occurrence counts (R, 4, Ng, Ng) float64 (PyRadiomics' symmetricalGLCM): pairs (pixel, pixel +
    offset of angle a) of region pixels with levels (i, j) add 1 to [region, a, i - 1, j - 1] and to [region, a,
    j - 1, i - 1]. boxes (R, 4): (y0, x0, h, w) on the canvas.

    Every pair is counted without a branch into a table that includes level 0 (pairs with background land in its
    row and column 0, dropped after); with few levels there are four copies of the table, by column mod 4, so
    neighbouring pixels, which often have the same pair, do not wait on each other's additions."""
    r = boxes.shape[0]
    out = np.zeros((r, 4, n_levels, n_levels))
    k1 = n_levels + 1
    copies = _copies(4 * k1 * k1)
    table = np.zeros((copies, 4, k1 * k1), dtype=np.int32)  # (a region has fewer than 2**31 pixels)
    for k in range(r):
        y0, x0, h, w = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        for y in range(y0, y0 + h):
            b = levels[y, x0 - 1 : x0 + w + 1]  # this row and the next, one pixel wider on each side
            c = levels[y + 1, x0 - 1 : x0 + w + 1]
            for x in range(1, w + 1):
                g = np.int64(b[x]) * k1
                t = table[x & (copies - 1)]
                t[0, g + c[x + 1]] += 1  # (1, 1)
                t[1, g + c[x]] += 1  # (1, 0)
                t[2, g + c[x - 1]] += 1  # (1, -1)
                t[3, g + b[x + 1]] += 1  # (0, 1)
        for a in range(4):  # sum the copies, without level 0, and add the transpose
            for i in range(1, k1):
                for j in range(1, k1):
                    total = 0
                    for cp in range(copies):
                        total += table[cp, a, i * k1 + j] + table[cp, a, j * k1 + i]
                    out[k, a, i - 1, j - 1] = total
        table[:] = 0
    return out


@njit(cache=True, nogil=True)
def _copies(cells):
    """How many copies of a counting table of `cells` entries to interleave: 4 while they stay small (64K cells),
    else 1."""
    return 4 if cells <= 2**16 else 1


@njit(cache=True, nogil=True)
def _sum_copies(table, out):
    """out[j] = the sum of table[:, j] over the copies (out flat, of table's width); zeroes the table for the next
    region. Scalar loops: numba's array expressions and slices cost microseconds each, too much per region."""
    for j in range(out.shape[0]):
        total = 0
        for cp in range(table.shape[0]):
            total += table[cp, j]
            table[cp, j] = 0
        out[j] = total


@njit(cache=True, nogil=True)
def row_runs(levels, boxes):
    """The runs along the rows of every region's box: maximal row segments of one gray level > 0. Returns
    (start, end, level, row, first): (N,) int32 first and last column (1-based box columns, inclusive), level and box
    row of each run, in raster order region by region, and (R + 1,) int64 offsets: region k's runs are
    first[k]:first[k + 1]. Shared by GLRLM (its horizontal angle) and GLSZM (the nodes it joins into zones)."""
    r = boxes.shape[0]
    cap = 1
    for k in range(r):
        cap += boxes[k, 2] * boxes[k, 3]
    start_out = np.empty(cap, dtype=np.int32)  # (at most one run per pixel; only the pages written are touched)
    end_out = np.empty(cap, dtype=np.int32)
    level_out = np.empty(cap, dtype=np.int32)
    row_out = np.empty(cap, dtype=np.int32)
    first = np.zeros(r + 1, dtype=np.int64)
    n = 0
    for k in range(r):
        y0, x0, h, w = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        for i in range(h):
            row = levels[y0 + i, x0 - 1 : x0 + w + 1]  # with the background columns on both sides
            start = 1
            for x in range(1, w + 1):  # a run ends where the next pixel has another level
                g = row[x]
                if row[x + 1] != g:
                    if g > 0:
                        start_out[n] = start
                        end_out[n] = x
                        level_out[n] = g
                        row_out[n] = i
                        n += 1
                    start = x + 1
        first[k + 1] = n
    return start_out[:n], end_out[:n], level_out[:n], row_out[:n], first


@njit(cache=True, nogil=True)
def glrlm_sums(levels, boxes, max_level, n_levels, run_start, run_end, run_level, run_first):
    """The sums over every region's run-length matrices that the GLRLM features need, per region and angle
    (FORWARD_4 order):

    - by_level (4, R, 4, Ng) float64: sum over run lengths j of count(i, j) * w(j), w = 1, j, j^2, 1 / j^2;
    - length_sq (R, 4) float64: the sum over run lengths j of (the number of runs of length j)^2;
    - entropy (R, 4) float64: -sum over the non-empty cells of p log2(p + eps), p = count / number of runs.

    A run is a maximal line of pixels of one gray level along an angle. Each region's box is walked row by row.
    For the three angles that go down a row, the length of the run so far at each pixel is one more than at its
    predecessor in the row above if that has the same level, else 1 (a loop over the row with no dependence between
    pixels). A run ends at a pixel whose successor along the angle has another level; its (level, angle, length)
    cell is counted (with branches: measured faster here than counting every pixel into a spare slot). Along the
    rows, the runs are `row_runs`' (run_start, run_end, run_level, run_first). max_level (R,): each region's largest
    level.
    """
    r = boxes.shape[0]
    hmax = 1
    wmax = 1
    for k in range(r):
        hmax = max(hmax, boxes[k, 2])
        wmax = max(wmax, boxes[k, 3])
    side = max(hmax, wmax)
    s1 = side + 1  # length slots per (level, angle)
    table = np.zeros((n_levels + 1) * 4 * s1, dtype=np.int64)
    run = np.zeros((2, 3, wmax + 2), dtype=np.int32)  # run lengths so far: [row parity, angle 0..2, column + 1]
    by_level = np.zeros((4, r, 4, n_levels))
    by_length = np.zeros((4, side + 1), dtype=np.int64)  # this region's runs by angle and length
    length_sq = np.zeros((r, 4))
    entropy = np.zeros((r, 4))
    n_runs = np.zeros(4)
    cell_angle = np.empty((n_levels + 1) * 4 * s1, dtype=np.int64)  # the region's non-empty cells, in table order
    cell_count = np.empty((n_levels + 1) * 4 * s1, dtype=np.int64)
    for k in range(r):
        y0, x0, h, w = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        run[:, :, : w + 2] = 0
        for i in range(h):
            before, now = run[i & 1], run[(i + 1) & 1]
            up = levels[y0 + i - 1, x0 - 1 : x0 + w + 1]  # the rows above, at and below, with the margin columns
            row = levels[y0 + i, x0 - 1 : x0 + w + 1]
            down = levels[y0 + i + 1, x0 - 1 : x0 + w + 1]
            for x in range(1, w + 1):
                g = row[x]
                now[0, x] = (up[x - 1] == g) * before[0, x - 1] + 1  # (1, 1): predecessor up-left
                now[1, x] = (up[x] == g) * before[1, x] + 1  # (1, 0)
                now[2, x] = (up[x + 1] == g) * before[2, x + 1] + 1  # (1, -1): predecessor up-right
            for x in range(1, w + 1):
                g = np.int64(row[x])
                if g > 0:
                    cell = g * 4 * s1
                    if down[x + 1] != g:
                        table[cell + now[0, x]] += 1
                    if down[x] != g:
                        table[cell + s1 + now[1, x]] += 1
                    if down[x - 1] != g:
                        table[cell + 2 * s1 + now[2, x]] += 1
        for c in range(run_first[k], run_first[k + 1]):  # (0, 1): the row runs
            table[np.int64(run_level[c]) * 4 * s1 + 3 * s1 + run_end[c] - run_start[c] + 1] += 1
        # the sums over this region's cells, zeroing the table for the next region; runs along (1, 0) are at most h
        # long, along (0, 1) at most w, along the diagonals at most min(h, w)
        n_runs[:] = 0
        n_cells = 0
        for g in range(1, max_level[k] + 1):
            for a in range(4):
                base = (g * 4 + a) * s1
                longest = h if a == 1 else w if a == 3 else min(h, w)
                s0 = sj = sj2 = sinv = 0.0
                for j in range(1, longest + 1):
                    m = table[base + j]
                    if m > 0:
                        table[base + j] = 0
                        cell_angle[n_cells] = a
                        cell_count[n_cells] = m
                        n_cells += 1
                        jf = np.float64(j)
                        s0 += m
                        sj += m * jf
                        sj2 += m * jf * jf
                        sinv += m / (jf * jf)
                        by_length[a, j] += m
                by_level[0, k, a, g - 1] = s0
                by_level[1, k, a, g - 1] = sj
                by_level[2, k, a, g - 1] = sj2
                by_level[3, k, a, g - 1] = sinv
                n_runs[a] += s0
        for a in range(4):
            longest = h if a == 1 else w if a == 3 else min(h, w)
            total = 0
            for j in range(1, longest + 1):
                total += by_length[a, j] * by_length[a, j]
                by_length[a, j] = 0
            length_sq[k, a] = total
        for c in range(n_cells):  # the entropy, once each angle's number of runs is known
            p = cell_count[c] / n_runs[cell_angle[c]]
            entropy[k, cell_angle[c]] -= p * np.log2(p + _EPS)
    return by_level, length_sq, entropy


@njit(cache=True, nogil=True)
def _find(parent, i):
    """Root of i in a union-find forest, halving the path on the way."""
    while parent[i] != i:
        parent[i] = parent[parent[i]]
        i = parent[i]
    return i


@njit(cache=True, nogil=True)
def _join(parent, a, b):
    """Merge the trees of roots a and b, the larger root under the smaller; returns the new root."""
    if a < b:
        parent[b] = a
        return a
    parent[a] = b
    return b


@njit(cache=True, nogil=True)
def _region_zones(run_start, run_end, run_level, run_row, lo, hi, parent, size):
    """Union-find over one region's row runs lo:hi (`row_runs`); returns their number n. Afterwards a run c < n
    (run lo + c) is a zone's root when parent[c] == c, and then run_level[lo + c] is the zone's level and size[c]
    its size.

    A zone is an 8-connected set of pixels of one gray level (PyRadiomics' 2D connectivity). A run is joined with
    every run of the row above that has its level and overlaps it or touches it diagonally (the above run starts at
    most one column after the run ends and ends at most one column before it starts), found by one merge-like sweep
    over both rows' runs. Roots are always the smaller run index, so a zone's root is its first run (zones come in
    the raster order of their first pixel); its size is the summed length of its runs. On return every run's parent
    is its root. parent and size hold at least hi - lo entries."""
    n = hi - lo
    for c in range(n):
        parent[c] = c
        size[c] = 0
    prev_lo = prev_hi = lo  # the runs of the row above (none at first)
    c = lo
    while c < hi:
        cur_lo = c
        row = run_row[c]
        while c < hi and run_row[c] == row:
            c += 1
        if prev_hi == prev_lo or run_row[prev_lo] != row - 1:  # the previous run row is not the row above
            prev_lo = prev_hi = cur_lo
        j = prev_lo
        for d in range(cur_lo, c):
            while j < prev_hi and run_end[j] < run_start[d] - 1:
                j += 1
            t = j
            root = d - lo  # the current run's root: itself until joined (then the smaller root, still a root)
            g = run_level[d]
            reach = run_end[d] + 1
            while t < prev_hi and run_start[t] <= reach:
                if run_level[t] == g:
                    a = _find(parent, t - lo)
                    if a != root:
                        root = _join(parent, a, root)
                t += 1
        prev_lo, prev_hi = cur_lo, c
    for c in range(n):  # parent[c] <= c always, so in increasing order parent[parent[c]] is already a root
        parent[c] = parent[parent[c]]
        size[parent[c]] += run_end[lo + c] - run_start[lo + c] + 1
    return n


@njit(cache=True, nogil=True)
def _most_runs(run_first):
    """The largest number of runs of one region (at least 1): the length of `_region_zones`' work arrays."""
    most = 1
    for k in range(run_first.shape[0] - 1):
        most = max(most, run_first[k + 1] - run_first[k])
    return most


@njit(cache=True, nogil=True)
def glszm_zones(run_start, run_end, run_level, run_row, run_first):
    """Every zone of every region as (region index, gray level, size), each (Z,) int64, in the raster order of
    each zone's first pixel, region by region (`_region_zones` over `row_runs`)."""
    r = run_first.shape[0] - 1
    most = _most_runs(run_first)
    parent = np.empty(most, dtype=np.int64)
    size = np.empty(most, dtype=np.int64)
    cap = run_first[r] + 1
    zb = np.empty(cap, dtype=np.int64)
    zg = np.empty(cap, dtype=np.int64)
    zs = np.empty(cap, dtype=np.int64)
    z = 0
    for k in range(r):
        lo = run_first[k]
        n = _region_zones(run_start, run_end, run_level, run_row, lo, run_first[k + 1], parent, size)
        for c in range(n):
            if parent[c] == c:
                zb[z] = k
                zg[z] = run_level[lo + c]
                zs[z] = size[c]
                z += 1
    return zb[:z], zg[:z], zs[:z]


@njit(cache=True, nogil=True)
def glszm_sums(boxes, n_levels, run_start, run_end, run_level, run_row, run_first):
    """The sums over every region's zones that the GLSZM features need (`glszm.ZONE_SUMS` order; `glszm.zone_sums`
    computes the same from a list of zones): (R, 12) float64 and the zones per gray level (R, Ng) float64.

    Per region, over its zones (level g, size s; `_region_zones` over `row_runs`): the count, the sums of g^2, s^2,
    g^2 s^2, s^2 / g^2, 1 / g^2, 1 / s^2, g^2 / s^2, 1 / (g^2 s^2) and (s - mean s)^2, the sum of squared zone
    counts per size, and the entropy of the joint (level, size) distribution, -sum p log2(p + eps) (the zones
    sorted by size, and by (level, size), give the counts)."""
    r = boxes.shape[0]
    most = _most_runs(run_first)
    parent = np.empty(most, dtype=np.int64)
    size = np.empty(most, dtype=np.int64)
    sums = np.zeros((r, 12))
    pg = np.zeros((r, n_levels))
    zs = np.empty(most, dtype=np.int64)
    zkey = np.empty(most, dtype=np.int64)
    for k in range(r):
        h, w = boxes[k, 2], boxes[k, 3]
        lo = run_first[k]
        n = _region_zones(run_start, run_end, run_level, run_row, lo, run_first[k + 1], parent, size)
        nz = 0
        for c in range(n):
            if parent[c] == c:
                zs[nz] = size[c]
                zkey[nz] = run_level[lo + c] * (h * w + 1) + size[c]
                nz += 1
        t = sums[k]
        sum_s = 0.0
        for z in range(nz):
            level = zkey[z] // (h * w + 1)
            g = np.float64(level)
            sz = np.float64(zs[z])
            g2, s2 = g * g, sz * sz
            t[1] += g2
            t[2] += s2
            t[3] += g2 * s2
            t[4] += s2 / g2
            t[5] += 1 / g2
            t[6] += 1 / s2
            t[7] += g2 / s2
            t[8] += 1 / (g2 * s2)
            sum_s += sz
            pg[k, level - 1] += 1
        t[0] = nz
        mean_s = sum_s / nz
        for z in range(nz):
            t[9] += (zs[z] - mean_s) ** 2
        sizes = np.sort(zs[:nz])
        keys = np.sort(zkey[:nz])
        run = 1
        for z in range(1, nz + 1):  # squared counts of equal sizes, entropy of equal (level, size) keys
            if z < nz and sizes[z] == sizes[z - 1]:
                run += 1
            else:
                t[10] += run * run
                run = 1
        run = 1
        for z in range(1, nz + 1):
            if z < nz and keys[z] == keys[z - 1]:
                run += 1
            else:
                p = run / nz
                t[11] -= p * np.log2(p + _EPS)
                run = 1
    return sums, pg


@njit(cache=True, nogil=True)
def _widest_box(boxes):
    """The largest box width (column 3 of (y0, x0, h, w) boxes), at least 1: the length of a row buffer."""
    wmax = 1
    for k in range(boxes.shape[0]):
        wmax = max(wmax, boxes[k, 3])
    return wmax


@njit(cache=True, nogil=True)
def neighbourhood_counts(levels, boxes, n_levels, alpha):
    """What GLDM and NGTDM need of every region pixel's 8 neighbours, in one pass:

    - dependence (R, Ng, 9) int64: region pixels by gray level and dependence, the number (0..8) of their 8
      neighbours in the region whose level differs by at most alpha (an integer: the floor of PyRadiomics'
      gldm_a, levels being integers);
    - ngtdm (R, Ng + 1, 9) float64: per gray level g and number c of region neighbours, the sum of |g * c - t|
      over the pixels, t the sum of their neighbours' levels (integers, exact in float64). Dividing by c gives
      NGTDM's s_i; a pixel without neighbours adds 0, as in PyRadiomics.

    Row by row: the column sums of the row triple (levels, and region pixels) first, so a pixel's neighbourhood
    sum and count are three column sums less itself; then each pixel's codes (level * 9 + dependence, level * 9 +
    c) and numerator; then the counts and sums. The first loops have no data-dependent stores, which the compiler
    vectorises. Background pixels count into the unused level 0.
    """
    r = boxes.shape[0]
    cells = (n_levels + 1) * 9
    dependence = np.zeros((r, n_levels + 1, 9), dtype=np.int64)
    ngtdm = np.zeros((r, n_levels + 1, 9), dtype=np.int64)
    wmax = _widest_box(boxes)
    # narrow lanes vectorise wider; 9 * level fits in int32 (tables of 9 Ng cells)
    col_sum = np.empty(wmax + 2, dtype=np.int32)
    col_count = np.empty(wmax + 2, dtype=np.int32)
    dep_code = np.empty(wmax, dtype=np.int32)
    code = np.empty(wmax, dtype=np.int32)
    num = np.empty(wmax, dtype=np.int32)
    copies = _copies(cells)
    dep_table = np.zeros((copies, cells), dtype=np.int64)
    table = np.zeros((copies, cells), dtype=np.int64)
    for k in range(r):
        y0, x0, h, w = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        for y in range(y0, y0 + h):
            a = levels[y - 1, x0 - 1 : x0 + w + 1]  # the rows above, at and below y, one pixel wider each side
            b = levels[y, x0 - 1 : x0 + w + 1]
            c = levels[y + 1, x0 - 1 : x0 + w + 1]
            for x in range(w + 2):
                col_sum[x] = np.int32(a[x]) + np.int32(b[x]) + np.int32(c[x])
                col_count[x] = np.int32(a[x] > 0) + np.int32(b[x] > 0) + np.int32(c[x] > 0)
            if alpha == 0:
                for x in range(1, w + 1):
                    g = b[x]
                    d = ((a[x - 1] == g) + (a[x] == g) + (a[x + 1] == g) + (b[x - 1] == g) + (b[x + 1] == g)
                         + (c[x - 1] == g) + (c[x] == g) + (c[x + 1] == g))
                    dep_code[x - 1] = np.int32(g) * 9 + d
            else:
                for x in range(1, w + 1):
                    g = np.int64(b[x])
                    d = 0
                    for v in (a[x - 1], a[x], a[x + 1], b[x - 1], b[x + 1], c[x - 1], c[x], c[x + 1]):
                        d += (v > 0) & (abs(np.int64(v) - g) <= alpha)
                    dep_code[x - 1] = g * 9 + d
            for x in range(1, w + 1):
                g = np.int32(b[x])
                t = col_sum[x - 1] + col_sum[x] + col_sum[x + 1] - g
                n = col_count[x - 1] + col_count[x] + col_count[x + 1] - np.int32(g > 0)
                code[x - 1] = g * 9 + n
                num[x - 1] = abs(g * n - t)
            for x in range(w):
                dep_table[x & (copies - 1), dep_code[x]] += 1
                table[x & (copies - 1), code[x]] += num[x]
        _sum_copies(dep_table, dependence[k].reshape(-1))
        _sum_copies(table, ngtdm[k].reshape(-1))
    return dependence[:, 1:, :], ngtdm.astype(np.float64)


# --------------------------------------------------------------------------------------------------------------
# shape


@njit(cache=True, nogil=True)
def shape_sums(levels, boxes):
    """Per region (R, 22) int64: the number of 2x2 windows of each marching-squares case (16 columns), the pixel
    coordinate moments (sum y, sum x, sum y^2, sum x^2, sum x y, in box coordinates; the pixel count is the
    canvas') and the squared maximum diameter in doubled coordinates (column 21).

    Windows: every 2x2 window of the box grown by one pixel, case = corners (0,0) + 2 (0,1) + 4 (1,1) + 8 (1,0)
    (the perimeter and mesh area are sums of per-case weights; cases 0 and 15, all out and all in, weigh nothing
    and are left at 0, so the interior costs no counting; between two rows that are full across the box, as in box
    masks, only the two end windows are boundary windows and nothing is scanned). Diameter: the contour vertices are
    the midpoints of edges between a region pixel and a background pixel, (2y, 2x + 1) and (2y + 1, 2x) in doubled
    coordinates; only a vertex that is the first or last of its doubled row and of its doubled column can be on the
    convex hull, and those candidates are compared pairwise. All integers: exact.
    """
    r = boxes.shape[0]
    out = np.zeros((r, 22), dtype=np.int64)
    side = 1
    for k in range(r):
        side = max(side, boxes[k, 2], boxes[k, 3])
    row_lo = np.empty(2 * side + 3, dtype=np.int64)
    row_hi = np.empty(2 * side + 3, dtype=np.int64)
    col_lo = np.empty(2 * side + 3, dtype=np.int64)
    col_hi = np.empty(2 * side + 3, dtype=np.int64)
    cap = 2 * (side + 2) * (side + 2)
    vy = np.empty(cap, dtype=np.int64)
    vx = np.empty(cap, dtype=np.int64)
    cases = np.zeros((4, 16), dtype=np.int64)  # four interleaved histograms: no chain of updates to one counter
    m0 = np.zeros(side + 2, dtype=np.uint8)
    m1 = np.zeros(side + 2, dtype=np.uint8)
    for k in range(r):
        y0, x0, h, w = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        cases[:] = 0
        sy = sx = syy = sxx = sxy = 0
        for i in range(2 * h + 3):
            row_lo[i] = 2**62
            row_hi[i] = -1
        for i in range(2 * w + 3):
            col_lo[i] = 2**62
            col_hi[i] = -1
        n = 0
        m1[: w + 2] = 0  # mask of box row -1 (background), columns -1..w
        full1 = False  # row y + 1 holds a region pixel in every column of the box
        for y in range(-1, h):
            m0[: w + 2] = m1[: w + 2]
            full0 = full1
            full1 = False
            if y + 1 < h:
                yy = y + 1
                row = levels[y0 + yy, x0 - 1 : x0 + w + 1]
                for x in range(w + 2):
                    m1[x] = row[x] > 0
                cnt = 0
                s1 = 0
                s2 = 0
                for x in range(w):
                    m = np.int64(m1[x + 1])
                    cnt += m
                    s1 += m * x
                    s2 += m * x * x
                sy += cnt * yy
                syy += cnt * yy * yy
                sx += s1
                sxx += s2
                sxy += s1 * yy
                full1 = cnt == w
            else:
                m1[: w + 2] = 0
            if full0 and full1:  # two full rows: only the end windows are boundary windows, no vertical edges
                cases[0, 6] += 1  # window at columns (-1, 0): out, in / out, in
                cases[1, 9] += 1  # window at columns (w - 1, w): in, out / in, out
            else:
                for x in range(w + 1):  # windows with top-left corner (y, x - 1); cases 0 and 15 weigh 0
                    case = np.int64(m0[x]) + 2 * m0[x + 1] + 4 * m1[x + 1] + 8 * m1[x]
                    if case != 0 and case != 15:  # rare: a branch that is almost always predicted
                        cases[x & 3, case] += 1
                for x in range(w):  # vertical edges between rows y and y + 1, column x
                    if m0[x + 1] != m1[x + 1]:
                        vy[n] = 2 * y + 2
                        vx[n] = 2 * x + 1
                        n += 1
            if full1:  # horizontal edges of a full row: at its two ends
                vy[n] = vy[n + 1] = 2 * y + 3
                vx[n] = 0
                vx[n + 1] = 2 * w
                n += 2
            elif y + 1 < h:
                for x in range(-1, w):  # horizontal edges between columns x and x + 1 of row y + 1
                    if m1[x + 1] != m1[x + 2]:
                        vy[n] = 2 * y + 3
                        vx[n] = 2 * x + 2
                        n += 1
        # candidates: first or last vertex of their doubled row and of their doubled column (coordinates + 1)
        for i in range(n):
            row_lo[vy[i]] = min(row_lo[vy[i]], vx[i])
            row_hi[vy[i]] = max(row_hi[vy[i]], vx[i])
            col_lo[vx[i]] = min(col_lo[vx[i]], vy[i])
            col_hi[vx[i]] = max(col_hi[vx[i]], vy[i])
        m = 0
        for i in range(n):
            keep = ((vx[i] == row_lo[vy[i]]) | (vx[i] == row_hi[vy[i]])) & (
                (vy[i] == col_lo[vx[i]]) | (vy[i] == col_hi[vx[i]]))
            vy[m] = vy[i]
            vx[m] = vx[i]
            m += keep
        d2 = 0
        for i in range(m):
            for j in range(i + 1, m):
                d2 = max(d2, (vy[i] - vy[j]) ** 2 + (vx[i] - vx[j]) ** 2)
        for c in range(16):
            out[k, c] = cases[0, c] + cases[1, c] + cases[2, c] + cases[3, c]
        out[k, 16] = sy
        out[k, 17] = sx
        out[k, 18] = syy
        out[k, 19] = sxx
        out[k, 20] = sxy
        out[k, 21] = d2
    return out


@njit(cache=True, nogil=True)
def value_histogram(values, boxes, levels, span):
    """(R, span) int64 counts of the integer intensity offsets (value - region minimum, 0..span-1) per region."""
    r = boxes.shape[0]
    out = np.zeros((r, span), dtype=np.int64)
    for k in range(r):
        y0, x0, h, w = boxes[k, 0], boxes[k, 1], boxes[k, 2], boxes[k, 3]
        for y in range(y0, y0 + h):
            for x in range(x0, x0 + w):
                if levels[y, x] > 0:
                    out[k, values[y, x]] += 1
    return out
