"""First-order statistics of the ROI intensities, batched (PyRadiomics ``firstorder``, 18 features).

Formulas follow PyRadiomics 3.0.1 (``radiomics/firstorder.py``): population moments, numpy's linear
percentiles, entropy and uniformity of the discretised histogram, and 0 for the skewness and kurtosis
of a flat region. Pixel spacing is 1, so TotalEnergy equals Energy.

For integer intensities (8- or 16-bit images) every statistic is computed exactly from each region's
intensity histogram (one bincount over the canvas; order statistics by searching its cumulative sum);
float intensities are sorted per region instead. The deprecated StandardDeviation is not computed
(PyRadiomics does not enable it either).
"""
from __future__ import annotations

import torch
from torch import Tensor

from .discretisation import Canvas, entropy_terms, flat_nonzero, index_dtype

FEATURE_NAMES: tuple[str, ...] = (
    "10Percentile",
    "90Percentile",
    "Energy",
    "Entropy",
    "InterquartileRange",
    "Kurtosis",
    "Maximum",
    "Mean",
    "MeanAbsoluteDeviation",
    "Median",
    "Minimum",
    "Range",
    "RobustMeanAbsoluteDeviation",
    "RootMeanSquared",
    "Skewness",
    "TotalEnergy",
    "Uniformity",
    "Variance",
)

_MAX_HIST_BINS = 2**25  # regions * intensity range above which the sorted path is used


def _lerp(a: Tensor, b: Tensor, t: Tensor) -> Tensor:
    """numpy's percentile interpolation (its `_lerp`, which switches form at t = 0.5)."""
    diff = b - a
    return torch.where(t >= 0.5, b - diff * (1 - t), a + diff * t)


def _percentiles(order_stat, n: Tensor) -> dict[str, Tensor]:
    """numpy.percentile (method 'linear') at 10, 25, 75, 90 and the median, from an order-statistic lookup that
    takes (R, M) 0-based ranks and returns the (R, M) values (all ten ranks looked up at once)."""
    qs = (10, 25, 75, 90)
    virtual = (n[:, None] - 1) * torch.tensor([q / 100.0 for q in qs], dtype=n.dtype, device=n.device)
    lo = torch.floor(virtual)
    hi = torch.minimum(lo + 1, n[:, None] - 1)
    mid = torch.stack([torch.floor((n - 1) / 2), torch.floor(n / 2)], dim=1)
    stats = order_stat(torch.cat([lo, hi, mid], dim=1))
    at_lo, at_hi = stats[:, :4], stats[:, 4:8]
    value = _lerp(at_lo, at_hi, virtual - lo)
    out = {f"p{q}": value[:, i] for i, q in enumerate(qs)}
    out["median"] = (stats[:, 8] + stats[:, 9]) / 2
    return out


class _Sums:
    """Per-region weighted sums of f(value): histogram form (R, K) or pixel form (index, values)."""

    def __init__(self, vals: Tensor, weights: Tensor, index: Tensor | None, n_regions: int):
        self.vals, self.weights, self.index, self.n = vals, weights, index, n_regions

    def __call__(self, f) -> Tensor:
        return self.total(f(self.vals))

    def total(self, terms: Tensor) -> Tensor:
        """The weighted per-region sum of per-value terms (shaped like `vals`)."""
        terms = self.weights * terms
        if self.index is None:
            return terms.sum(1)
        return torch.zeros(self.n, dtype=terms.dtype, device=terms.device).index_add_(0, self.index, terms)

    def expand(self, per_region: Tensor) -> Tensor:
        return per_region[:, None] if self.index is None else per_region[self.index]


def _stats(s: _Sums, n: Tensor, p: dict[str, Tensor], shift: float) -> dict[str, Tensor]:
    mean = s(lambda v: v) / n
    d = s.vals - s.expand(mean)  # deviations, squared and cubed by multiplication (cheaper than pow)
    d2 = d * d
    m2 = s.total(d2) / n
    m3 = s.total(d2 * d) / n
    m4 = s.total(d2 * d2) / n
    flat = m2 == 0
    m2s = torch.where(flat, torch.ones_like(m2), m2)
    zero = torch.zeros_like(m2)
    lo, hi = s.expand(p["p10"]), s.expand(p["p90"])
    robust = _Sums(s.vals, s.weights * ((s.vals >= lo) & (s.vals <= hi)), s.index, s.n)
    n_r = robust(lambda v: torch.ones_like(v))
    mean_r = s.expand(robust(lambda v: v) / n_r)
    shifted = s.vals + shift
    energy = s.total(shifted * shifted)
    return {
        "Mean": mean,
        "Variance": m2,
        "Skewness": torch.where(flat, zero, m3 / (m2s * torch.sqrt(m2s))),
        "Kurtosis": torch.where(flat, zero, m4 / (m2s * m2s)),
        "MeanAbsoluteDeviation": s.total(d.abs()) / n,
        "RobustMeanAbsoluteDeviation": robust(lambda v: (v - mean_r).abs()) / n_r,
        "Energy": energy,
        "TotalEnergy": energy,
        "RootMeanSquared": torch.sqrt(energy / n),
    }


def _from_histogram(canvas: Canvas, shift: float) -> dict[str, Tensor]:
    r = canvas.n_regions
    mn = canvas.min_value
    span = int((canvas.max_value - mn).max().item()) + 1
    if canvas.value_hist is not None:  # counted by the packing (kernel path)
        hist = canvas.value_hist.to(torch.float64)
    elif canvas.kernels:
        from .kernels import value_histogram

        hist = torch.from_numpy(value_histogram(canvas.values.numpy(), canvas.boxes.numpy(), canvas.levels.numpy(),
                                                span)).to(torch.float64)
    else:
        key = canvas.region.to(index_dtype((r + 1) * span)) * span + canvas.values
        hist = torch.bincount(key.flatten(), minlength=(r + 1) * span).view(r + 1, span)[1:].to(torch.float64)
    vals = mn[:, None] + torch.arange(span, dtype=torch.float64, device=mn.device)[None, :]
    cum = hist.cumsum(1).contiguous()

    def order_stat(k: Tensor) -> Tensor:  # the k[r, m]-th smallest value (0-based) of region r
        pos = torch.searchsorted(cum, k.contiguous(), right=True)
        return vals.gather(1, pos.clamp_max(span - 1))

    p = _percentiles(order_stat, canvas.count)
    return {**p, **_stats(_Sums(vals, hist, None, r), canvas.count, p, shift)}


def _from_sorted(canvas: Canvas, shift: float) -> dict[str, Tensor]:
    inside = flat_nonzero(canvas.region.flatten() > 0)
    reg = canvas.region.flatten()[inside].long() - 1
    vals = canvas.values.flatten()[inside].to(torch.float64)
    order = torch.argsort(vals, stable=True)
    order = order[torch.argsort(reg[order], stable=True)]
    sorted_vals = vals[order]
    start = torch.cumsum(canvas.count, 0) - canvas.count

    def order_stat(k: Tensor) -> Tensor:  # the k[r, m]-th smallest value (0-based) of region r
        return sorted_vals[(start[:, None] + k).long()]

    p = _percentiles(order_stat, canvas.count)
    return {**p, **_stats(_Sums(vals, torch.ones_like(vals), reg, canvas.n_regions), canvas.count, p, shift)}


def compute(canvas: Canvas, voxel_array_shift: float = 0.0) -> Tensor:
    """(R, 18) first-order features in FEATURE_NAMES order."""
    span = float((canvas.max_value - canvas.min_value).max().item()) + 1
    if canvas.integer_valued and canvas.n_regions * span <= _MAX_HIST_BINS:
        out = _from_histogram(canvas, voxel_array_shift)
    else:
        out = _from_sorted(canvas, voxel_array_shift)
    p_lv = canvas.level_hist / canvas.count[:, None]
    out["Entropy"] = entropy_terms(p_lv).sum(1)
    out["Uniformity"] = (p_lv**2).sum(1)
    out["Minimum"] = canvas.min_value
    out["Maximum"] = canvas.max_value
    out["Range"] = canvas.max_value - canvas.min_value
    out["10Percentile"] = out["p10"]
    out["90Percentile"] = out["p90"]
    out["InterquartileRange"] = out["p75"] - out["p25"]
    out["Median"] = out["median"]
    return torch.stack([out[k] for k in FEATURE_NAMES], dim=1)
