"""Batched radiomic features in torch: the 2D feature set of PyRadiomics, computed for many regions at once.

One module per feature class (firstorder, shape2d, glcm, glrlm, glszm, gldm, ngtdm), each a function of a
:class:`~vlp.radiomics.torch_backend.discretisation.Canvas` (all regions of a batch packed onto one 2D
canvas) that returns an (R, F) tensor in its ``FEATURE_NAMES`` order. :func:`extract` packs a validated
batch (in chunks of at most ``max_pixels`` canvas pixels) and runs the enabled classes.
"""
from __future__ import annotations

from types import ModuleType

import numpy as np
import torch
from torch import Tensor

from . import firstorder, glcm, gldm, glrlm, glszm, ngtdm, shape2d
from .discretisation import Canvas, prepare_canvas, region_boxes

FEATURE_CLASSES: dict[str, ModuleType] = {
    "firstorder": firstorder,
    "shape2D": shape2d,
    "glcm": glcm,
    "glrlm": glrlm,
    "glszm": glszm,
    "gldm": gldm,
    "ngtdm": ngtdm,
}


def feature_names(feature_classes: tuple[str, ...]) -> list[str]:
    """PyRadiomics-style names (``original_<class>_<Feature>``) of the enabled classes, in output order."""
    return [f"original_{c}_{n}" for c in feature_classes for n in FEATURE_CLASSES[c].FEATURE_NAMES]


def compute_canvas(
    canvas: Canvas, feature_classes: tuple[str, ...], gldm_alpha: float = 0, voxel_array_shift: float = 0.0,
    zone_method: str | None = None,
) -> Tensor:
    """(R, F) float64 features of a packed canvas, classes in the given order."""
    outs = []
    for c in feature_classes:
        if c == "firstorder":
            outs.append(firstorder.compute(canvas, voxel_array_shift))
        elif c == "gldm":
            outs.append(gldm.compute(canvas, gldm_alpha))
        elif c == "glszm":
            outs.append(glszm.compute(canvas, zone_method))
        else:
            outs.append(FEATURE_CLASSES[c].compute(canvas))
    return torch.cat(outs, dim=1)


def _chunks(areas: np.ndarray, max_pixels: int) -> list[np.ndarray]:
    """Consecutive index chunks whose summed box areas stay under `max_pixels` (at least one region each)."""
    chunks, start, total = [], 0, 0
    for k, a in enumerate(areas.tolist()):
        if k > start and total + a > max_pixels:
            chunks.append(np.arange(start, k))
            start, total = k, 0
        total += a
    chunks.append(np.arange(start, len(areas)))
    return chunks


@torch.no_grad()
def extract(
    images: Tensor,
    masks: Tensor,
    boxes: np.ndarray,
    feature_classes: tuple[str, ...],
    bin_width: float = 25.0,
    bin_count: int | None = None,
    gldm_alpha: float = 0,
    voxel_array_shift: float = 0.0,
    max_pixels: int = 2_000_000,
    vectorised: bool | None = None,
    zone_method: str | None = None,
) -> Tensor:
    """(B, F) float64 features of a validated batch.

    images (B, H, W) real dtype, masks (B, H, W) bool, boxes (B, 4) (r0, r1, c0, c1) inclusive bounds of
    each non-empty, two-dimensional mask. Regions are packed in chunks of at most `max_pixels` canvas pixels,
    and of at most MAX_MATRIX_CELLS texture-matrix cells when they have many gray levels. `vectorised` and
    `zone_method` choose the CPU or GPU code paths (None: by device); both give the same features.
    """
    b = masks.shape[0]
    n_features = sum(len(FEATURE_CLASSES[c].FEATURE_NAMES) for c in feature_classes)
    out = torch.empty(b, n_features, dtype=torch.float64, device=images.device)
    areas = (boxes[:, 1] - boxes[:, 0] + 2) * (boxes[:, 3] - boxes[:, 2] + 2)

    def run(lo: int, hi: int, canvas: Canvas | None = None) -> None:
        sel = slice(lo, hi)
        if canvas is None:
            canvas = prepare_canvas(images[sel], masks[sel], boxes[sel], bin_width, bin_count, vectorised)
        out[sel] = compute_canvas(canvas, feature_classes, gldm_alpha, voxel_array_shift, zone_method)

    for idx in _chunks(areas, max_pixels):
        lo, hi = int(idx[0]), int(idx[-1]) + 1
        canvas = prepare_canvas(images[lo:hi], masks[lo:hi], boxes[lo:hi], bin_width, bin_count, vectorised)
        if canvas.n_regions == 1 or canvas.n_regions * 4 * canvas.n_bins**2 <= MAX_MATRIX_CELLS:
            run(lo, hi, canvas)
            continue
        # Many gray levels (16-bit data, a small bin width): the dense (regions, 4, Ng, Ng) GLCM and the NGTDM
        # matrices of the chunk would be too large; re-pack it in runs of regions that keep them bounded.
        for start, stop in _level_chunks(canvas.max_level.cpu().numpy()):
            run(lo + start, lo + stop)
    return out


MAX_MATRIX_CELLS = 2**21  # bound on regions * 4 * (Ng + 1)^2 per canvas (16 MB per float64 GLCM-sized tensor)


def _level_chunks(max_level: np.ndarray) -> list[tuple[int, int]]:
    """Consecutive runs of regions whose regions * 4 * (largest Ng + 1)^2 stays under MAX_MATRIX_CELLS."""
    chunks, start, top = [], 0, 0.0
    for k, ng in enumerate(max_level.tolist()):
        top_k = max(top, ng)
        if k > start and (k - start + 1) * 4 * (top_k + 1) ** 2 > MAX_MATRIX_CELLS:
            chunks.append((start, k))
            start, top_k = k, ng
        top = top_k
    chunks.append((start, len(max_level)))
    return chunks


__all__ = ["FEATURE_CLASSES", "Canvas", "compute_canvas", "extract", "feature_names", "prepare_canvas", "region_boxes"]
