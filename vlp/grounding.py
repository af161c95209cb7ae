"""Phrase grounding: where in the X-ray a sentence is, as a map in the image's own pixel grid.

The map is the cosine similarity between the text and each image region (patch token or feature-map cell),
in the LoVT head's local space when the model has one, else in the global space (regions projected with the
image projection, as BioViL grounds phrases). The grid is upsampled to the model input, the processor's pad or
crop is undone, the result is resized to the original image and smoothed.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from scipy.ndimage import gaussian_filter

from .configuration import HeadInput
from .processing import Geometry, to_unit_float


def grid_to_image(grid_map: torch.Tensor | np.ndarray, geometry: Geometry, smooth_sigma: float = 0.0) -> np.ndarray:
    """A (h, w) map over the model input's regions -> (H, W) map over the original image.

    `smooth_sigma` is the Gaussian's standard deviation in units of one region (cell) of the grid.
    Parts of the original image that a centre crop cut away get the map's minimum.
    """
    grid = torch.as_tensor(np.asarray(grid_map, dtype=np.float32))
    h, w = grid.shape
    size, (rh, rw) = geometry.size, geometry.resized
    square = F.interpolate(grid[None, None], size=(size, size), mode="bilinear", align_corners=False)[0, 0]
    if geometry.crop_top or geometry.crop_left or rh > size or rw > size:  # crop: the square is inside the image
        canvas = torch.full((rh, rw), float(square.min()))
        canvas[geometry.crop_top:geometry.crop_top + size, geometry.crop_left:geometry.crop_left + size] = square
    else:  # pad: the image is inside the square
        canvas = square[geometry.pad_top:geometry.pad_top + rh, geometry.pad_left:geometry.pad_left + rw]
    out = F.interpolate(canvas[None, None], size=(geometry.height, geometry.width), mode="bilinear",
                        align_corners=False)[0, 0].numpy()
    if smooth_sigma > 0:
        cell = size / max(h, w) / geometry.scale  # one grid cell, in original pixels
        out = gaussian_filter(out, sigma=smooth_sigma * cell)
    return out


@torch.no_grad()
def region_similarities(model, processor, image, text: str) -> tuple[torch.Tensor, Geometry]:
    """(h, w) similarity of `text` with each region of `image` (`VLPModel.region_text_similarity`: the space of a
    head that grounds text, such as LoVT's local space, else the global one), and the processor's geometry."""
    was_training = model.training
    model.eval()
    try:
        device = next(model.parameters()).device
        unit = to_unit_float(image)
        geometry = processor.image_processor.geometry(*unit.shape)
        batch = processor(text=[text], images=[unit], return_tensors="pt", padding=True,
                          return_sentence_ids=HeadInput.SENTENCE_IDS in model.batch_inputs()).to(device)
        sims = model.region_text_similarity(batch["pixel_values"], batch["input_ids"], batch["attention_mask"],
                                            batch.get("sentence_ids"))[0].float().cpu()
    finally:
        model.train(was_training)
    return sims, geometry


def similarity_map(model, processor, image, text: str, smooth_sigma: float = 0.5) -> np.ndarray:
    """Similarity of `text` over `image`, shape (H, W) of the image as given (every resize, pad and crop undone)."""
    sims, geometry = region_similarities(model, processor, image, text)
    return grid_to_image(sims, geometry, smooth_sigma)


def plot_overlay(image, heatmap: np.ndarray, path: str | Path, boxes: list[dict] | None = None,
                 title: str | None = None, alpha: float = 0.45) -> Path:
    """Write a PNG of the X-ray with the heatmap over it (and boxes `{x, y, w, h}` in image pixels, if given)."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    unit = to_unit_float(image)
    if heatmap.shape != unit.shape:
        raise ValueError(f"heatmap shape {heatmap.shape} differs from the image's {unit.shape}")
    fig, ax = plt.subplots(figsize=(5, 5 * unit.shape[0] / unit.shape[1]), dpi=120)
    ax.imshow(unit, cmap="gray", vmin=0, vmax=1)
    shown = ax.imshow(heatmap, cmap="jet", alpha=alpha)
    fig.colorbar(shown, ax=ax, fraction=0.046, pad=0.04, label="similarity")
    for box in boxes or []:
        ax.add_patch(Rectangle((box["x"], box["y"]), box["w"], box["h"], fill=False, edgecolor="lime", linewidth=2))
    if title:
        ax.set_title(title, fontsize=9)
    ax.axis("off")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, bbox_inches="tight")
    plt.close(fig)
    return path
