"""`RadiomicsExtractor`: radiomic features of a batch of 2D regions, from torch or from PyRadiomics.

    extractor = RadiomicsExtractor("torch")             # or "pyradiomics", the reference
    feats = extractor(images, masks)                    # (B, H, W) each -> (B, F) tensor
    extractor.feature_names                             # ["original_firstorder_10Percentile", ...]

Both backends compute the same features, named and ordered the same way, with PyRadiomics' 2D defaults
(bin width 25, distance 1, the four 2D angles, 8-connected zones). Images carry raw intensities (any
integer or float dtype; they are read as float64); masks mark the region with nonzero values.

Regions PyRadiomics refuses are refused here with a ValueError that names the batch index, before any
work: an empty mask ("No labels found in this mask"), a single pixel ("mask only contains 1 segmented
voxel") and a one-pixel-thick line ("mask has too few dimensions", its ``minimumROIDimensions=2``).
A constant region and a region touching the image border are valid and behave as in PyRadiomics.
"""
from __future__ import annotations

from dataclasses import dataclass, fields, replace
from enum import Enum
from typing import Sequence

import numpy as np
import torch
from torch import Tensor

from . import torch_backend
from .pyradiomics_backend import PyRadiomicsBackend, pyradiomics_params

ALL_FEATURE_CLASSES: tuple[str, ...] = tuple(torch_backend.FEATURE_CLASSES)


class RadiomicsBackend(str, Enum):
    """Which engine computes the features."""

    TORCH = "torch"
    PYRADIOMICS = "pyradiomics"


@dataclass(frozen=True)
class RadiomicsSettings:
    """Configuration of a :class:`RadiomicsExtractor` (PyRadiomics' setting names in brackets).

    feature_classes: any of firstorder, shape2D, glcm, glrlm, glszm, gldm, ngtdm; output order follows it.
    bin_width: fixed bin width of the gray-level discretisation [binWidth], default 25.
    bin_count: fixed number of bins instead of a bin width [binCount]; None uses bin_width.
    gldm_alpha: GLDM dependence tolerance [gldm_a].
    voxel_array_shift: intensity shift of Energy, TotalEnergy and RootMeanSquared [voxelArrayShift].
    dtype: dtype of the returned features (computation is float64 in both backends).
    device: torch backend: device to compute on; None uses the images' device (CPU for numpy input).
    max_pixels: torch backend: canvas pixels packed at once (larger batches run in chunks: bounds memory and
        keeps the canvas in cache; a GPU may prefer more).
    num_threads: torch backend on CPU: torch threads during the extraction (restored afterwards); None leaves
        torch's setting. 1 by default: most of the CPU work is numpy, single-threaded anyway, and on a machine
        whose cores are busy with other jobs two threads made it about 20x slower (OpenMP threads waiting on
        each other; docs/radiomics_engine.md).
    num_workers: pyradiomics backend: processes in its pool; 0 or 1 runs in this process.
    cache_size: pyradiomics backend: regions kept in its content cache; 0 disables it.
    """

    backend: RadiomicsBackend = RadiomicsBackend.TORCH
    feature_classes: tuple[str, ...] = ALL_FEATURE_CLASSES
    bin_width: float = 25.0
    bin_count: int | None = None
    gldm_alpha: float = 0
    voxel_array_shift: float = 0.0
    dtype: torch.dtype = torch.float32
    device: str | None = None
    max_pixels: int = 2_000_000
    num_threads: int | None = 1
    num_workers: int = 0
    cache_size: int = 4096

    def __post_init__(self) -> None:
        object.__setattr__(self, "backend", RadiomicsBackend(self.backend))
        object.__setattr__(self, "feature_classes", tuple(self.feature_classes))
        unknown = [c for c in self.feature_classes if c not in ALL_FEATURE_CLASSES]
        if unknown or not self.feature_classes:
            raise ValueError(f"unknown radiomics feature classes {unknown}; choose from {list(ALL_FEATURE_CLASSES)}")
        if len(set(self.feature_classes)) != len(self.feature_classes):
            raise ValueError(f"feature_classes lists a class twice: {list(self.feature_classes)}")
        if self.bin_count is None and not self.bin_width > 0:
            raise ValueError(f"bin_width must be positive, got {self.bin_width}")
        if self.bin_count is not None and int(self.bin_count) < 1:
            raise ValueError(f"bin_count must be at least 1, got {self.bin_count}")
        if self.num_threads is not None and int(self.num_threads) < 1:
            raise ValueError(f"num_threads must be at least 1 (or None), got {self.num_threads}")


def box_mask(x: float, y: float, w: float, h: float, height: int, width: int) -> np.ndarray:
    """Boolean (height, width) mask of the pixels a box (x, y, w, h in pixel units) covers.

    Pixel (r, c) is in the box when [c, c+1) x [r, r+1) overlaps it: columns floor(x) .. ceil(x + w) - 1,
    rows floor(y) .. ceil(y + h) - 1, clipped to the image.
    """
    c0 = max(int(np.floor(x)), 0)
    r0 = max(int(np.floor(y)), 0)
    c1 = min(int(np.ceil(x + w)), width)
    r1 = min(int(np.ceil(y + h)), height)
    mask = np.zeros((height, width), dtype=bool)
    if c1 > c0 and r1 > r0:
        mask[r0:r1, c0:c1] = True
    return mask


def region_problem(mask: np.ndarray | Tensor) -> str | None:
    """Why PyRadiomics would refuse this 2D mask (nonzero = ROI), or None if it is a valid region."""
    m = mask != 0
    n = int(m.sum())
    if n == 0:
        return "the mask is empty (no region pixel); PyRadiomics raises 'No labels found in this mask'"
    if n == 1:
        return "the mask has a single pixel; PyRadiomics cannot extract features from one pixel"
    rows = m.any(1).nonzero()
    cols = m.any(0).nonzero()
    rows = rows[0] if isinstance(rows, tuple) else rows
    cols = cols[0] if isinstance(cols, tuple) else cols
    if int(rows.max() - rows.min()) == 0 or int(cols.max() - cols.min()) == 0:
        return (
            "the region is one pixel thick (a line); PyRadiomics needs a 2D region "
            "(minimumROIDimensions=2: 'mask has too few dimensions')"
        )
    return None


_TORCH_DTYPES = {np.dtype(d) for d in ("uint8", "int8", "int16", "int32", "int64", "float32", "float64", "bool")}


def _as_batch(x: np.ndarray | Tensor | Sequence, what: str) -> Tensor:
    """A (B, H, W) tensor view of the input, in its own dtype where torch has it (no float copy)."""
    if isinstance(x, Tensor):
        t = x
    else:
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise TypeError(f"radiomics: {what} must be numeric or boolean, got dtype {arr.dtype}")
        if arr.dtype not in _TORCH_DTYPES:  # uint16, uint32, float16, ...: widen losslessly
            arr = arr.astype(np.int64 if arr.dtype.kind in "iu" else np.float64)
        t = torch.from_numpy(np.ascontiguousarray(arr))
    if t.dim() == 2:
        raise ValueError(f"radiomics: {what} must be a batch (B, H, W); got one 2D array of shape {tuple(t.shape)}, add a batch axis")
    if t.dim() != 3:
        raise ValueError(f"radiomics: {what} must have shape (B, H, W), got {tuple(t.shape)}")
    if t.is_complex():
        raise TypeError(f"radiomics: {what} must be real, got {t.dtype}")
    return t


class RadiomicsExtractor:
    """Radiomic features (B, F) of 2D regions, computed by the torch engine or by PyRadiomics.

    RadiomicsExtractor(backend="torch", settings=None, **overrides): `overrides` are fields of
    :class:`RadiomicsSettings` (feature_classes, bin_width, bin_count, gldm_alpha, num_workers, ...).
    """

    def __init__(self, backend: str | RadiomicsBackend = "torch", settings: RadiomicsSettings | None = None, **overrides):
        known = {f.name for f in fields(RadiomicsSettings)}
        bad = sorted(set(overrides) - known)
        if bad:
            raise TypeError(f"RadiomicsExtractor got unknown settings {bad}; known: {sorted(known)}")
        self.settings = replace(settings or RadiomicsSettings(), backend=RadiomicsBackend(backend), **overrides)
        s = self.settings
        self.feature_names: list[str] = torch_backend.feature_names(s.feature_classes)
        self._pyradiomics: PyRadiomicsBackend | None = None
        if s.backend is RadiomicsBackend.PYRADIOMICS:
            params = pyradiomics_params(s.feature_classes, s.bin_width, s.bin_count, s.gldm_alpha, s.voxel_array_shift)
            self._pyradiomics = PyRadiomicsBackend(params, self.feature_names, s.num_workers, s.cache_size)

    @property
    def backend(self) -> RadiomicsBackend:
        return self.settings.backend

    @property
    def num_features(self) -> int:
        return len(self.feature_names)

    def check(self, images: Tensor, masks: Tensor) -> np.ndarray:
        """Validate a batch (masks already boolean); return the regions' boxes (B, 4): r0, r1, c0, c1.

        Raises ValueError naming the batch index for mismatched shapes, invalid regions (empty, one pixel,
        a line) and NaN or infinite intensities inside a mask.
        """
        if tuple(images.shape) != tuple(masks.shape):
            raise ValueError(f"radiomics: images {tuple(images.shape)} and masks {tuple(masks.shape)} differ in shape")
        if masks.shape[0] == 0:
            raise ValueError("radiomics: empty batch (B = 0)")
        r0, r1, c0, c1, n_rows, n_cols = torch_backend.region_boxes(masks)
        ok = (n_rows > 1) & (n_cols > 1)  # two rows and two columns: at least two pixels, not a line
        if not bool(ok.all()):
            k = int(torch.nonzero(~ok)[0, 0])
            raise ValueError(f"radiomics: region {k} of the batch is invalid: {region_problem(masks[k].cpu())}")
        boxes = torch.stack([r0, r1, c0, c1], 1).cpu().numpy()
        if images.is_floating_point():
            for k, (a, b, c, d) in enumerate(boxes.tolist()):
                crop = images[k, a : b + 1, c : d + 1]
                if not bool(torch.isfinite(crop[masks[k, a : b + 1, c : d + 1]]).all()):
                    raise ValueError(f"radiomics: region {k} of the batch has NaN or infinite intensities inside its mask")
        return boxes

    def __call__(self, images: np.ndarray | Tensor, masks: np.ndarray | Tensor) -> Tensor:
        """Features (B, F) of images (B, H, W) and masks (B, H, W) (nonzero = region); on the images' device."""
        s = self.settings
        img = _as_batch(images, "images")
        msk = _as_batch(masks, "masks")
        out_device = img.device if isinstance(images, Tensor) else torch.device("cpu")
        if s.backend is RadiomicsBackend.TORCH:
            dev = torch.device(s.device) if s.device is not None else out_device
            previous = torch.get_num_threads()
            switch = dev.type == "cpu" and s.num_threads is not None and s.num_threads != previous
            if switch:
                torch.set_num_threads(int(s.num_threads))
            try:
                img = img.to(dev)
                msk = msk.to(dev)
                msk = msk if msk.dtype == torch.bool else msk != 0
                boxes = self.check(img, msk)
                feats = torch_backend.extract(img, msk, boxes, s.feature_classes, s.bin_width, s.bin_count,
                                              s.gldm_alpha, s.voxel_array_shift, s.max_pixels)
                return feats.to(out_device, s.dtype)
            finally:
                if switch:
                    torch.set_num_threads(previous)
        msk = msk if msk.dtype == torch.bool else msk != 0
        self.check(img, msk)
        assert self._pyradiomics is not None
        img_np = img.detach().cpu().to(torch.float64).numpy()
        msk_np = msk.detach().cpu().numpy().astype(np.uint8)
        feats = torch.from_numpy(self._pyradiomics(img_np, msk_np))
        return feats.to(out_device, s.dtype)

    def close(self) -> None:
        """Release the PyRadiomics process pool, if one was started."""
        if self._pyradiomics is not None:
            self._pyradiomics.close()

    def __enter__(self) -> "RadiomicsExtractor":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"RadiomicsExtractor(backend={self.backend.value!r}, features={self.num_features}, settings={self.settings})"
