"""Loading chest X-ray files as grayscale float32 (H, W) arrays in [0, 1].

Intensity rules (one place, so training and zero-shot see the same range):

- 8-bit grayscale: value / 255.
- 16-bit (and other integer) grayscale: value / (2**bits - 1), where `bits` is the *real* bit depth: the PNG
  `sBIT` chunk when the file has one, else the smallest depth that holds the image's maximum, at least 8
  (`max(8, ceil(log2(max + 1)))`). 12-bit detector data stored in 16-bit containers (maximum <= 4095) is
  therefore divided by 4095, not 65535, and is not darkened to 1/16. The rule is per bit depth, not a per-image
  min-max stretch, so the relative brightness of images of the same depth is kept. `VLPProcessor` applies the
  same rule to arrays.
- RGB / palette images: ITU-R 601-2 luma (0.299 R + 0.587 G + 0.114 B) / 255. An alpha channel is composited over
  black (an X-ray's background), so fully opaque images are unchanged.
- Float images ("F" mode): kept when already in [0, 1], else min-max rescaled.
- DICOM (needs `pydicom`): the modality LUT (RescaleSlope / RescaleIntercept) is applied, then the VOI
  transform: the first WindowCenter / WindowWidth pair with the VOILUTFunction (LINEAR, LINEAR_EXACT, SIGMOID;
  DICOM PS3.3 C.11.2.1.2), or a VOI LUT Sequence; without either, the range of the stored bits (BitsStored,
  signed or not) mapped through the modality LUT. MONOCHROME1 images are inverted (1 - x) so bone is bright.
  Multi-frame files give their first frame.

`load_raw_image` reads the stored values instead, not rescaled (for radiomics, whose bin widths are in stored
gray levels).

Files that cannot give an image raise `BadImageError(path, reason)` with `reason` a `SkipReason`.
"""
from __future__ import annotations

import math
import os
import struct
from enum import Enum
from pathlib import Path

import numpy as np
from PIL import Image

__all__ = ["BadImageError", "SkipReason", "check_image_file", "image_size", "is_dicom", "load_image", "load_raw_image"]

_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_DICOM_SUFFIXES = {".dcm", ".dicom", ".dic"}
_LUMA = np.array([0.299, 0.587, 0.114])


class SkipReason(str, Enum):
    """Why a sample cannot be used. The values are the labels that `SkipLog.summary()` counts."""

    MISSING_FILE = "missing file"
    EMPTY_FILE = "empty file"
    TRUNCATED_IMAGE = "truncated image"
    UNREADABLE_IMAGE = "unreadable image"
    UNREADABLE_DICOM = "unreadable DICOM"
    EMPTY_REPORT = "empty report"
    REPORT_NOT_TEXT = "report not text"
    BAD_LABELS = "bad labels"
    BAD_BOXES = "bad boxes"


class BadImageError(Exception):
    """An image file that cannot be used: missing, zero bytes, truncated, or not decodable.

    `path` names the file, `reason` is a `SkipReason`, `detail` says what the decoder reported.
    """

    def __init__(self, path: str | os.PathLike, reason: SkipReason | str, detail: str = ""):
        self.path = str(path)
        self.reason = SkipReason(reason)
        self.detail = detail
        message = f"{self.path}: {self.reason.value}"
        super().__init__(f"{message} ({detail})" if detail else message)

    def __reduce__(self):  # picklable across DataLoader workers
        return (type(self), (self.path, self.reason, self.detail))


def check_image_file(path: str | os.PathLike) -> Path:
    """Cheap check before decoding: raises `BadImageError` when `path` is missing, not a file, or has zero bytes."""
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise BadImageError(path, SkipReason.MISSING_FILE) from None
    except OSError as e:
        raise BadImageError(path, SkipReason.MISSING_FILE, str(e)) from None
    if not path.is_file():
        raise BadImageError(path, SkipReason.MISSING_FILE, "not a regular file")
    if size == 0:
        raise BadImageError(path, SkipReason.EMPTY_FILE, "0 bytes")
    return path


def is_dicom(path: str | os.PathLike) -> bool:
    """True for a `.dcm`/`.dicom` name or a file with the DICOM preamble magic `DICM` at byte 128."""
    path = Path(path)
    if path.suffix.lower() in _DICOM_SUFFIXES:
        return True
    try:
        with open(path, "rb") as f:
            head = f.read(132)
    except OSError:
        return False
    return len(head) == 132 and head[128:132] == b"DICM"


def _png_significant_bits(path: Path) -> int | None:
    """The first value of a PNG's sBIT chunk (significant bits of gray / red), or None when there is none."""
    try:
        with open(path, "rb") as f:
            if f.read(8) != _PNG_SIGNATURE:
                return None
            while True:
                head = f.read(8)
                if len(head) < 8:
                    return None
                length, kind = struct.unpack(">I4s", head)
                if kind == b"sBIT":
                    data = f.read(length)
                    return data[0] if data and 1 <= data[0] <= 16 else None
                if kind in (b"IDAT", b"IEND"):
                    return None
                f.seek(length + 4, os.SEEK_CUR)
    except (OSError, struct.error):
        return None


def _integer_to_unit(array: np.ndarray, bits: int | None = None) -> np.ndarray:
    array = array.astype(np.float64)
    if array.size and array.min() < 0:  # signed integer image without DICOM tags: min-max
        return _minmax(array)
    if bits is None:
        peak = float(array.max()) if array.size else 0.0
        bits = max(8, math.ceil(math.log2(peak + 1))) if peak > 0 else 8
    return np.clip(array / (2.0**bits - 1.0), 0.0, 1.0)


def _minmax(array: np.ndarray) -> np.ndarray:
    lo, hi = float(np.min(array)), float(np.max(array))
    if hi <= lo:
        return np.zeros(array.shape, dtype=np.float64)
    return (array - lo) / (hi - lo)


def _pil_to_unit(image: Image.Image, path: Path) -> np.ndarray:
    mode = image.mode
    if mode == "1":
        return np.asarray(image, dtype=np.float64)
    if mode == "L":
        return np.asarray(image, dtype=np.float64) / 255.0
    if mode in ("I;16", "I;16B", "I;16L", "I;16N", "I"):
        bits = _png_significant_bits(path) if image.format == "PNG" else None
        return _integer_to_unit(np.asarray(image), bits)
    if mode == "F":
        array = np.asarray(image, dtype=np.float64)
        return array if array.size == 0 or (array.min() >= 0.0 and array.max() <= 1.0) else _minmax(array)
    if mode in ("LA", "La"):
        la = np.asarray(image.convert("LA"), dtype=np.float64) / 255.0
        return la[..., 0] * la[..., 1]
    # RGB, RGBA, P (palette), CMYK, YCbCr, ...: to RGBA, luma, composite over black.
    rgba = np.asarray(image.convert("RGBA"), dtype=np.float64) / 255.0
    return (rgba[..., :3] @ _LUMA) * rgba[..., 3]


def _pil_stored_values(image: Image.Image, path: Path) -> np.ndarray:
    """The stored gray values (8/16/32-bit, float, 1-bit); other modes as their 8-bit luma."""
    if image.mode not in ("L", "I", "F", "I;16", "I;16B", "I;16L", "I;16N", "1"):
        image = image.convert("L")
    array = np.asarray(image)
    return array.astype(np.uint8) if array.dtype == bool else array


def _load_pil(path: Path, to_array=_pil_to_unit) -> np.ndarray:
    """Decode with Pillow and convert with `to_array(image, path)`; decoder failures become `BadImageError`."""
    try:
        with Image.open(path) as image:
            image.load()
            array = to_array(image, path)
    except BadImageError:
        raise
    except Exception as e:  # PIL raises OSError, SyntaxError, ValueError, struct.error, EOFError...
        text = str(e)
        truncated = isinstance(e, EOFError) or "truncat" in text.lower()
        reason = SkipReason.TRUNCATED_IMAGE if truncated else SkipReason.UNREADABLE_IMAGE
        raise BadImageError(path, reason, f"{type(e).__name__}: {text}") from e
    return array


def _import_pydicom():
    try:
        import pydicom  # noqa: F401
        import pydicom.pixels  # noqa: F401
    except ImportError as e:  # a configuration problem, not a bad sample: fail loudly
        raise ImportError("reading DICOM files needs pydicom: pip install 'vlp[dicom]' (or pip install pydicom); "
                          "compressed transfer syntaxes may also need pylibjpeg or python-gdcm") from e
    return pydicom


def _first(value) -> float:
    """First value of a possibly multi-valued DICOM element."""
    if isinstance(value, (list, tuple)) or type(value).__name__ == "MultiValue":
        value = value[0]
    return float(value)


def window_linear(x: np.ndarray, center: float, width: float, function: str = "LINEAR") -> np.ndarray:
    """DICOM VOI windowing (PS3.3 C.11.2.1.2) to the output range [0, 1].

    LINEAR: 0 for x <= c - 0.5 - (w - 1) / 2, 1 for x > c - 0.5 + (w - 1) / 2, else ((x - (c - 0.5)) / (w - 1) + 0.5);
    LINEAR_EXACT: 0 for x <= c - w / 2, 1 for x > c + w / 2, else (x - c) / w + 0.5;
    SIGMOID: 1 / (1 + exp(-4 (x - c) / w)).
    """
    x = np.asarray(x, dtype=np.float64)
    function = (function or "LINEAR").upper()
    if function == "SIGMOID":
        if width <= 0:
            raise ValueError(f"SIGMOID window width must be > 0, got {width}")
        return 1.0 / (1.0 + np.exp(-4.0 * (x - center) / width))
    if function == "LINEAR_EXACT":
        if width <= 0:
            raise ValueError(f"LINEAR_EXACT window width must be > 0, got {width}")
        return np.clip((x - center) / width + 0.5, 0.0, 1.0)
    if width < 1:
        raise ValueError(f"LINEAR window width must be >= 1, got {width}")
    if width == 1:
        return (x > center - 0.5).astype(np.float64)
    return np.clip((x - (center - 0.5)) / (width - 1.0) + 0.5, 0.0, 1.0)


def _read_dicom(path: Path):
    """(dataset, pixels of its first frame) of a DICOM file; a missing, truncated or undecodable pixel array
    raises `BadImageError`."""
    pydicom = _import_pydicom()
    try:
        ds = pydicom.dcmread(str(path))
    except Exception as e:
        raise BadImageError(path, SkipReason.UNREADABLE_DICOM, f"{type(e).__name__}: {e}") from e
    if "PixelData" not in ds and "FloatPixelData" not in ds and "DoubleFloatPixelData" not in ds:
        raise BadImageError(path, SkipReason.UNREADABLE_DICOM, "no pixel data in the file")
    try:
        raw = ds.pixel_array
    except Exception as e:
        text = f"{type(e).__name__}: {e}"
        truncated = any(k in str(e).lower() for k in ("less than expected", "truncat", "shorter than"))
        reason = SkipReason.TRUNCATED_IMAGE if truncated else SkipReason.UNREADABLE_DICOM
        raise BadImageError(path, reason, text) from e
    try:
        frames = int(getattr(ds, "NumberOfFrames", 1) or 1)
    except Exception as e:
        raise BadImageError(path, SkipReason.UNREADABLE_DICOM, f"{type(e).__name__}: {e}") from e
    return ds, (raw[0] if frames > 1 else raw)


def _load_dicom(path: Path) -> np.ndarray:
    ds, raw = _read_dicom(path)  # first: it says how to install pydicom when it is missing
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        samples = int(getattr(ds, "SamplesPerPixel", 1) or 1)
        if samples > 1:  # colour DICOM (rare for CXR): luma of the 8-bit channels
            return np.clip((raw[..., :3].astype(np.float64) @ _LUMA) / (2.0 ** int(ds.BitsStored) - 1), 0, 1)
        values = np.asarray(apply_modality_lut(raw, ds), dtype=np.float64)
        if "WindowCenter" in ds and "WindowWidth" in ds and ds.WindowCenter is not None and ds.WindowWidth is not None:
            function = str(getattr(ds, "VOILUTFunction", "LINEAR") or "LINEAR")
            out = window_linear(values, _first(ds.WindowCenter), _first(ds.WindowWidth), function)
        elif "VOILUTSequence" in ds and len(ds.VOILUTSequence):
            lut_bits = int(ds.VOILUTSequence[0].LUTDescriptor[2])
            out = np.asarray(apply_voi_lut(values, ds), dtype=np.float64) / (2.0**lut_bits - 1.0)
        else:
            bits = int(getattr(ds, "BitsStored", 0) or getattr(ds, "BitsAllocated", 16))
            signed = int(getattr(ds, "PixelRepresentation", 0) or 0) == 1
            lo, hi = (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1) if signed else (0.0, 2.0**bits - 1)
            slope = float(getattr(ds, "RescaleSlope", 1) or 1)
            intercept = float(getattr(ds, "RescaleIntercept", 0) or 0)
            lo, hi = sorted((lo * slope + intercept, hi * slope + intercept))
            out = (values - lo) / (hi - lo) if hi > lo else np.zeros_like(values)
        if str(getattr(ds, "PhotometricInterpretation", "")).upper() == "MONOCHROME1":
            out = 1.0 - out
    except Exception as e:
        raise BadImageError(path, SkipReason.UNREADABLE_DICOM, f"{type(e).__name__}: {e}") from e
    return np.clip(out, 0.0, 1.0)


def load_image(path: str | os.PathLike) -> np.ndarray:
    """Read a PNG, JPEG (or other Pillow format) or DICOM file as float32 (H, W) in [0, 1].

    See the module docstring for the intensity rules. Raises `BadImageError` for a missing, zero-byte, truncated
    or undecodable file, and `ImportError` for a DICOM file when pydicom is not installed.
    """
    path = check_image_file(Path(path).expanduser())
    array = _load_dicom(path) if is_dicom(path) else _load_pil(path)
    if array.ndim != 2 or array.size == 0:
        raise BadImageError(path, SkipReason.UNREADABLE_IMAGE, f"decoded to shape {array.shape}, expected (H, W)")
    return np.ascontiguousarray(array, dtype=np.float32)


def load_raw_image(path: str | os.PathLike) -> np.ndarray:
    """The stored intensities of an image file as a 2D array, not rescaled: what PyRadiomics would see.

    For radiomics, whose bin widths are set in stored gray levels; the model reads files with `load_image`.

    PNG/JPEG/TIFF (Pillow): 8/16/32-bit gray and float as stored; colour and palette files as their 8-bit luma;
    DICOM (pydicom): the first frame after the modality LUT. Raises `BadImageError` for a missing,
    empty, truncated or undecodable file.
    """
    path = check_image_file(Path(path).expanduser())
    if is_dicom(path):
        ds, raw = _read_dicom(path)  # first: it says how to install pydicom when it is missing
        from pydicom.pixels import apply_modality_lut

        try:
            array = np.asarray(apply_modality_lut(raw, ds))
        except Exception as e:
            raise BadImageError(path, SkipReason.UNREADABLE_DICOM, f"{type(e).__name__}: {e}") from e
    else:
        array = _load_pil(path, _pil_stored_values)
    if array.ndim != 2 or array.size == 0:
        raise BadImageError(path, SkipReason.UNREADABLE_IMAGE, f"decoded to shape {array.shape}, expected (H, W)")
    return np.ascontiguousarray(array)


def image_size(path: str | os.PathLike) -> tuple[int, int]:
    """(height, width) of an image file from its header, without decoding the pixels."""
    path = check_image_file(path)
    if is_dicom(path):
        pydicom = _import_pydicom()
        try:
            ds = pydicom.dcmread(str(path), stop_before_pixels=True)
            return int(ds.Rows), int(ds.Columns)
        except Exception as e:
            raise BadImageError(path, SkipReason.UNREADABLE_DICOM, f"{type(e).__name__}: {e}") from e
    try:
        with Image.open(path) as image:
            return image.height, image.width
    except Exception as e:
        raise BadImageError(path, SkipReason.UNREADABLE_IMAGE, f"{type(e).__name__}: {e}") from e
