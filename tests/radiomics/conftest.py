"""Real regions for the radiomics tests: NIH ChestX-ray14 images with their expert boxes (../shared/data/nih_bbox).

`nih_regions` gives raw 8-bit images (B, 256, 256) and three kinds of masks per box: the box itself, an
irregular region (the pixels of the box brighter than its median, largest 8-connected part) and the ellipse
inscribed in the box, so shape and zone features see real, non-rectangular outlines too.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage

from vlp.radiomics import box_mask


RTOL = 1e-3  # relative deviation allowed between the torch backend and PyRadiomics
# Absolute bound for features near zero. Exact zeros come out of PyRadiomics as rounding noise: a collinear region
# has a zero minor eigenvalue that numpy's solver returns as ~1e-15, whose square root (MinorAxisLength) is ~1e-7.
ATOL = 1e-6


def compare(ours: torch.Tensor, ref: torch.Tensor, names: list[str], labels: list[str],
            exempt: dict[str, str] | None = None) -> list[str]:
    """Failures (feature, region, both values) of the parity criterion; empty when every feature matches.

    Per feature and region: |ours - ref| <= RTOL * |ref|, or <= ATOL for features near zero; NaN exactly where `ref`
    is NaN. Features named in `exempt` (name -> reason) are skipped.
    """
    ours = ours.double().cpu().numpy()
    ref = ref.double().cpu().numpy()
    failures = []
    for k, name in enumerate(names):
        if exempt and name in exempt:
            continue
        a, b = ours[:, k], ref[:, k]
        nan_a, nan_b = np.isnan(a), np.isnan(b)
        close = np.abs(a - b) <= np.maximum(RTOL * np.abs(b), ATOL)
        ok = (nan_a & nan_b) | (~nan_a & ~nan_b & close)
        for r in np.flatnonzero(~ok):
            failures.append(f"{name} on {labels[r]}: torch {a[r]!r} vs pyradiomics {b[r]!r}")
    return failures


@pytest.fixture(scope="session")
def compare_features():
    """The parity comparison (`compare`) as a fixture, for the test modules of this folder."""
    return compare


@dataclass
class Regions:
    images: np.ndarray  # (B, H, W) uint8, raw stored values
    masks: np.ndarray  # (B, H, W) bool
    labels: list[str]  # "<file>:<finding>:<kind>" per region, for messages


def nih_boxes(root: Path, per_finding: int = 1) -> list[tuple[Path, dict]]:
    """The first `per_finding` boxes of each finding, in manifest order: (image path, box)."""
    picked: dict[str, int] = {}
    out = []
    with open(root / "manifest.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            for box in row["boxes"]:
                if picked.get(box["finding"], 0) < per_finding:
                    picked[box["finding"]] = picked.get(box["finding"], 0) + 1
                    out.append((root / row["image_path"], box))
    return out


def _irregular(image: np.ndarray, box: np.ndarray) -> np.ndarray:
    bright = box & (image > np.median(image[box]))
    lab, n = ndimage.label(bright, structure=np.ones((3, 3)))
    if n == 0:
        return box
    return lab == 1 + int(np.argmax(np.bincount(lab.ravel())[1:]))


def _ellipse(b: dict, height: int, width: int) -> np.ndarray:
    yy, xx = np.mgrid[:height, :width]
    cx, cy = b["x_resized"] + b["w_resized"] / 2, b["y_resized"] + b["h_resized"] / 2
    return ((xx + 0.5 - cx) / (b["w_resized"] / 2)) ** 2 + ((yy + 0.5 - cy) / (b["h_resized"] / 2)) ** 2 <= 1


def load_regions(root: Path, per_finding: int = 1, kinds: tuple[str, ...] = ("box", "irregular", "ellipse")) -> Regions:
    images, masks, labels = [], [], []
    for path, b in nih_boxes(root, per_finding):
        image = np.asarray(Image.open(path))
        assert image.dtype == np.uint8 and image.ndim == 2, f"{path}: expected an 8-bit grayscale PNG"
        box = box_mask(b["x_resized"], b["y_resized"], b["w_resized"], b["h_resized"], *image.shape)
        made = {"box": box, "irregular": _irregular(image, box), "ellipse": _ellipse(b, *image.shape)}
        for kind in kinds:
            images.append(image)
            masks.append(made[kind])
            labels.append(f"{path.name}:{b['finding']}:{kind}")
    return Regions(np.stack(images), np.stack(masks), labels)


@pytest.fixture(scope="session")
def nih_root(shared_data) -> Path:
    root = shared_data / "nih_bbox"
    if not (root / "manifest.jsonl").is_file():
        pytest.skip(f"{root}/manifest.jsonl not found")
    return root


@pytest.fixture(scope="session")
def nih_regions(nih_root) -> Regions:
    """24 real regions: one box per finding (8 findings) x (box, irregular, ellipse)."""
    return load_regions(nih_root)


@pytest.fixture(scope="session")
def nih_picks(nih_root) -> list[tuple[Path, dict]]:
    """Three real (image path, NIH box) pairs of different findings."""
    return nih_boxes(nih_root)[:3]
