"""Gray Level Size Zone Matrix features, batched (PyRadiomics ``glszm``, 16 features).

A zone is a connected set of ROI pixels with the same gray level; in 2D PyRadiomics connects a pixel to
its 8 neighbours (all four angles, both directions). Zones are found for the whole batch at once: on the
CPU by joining the canvas' row runs (GLRLM's) into connected components with scipy (`zones_from_runs`: a
smooth image has far fewer runs than pixels), on the GPU by a batched union-find made of torch ops (hooking
and pointer jumping, see `zone_ids_propagate`); scikit-image's pixel labelling (`zone_ids_cpu`) is kept as
a CPU alternative (``method="label"``).

Features are sums over zones (size s, gray level g) and over the zone-size and gray-level histograms,
as in PyRadiomics: no matrix of size Ng x Np is built.
Reference: Thibault et al., "Texture indexes and gray level size zone matrix", 2009.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from .discretisation import EPS, Canvas, flat_nonzero, interior

FEATURE_NAMES: tuple[str, ...] = (
    "GrayLevelNonUniformity",
    "GrayLevelNonUniformityNormalized",
    "GrayLevelVariance",
    "HighGrayLevelZoneEmphasis",
    "LargeAreaEmphasis",
    "LargeAreaHighGrayLevelEmphasis",
    "LargeAreaLowGrayLevelEmphasis",
    "LowGrayLevelZoneEmphasis",
    "SizeZoneNonUniformity",
    "SizeZoneNonUniformityNormalized",
    "SmallAreaEmphasis",
    "SmallAreaHighGrayLevelEmphasis",
    "SmallAreaLowGrayLevelEmphasis",
    "ZoneEntropy",
    "ZonePercentage",
    "ZoneVariance",
)

def zone_ids_cpu(key: Tensor) -> tuple[Tensor, int]:
    """Zone id per canvas pixel (int64), 0 outside the regions, ids 1..Z, by scikit-image's labelling.

    `key` is region * K + level (0 outside): ``skimage.measure.label`` joins 8-connected pixels of equal
    key, i.e. same region and same gray level, in one union-find pass over the canvas.
    """
    from skimage.measure import label

    ids = label(key.numpy(), background=0, connectivity=2)
    return torch.from_numpy(ids.astype(np.int64, copy=False)), int(ids.max())


def zone_ids_propagate(key: Tensor) -> tuple[Tensor, int]:
    """Zone id per canvas pixel (int64), 0 outside the regions, by a batched union-find in torch ops.

    Pixels start with the flat index of their horizontal run's first pixel (a cumulative max), which
    joins each row's same-key runs at once. Then, until every link to the row below (straight or
    diagonal, same key) joins equal labels: hook the larger root of every unequal link onto the smaller
    one (scatter-min), and compress every label to its root (repeated gathers). Labels only decrease and
    always name a pixel of the same zone, so this ends with one root per zone: the Shiloach-Vishkin
    scheme (J. Algorithms 3, 1982) with full path compression. Only elementwise ops, gathers and
    scatters: it is the GPU path.
    """
    h, w = key.shape
    n = h * w
    dev = key.device
    fg = key > 0
    flat_idx = torch.arange(n, device=dev).view(h, w)
    same_left = torch.zeros_like(fg)
    same_left[:, 1:] = (key[:, 1:] == key[:, :-1]) & fg[:, 1:]
    start = fg & ~same_left
    lab = torch.where(start, flat_idx, -1).cummax(dim=1).values
    lab = torch.where(fg, lab, flat_idx).flatten()  # background pixels are their own (unused) roots
    us, vs = [], []
    for dy, dx in ((1, -1), (1, 0), (1, 1)):
        link = (interior(key) == interior(key, dy, dx)) & interior(fg)
        u = interior(flat_idx).flatten()[flat_nonzero(link.flatten())]
        us.append(u)
        vs.append(u + dy * w + dx)
    u = torch.cat(us)
    v = torch.cat(vs)
    while True:
        while True:  # compress to roots
            nxt = lab[lab]
            if torch.equal(nxt, lab):
                break
            lab = nxt
        lu, lv = lab[u], lab[v]
        differ = lu != lv
        if not bool(differ.any()):
            break
        hi = torch.maximum(lu, lv)[differ]
        lo = torch.minimum(lu, lv)[differ]
        lab = lab.scatter_reduce(0, hi, lo, reduce="amin")
    roots = (lab == torch.arange(n, device=dev)) & fg.flatten()
    rank = torch.cumsum(roots.to(torch.int64), 0)  # root -> 1..Z
    ids = torch.where(fg.flatten(), rank[lab], 0).view(h, w)
    return ids, int(rank[-1].item())


def zones_from_runs(canvas: Canvas) -> tuple[Tensor, Tensor]:
    """(key, size) of every zone (int64 tensors), by joining the canvas' row runs (the CPU path).

    The row runs (GLRLM's, cached on the canvas) are the nodes; two runs of the same key in adjacent rows are
    8-connected exactly when the first pixel of the lower run has a same-key pixel among its three upper
    neighbours, or the pixel down-left of the upper run's first pixel is in the lower run (if the lower run starts
    left of that). Those four look-ups per run give the edges, ``scipy.sparse.csgraph.connected_components``
    the zones, and a zone's size is the summed length of its runs. Smooth images have far fewer runs than pixels,
    so this reads the canvas only at the run starts.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from .glrlm import row_runs

    run_key, first, last = (t.numpy() for t in row_runs(canvas))
    flat = canvas.key.numpy().reshape(-1)
    w = canvas.key.shape[1]
    starts = np.zeros(flat.shape[0], dtype=np.int32)
    starts[first] = 1
    run_of = np.cumsum(starts, dtype=np.int32)  # 1 + the index of the run holding each ROI pixel
    run_key_c = run_key.astype(flat.dtype)
    us, vs = [], []
    for offset in (-w - 1, -w, -w + 1, w - 1):  # the canvas border is background: every look-up is inside
        q = first + offset
        u = np.flatnonzero(flat[q] == run_key_c)
        us.append(u)
        vs.append(run_of[q[u]] - 1)
    u = np.concatenate(us)
    v = np.concatenate(vs)
    n = len(first)
    graph = coo_matrix((np.ones(len(u), dtype=np.int8), (u, v)), shape=(n, n)).tocsr()
    nz, comp = connected_components(graph, directed=False)
    sizes = np.bincount(comp, weights=(last - first + 1).astype(np.float64), minlength=nz).astype(np.int64)
    zone_key = np.empty(nz, dtype=np.int64)
    zone_key[comp] = run_key
    return torch.from_numpy(zone_key), torch.from_numpy(sizes)


def zones(canvas: Canvas, method: str | None = None) -> tuple[Tensor, Tensor, Tensor]:
    """Every zone of the batch as (region index 0..R-1, gray level, size), each (Z,) int64.

    method: "kernel" (a compiled union-find per region box, `kernels.glszm_zones`; needs `canvas.kernels`), "runs"
    (row runs joined with scipy, CPU), "label" (scikit-image's pixel labelling, CPU), "propagate" (torch, GPU);
    None picks "kernel" when the canvas uses the kernels, else "runs" on CPU, "propagate" elsewhere.
    """
    if method in (None, "kernel") and canvas.kernels:
        from .glrlm import box_row_runs
        from .kernels import glszm_zones

        return tuple(torch.from_numpy(t) for t in glszm_zones(*box_row_runs(canvas)))
    key = canvas.key
    k = canvas.n_bins
    method = method or ("runs" if key.device.type == "cpu" else "propagate")
    if method == "runs":
        zone_key, sizes = zones_from_runs(canvas)
        return zone_key // k - 1, zone_key % k, sizes
    ids, nz = zone_ids_cpu(key) if method == "label" else zone_ids_propagate(key)
    flat = ids.flatten()
    sizes = torch.bincount(flat, minlength=nz + 1)[1:]
    zone_key = torch.zeros(nz + 1, dtype=key.dtype, device=key.device).scatter_(0, flat, key.flatten())[1:].long()
    return zone_key // k - 1, zone_key % k, sizes


ZONE_SUMS: tuple[str, ...] = (
    "count", "g2", "s2", "g2s2", "s2/g2", "1/g2", "1/s2", "g2/s2", "1/(g2s2)", "(s-mean)2", "size_counts2", "entropy",
)  # the per-region sums over zones (gray level g, size s) that the features need; see `zone_sums`


def zone_sums(canvas: Canvas, method: str | None = None) -> tuple[Tensor, Tensor]:
    """(R, 12) float64 sums over each region's zones in ZONE_SUMS order, and the zones per gray level (R, Ng).

    The sums: the number of zones; the sums of g^2, s^2, g^2 s^2, s^2 / g^2, 1 / g^2, 1 / s^2, g^2 / s^2,
    1 / (g^2 s^2) and (s - mean s)^2; the sum over sizes of the squared number of zones of that size; the entropy
    -sum p log2(p + eps) of the joint (level, size) distribution. From the list of zones (`zones`, `method`), or,
    when the canvas uses the kernels and `method` is None or "kernel", summed by the compiled pass that finds them
    (`kernels.glszm_sums`).
    """
    r, ng = canvas.n_regions, canvas.n_levels
    if method in (None, "kernel") and canvas.kernels:
        from .glrlm import box_row_runs
        from .kernels import glszm_sums

        sums, pg = glszm_sums(canvas.boxes.numpy(), ng, *box_row_runs(canvas))
        return torch.from_numpy(sums), torch.from_numpy(pg)
    zb, zg, zs = zones(canvas, method)
    dt = torch.float64
    dev = canvas.levels.device

    def per_region(values: Tensor) -> Tensor:
        return torch.zeros(r, dtype=dt, device=dev).index_add_(0, zb, values)

    g2 = zg.to(dt) ** 2
    s = zs.to(dt)
    s2 = s**2
    nz = torch.bincount(zb, minlength=r).to(dt)
    pg = torch.bincount(zb * ng + (zg - 1), minlength=r * ng).view(r, ng).to(dt)
    smax = int(zs.max().item()) + 1
    size_keys, size_counts = torch.unique(zb * smax + zs, return_counts=True)
    szn = torch.zeros(r, dtype=dt, device=dev).index_add_(0, size_keys // smax, size_counts.to(dt) ** 2)
    joint_keys, joint_counts = torch.unique((zb * ng + (zg - 1)) * smax + zs, return_counts=True)
    jb = joint_keys // (ng * smax)
    pj = joint_counts.to(dt) / nz[jb]
    entropy = torch.zeros(r, dtype=dt, device=dev).index_add_(0, jb, -pj * torch.log2(pj + EPS))
    u_s = per_region(s) / nz
    columns = {
        "count": nz, "g2": per_region(g2), "s2": per_region(s2), "g2s2": per_region(g2 * s2),
        "s2/g2": per_region(s2 / g2), "1/g2": per_region(1 / g2), "1/s2": per_region(1 / s2),
        "g2/s2": per_region(g2 / s2), "1/(g2s2)": per_region(1 / (g2 * s2)),
        "(s-mean)2": per_region((s - u_s[zb]) ** 2), "size_counts2": szn, "entropy": entropy,
    }
    return torch.stack([columns[k] for k in ZONE_SUMS], dim=1), pg


def compute(canvas: Canvas, method: str | None = None) -> Tensor:
    """(R, 16) GLSZM features in FEATURE_NAMES order (`method`: see `zones`), from the sums over zones
    (`zone_sums`)."""
    sums, pg = zone_sums(canvas, method)
    col = dict(zip(ZONE_SUMS, sums.unbind(1)))
    nz = col["count"]
    dt = torch.float64
    i = torch.arange(1, canvas.n_levels + 1, dtype=dt, device=pg.device)
    pg_n = pg / nz[:, None]
    u_i = (pg_n * i).sum(1, keepdim=True)
    szn = col["size_counts2"]
    out = {
        "GrayLevelNonUniformity": (pg**2).sum(1) / nz,
        "GrayLevelNonUniformityNormalized": (pg**2).sum(1) / nz**2,
        "GrayLevelVariance": (pg_n * (i - u_i) ** 2).sum(1),
        "HighGrayLevelZoneEmphasis": col["g2"] / nz,
        "LargeAreaEmphasis": col["s2"] / nz,
        "LargeAreaHighGrayLevelEmphasis": col["g2s2"] / nz,
        "LargeAreaLowGrayLevelEmphasis": col["s2/g2"] / nz,
        "LowGrayLevelZoneEmphasis": col["1/g2"] / nz,
        "SizeZoneNonUniformity": szn / nz,
        "SizeZoneNonUniformityNormalized": szn / nz**2,
        "SmallAreaEmphasis": col["1/s2"] / nz,
        "SmallAreaHighGrayLevelEmphasis": col["g2/s2"] / nz,
        "SmallAreaLowGrayLevelEmphasis": col["1/(g2s2)"] / nz,
        "ZoneEntropy": col["entropy"],
        "ZonePercentage": nz / canvas.count,
        "ZoneVariance": col["(s-mean)2"] / nz,
    }
    return torch.stack([out[k] for k in FEATURE_NAMES], dim=1)
