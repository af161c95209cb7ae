"""Gray Level Co-occurrence Matrix features, batched (PyRadiomics ``glcm``, 24 features).

The GLCM of an angle counts pairs (pixel, neighbour at the angle's offset) with both pixels in the ROI,
by their gray levels. As PyRadiomics with its defaults (distance 1, force2D): the four 2D angles
(dy, dx) = (1, 1), (1, 0), (1, -1), (0, 1), each matrix made symmetric (P + P^T) and normalised, every
feature computed per angle and averaged over the angles with numpy.nanmean, after dropping the angles
whose matrix is empty (an ROI with no horizontal neighbours, say). Gray levels absent from the ROI give
zero rows and columns, which change no feature; the ones that use Ng (Idmn, Idn) use the region's
largest gray level, as PyRadiomics does.

MCC is the square root of the second largest eigenvalue of Q(i, j) = sum_k p(i, k) p(j, k) / (px(i) py(k)).
Q is similar to the symmetric matrix A A^T with A(i, k) = p(i, k) / sqrt(px(i) py(k)), so the eigenvalues
come from a batched symmetric solver (PyRadiomics uses a general one; the values agree to rounding).
A region with a single gray level has MCC 1, as in PyRadiomics.

The deprecated Dissimilarity, Homogeneity1/2 and SumVariance are not computed (PyRadiomics does not
enable them). Reference: Haralick et al., "Textural Features for Image Classification", IEEE TSMC 1973;
Zwanenburg et al., "Image biomarker standardisation initiative" (IBSI), 2016.
"""
from __future__ import annotations

import torch
from torch import Tensor

from .discretisation import EPS, FORWARD_4, Canvas, entropy_terms, interior, masked_mean

FEATURE_NAMES: tuple[str, ...] = (
    "Autocorrelation",
    "ClusterProminence",
    "ClusterShade",
    "ClusterTendency",
    "Contrast",
    "Correlation",
    "DifferenceAverage",
    "DifferenceEntropy",
    "DifferenceVariance",
    "Id",
    "Idm",
    "Idmn",
    "Idn",
    "Imc1",
    "Imc2",
    "InverseVariance",
    "JointAverage",
    "JointEnergy",
    "JointEntropy",
    "MCC",
    "MaximumProbability",
    "SumAverage",
    "SumEntropy",
    "SumSquares",
)

def pair_counts(canvas: Canvas) -> Tensor:
    """Co-occurrence counts (R, 4, Ng, Ng) for the four 2D angles (FORWARD_4 order), not symmetrised.

    Pairs are keyed (region of the first pixel, its level, the neighbour's level) with level 0
    (background) included, which needs no mask test; row and column 0 and region 0 are dropped.
    Cached on the canvas (GLRLM uses it to find angles without neighbouring pixels).
    """
    if "pair_counts" not in canvas.cache:
        r = canvas.n_regions
        k = canvas.n_bins
        lv = canvas.levels
        scaled = interior(canvas.wide_key(k)) * k
        mats = [torch.bincount((scaled + interior(lv, dy, dx)).flatten(), minlength=(r + 1) * k * k) for dy, dx in FORWARD_4]
        p = torch.stack(mats, dim=1).view(r + 1, k, k, 4)
        canvas.cache["pair_counts"] = p.permute(0, 3, 1, 2)[1:, :, 1:, 1:]
    return canvas.cache["pair_counts"]


def glcm_matrices(canvas: Canvas) -> Tensor:
    """Symmetric co-occurrence counts (R, 4, Ng, Ng): P + P^T per angle, as PyRadiomics' symmetricalGLCM."""
    p = pair_counts(canvas).to(torch.float64)
    return p + p.transpose(2, 3)


def compute_from_matrix(p_counts: Tensor, max_level: Tensor, n_present: Tensor) -> Tensor:
    """(B, 24) features from symmetric counts (B, A, Ng, Ng); max_level (B,) and n_present (B,) levels."""
    b, a, ng, _ = p_counts.shape
    dt = p_counts.dtype
    dev = p_counts.device
    total = p_counts.sum(dim=(2, 3))  # (B, A)
    valid = total > 0
    p = p_counts / torch.where(valid, total, torch.ones_like(total))[:, :, None, None]

    lv = torch.arange(1, ng + 1, dtype=dt, device=dev)
    i = lv[None, None, :, None]
    j = lv[None, None, None, :]
    px = p.sum(3)  # (B, A, Ng)
    py = p.sum(2)
    ux = (p * i).sum(dim=(2, 3))  # (B, A)
    uy = (p * j).sum(dim=(2, 3))

    ii = torch.arange(ng, device=dev)
    sum_idx = (ii[:, None] + ii[None, :]).flatten()  # i + j - 2
    diff_idx = (ii[:, None] - ii[None, :]).abs().flatten()
    flat = p.flatten(2)
    pxy_add = torch.zeros(b, a, 2 * ng - 1, dtype=dt, device=dev).index_add_(2, sum_idx, flat)
    pxy_sub = torch.zeros(b, a, ng, dtype=dt, device=dev).index_add_(2, diff_idx, flat)
    k_sum = torch.arange(2, 2 * ng + 1, dtype=dt, device=dev)
    k_diff = torch.arange(0, ng, dtype=dt, device=dev)

    hxy = entropy_terms(p).sum(dim=(2, 3))
    s = (i + j) - ux[:, :, None, None] - uy[:, :, None, None]
    di = i - ux[:, :, None, None]
    dj = j - uy[:, :, None, None]
    sigx = torch.sqrt((p * di**2).sum(dim=(2, 3)))
    sigy = torch.sqrt((p * dj**2).sum(dim=(2, 3)))
    corm = (p * di * dj).sum(dim=(2, 3))
    corr = corm / (sigx * sigy + EPS)
    corr = torch.where(sigx * sigy == 0, torch.ones_like(corr), corr)

    diff_avg = (k_diff * pxy_sub).sum(2)
    diff_var = (pxy_sub * (k_diff - diff_avg[:, :, None]) ** 2).sum(2)

    hx = entropy_terms(px).sum(2)
    hy = entropy_terms(py).sum(2)
    pxpy = px[:, :, :, None] * py[:, :, None, :]
    hxy1 = -(p * torch.log2(pxpy + EPS)).sum(dim=(2, 3))
    hxy2 = entropy_terms(pxpy).sum(dim=(2, 3))
    div = torch.maximum(hx, hy)
    imc1 = torch.where(div != 0, (hxy - hxy1) / torch.where(div != 0, div, torch.ones_like(div)), torch.zeros_like(div))
    imc2 = torch.sqrt(1 - torch.exp(-2 * (hxy2 - hxy)))  # NaN when hxy2 < hxy, skipped by nanmean as in numpy
    imc2 = torch.where(hxy2 == hxy, torch.zeros_like(imc2), imc2)

    ngs = max_level[:, None, None]
    idm = (pxy_sub / (1 + k_diff**2)).sum(2)
    idmn = (pxy_sub / (1 + k_diff**2 / ngs**2)).sum(2)
    id_ = (pxy_sub / (1 + k_diff)).sum(2)
    idn = (pxy_sub / (1 + k_diff / ngs)).sum(2)
    inv_var = (pxy_sub[:, :, 1:] / k_diff[1:] ** 2).sum(2)

    # MCC via the symmetric form A A^T, A(i, k) = p(i, k) / sqrt(px(i) py(k)).
    denom = torch.sqrt(px[:, :, :, None] * py[:, :, None, :])
    amat = torch.where(denom > 0, p / torch.where(denom > 0, denom, torch.ones_like(denom)), torch.zeros_like(p))
    q_sym = amat @ amat.transpose(2, 3)
    eig = torch.linalg.eigvalsh(q_sym)  # ascending
    second = eig[..., -2] if ng >= 2 else torch.zeros_like(total)
    mcc = torch.sqrt(second.clamp_min(0))

    per_angle = {
        "Autocorrelation": (p * i * j).sum(dim=(2, 3)),
        "ClusterProminence": (p * s**4).sum(dim=(2, 3)),
        "ClusterShade": (p * s**3).sum(dim=(2, 3)),
        "ClusterTendency": (p * s**2).sum(dim=(2, 3)),
        "Contrast": (p * (i - j) ** 2).sum(dim=(2, 3)),
        "Correlation": corr,
        "DifferenceAverage": diff_avg,
        "DifferenceEntropy": entropy_terms(pxy_sub).sum(2),
        "DifferenceVariance": diff_var,
        "Id": id_,
        "Idm": idm,
        "Idmn": idmn,
        "Idn": idn,
        "Imc1": imc1,
        "Imc2": imc2,
        "InverseVariance": inv_var,
        "JointAverage": ux,
        "JointEnergy": (p**2).sum(dim=(2, 3)),
        "JointEntropy": hxy,
        "MCC": mcc,
        "MaximumProbability": p.flatten(2).amax(2),
        "SumAverage": (k_sum * pxy_add).sum(2),
        "SumEntropy": entropy_terms(pxy_add).sum(2),
        "SumSquares": (p * di**2).sum(dim=(2, 3)),
    }
    out = {k: masked_mean(v, valid) for k, v in per_angle.items()}
    out["MCC"] = torch.where(n_present < 2, torch.ones_like(out["MCC"]), out["MCC"])
    return torch.stack([out[k] for k in FEATURE_NAMES], dim=1)


def compute(canvas: Canvas) -> Tensor:
    """(R, 24) GLCM features in FEATURE_NAMES order."""
    n_present = (canvas.level_hist > 0).sum(1)
    return compute_from_matrix(glcm_matrices(canvas), canvas.max_level, n_present)
