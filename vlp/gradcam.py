"""Grad-CAM on region features, as functions of tensors (Selvaraju et al., "Grad-CAM: Visual Explanations from
Deep Networks via Gradient-based Localization", ICCV 2017).

For a class score ``y`` and the last feature map ``A`` (here the image tower's regions ``(B, R, C)`` laid out
row-major over a grid ``(h, w)``: a CNN's cells or a ViT's patch tokens)::

    alpha_c = mean_r  d y / d A[r, c]          (eq. 1: gradients global-average-pooled over the map)
    cam[r]  = ReLU( sum_c alpha_c * A[r, c] )  (eq. 2)

The map is then min-max normalised to [0, 1] per image (a map that is zero everywhere stays zero: it marks
nothing). `upsample_cams` maps it onto the model input, cell ``(i, j)`` covering rows ``[i*H/h, (i+1)*H/h)``
and columns ``[j*W/w, (j+1)*W/w)`` (bilinear, ``align_corners=False``: cell centres land on the centres of
the pixel blocks they cover). `cam_boxes` turns each upsampled map into the box of its largest connected
region above a threshold, and `boxes_to_masks` into boolean pixel masks, the region radiomics is computed on
(Han et al., WACV 2022).

The gradients are taken with respect to a detached copy of the regions under a local ``enable_grad``: it works
in training and under ``torch.no_grad()`` or ``torch.inference_mode()``, leaves no graph behind, and never
accumulates ``.grad`` on parameters.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F

from .evaluation.localization import Box, box_to_mask, largest_component_box

__all__ = ["grad_cam", "grad_cam_from_gradients", "empty_maps", "upsample_cams", "cam_boxes", "boxes_to_masks"]


def grad_cam_from_gradients(regions: torch.Tensor, gradients: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """Grad-CAM maps ``(B, h, w)`` in [0, 1] from regions ``(B, R, C)`` and d score / d regions ``(B, R, C)``."""
    if regions.shape != gradients.shape or regions.dim() != 3:
        raise ValueError(f"regions and gradients must both be (B, R, C), got {tuple(regions.shape)} and "
                         f"{tuple(gradients.shape)}")
    h, w = grid
    if h * w != regions.shape[1]:
        raise ValueError(f"grid {grid} has {h * w} cells but there are {regions.shape[1]} regions")
    weights = gradients.mean(dim=1, keepdim=True)  # alpha: (B, 1, C)
    cam = torch.relu((weights * regions).sum(dim=-1))  # (B, R)
    low = cam.amin(dim=1, keepdim=True)
    span = cam.amax(dim=1, keepdim=True) - low
    cam = torch.where(span > 0, (cam - low) / span.clamp_min(torch.finfo(cam.dtype).tiny), torch.zeros_like(cam))
    return cam.reshape(-1, h, w)


def grad_cam(regions: torch.Tensor, grid: tuple[int, int], classify: Callable[[torch.Tensor], torch.Tensor],
             targets: torch.Tensor) -> torch.Tensor:
    """Grad-CAM maps ``(B, h, w)`` in [0, 1] of class ``targets[b]`` (``(B,)`` long) for each image.

    classify: regions ``(B, R, C)`` -> class logits ``(B, L)``, the part of the network after the feature map
    (for example pooling and a linear classifier). It is run again on a detached copy of ``regions``; only that
    copy receives gradients.
    """
    if targets.shape != (regions.shape[0],):
        raise ValueError(f"targets must be (B,) = ({regions.shape[0]},), got {tuple(targets.shape)}")
    with torch.inference_mode(False), torch.enable_grad():
        # clones: tensors made under inference_mode cannot enter autograd, their copies made here can
        leaf = regions.detach().clone().requires_grad_(True)
        index = targets.detach().clone().long().view(-1, 1)
        logits = classify(leaf)
        scores = logits.gather(1, index.to(logits.device)).sum()
        (gradients,) = torch.autograd.grad(scores, leaf)
    return grad_cam_from_gradients(leaf.detach(), gradients, grid)


def empty_maps(cams: torch.Tensor) -> torch.Tensor:
    """``(B,)`` bool: the maps ``(B, h, w)`` that are zero everywhere (no cell with positive evidence for the
    class), which mark no region."""
    return cams.flatten(1).amax(dim=1) <= 0


def upsample_cams(cams: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Maps ``(B, h, w)`` -> ``(B, H, W)`` on the model input's pixel grid, values kept in [0, 1]."""
    if cams.dim() != 3:
        raise ValueError(f"cams must be (B, h, w), got {tuple(cams.shape)}")
    kwargs = {"align_corners": False} if mode in ("bilinear", "bicubic") else {}
    up = F.interpolate(cams[:, None].float(), size=tuple(size), mode=mode, **kwargs)[:, 0]
    return up.clamp(0.0, 1.0)


def cam_boxes(maps: torch.Tensor, threshold: float = 0.5, min_size: int = 2,
              fallback: str = "image") -> list[Box]:
    """For each map ``(B, H, W)``: the ``(x, y, w, h)`` pixel box of the largest connected region of the
    min-max normalised map ``>= threshold`` (`vlp.evaluation.localization.largest_component_box`).

    min_size: a box narrower or shorter than this is widened about its centre (kept inside the image), so that
        radiomics always gets a 2D region.
    fallback: ``"image"``: a map with no region (constant, e.g. all zero) gives the whole image.
    """
    if fallback != "image":
        raise ValueError(f"fallback must be 'image', got {fallback!r}")
    maps_np = maps.detach().float().cpu().numpy()
    height, width = maps_np.shape[-2:]
    boxes = []
    for heatmap in maps_np:
        box = largest_component_box(heatmap, threshold=threshold)
        if box is None:
            boxes.append((0.0, 0.0, float(width), float(height)))
            continue
        x, y, w, h = box
        x, w = _widen(x, w, min_size, width)
        y, h = _widen(y, h, min_size, height)
        boxes.append((x, y, w, h))
    return boxes


def _widen(start: float, length: float, minimum: int, limit: int) -> tuple[float, float]:
    """Grow an integer interval ``[start, start + length)`` to ``minimum`` pixels about its centre, inside
    ``[0, limit)``."""
    minimum = min(minimum, limit)
    if length >= minimum:
        return start, length
    centre = start + length / 2
    new_start = int(np.clip(np.floor(centre - minimum / 2), 0, limit - minimum))
    return float(new_start), float(minimum)


def boxes_to_masks(boxes: list[Box], height: int, width: int, device: torch.device | str | None = None) -> torch.Tensor:
    """Boolean masks ``(B, height, width)`` of the pixels whose centres lie in each box."""
    masks = np.stack([box_to_mask(box, height, width) for box in boxes]) if boxes else \
        np.zeros((0, height, width), dtype=bool)
    return torch.from_numpy(masks).to(device)
