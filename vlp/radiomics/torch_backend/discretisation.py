"""Batch preparation for the torch radiomics backend: pack the regions onto one canvas and discretise.

All regions of a batch are cut to their bounding box and packed side by side onto one 2D canvas
(shelf packing, tallest first), each surrounded by background: a one-pixel gap to its neighbours and a
one-pixel border around the canvas. Every feature class then runs once on the canvas: neighbour
look-ups are plain slices, and per-region histograms are one ``bincount`` over keys
``region * K + value`` (region 0 is the background and is dropped). Packing wastes far fewer pixels than
padding every region to the batch's largest box, and costs no per-group overhead. A region is stored
transposed when it is taller than wide; every 2D feature of PyRadiomics is invariant to transposition
(the four angles map onto themselves, the 8-neighbourhood and the shape are symmetric).
PyRadiomics itself crops to the bounding box (``cropToTumorMask``), so cropping changes no feature.

Gray levels follow PyRadiomics' ``imageoperations.binImage`` exactly:

* fixed bin width ``W`` (default 25): the edges are ``numpy.arange(low, max + 2W, W)`` with
  ``low = min - (min % W)`` over the ROI, and a pixel's level is ``numpy.digitize(x, edges)``; for integer
  intensities and an integer ``W`` this is ``floor(x / W) - floor(min / W) + 1`` in integer arithmetic;
  otherwise the CPU path calls ``numpy.digitize`` with the same edges, and the vectorised (GPU) path
  reproduces the edges value by value (``numpy.arange`` fills ``low + k * ((low + W) - low)``);
* fixed bin count ``N``: the edges are ``numpy.histogram(roi, N)[1]`` with the last edge raised by 1.

Reference: van Griethuysen et al., "Computational Radiomics System to Decode the Radiographic
Phenotype", Cancer Research 77(21), 2017 (PyRadiomics); Leijenaar et al., Sci. Rep. 5:11075, 2015
(fixed bin width).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import Tensor

EPS = 2.220446049250313e-16  # numpy.spacing(1), the epsilon PyRadiomics adds inside its logarithms

FORWARD_4: tuple[tuple[int, int], ...] = ((1, 1), (1, 0), (1, -1), (0, 1))  # PyRadiomics' 2D angles, (dy, dx)


@dataclass
class Canvas:
    """The regions of a batch packed onto one 2D canvas.

    levels: (H, W) gray levels, 1..Ng inside a region, 0 elsewhere; uint8 when Ng < 256, else int32.
    region: (H, W) int32 region index + 1 inside a region, 0 elsewhere; on the kernel path, which rarely needs it,
        built from the levels and boxes on first use (int16 when it fits).
    values: (H, W) intensities inside the regions: for integer images the offset from the region's
        minimum (int32; on the kernel path the narrowest of uint8, int16, int32, int64 that holds it), for
        float images the raw value (float64); undefined elsewhere. None when the packing counted
        `value_hist` instead.
    n_regions: R. n_levels: the largest gray level (texture matrices have n_levels + 1 columns).
    shelves: the packing's shelves as (first row, rows); rows between shelves are background.
    boxes: (R, 4) int64 (y0, x0, h, w) of each region's stored box on the canvas (transposed if tall).
    max_level, count, min_value, max_value: (R,) float64 per region: largest gray level (PyRadiomics'
        ``Ng``), pixel count, smallest and largest intensity.
    integer_valued: intensities are integers (integer input dtype).
    kernels: the feature classes use the compiled CPU kernels (`kernels.py`) instead of the numpy/torch code.
    value_hist: (R, S) int64 per region, the number of pixels with each intensity offset 0..S-1 (S the largest
        range + 1), or None. The kernel path counts it instead of writing `values` when the images are integers
        with a lookup table for the levels and R * S stays under VALUE_HIST_CELLS (first order needs no more).
    """

    levels: Tensor
    values: Tensor | None
    n_regions: int
    n_levels: int
    shelves: list[tuple[int, int]]
    boxes: Tensor
    max_level: Tensor
    count: Tensor
    min_value: Tensor
    max_value: Tensor
    integer_valued: bool
    kernels: bool = False
    value_hist: Tensor | None = None
    cache: dict = field(default_factory=dict, repr=False)  # intermediate results shared by feature classes
    _region: Tensor | None = field(default=None, repr=False)
    _key: Tensor | None = field(default=None, repr=False)
    _level_hist: Tensor | None = field(default=None, repr=False)

    @property
    def n_bins(self) -> int:
        """K = n_levels + 1: gray levels including the background level 0."""
        return self.n_levels + 1

    @property
    def region(self) -> Tensor:
        """(H, W) region index + 1 inside a region, 0 elsewhere (see the class docstring)."""
        if self._region is None:
            lv = fast_view(self.levels)
            reg = np.zeros(lv.shape, dtype=np.int16 if self.n_regions < 2**15 - 1 else np.int32)
            for k, (y0, x0, h, w) in enumerate(self.boxes.tolist()):  # boxes are apart: a level > 0 is region k's
                reg[y0 : y0 + h, x0 : x0 + w] = (lv[y0 : y0 + h, x0 : x0 + w] > 0) * (k + 1)
            self._region = torch.from_numpy(reg).to(self.levels.device)
        return self._region

    @property
    def key(self) -> Tensor:
        """(H, W) region * K + level: the per-region gray-level key (0 outside the regions).

        int16 when it fits (cheaper to lay out, compare and label), else int32 or int64; widen it with
        `index_dtype` before multiplying it into larger keys.
        """
        if self._key is None:
            n = (self.n_regions + 1) * self.n_bins
            dt = torch.int16 if n < 2**15 else index_dtype(n)
            self._key = self.region.to(dt) * self.n_bins + self.levels.to(dt)
        return self._key

    def key9(self) -> Tensor:
        """(H-2, W-2) interior of key * 9, to which a neighbour count 0..8 is added (GLDM, NGTDM); cached."""
        if "key9" not in self.cache:
            self.cache["key9"] = interior(self.wide_key(9)) * 9
        return self.cache["key9"]

    def wide_key(self, factor: int) -> Tensor:
        """`key` in an integer dtype that holds key * factor."""
        return self.key.to(index_dtype((self.n_regions + 1) * self.n_bins * factor))

    @property
    def level_hist(self) -> Tensor:
        """(R, Ng) float64 pixel counts per region and gray level."""
        if self._level_hist is None:
            k = self.n_bins
            h = torch.bincount(self.wide_key(1).flatten(), minlength=(self.n_regions + 1) * k)
            self._level_hist = h.view(self.n_regions + 1, k)[1:, 1:].to(torch.float64)
        return self._level_hist

    @property
    def mask(self) -> Tensor:
        """(H, W) bool: the pixels of any region (cached)."""
        if "mask" not in self.cache:
            self.cache["mask"] = as_tensor(fast_view(self.levels) > 0)
        return self.cache["mask"]


def index_dtype(n: int) -> torch.dtype:
    """int32 when all keys below `n` fit (faster bincount), else int64."""
    return torch.int32 if n < 2**31 - 1 else torch.int64


def flat_nonzero(flags: Tensor | np.ndarray) -> Tensor:
    """Indices (int64 tensor) of the True entries of a flat bool tensor or numpy array.

    On CPU numpy's flatnonzero is several times faster than torch.nonzero.
    """
    if isinstance(flags, np.ndarray):
        return torch.from_numpy(np.flatnonzero(flags))
    if flags.device.type == "cpu":
        return torch.from_numpy(np.flatnonzero(flags.numpy()))
    return torch.nonzero(flags).flatten()


def fast_view(t: Tensor) -> Tensor | np.ndarray:
    """A numpy view of a CPU tensor (numpy's comparisons are several times faster there), else the tensor.

    For code written with operators that both libraries share (==, !=, >, &, slicing, integer indexing).
    """
    if isinstance(t, np.ndarray):
        return t
    return t.numpy() if t.device.type == "cpu" else t


def as_tensor(x: Tensor | np.ndarray) -> Tensor:
    return torch.from_numpy(x) if isinstance(x, np.ndarray) else x


def region_boxes(masks: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor, Tensor]:
    """Bounds of boolean masks (B, H, W): (r0, r1, c0, c1) inclusive, and the row and column counts.

    The counts (number of rows / columns holding a region pixel) tell empty, one-pixel and line regions
    apart without another pass over the masks. On the CPU with the compiled kernels: `kernels.mask_bounds`.
    """
    m8 = masks.view(torch.uint8)  # amax on uint8 is much faster than any() on bool on CPU
    if masks.device.type == "cpu":
        from . import kernels

        if kernels.active():
            bounds = torch.from_numpy(kernels.mask_bounds(m8.numpy()))
            return tuple(bounds.unbind(1))
    rows = m8.amax(dim=2) > 0
    cols = m8.amax(dim=1) > 0
    r0, r1 = _bounds(rows)
    c0, c1 = _bounds(cols)
    return r0, r1, c0, c1, rows.sum(1), cols.sum(1)


def _bounds(profile: Tensor) -> tuple[Tensor, Tensor]:
    n = profile.shape[1]
    p = profile.to(torch.uint8)
    return p.argmax(dim=1), n - 1 - p.flip(1).argmax(dim=1)


def shelf_pack(heights: np.ndarray, widths: np.ndarray) -> tuple[np.ndarray, np.ndarray, int, int, list[tuple[int, int]]]:
    """Place boxes (h, w) on a canvas, tallest first, in shelves; returns (y0, x0, H, W, shelves).

    Each box keeps a one-pixel background gap to its right and below; the canvas has a one-pixel border
    at the top and left. The shelf width is about 1.5 times the square root of the total area, and at
    least the widest box. `shelves` lists each shelf's rows as (first row, height incl. its gap row).
    """
    n = len(heights)
    area = float(((heights + 1) * (widths + 1)).sum())
    shelf_w = max(int(widths.max()) + 1, int(1.5 * math.sqrt(area)))
    order = np.argsort(-heights, kind="stable")
    y0 = np.zeros(n, dtype=np.int64)
    x0 = np.zeros(n, dtype=np.int64)
    y, x, shelf_h, used_w = 1, 1, 0, 1
    shelves = []
    for k in order.tolist():
        h, w = int(heights[k]), int(widths[k])
        if x > 1 and x + w + 1 > shelf_w + 1:
            shelves.append((y, shelf_h))
            y += shelf_h
            x, shelf_h = 1, 0
        y0[k], x0[k] = y, x
        x += w + 1
        shelf_h = max(shelf_h, h + 1)
        used_w = max(used_w, x)
    shelves.append((y, shelf_h))
    return y0, x0, y + shelf_h, used_w, shelves


def _digitize_edges(mn: float, mx: float, bin_width: float, bin_count: int | None) -> np.ndarray:
    """PyRadiomics' ``getBinEdges`` for one region (numpy, exact)."""
    if bin_count is not None:
        edges = np.histogram(np.array([mn, mx]), bin_count)[1]
        edges[-1] += 1
        return edges
    low = mn - (mn % bin_width)
    edges = np.arange(low, mx + 2 * bin_width, bin_width)
    if len(edges) == 1:
        edges = np.array([edges[0] - 0.5, edges[0] + 0.5])
    return edges


def _pack_cpu(images: Tensor, masks: Tensor, boxes: np.ndarray, flip: np.ndarray, y0: np.ndarray, x0: np.ndarray,
              hh: int, ww: int, bin_width: float, bin_count: int | None) -> tuple:
    """Fill the canvas region by region with numpy (cheap per-region slices; no per-pixel index maps)."""
    img = images.numpy()
    msk = masks.numpy()
    integer = not images.is_floating_point()
    fast_int = integer and bin_count is None and float(bin_width).is_integer()
    n = len(boxes)
    levels = np.zeros((hh, ww), dtype=np.int32)
    region = np.zeros((hh, ww), dtype=np.int32)
    values = np.zeros((hh, ww), dtype=(np.int64 if img.dtype.itemsize >= 4 else np.int32) if integer else np.float64)
    stats = np.zeros((n, 4))  # min, max, max level, pixel count
    w_int = int(bin_width) if fast_int else 0
    for k in range(n):
        r0, r1, c0, c1 = boxes[k]
        sub = img[k, r0 : r1 + 1, c0 : c1 + 1]
        m = msk[k, r0 : r1 + 1, c0 : c1 + 1]
        if flip[k]:
            sub, m = sub.T, m.T
        if integer:
            sub = sub.astype(np.int64 if img.dtype.itemsize >= 4 else np.int32)
        roi = sub[m]
        mn, mx = roi.min(), roi.max()
        h, w = sub.shape
        ys, xs = slice(y0[k], y0[k] + h), slice(x0[k], x0[k] + w)
        if fast_int:
            lv = sub // w_int - (int(mn) // w_int - 1)
        else:
            lv = np.digitize(sub, _digitize_edges(float(mn), float(mx), bin_width, bin_count))
        lv = lv * m
        levels[ys, xs] = lv
        region[ys, xs] = m * (k + 1)
        values[ys, xs] = (sub - mn) * m if integer else sub
        stats[k] = (mn, mx, lv.max(), roi.size)
    return levels, region, values, stats


_KERNEL_DTYPES = (np.uint8, np.int8, np.int16, np.uint16, np.int32, np.int64, np.float32, np.float64)


def _pack_kernel(images: Tensor, masks: Tensor, boxes: np.ndarray, flip: np.ndarray, y0: np.ndarray, x0: np.ndarray,
                 hh: int, ww: int, bin_width: float, bin_count: int | None) -> tuple:
    """Fill the canvas with the compiled kernels (`kernels.region_min_max`, `kernels.fill_canvas`): the same
    canvas as `_pack_cpu` but no region map (`Canvas.region` builds it if asked), plus the (R, Ng) level
    histogram, with levels already in their final dtype; for integer images either the values or their
    histogram (`Canvas.value_hist`)."""
    from . import kernels

    img = images.detach().numpy()
    msk = masks.numpy()
    n = len(boxes)
    integer = not images.is_floating_point()
    info = np.iinfo(img.dtype) if integer else np.finfo(img.dtype)
    mn = np.full(n, info.max, dtype=img.dtype)
    mx = np.full(n, info.min, dtype=img.dtype)
    kernels.region_min_max(img, msk, boxes, mn, mx)
    lut, lut_min = np.zeros(0, dtype=np.int64), 0
    edges, edge_start = np.zeros(1), np.zeros(n + 1, dtype=np.int64)
    if integer and bin_count is None and float(bin_width).is_integer():
        width = int(bin_width)
        lo, hi = int(mn.min()), int(mx.max())
        max_level = mx.astype(np.int64) // width - (mn.astype(np.int64) // width - 1)
        if hi - lo < 2**24:  # intensities -> floor(v / width), by table instead of a division per pixel
            lut, lut_min = np.arange(lo, hi + 1, dtype=np.int64) // width, lo
    if len(lut) == 0:
        per_region = [_digitize_edges(float(a), float(b), bin_width, bin_count)
                      for a, b in zip(mn.tolist(), mx.tolist())]
        edges = np.concatenate(per_region).astype(np.float64)
        edge_start[1:] = np.cumsum([len(e) for e in per_region])
        max_level = np.array([np.digitize(b, e) for b, e in zip(mx.tolist(), per_region)], dtype=np.int64)
    n_levels = int(max_level.max())
    levels = np.zeros((hh, ww), dtype=np.uint8 if n_levels < 256 else np.int32)
    value_hist = values = np.zeros((n, 0), dtype=np.int64)
    if integer:
        span = int((mx.astype(np.int64) - mn.astype(np.int64)).max())
        if len(lut) and n * (span + 1) <= VALUE_HIST_CELLS:
            value_hist = np.zeros((n, span + 1), dtype=np.int64)
        else:  # the narrowest dtype that holds the intensity offsets (fewer bytes for a fresh canvas)
            values = np.zeros((hh, ww), dtype=np.uint8 if span < 2**8 else np.int16 if span < 2**15 else
                              np.int32 if span < 2**31 else np.int64)
    else:
        values = np.zeros((hh, ww), dtype=np.float64)
    hist = np.zeros((n, n_levels + 1), dtype=np.int64)
    kernels.fill_canvas(img, msk, boxes, flip, y0, x0, mn, lut, lut_min, edges, edge_start, integer, levels, values,
                        hist, value_hist)
    count = hist[:, 1:].sum(1)
    stats = np.stack([mn.astype(np.float64), mx.astype(np.float64), max_level.astype(np.float64),
                      count.astype(np.float64)], 1)
    if value_hist.shape[1]:
        return levels, None, stats, hist[:, 1:], value_hist
    return levels, values, stats, hist[:, 1:], None


VALUE_HIST_CELLS = 2**22  # bound on regions * intensity range for the packing's value histogram (32 MB)


def _pack_vectorised(images: Tensor, masks: Tensor, boxes: np.ndarray, flip: np.ndarray, y0: np.ndarray,
                     x0: np.ndarray, hh: int, ww: int, bin_width: float, bin_count: int | None) -> tuple:
    """Fill the canvas with gathers and scatters on the images' device (the GPU path)."""
    dev = images.device
    b, h_img, w_img = masks.shape
    src = np.zeros((hh, ww), dtype=np.int64)
    region_np = np.zeros((hh, ww), dtype=np.int32)
    for k, (r0, r1, c0, c1) in enumerate(boxes.tolist()):
        rows = np.arange(r0, r1 + 1)[:, None] * w_img + np.arange(c0, c1 + 1)[None, :] + k * h_img * w_img
        if flip[k]:
            rows = rows.T
        h, w = rows.shape
        src[y0[k] : y0[k] + h, x0[k] : x0[k] + w] = rows
        region_np[y0[k] : y0[k] + h, x0[k] : x0[k] + w] = k + 1
    src_t = torch.from_numpy(src).to(dev)
    region = torch.from_numpy(region_np).to(dev)
    region = region * masks.reshape(-1)[src_t]
    inside = region > 0
    raw = images.reshape(-1)[src_t]
    integer = not images.is_floating_point()
    vals = raw.to(torch.int64 if integer else torch.float64)
    n = len(boxes)
    idx = region.flatten().to(torch.int64)
    big = torch.iinfo(torch.int64).max if integer else float("inf")
    mn = torch.full((n + 1,), big, dtype=vals.dtype, device=dev).scatter_reduce(0, idx, vals.flatten(), "amin")
    mx = torch.full((n + 1,), -big if not integer else torch.iinfo(torch.int64).min, dtype=vals.dtype, device=dev)
    mx = mx.scatter_reduce(0, idx, vals.flatten(), "amax")
    mn_px, mx_px = mn[region], mx[region]
    lv = level_of(vals, mn_px, mx_px, bin_width, bin_count, integer)
    lv = torch.where(inside, lv, 0).to(torch.int32)
    values = torch.where(inside, vals - mn_px, 0).to(torch.int32) if integer else vals
    max_lv = torch.zeros(n + 1, dtype=torch.int32, device=dev).scatter_reduce(0, idx, lv.flatten(), "amax")
    count = torch.bincount(idx, minlength=n + 1)
    stats = torch.stack([mn[1:].double(), mx[1:].double(), max_lv[1:].double(), count[1:].double()], 1)
    return lv, region, values, stats


def _bin_width_levels(x: Tensor, low: Tensor, width: float) -> Tensor:
    """numpy.digitize(x, numpy.arange(low, ..., width)) for float x >= low, edge values reproduced exactly."""
    low_plus = low + width  # numpy.arange's second element
    delta = low_plus - low  # numpy.arange's fill step
    k = torch.floor((x - low) / delta)

    def edge(kk: Tensor) -> Tensor:  # the value numpy.arange stores at index kk
        e = low + kk * delta
        e = torch.where(kk == 1, low_plus, e)
        return torch.where(kk == 0, low, e)

    k = torch.where(edge(k) > x, k - 1, k)
    k = torch.where(edge(k + 1) <= x, k + 1, k)
    return k + 1


def _bin_count_levels(x: Tensor, mn: Tensor, mx: Tensor, bin_count: int) -> Tensor:
    """numpy.digitize(x, edges) with edges = numpy.histogram(roi, bin_count)[1], last edge + 1."""
    flat = mn == mx
    first = torch.where(flat, mn - 0.5, mn)
    last = torch.where(flat, mx + 0.5, mx)
    step = (last - first) / bin_count  # numpy.linspace: arange(num) * step + start, last = stop
    levels = torch.ones_like(x)
    for k in range(1, bin_count):
        levels += (x >= k * step + first).to(x.dtype)
    return levels


def level_of(values: Tensor, mn: Tensor, mx: Tensor, bin_width: float, bin_count: int | None, integer: bool) -> Tensor:
    """Gray level (int64) of intensities `values` of regions with ROI min `mn` and max `mx` (broadcastable)."""
    if bin_count is not None:
        return _bin_count_levels(values.double(), mn.double(), mx.double(), int(bin_count)).long()
    if integer and float(bin_width).is_integer():
        w = int(bin_width)
        v, m = values.long(), mn.long()
        return torch.div(v, w, rounding_mode="floor") - torch.div(m, w, rounding_mode="floor") + 1
    m = mn.double()
    low = m - torch.remainder(m, bin_width)
    return _bin_width_levels(values.double(), low, float(bin_width)).long()


def prepare_canvas(
    images: Tensor,
    masks: Tensor,
    boxes: np.ndarray,
    bin_width: float = 25.0,
    bin_count: int | None = None,
    vectorised: bool | None = None,
) -> Canvas:
    """Pack and discretise validated regions: images (B, H, W) real, masks (B, H, W) bool, boxes (B, 4) int
    (r0, r1, c0, c1 inclusive). `vectorised` None: numpy per-region slices on CPU, gathers elsewhere."""
    if images.dtype == torch.bool:
        images = images.to(torch.uint8)
    heights = boxes[:, 1] - boxes[:, 0] + 1
    widths = boxes[:, 3] - boxes[:, 2] + 1
    flip = heights > widths  # store every region wide: shorter shelves
    ph, pw = np.where(flip, widths, heights), np.where(flip, heights, widths)
    y0, x0, hh, ww, shelves = shelf_pack(ph, pw)
    vectorised = images.device.type != "cpu" if vectorised is None else vectorised
    use_kernels = kernels_for(images, vectorised)
    hist = region = value_hist = None
    if use_kernels:
        levels, values, stats, hist, value_hist = _pack_kernel(images, masks, boxes, flip, y0, x0, hh, ww, bin_width,
                                                               bin_count)
    else:
        pack = _pack_vectorised if vectorised else _pack_cpu
        levels, region, values, stats = pack(images, masks, boxes, flip, y0, x0, hh, ww, bin_width, bin_count)
    dev = images.device
    if not isinstance(levels, Tensor):
        levels, stats = torch.from_numpy(levels), torch.from_numpy(stats)
        values, region, value_hist = (None if a is None else torch.from_numpy(a) for a in (values, region, value_hist))
    stats = stats.to(dev, torch.float64)
    n_levels = int(stats[:, 2].max().item())
    return Canvas(
        levels=levels.to(dev, torch.uint8 if n_levels < 256 else torch.int32),
        values=None if values is None else values.to(dev),
        n_regions=len(boxes),
        n_levels=n_levels,
        shelves=shelves,
        boxes=torch.from_numpy(np.stack([y0, x0, ph, pw], 1)).to(dev),
        max_level=stats[:, 2],
        count=stats[:, 3],
        min_value=stats[:, 0],
        max_value=stats[:, 1],
        integer_valued=not images.is_floating_point(),
        kernels=use_kernels,
        value_hist=value_hist,
        _region=None if region is None else region.to(dev),
        _level_hist=None if hist is None else torch.from_numpy(hist).to(torch.float64),
    )


def kernels_for(images: Tensor, vectorised: bool) -> bool:
    """Whether a batch is computed with the compiled CPU kernels: numba available and enabled
    (`kernels.active`), the images on the CPU in a supported dtype, and not the vectorised (GPU) code path."""
    from . import kernels

    if vectorised or images.device.type != "cpu" or not kernels.active():
        return False
    return images.detach().numpy().dtype.type in _KERNEL_DTYPES


def interior(x: Tensor, dy: int = 0, dx: int = 0) -> Tensor:
    """x[1+dy : H-1+dy, 1+dx : W-1+dx]: the interior of the canvas, shifted by (dy, dx)."""
    h, w = x.shape[-2], x.shape[-1]
    return x[..., 1 + dy : h - 1 + dy, 1 + dx : w - 1 + dx]


def masked_mean(values: Tensor, valid: Tensor, dim: int = 1) -> Tensor:
    """numpy.nanmean over `dim` restricted to `valid` entries (NaN entries are skipped as well).

    PyRadiomics averages the texture matrices' per-angle features with nanmean, after deleting the
    angles whose matrix is empty; an all-empty row gives NaN, as numpy does.
    """
    ok = valid & ~torch.isnan(values)
    total = torch.where(ok, values, torch.zeros_like(values)).sum(dim)
    n = ok.sum(dim).to(values.dtype)
    return total / n


def entropy_terms(p: Tensor) -> Tensor:
    """-p * log2(p + eps), PyRadiomics' entropy summand (0 where p == 0)."""
    return -p * torch.log2(p + EPS)
