"""Neighbouring Gray Tone Difference Matrix features, batched (PyRadiomics ``ngtdm``, 5 features).

For every ROI pixel with gray level i, the neighbourhood average is the mean gray level of its ROI
neighbours among the 8 at distance 1 (the centre excluded); n_i counts the pixels of level i and s_i sums
|i - neighbourhood average|. As PyRadiomics' C code, a pixel without ROI neighbours still counts in n_i
and adds 0 to s_i. p_i = n_i / Nvp; sums over pairs of gray levels skip the levels with p_i = 0.
Coarseness is 1e6 when sum(p_i s_i) = 0, Contrast 0 with a single level, Busyness 0 when its denominator
is 0, Strength 0 when sum(s_i) = 0 (PyRadiomics 3.0.1, ``radiomics/ngtdm.py``).
Reference: Amadasun and King, "Textural features corresponding to textural properties", IEEE TSMC 1989.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .discretisation import Canvas, interior
from .gldm import neighbourhood_counts

FEATURE_NAMES: tuple[str, ...] = ("Busyness", "Coarseness", "Complexity", "Contrast", "Strength")


def _box3(x: Tensor) -> Tensor:
    """Sum over each interior pixel's 3x3 window (centre included), (H-2, W-2)."""
    r = x[:, :-2] + x[:, 1:-1] + x[:, 2:]
    return r[:-2] + r[1:-1] + r[2:]


def ngtdm_matrix(canvas: Canvas) -> tuple[Tensor, Tensor]:
    """(n_i, s_i), each (R, Ng): pixel counts and summed absolute neighbourhood differences per level.

    With t the sum and c the number of a pixel's ROI neighbours (3x3 box sums of the levels, 0 outside
    the regions, and of the mask, minus the centre), |g - t / c| = |g c - t| / c: the integer numerators
    are summed per (region, level, c) with one bincount and divided by c at the end. The gaps keep the
    regions' neighbourhoods apart. With `canvas.kernels`, the same sums from the compiled neighbourhood pass
    shared with GLDM (`gldm.neighbourhood_counts`, cached on the canvas).
    """
    inv_c = 1.0 / torch.arange(9, dtype=torch.float64, device=canvas.levels.device).clamp_min(1)
    if canvas.kernels:
        sums = canvas.cache["ngtdm_sums"] if "ngtdm_sums" in canvas.cache else neighbourhood_counts(canvas)[1]
        return canvas.level_hist, (sums * inv_c).sum(2)[:, 1:]
    r = canvas.n_regions
    k = canvas.n_bins
    it = torch.int16 if 9 * k < 2**15 else torch.int32
    lv = canvas.levels.to(it)
    g = interior(lv)
    t = _box3(lv) - g
    mu = canvas.mask.to(torch.uint8)
    c = _box3(mu) - interior(mu)
    num = (g * c - t).abs()  # 0 for a pixel without ROI neighbours, as PyRadiomics' diff = 0
    idx = canvas.key9() + c
    sums = torch.bincount(idx.flatten(), weights=num.flatten().to(torch.float64), minlength=(r + 1) * k * 9)
    s_i = (sums.view(r + 1, k, 9) * inv_c).sum(2)[1:, 1:]
    return canvas.level_hist, s_i


def compute_from_matrix(n_i: Tensor, s_i: Tensor) -> Tensor:
    """(B, 5) features from n_i and s_i (B, Ng)."""
    dt = n_i.dtype
    ng = n_i.shape[1]
    i = torch.arange(1, ng + 1, dtype=dt, device=n_i.device)
    nvp = n_i.sum(1)
    p = n_i / nvp[:, None]
    present = p > 0
    pair = present[:, :, None] & present[:, None, :]
    zero = torch.zeros((), dtype=dt, device=n_i.device)
    ngp = present.sum(1).to(dt)
    sum_s = s_i.sum(1)
    ps = p * s_i
    dij = i[:, None] - i[None, :]

    sum_coarse = ps.sum(1)
    coarseness = torch.where(sum_coarse != 0, 1 / torch.where(sum_coarse != 0, sum_coarse, 1), 1e6)

    div = ngp * (ngp - 1)
    contrast = (p[:, :, None] * p[:, None, :] * dij**2).sum(dim=(1, 2)) * sum_s / nvp
    contrast = torch.where(div != 0, contrast / torch.where(div != 0, div, 1), zero)

    ip = i * p
    absdiff = torch.where(pair, (ip[:, :, None] - ip[:, None, :]).abs(), zero).sum(dim=(1, 2))
    busyness = torch.where(absdiff != 0, ps.sum(1) / torch.where(absdiff != 0, absdiff, 1), zero)

    num = torch.where(pair, ps[:, :, None] + ps[:, None, :], zero)
    den = p[:, :, None] + p[:, None, :]
    den = torch.where(den == 0, torch.ones_like(den), den)
    complexity = (dij.abs() * num / den).sum(dim=(1, 2)) / nvp

    strength = torch.where(pair, (p[:, :, None] + p[:, None, :]) * dij**2, zero).sum(dim=(1, 2))
    strength = torch.where(sum_s != 0, strength / torch.where(sum_s != 0, sum_s, 1), zero)

    out = {
        "Busyness": busyness,
        "Coarseness": coarseness,
        "Complexity": complexity,
        "Contrast": contrast,
        "Strength": strength,
    }
    return torch.stack([out[k] for k in FEATURE_NAMES], dim=1)


def compute(canvas: Canvas) -> Tensor:
    """(R, 5) NGTDM features in FEATURE_NAMES order."""
    return compute_from_matrix(*ngtdm_matrix(canvas))
