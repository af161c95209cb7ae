"""Gray Level Dependence Matrix features, batched (PyRadiomics ``gldm``, 14 features).

A pixel's dependence is the number of its 8 neighbours (distance 1) that lie in the ROI and whose gray
level differs from its own by at most ``alpha`` (PyRadiomics' ``gldm_a``, default 0). The matrix counts
ROI pixels by (gray level, dependence + 1); its total is the pixel count Np. Features as PyRadiomics
3.0.1 (``radiomics/gldm.py``); the deprecated GrayLevelNonUniformityNormalized (equal to first-order
Uniformity) and DependencePercentage (always 1) are not computed.
Reference: Sun and Wee, "Neighbouring gray level dependence matrix for texture classification", 1983.
"""
from __future__ import annotations

import math

import torch
from torch import Tensor

from .discretisation import FORWARD_4, Canvas, entropy_terms, interior

FEATURE_NAMES: tuple[str, ...] = (
    "DependenceEntropy",
    "DependenceNonUniformity",
    "DependenceNonUniformityNormalized",
    "DependenceVariance",
    "GrayLevelNonUniformity",
    "GrayLevelVariance",
    "HighGrayLevelEmphasis",
    "LargeDependenceEmphasis",
    "LargeDependenceHighGrayLevelEmphasis",
    "LargeDependenceLowGrayLevelEmphasis",
    "LowGrayLevelEmphasis",
    "SmallDependenceEmphasis",
    "SmallDependenceHighGrayLevelEmphasis",
    "SmallDependenceLowGrayLevelEmphasis",
)


def gldm_matrix(canvas: Canvas, alpha: float = 0) -> Tensor:
    """Dependence counts (R, Ng, 9): ROI pixels by gray level and dependence (0..8).

    For each forward angle the dependent pairs (p, p + o) add 1 to both pixels' counts; with alpha = 0
    a pair is dependent when the levels are equal (level 0, the background, never equals a region level,
    and the gaps keep regions apart). With `canvas.kernels`, from the compiled neighbourhood pass shared with
    NGTDM (`neighbourhood_counts`).
    """
    if canvas.kernels:
        return neighbourhood_counts(canvas, alpha)[0].to(torch.float64)
    r = canvas.n_regions
    lv = canvas.levels
    k = canvas.n_bins
    dep = torch.zeros(lv.shape, dtype=torch.uint8, device=lv.device)
    for dy, dx in FORWARD_4:
        c = interior(lv)
        s = interior(lv, dy, dx)
        if alpha == 0:
            e = c == s
        else:
            d = (c.to(torch.int32) - s.to(torch.int32)).abs()
            e = (d <= alpha) & (c > 0) & (s > 0)
        e = e.to(torch.uint8)
        interior(dep).add_(e)
        interior(dep, dy, dx).add_(e)
    idx = canvas.key9() + interior(dep)
    counts = torch.bincount(idx.flatten(), minlength=(r + 1) * k * 9).view(r + 1, k, 9)[1:, 1:]
    return counts.to(torch.float64)


def neighbourhood_counts(canvas: Canvas, alpha: float = 0) -> tuple[Tensor, Tensor]:
    """GLDM's dependence counts (R, Ng, 9) for `alpha` and NGTDM's sums (R, Ng + 1, 9) from one compiled pass over
    every pixel's 8 neighbours (`kernels.neighbourhood_counts`; kernel path only), cached on the canvas. One pass
    serves both classes, cheaper than two when both are enabled (the default); NGTDM alone pays for the
    dependence counts too."""
    from .kernels import neighbourhood_counts as counts

    alpha = math.floor(alpha)  # levels are integers: |difference| <= alpha exactly when <= floor(alpha)
    key = ("dependence", alpha)
    if key not in canvas.cache:
        dependence, ngtdm = counts(canvas.levels.numpy(), canvas.boxes.numpy(), canvas.n_levels, alpha)
        canvas.cache[key] = torch.from_numpy(dependence)
        canvas.cache.setdefault("ngtdm_sums", torch.from_numpy(ngtdm))  # the same for every alpha
    return canvas.cache[key], canvas.cache["ngtdm_sums"]


def compute_from_matrix(p: Tensor) -> Tensor:
    """(B, 14) features from dependence counts (B, Ng, Nd)."""
    dt = p.dtype
    dev = p.device
    ng, nd = p.shape[1], p.shape[2]
    nz = p.sum(dim=(1, 2))
    nz = torch.where(nz == 0, torch.ones_like(nz), nz)
    pd = p.sum(1)  # (B, Nd)
    pg = p.sum(2)  # (B, Ng)
    i = torch.arange(1, ng + 1, dtype=dt, device=dev)
    j = torch.arange(1, nd + 1, dtype=dt, device=dev)
    i2 = i[:, None] ** 2
    j2 = j[None, :] ** 2
    pg_n = pg / nz[:, None]
    pd_n = pd / nz[:, None]
    u_i = (pg_n * i).sum(1, keepdim=True)
    u_j = (pd_n * j).sum(1, keepdim=True)
    out = {
        "DependenceEntropy": entropy_terms(p / nz[:, None, None]).sum(dim=(1, 2)),
        "DependenceNonUniformity": (pd**2).sum(1) / nz,
        "DependenceNonUniformityNormalized": (pd**2).sum(1) / nz**2,
        "DependenceVariance": (pd_n * (j - u_j) ** 2).sum(1),
        "GrayLevelNonUniformity": (pg**2).sum(1) / nz,
        "GrayLevelVariance": (pg_n * (i - u_i) ** 2).sum(1),
        "HighGrayLevelEmphasis": (pg * i**2).sum(1) / nz,
        "LargeDependenceEmphasis": (pd * j**2).sum(1) / nz,
        "LargeDependenceHighGrayLevelEmphasis": (p * (i2 * j2)).sum(dim=(1, 2)) / nz,
        "LargeDependenceLowGrayLevelEmphasis": (p * (j2 / i2)).sum(dim=(1, 2)) / nz,
        "LowGrayLevelEmphasis": (pg / i**2).sum(1) / nz,
        "SmallDependenceEmphasis": (pd / j**2).sum(1) / nz,
        "SmallDependenceHighGrayLevelEmphasis": (p * (i2 / j2)).sum(dim=(1, 2)) / nz,
        "SmallDependenceLowGrayLevelEmphasis": (p / (i2 * j2)).sum(dim=(1, 2)) / nz,
    }
    return torch.stack([out[k] for k in FEATURE_NAMES], dim=1)


def compute(canvas: Canvas, alpha: float = 0) -> Tensor:
    """(R, 14) GLDM features in FEATURE_NAMES order."""
    return compute_from_matrix(gldm_matrix(canvas, alpha))
