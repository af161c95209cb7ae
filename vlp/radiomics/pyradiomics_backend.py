"""The reference backend: PyRadiomics itself, one region at a time, quiet, cached and optionally parallel.

Each 2D region is handed to ``radiomics.featureextractor.RadiomicsFeatureExtractor`` as a one-slice 3D
image with ``force2D=True`` (PyRadiomics 3.0.1 mishandles plain 2D images in its texture classes), with its
default settings unless configured: bin width 25, distance 1, symmetric GLCM, no resampling, no
normalisation, pixel spacing 1. Only the requested classes are enabled; PyRadiomics then computes their
non-deprecated features. Its logger is set to ERROR, so no "GLCM is symmetrical" warning is printed.
The region is padded with one background pixel, so a mask covering the whole image works (PyRadiomics
itself refuses a mask without background).

Results are cached by the content of image and mask (a BLAKE2 hash of their bytes and shapes), so a region
seen again (the same crop in a later epoch, say) costs a dictionary lookup. With ``num_workers > 1`` the
regions are spread over a process pool; inside a daemonic process (a torch DataLoader worker) the pool is
not allowed, and the backend runs serially instead.
"""
from __future__ import annotations

import hashlib
import logging
import multiprocessing
from collections import OrderedDict
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

_EXTRACTORS: dict[tuple, Any] = {}  # per process: one configured PyRadiomics extractor per settings


def quiet_pyradiomics() -> None:
    """Set PyRadiomics' logger (and its handler) to ERROR: no per-call warnings."""
    logger = logging.getLogger("radiomics")
    logger.setLevel(logging.ERROR)
    for handler in logger.handlers:
        handler.setLevel(logging.ERROR)


def pyradiomics_params(
    feature_classes: tuple[str, ...],
    bin_width: float = 25.0,
    bin_count: int | None = None,
    gldm_alpha: float = 0,
    voxel_array_shift: float = 0.0,
) -> dict:
    """The PyRadiomics parameter dictionary (settings and enabled classes) for a 2D extraction."""
    setting: dict[str, Any] = {
        "binWidth": float(bin_width),
        "force2D": True,
        "force2Ddimension": 0,
        "gldm_a": gldm_alpha,
        "voxelArrayShift": voxel_array_shift,
        "additionalInfo": False,
    }
    if bin_count is not None:
        setting["binCount"] = int(bin_count)
    return {"setting": setting, "featureClass": {c: [] for c in feature_classes}, "imageType": {"Original": {}}}


def _extractor(params: dict):
    key = repr(params)
    ext = _EXTRACTORS.get(key)
    if ext is None:
        import radiomics
        from radiomics import featureextractor

        quiet_pyradiomics()
        radiomics.setVerbosity(logging.ERROR)
        ext = featureextractor.RadiomicsFeatureExtractor()
        ext.settings.update(params["setting"])
        ext.enabledImagetypes = dict(params["imageType"])
        ext.enabledFeatures = {c: list(v) for c, v in params["featureClass"].items()}
        _EXTRACTORS[key] = ext
    return ext


def extract_one(image: np.ndarray, mask: np.ndarray, params: dict, names: list[str]) -> np.ndarray:
    """Features (F,) float64 of one 2D region with PyRadiomics, in the order of `names`."""
    import SimpleITK as sitk

    ext = _extractor(params)
    # One background pixel around the image: PyRadiomics refuses a mask without any background pixel ("No
    # labels found"), although a region covering the whole image is valid. It crops to the mask's bounding
    # box and only counts ROI pixels, so the padding changes no feature.
    img = sitk.GetImageFromArray(np.pad(np.asarray(image, dtype=np.float64), 1)[None])
    msk = sitk.GetImageFromArray(np.pad(np.asarray(mask != 0, dtype=np.uint8), 1)[None])
    result = ext.execute(img, msk)
    return np.array([float(result[n]) for n in names], dtype=np.float64)


def _extract_task(args: tuple) -> np.ndarray:
    return extract_one(*args)


def region_key(image: np.ndarray, mask: np.ndarray) -> bytes:
    """Content hash of one region (image values as float64, mask as uint8, and their shape)."""
    h = hashlib.blake2b(digest_size=20)
    h.update(repr(image.shape).encode())
    h.update(np.ascontiguousarray(image, dtype=np.float64).tobytes())
    h.update(np.ascontiguousarray(mask, dtype=np.uint8).tobytes())
    return h.digest()


class PyRadiomicsBackend:
    """PyRadiomics on a batch, with a content cache (LRU, `cache_size` regions) and an optional process pool."""

    def __init__(self, params: dict, names: list[str], num_workers: int = 0, cache_size: int = 4096):
        self.params = params
        self.names = list(names)
        self.num_workers = int(num_workers)
        self.cache_size = int(cache_size)
        self._cache: OrderedDict[bytes, np.ndarray] = OrderedDict()
        self._pool: ProcessPoolExecutor | None = None
        quiet_pyradiomics()

    def _use_pool(self, n_jobs: int) -> bool:
        return self.num_workers > 1 and n_jobs > 1 and not multiprocessing.current_process().daemon

    def __call__(self, images: np.ndarray, masks: np.ndarray) -> np.ndarray:
        """(B, F) float64 features of images (B, H, W) float64 and masks (B, H, W) uint8/bool."""
        b = images.shape[0]
        out = np.empty((b, len(self.names)), dtype=np.float64)
        keys = [region_key(images[k], masks[k]) for k in range(b)] if self.cache_size > 0 else [None] * b
        todo: dict[bytes | None, list[int]] = {}
        for k, key in enumerate(keys):
            if key is not None and key in self._cache:
                self._cache.move_to_end(key)
                out[k] = self._cache[key]
            elif key is None:
                todo.setdefault(k, [k])  # no cache: every region is its own job
            else:
                todo.setdefault(key, []).append(k)
        jobs = list(todo.values())
        tasks = [(images[ks[0]], masks[ks[0]], self.params, self.names) for ks in jobs]
        if self._use_pool(len(tasks)):
            if self._pool is None:
                self._pool = ProcessPoolExecutor(max_workers=self.num_workers)
            chunk = max(1, len(tasks) // (4 * self.num_workers))
            results = list(self._pool.map(_extract_task, tasks, chunksize=chunk))
        else:
            results = [_extract_task(t) for t in tasks]
        for ks, res in zip(jobs, results):
            out[ks] = res
            key = keys[ks[0]]
            if key is not None:
                self._cache[key] = res
                if len(self._cache) > self.cache_size:
                    self._cache.popitem(last=False)
        return out

    @property
    def cache_len(self) -> int:
        return len(self._cache)

    def close(self) -> None:
        """Shut the process pool down (it is started on first parallel use)."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __getstate__(self) -> dict:  # picklable into DataLoader workers: no pool, empty cache
        state = self.__dict__.copy()
        state["_pool"] = None
        state["_cache"] = OrderedDict()
        return state
