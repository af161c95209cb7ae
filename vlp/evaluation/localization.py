"""Localisation metrics for heatmaps (attention, phrase grounding, Grad-CAM) against bounding boxes.

Maps and boxes live in the image's own pixel grid: a map is ``(height, width)`` with row ``y`` going down and
column ``x`` going right; a box is ``(x, y, w, h)`` in pixels (the NIH ChestX-ray14 ``Bbox [x,y,w,h]``
convention). Pixel ``(row, col)`` covers ``[col, col + 1) x [row, row + 1)``; it belongs to a box when its
centre ``(col + 0.5, row + 0.5)`` lies inside the box, so an integer box covers exactly ``w x h`` pixels.

- pointing game (Zhang et al., "Top-down Neural Attention by Excitation Backprop", ECCV 2016): a hit when the
  map's maximum falls inside a box of the finding;
- IoU of the thresholded, min-max normalised map with the union of the finding's boxes, over several thresholds;
- localisation accuracy ``T(IoU)``: the fraction of cases whose IoU reaches each threshold, as reported on
  ChestX-ray14 boxes by Li et al. (CVPR 2018) and by Han et al. (WACV 2022, radiomics feedback loop);
- the box of the largest connected component of a thresholded map (to turn Grad-CAM into a box).

Functions accept numpy arrays or torch tensors and return Python numbers, tuples and numpy masks.
"""
from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
from scipy import ndimage

Box = tuple[float, float, float, float]  # (x, y, w, h) in pixels

DEFAULT_MAP_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)
DEFAULT_IOU_THRESHOLDS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7)  # T(IoU) of Li et al. 2018 / Han et al. 2022


def _as_map(heatmap) -> np.ndarray:
    """A 2D float array from a numpy array or (possibly grad-carrying, GPU) torch tensor."""
    if hasattr(heatmap, "detach"):
        heatmap = heatmap.detach().float().cpu().numpy()
    heatmap = np.asarray(heatmap, dtype=np.float64)
    if heatmap.ndim != 2:
        raise ValueError(f"a heatmap must be 2D (height, width), got shape {heatmap.shape}")
    if not np.isfinite(heatmap).all():
        raise ValueError("the heatmap contains NaN or infinite values")
    return heatmap


def _as_boxes(boxes) -> list[Box]:
    """One box or a sequence of boxes as a list of 4-tuples."""
    array = np.asarray(boxes.detach().cpu().numpy() if hasattr(boxes, "detach") else boxes, dtype=np.float64)
    if array.ndim == 1:
        array = array[None]
    if array.ndim != 2 or array.shape[1] != 4:
        raise ValueError(f"boxes must be (x, y, w, h) or a list of them, got shape {array.shape}")
    if (array[:, 2:] < 0).any():
        raise ValueError(f"box width and height must be >= 0, got {array.tolist()}")
    return [tuple(float(v) for v in box) for box in array]


def box_to_mask(box: Sequence[float], height: int, width: int) -> np.ndarray:
    """Boolean ``(height, width)`` mask of the pixels whose centres lie in ``box = (x, y, w, h)``, clipped."""
    x, y, w, h = _as_boxes(box)[0]
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    in_x = (cols >= x) & (cols <= x + w)
    in_y = (rows >= y) & (rows <= y + h)
    return in_y[:, None] & in_x[None, :]


def boxes_to_mask(boxes, height: int, width: int) -> np.ndarray:
    """Union of `box_to_mask` over one or several boxes."""
    mask = np.zeros((height, width), dtype=bool)
    for box in _as_boxes(boxes):
        mask |= box_to_mask(box, height, width)
    return mask


def pointing_game(heatmap, boxes) -> bool:
    """True when the map's maximum pixel lies in any of ``boxes`` (those of one finding).

    Ties go to the first maximum in row-major order, so a constant map points at the top-left pixel rather
    than counting as a hit everywhere.
    """
    heatmap = _as_map(heatmap)
    row, col = np.unravel_index(int(np.argmax(heatmap)), heatmap.shape)
    return bool(boxes_to_mask(boxes, *heatmap.shape)[row, col])


def iou(mask_a, mask_b) -> float:
    """Intersection over union of two boolean masks of the same shape.

    Both masks empty is an error (IoU undefined; usually a box outside the image); one empty mask gives 0.
    """
    a = np.asarray(mask_a.detach().cpu().numpy() if hasattr(mask_a, "detach") else mask_a).astype(bool)
    b = np.asarray(mask_b.detach().cpu().numpy() if hasattr(mask_b, "detach") else mask_b).astype(bool)
    if a.shape != b.shape:
        raise ValueError(f"masks must have the same shape, got {a.shape} and {b.shape}")
    union = np.logical_or(a, b).sum()
    if union == 0:
        raise ValueError("both masks are empty, IoU is undefined (is the box outside the image?)")
    return float(np.logical_and(a, b).sum() / union)


def normalize_map(heatmap) -> np.ndarray:
    """Min-max normalise to [0, 1]; a constant map becomes all zeros (it marks no region)."""
    heatmap = _as_map(heatmap)
    low, high = heatmap.min(), heatmap.max()
    if high <= low:
        return np.zeros_like(heatmap)
    return (heatmap - low) / (high - low)


def heatmap_iou(heatmap, boxes, thresholds: Iterable[float] = DEFAULT_MAP_THRESHOLDS,
                normalize: bool = True) -> dict[float, float]:
    """IoU of ``map >= t`` with the union of ``boxes`` for each threshold ``t``.

    With ``normalize`` (default) the map is min-max normalised first, so thresholds are relative to its range;
    otherwise they apply to the raw values.
    """
    values = normalize_map(heatmap) if normalize else _as_map(heatmap)
    target = boxes_to_mask(boxes, *values.shape)
    return {float(t): iou(values >= t, target) for t in thresholds}


def localization_accuracy(ious: Iterable[float],
                          iou_thresholds: Iterable[float] = DEFAULT_IOU_THRESHOLDS) -> dict[float, float]:
    """``T(IoU)``: for each threshold ``T`` the fraction of cases with ``IoU >= T``."""
    values = np.asarray(list(ious), dtype=np.float64)
    if values.size == 0:
        raise ValueError("localization_accuracy needs at least one IoU")
    return {float(t): float((values >= t).mean()) for t in iou_thresholds}


def largest_component_box(heatmap, threshold: float = 0.5, normalize: bool = True,
                          connectivity: int = 8) -> Box | None:
    """``(x, y, w, h)`` box of the largest connected region of ``map >= threshold``, or None if it is empty.

    The map is min-max normalised first unless ``normalize=False``. ``connectivity`` is 8 (diagonal neighbours
    connect, as scikit-image's default for 2D) or 4. Equal-sized components are ranked by their summed map value.
    """
    if connectivity not in (4, 8):
        raise ValueError(f"connectivity must be 4 or 8, got {connectivity}")
    values = normalize_map(heatmap) if normalize else _as_map(heatmap)
    structure = np.ones((3, 3), dtype=bool) if connectivity == 8 else ndimage.generate_binary_structure(2, 1)
    labels, count = ndimage.label(values >= threshold, structure=structure)
    if count == 0:
        return None
    ids = np.arange(1, count + 1)
    sizes = ndimage.sum_labels(np.ones_like(values), labels, ids)
    mass = ndimage.sum_labels(values, labels, ids)
    best = ids[np.lexsort((-mass, -sizes))[0]]
    rows, cols = np.nonzero(labels == best)
    x0, y0 = int(cols.min()), int(rows.min())
    return (float(x0), float(y0), float(cols.max() - x0 + 1), float(rows.max() - y0 + 1))
