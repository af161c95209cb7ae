"""Gray Level Co-occurrence Matrix features, batched (PyRadiomics ``glcm``, 24 features).

The GLCM of an angle counts pairs (pixel, neighbour at the angle's offset) with both pixels in the ROI,
by their gray levels. As PyRadiomics with its defaults (distance 1, force2D): the four 2D angles
(dy, dx) = (1, 1), (1, 0), (1, -1), (0, 1), each matrix made symmetric (P + P^T) and normalised, every
feature computed per angle and averaged over the angles with numpy.nanmean, after dropping the angles
whose matrix is empty (an ROI with no horizontal neighbours, say). Gray levels absent from the ROI give
zero rows and columns, which change no feature; the ones that use Ng (Idmn, Idn) use the region's
largest gray level, as PyRadiomics does.

MCC is the square root of the second largest eigenvalue of Q(i, j) = sum_k p(i, k) p(j, k) / (px(i) py(k)).
Q is similar to A A^T with A(i, k) = p(i, k) / sqrt(px(i) py(k)); p being symmetric (px = py), A is symmetric
and A A^T = A^2, so Q's eigenvalues are the squares of A's, which come from a batched symmetric solver
(PyRadiomics uses a general one on Q; the values agree to rounding).
A region with a single gray level has MCC 1, as in PyRadiomics.

HXY1 and HXY2 (in Imc1 and Imc2) are computed as HX + HY: log2(px(i) py(j)) = log2 px(i) + log2 py(j), and
summing over j (over i) with weights p(i, j) or px(i) py(j) leaves the marginals' entropies. PyRadiomics adds
eps = 2.2e-16 inside each logarithm, which moves HXY1 by at most about Ng eps / min px (below 1e-8 even for a
region of millions of pixels) and HXY2 by Ng^2 eps, far under the parity tolerance; where px(i) py(j) = 0 both
sides have 0. One case needs the eps: an angle with a single gray level, where HX = HXY = HXY1 = HXY2 =
-log2(1 + eps), a tiny non-zero number; PyRadiomics then gives Imc1 = Imc2 = 0, and so does this module (the
three entropies are set equal there).

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

def glcm_matrices(canvas: Canvas) -> Tensor:
    """Symmetric co-occurrence counts (R, 4, Ng, Ng) float64 for the four 2D angles (FORWARD_4 order): P + P^T per
    angle, as PyRadiomics' symmetricalGLCM.

    Pairs are keyed (region of the first pixel, its level, the neighbour's level) with level 0
    (background) included, which needs no mask test; row and column 0 and region 0 are dropped.
    Cached on the canvas (GLRLM uses it to find angles without neighbouring pixels). With `canvas.kernels`,
    one compiled pass over the regions' boxes (`kernels.glcm_counts`, which also symmetrises).
    """
    if "glcm_matrices" not in canvas.cache and canvas.kernels:
        from .kernels import glcm_counts

        counts = glcm_counts(canvas.levels.numpy(), canvas.boxes.numpy(), canvas.n_levels)
        canvas.cache["glcm_matrices"] = torch.from_numpy(counts)
    if "glcm_matrices" not in canvas.cache:
        r = canvas.n_regions
        k = canvas.n_bins
        lv = canvas.levels
        scaled = interior(canvas.wide_key(k)) * k
        mats = [torch.bincount((scaled + interior(lv, dy, dx)).flatten(), minlength=(r + 1) * k * k)
                for dy, dx in FORWARD_4]
        p = torch.stack(mats, dim=1).view(r + 1, k, k, 4).permute(0, 3, 1, 2)[1:, :, 1:, 1:].to(torch.float64)
        canvas.cache["glcm_matrices"] = p + p.transpose(2, 3)
    return canvas.cache["glcm_matrices"]


def compute_from_matrix(p_counts: Tensor, max_level: Tensor, n_present: Tensor) -> Tensor:
    """(B, 24) features from symmetric counts (B, A, Ng, Ng); max_level (B,) and n_present (B,) levels.

    The counts must be symmetric (PyRadiomics' symmetricalGLCM, `glcm_matrices`): the column marginal is the row
    marginal, and MCC uses the symmetry (module docstring)."""
    b, a, ng, _ = p_counts.shape
    dt = p_counts.dtype
    dev = p_counts.device
    total = p_counts.sum(dim=(2, 3))  # (B, A)
    valid = total > 0
    p = p_counts / torch.where(valid, total, torch.ones_like(total))[:, :, None, None]

    # Sums over (i, j) of terms that depend on i + j, |i - j|, i or j only are taken over the marginals (pxy_add,
    # pxy_sub, px = py): the same terms, grouped, with far fewer operations on the (B, A, Ng, Ng) matrices.
    lv = torch.arange(1, ng + 1, dtype=dt, device=dev)
    px = p.sum(3)  # (B, A, Ng); p is symmetric: py = px, uy = ux, sigy = sigx, hy = hx
    py = px
    ux = px @ lv  # (B, A): sum p(i, j) i
    uy = ux

    ii = torch.arange(ng, device=dev)
    sum_idx = (ii[:, None] + ii[None, :]).flatten()  # i + j - 2
    diff_idx = (ii[:, None] - ii[None, :]).abs().flatten()
    flat = p.flatten(2)
    pxy_add = torch.zeros(b, a, 2 * ng - 1, dtype=dt, device=dev).index_add_(2, sum_idx, flat)
    pxy_sub = torch.zeros(b, a, ng, dtype=dt, device=dev).index_add_(2, diff_idx, flat)
    k_sum = torch.arange(2, 2 * ng + 1, dtype=dt, device=dev)
    k_diff = torch.arange(0, ng, dtype=dt, device=dev)

    hxy = entropy_terms(flat).sum(2)
    s = k_sum - (ux + uy)[:, :, None]  # i + j - ux - uy, by i + j
    s2 = s * s
    di = lv - ux[:, :, None]  # (B, A, Ng)
    sum_squares = (px * di * di).sum(2)  # sum p(i, j) (i - ux)^2
    sigx = torch.sqrt(sum_squares)
    sigy = sigx
    ij = (lv[:, None] * lv[None, :]).flatten()
    autocorrelation = flat @ ij  # sum p(i, j) i j
    corm = autocorrelation - ux * uy  # sum p(i, j) (i - ux) (j - uy), as sum p = 1
    corr = corm / (sigx * sigy + EPS)
    corr = torch.where(sigx * sigy == 0, torch.ones_like(corr), corr)

    diff_avg = (k_diff * pxy_sub).sum(2)
    diff_var = (pxy_sub * (k_diff - diff_avg[:, :, None]) ** 2).sum(2)

    hx = entropy_terms(px).sum(2)
    hy = hx
    # HXY1 = -sum p(i, j) log2(px(i) py(j) + eps) and HXY2 = -sum px(i) py(j) log2(px(i) py(j) + eps) both equal
    # HX + HY (module docstring): no (Ng, Ng) logarithm.
    hxy1 = hxy2 = torch.where(px.amax(2) == 1, hxy, hx + hy)
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

    # MCC from the eigenvalues of the symmetric A, A(i, k) = p(i, k) / sqrt(px(i) px(k)) (0 where px(i) px(k) = 0,
    # where p(i, k) is 0 too): Q's eigenvalues are their squares, MCC the second largest |eigenvalue| of A.
    inv_x = torch.where(px > 0, 1 / torch.sqrt(px), torch.zeros_like(px))
    amat = p * inv_x[:, :, :, None] * inv_x[:, :, None, :]
    eig = torch.linalg.eigvalsh(amat).abs().sort(dim=-1).values  # ascending |eigenvalue|
    mcc = eig[..., -2] if ng >= 2 else torch.zeros_like(total)

    per_angle = {
        "Autocorrelation": autocorrelation,
        "ClusterProminence": (pxy_add * s2 * s2).sum(2),
        "ClusterShade": (pxy_add * s2 * s).sum(2),
        "ClusterTendency": (pxy_add * s2).sum(2),
        "Contrast": (pxy_sub * k_diff**2).sum(2),
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
        "JointEnergy": (flat * flat).sum(2),
        "JointEntropy": hxy,
        "MCC": mcc,
        "MaximumProbability": flat.amax(2),
        "SumAverage": (k_sum * pxy_add).sum(2),
        "SumEntropy": entropy_terms(pxy_add).sum(2),
        "SumSquares": sum_squares,
    }
    out = masked_mean(torch.stack([per_angle[k] for k in FEATURE_NAMES], dim=1), valid[:, None, :], dim=2)
    mcc = FEATURE_NAMES.index("MCC")
    out[:, mcc] = torch.where(n_present < 2, torch.ones_like(out[:, mcc]), out[:, mcc])
    return out


def compute(canvas: Canvas) -> Tensor:
    """(R, 24) GLCM features in FEATURE_NAMES order."""
    n_present = (canvas.level_hist > 0).sum(1)
    return compute_from_matrix(glcm_matrices(canvas), canvas.max_level, n_present)
