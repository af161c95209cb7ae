"""Geometric warps of an image and everything spatially tied to it (boxes, masks, heatmaps), as functions of tensors.

Coordinates are continuous pixel coordinates: pixel ``(i, j)`` covers ``[j, j + 1) x [i, i + 1)`` in ``(x, y)``, its
centre is ``(j + 0.5, i + 0.5)`` (``F.grid_sample``'s ``align_corners=False`` convention). A warp is a 3 x 3 matrix
``M`` that maps an *output* pixel position to the *input* position it is sampled from (homogeneous ``(x, y, 1)``);
several geometric transforms compose into one matrix, so the image is interpolated once. Boxes move with the
inverse map (input -> output) of their four corners, and become the box around the moved corners.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["crop_matrix", "affine_matrix", "hflip_matrix", "warp", "warp_boxes", "resize_unit"]


def crop_matrix(x0: float, y0: float, crop_w: float, crop_h: float, out_w: int, out_h: int) -> torch.Tensor:
    """The box ``(x0, y0, crop_w, crop_h)`` of the input stretched onto an ``out_w x out_h`` output."""
    return torch.tensor([[crop_w / out_w, 0.0, x0], [0.0, crop_h / out_h, y0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def affine_matrix(angle: float, translate: tuple[float, float], scale: float, width: int, height: int) -> torch.Tensor:
    """The affine map of `torchvision.transforms.functional.affine` (same arguments, same sign of `angle`, no
    shear): the input is rotated by `angle` degrees and scaled by `scale` about the image centre, then shifted by
    `translate` pixels ``(tx, ty)``. Returned as the output -> input map."""
    cx, cy = width / 2, height / 2
    a = math.radians(-angle)
    # forward (input -> output): p' = c + t + s R (p - c)
    rot = torch.tensor([[math.cos(a), math.sin(a)], [-math.sin(a), math.cos(a)]], dtype=torch.float64) * scale
    forward = torch.eye(3, dtype=torch.float64)
    forward[:2, :2] = rot
    forward[:2, 2] = torch.tensor([cx + translate[0], cy + translate[1]], dtype=torch.float64) - rot @ torch.tensor(
        [cx, cy], dtype=torch.float64)
    return torch.linalg.inv(forward)


def hflip_matrix(width: int) -> torch.Tensor:
    return torch.tensor([[-1.0, 0.0, float(width)], [0.0, 1.0, 0.0], [0.0, 0.0, 1.0]], dtype=torch.float64)


def warp(maps: torch.Tensor, matrix: torch.Tensor, out_size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """Sample `maps` ``(C, H, W)`` at ``matrix @ (x, y, 1)`` for every output pixel centre of ``out_size`` (h, w).
    Outside the input is 0 (the processor pads with 0 too)."""
    if maps.dim() != 3:
        raise ValueError(f"warp takes (C, H, W) maps, got {tuple(maps.shape)}")
    _, in_h, in_w = maps.shape
    out_h, out_w = out_size
    ys, xs = torch.meshgrid(torch.arange(out_h, dtype=torch.float64) + 0.5,
                            torch.arange(out_w, dtype=torch.float64) + 0.5, indexing="ij")
    points = torch.stack([xs, ys, torch.ones_like(xs)], dim=-1) @ matrix.T  # (h, w, 3) input positions
    grid = torch.stack([points[..., 0] / in_w * 2 - 1, points[..., 1] / in_h * 2 - 1], dim=-1)
    out = F.grid_sample(maps[None].float(), grid[None].to(torch.float32), mode=mode, padding_mode="zeros",
                        align_corners=False)[0]
    return out.to(maps.dtype)


def warp_boxes(boxes: torch.Tensor, matrix: torch.Tensor, out_size: tuple[int, int]) -> torch.Tensor:
    """Boxes ``(N, 4)`` ``(x, y, w, h)`` in input pixels -> the boxes around their moved corners in the output,
    clipped to it (a box moved out of the image has zero width or height)."""
    if boxes.numel() == 0:
        return boxes.reshape(0, 4).to(torch.float64)
    forward = torch.linalg.inv(matrix)
    x, y, w, h = boxes.to(torch.float64).unbind(-1)
    corners = torch.stack([torch.stack([x, y], -1), torch.stack([x + w, y], -1), torch.stack([x, y + h], -1),
                           torch.stack([x + w, y + h], -1)], dim=1)  # (N, 4, 2)
    moved = torch.cat([corners, torch.ones_like(corners[..., :1])], -1) @ forward.T
    out_h, out_w = out_size
    x0 = moved[..., 0].amin(1).clamp(0, out_w)
    x1 = moved[..., 0].amax(1).clamp(0, out_w)
    y0 = moved[..., 1].amin(1).clamp(0, out_h)
    y1 = moved[..., 1].amax(1).clamp(0, out_h)
    return torch.stack([x0, y0, x1 - x0, y1 - y0], dim=-1)


def resize_unit(maps: torch.Tensor, size: tuple[int, int], mode: str = "bilinear") -> torch.Tensor:
    """``(C, H, W)`` -> ``(C, h, w)``: antialiased bilinear (as the processor resizes images) or nearest (masks)."""
    if tuple(maps.shape[-2:]) == tuple(size):
        return maps
    x = maps[None].float()
    if mode == "nearest":
        out = F.interpolate(x, size=size, mode="nearest")
    else:
        out = F.interpolate(x, size=size, mode="bilinear", antialias=True, align_corners=False)
    return out[0].to(maps.dtype)
