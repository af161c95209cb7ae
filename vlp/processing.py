"""`VLPProcessor`: the one object that owns image preprocessing and tokenisation.

Chest X-rays arrive as 8-bit or 16-bit grayscale, RGB(A) exports, floats, of any size. The image processor
turns each into a float image in [0, 1] (warning when the range looks wrong), resizes it to the tower's input
size keeping the aspect ratio, pads (or centre-crops) to a square, normalises and repeats it to the tower's
channels. `geometry` describes that mapping so grounding maps can be put back on the original pixels.
"""
from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from transformers import BatchFeature, ProcessorMixin
from transformers.image_processing_utils import BaseImageProcessor


class PixelRangeWarning(UserWarning):
    """An image's pixel values look wrong for an X-ray (e.g. floats outside [0, 1], a nearly constant image)."""


@dataclass
class Geometry:
    """How an original (height, width) image maps onto the square model input of side `size`.

    model pixel (y', x') = (y * scale - crop_top + pad_top, x * scale - crop_left + pad_left)
    """

    height: int
    width: int
    size: int
    scale: float
    resized: tuple[int, int]  # (h, w) after scaling
    pad_top: int = 0
    pad_left: int = 0
    crop_top: int = 0
    crop_left: int = 0


def to_unit_float(image, name: str = "image") -> np.ndarray:
    """A grayscale float32 (H, W) array in [0, 1] from a PIL image, numpy array or tensor.

    8-bit data is divided by 255. 16-bit and integer data is divided by 2**bits - 1, where `bits` is the
    smallest bit depth that holds the image's maximum (at least 8): 12-bit data stored in 16 bits is not
    darkened to 1/16. RGB(A) is converted with ITU-R 601 luma. Floats are expected in [0, 1]; outside it they are
    min-max rescaled with a `PixelRangeWarning`.
    """
    if isinstance(image, Image.Image):
        if image.mode in ("RGB", "RGBA", "LA", "P", "CMYK", "YCbCr"):
            image = image.convert("L")
        array = np.asarray(image)
        if image.mode == "1":
            array = array.astype(np.uint8) * 255
    elif isinstance(image, torch.Tensor):
        array = image.detach().cpu().numpy()
    else:
        array = np.asarray(image)
    if array.ndim == 3:
        if array.shape[0] in (1, 3, 4) and array.shape[-1] not in (1, 3, 4):
            array = np.moveaxis(array, 0, -1)
        if array.shape[-1] == 1:
            array = array[..., 0]
        else:
            rgb = array[..., :3].astype(np.float64)
            array = (rgb @ np.array([0.299, 0.587, 0.114])).astype(array.dtype)
    if array.ndim != 2:
        raise ValueError(f"{name}: expected a 2D grayscale image or (H, W, C) colour image, got shape {array.shape}")
    if array.dtype == np.uint8:
        out = array.astype(np.float32) / 255.0
    elif np.issubdtype(array.dtype, np.integer) or array.dtype == bool:
        array = array.astype(np.int64)
        if array.min() < 0:
            warnings.warn(f"{name}: negative integer pixel values; rescaling min-max", PixelRangeWarning)
            array = array - array.min()
        bits = max(8, math.ceil(math.log2(int(array.max()) + 1)))
        out = (array / float(2 ** bits - 1)).astype(np.float32)
    else:
        out = array.astype(np.float32)
        lo, hi = float(np.nanmin(out)), float(np.nanmax(out))
        if lo < 0.0 or hi > 1.0:
            warnings.warn(f"{name}: float pixel values in [{lo:.3g}, {hi:.3g}], expected [0, 1]; rescaling min-max "
                          "(pass integer arrays or PIL images to keep the stored bit depth)", PixelRangeWarning)
            out = (out - lo) / max(hi - lo, 1e-12)
    lo, hi = float(out.min()), float(out.max())
    if hi - lo < 0.02:
        warnings.warn(f"{name}: pixel values span only [{lo:.3f}, {hi:.3f}]: the image is nearly constant; "
                      "check its bit depth or windowing", PixelRangeWarning)
    return np.ascontiguousarray(out)


class VLPImageProcessor(BaseImageProcessor):
    """X-ray in any size and bit depth -> normalised square tensor for the image tower."""

    model_input_names = ["pixel_values"]

    def __init__(self, image_size: int = 224, num_channels: int = 3, image_mean: float = 0.5,
                 image_std: float = 0.25, resize_mode: Literal["pad", "crop"] = "pad", **kwargs):
        super().__init__(**kwargs)
        if resize_mode not in ("pad", "crop"):
            raise ValueError(f"resize_mode must be 'pad' or 'crop', got {resize_mode!r}")
        self.image_size = int(image_size)
        self.num_channels = int(num_channels)
        self.image_mean = float(image_mean)
        self.image_std = float(image_std)
        self.resize_mode = resize_mode

    def geometry(self, height: int, width: int) -> Geometry:
        """The resize and pad (or crop) that `unit_to_square` applies to an image of this size."""
        size = self.image_size
        if self.resize_mode == "pad":  # longer side to `size`, pad the shorter one symmetrically
            scale = size / max(height, width)
        else:  # shorter side to `size`, centre-crop the longer one
            scale = size / min(height, width)
        rh, rw = max(1, round(height * scale)), max(1, round(width * scale))
        g = Geometry(height, width, size, scale, (rh, rw))
        if self.resize_mode == "pad":
            g.pad_top, g.pad_left = (size - rh) // 2, (size - rw) // 2
        else:
            g.crop_top, g.crop_left = (rh - size) // 2, (rw - size) // 2
        return g

    def unit_to_square(self, image: np.ndarray) -> torch.Tensor:
        """(H, W) float [0, 1] -> (size, size) float [0, 1], resized with antialiasing, padded or cropped."""
        g = self.geometry(*image.shape)
        x = torch.from_numpy(image)[None, None]
        x = F.interpolate(x, size=g.resized, mode="bilinear", antialias=True, align_corners=False)[0, 0]
        x = x.clamp(0.0, 1.0)
        if self.resize_mode == "pad":
            out = x.new_zeros((g.size, g.size))
            out[g.pad_top:g.pad_top + g.resized[0], g.pad_left:g.pad_left + g.resized[1]] = x
            return out
        return x[g.crop_top:g.crop_top + g.size, g.crop_left:g.crop_left + g.size].contiguous()

    def __call__(self, images, return_tensors: str | None = "pt", **kwargs) -> BatchFeature:
        return self.preprocess(images, return_tensors=return_tensors, **kwargs)

    def preprocess(self, images, return_tensors: str | None = "pt", return_raw: bool = False, **_) -> BatchFeature:
        """images: one image or a list (PIL, numpy, tensor). Returns `pixel_values` (B, C, S, S),
        `image_sizes` (B, 2) original (H, W), and with `return_raw` the unnormalised `raw_images` (B, S, S)."""
        if not isinstance(images, (list, tuple)):
            images = [images]
        squares, sizes = [], []
        for i, image in enumerate(images):
            unit = to_unit_float(image, name=f"image {i}")
            sizes.append(unit.shape)
            squares.append(self.unit_to_square(unit))
        raw = torch.stack(squares)
        pixel_values = ((raw - self.image_mean) / self.image_std).unsqueeze(1)
        pixel_values = pixel_values.expand(-1, self.num_channels, -1, -1).contiguous()
        data = {"pixel_values": pixel_values, "image_sizes": torch.tensor(sizes, dtype=torch.long)}
        if return_raw:
            data["raw_images"] = raw
        return BatchFeature(data=data, tensor_type=return_tensors)


class VLPProcessor(ProcessorMixin):
    """Image processor + tokenizer. `processor(text=[...], images=[...], return_tensors="pt", padding=True)`.

    With `return_sentence_ids` it also returns `sentence_ids` (B, T): the index of the sentence each token
    belongs to (-1 for special and padding tokens), for the LoVT head; with `return_raw_images` the unnormalised
    [0, 1] images (B, S, S), for the radiomics head. Their defaults are the processor's own settings, which
    `create_processor` takes from the model's heads and `save_pretrained` stores, so a processor saved with a
    model returns by default what the model's heads need.
    """

    def __init__(self, image_processor=None, tokenizer=None, return_sentence_ids=False, return_raw_images=False,
                 **kwargs):
        super().__init__(image_processor, tokenizer, **kwargs)
        self.return_sentence_ids = bool(return_sentence_ids)
        self.return_raw_images = bool(return_raw_images)

    def __call__(self, text=None, images=None, return_tensors: str | None = "pt", padding=True,
                 truncation: bool = True, max_length: int | None = None, return_sentence_ids: bool | None = None,
                 return_raw_images: bool | None = None, **kwargs) -> BatchFeature:
        if text is None and images is None:
            raise ValueError("give text, images or both")
        if kwargs:
            raise TypeError(f"unexpected keyword argument(s) {sorted(kwargs)} to VLPProcessor")
        return_sentence_ids = self.return_sentence_ids if return_sentence_ids is None else return_sentence_ids
        return_raw_images = self.return_raw_images if return_raw_images is None else return_raw_images
        data = {}
        if text is not None:
            texts = [text] if isinstance(text, str) else list(text)
            for i, t in enumerate(texts):
                if not isinstance(t, str):
                    raise TypeError(f"text {i} is a {type(t).__name__}, expected str")
            encoded = self.tokenizer(texts, padding=padding, truncation=truncation,
                                     max_length=max_length or self.tokenizer.model_max_length,
                                     return_offsets_mapping=return_sentence_ids, return_tensors="pt")
            data["input_ids"] = encoded["input_ids"]
            data["attention_mask"] = encoded["attention_mask"]
            if return_sentence_ids:
                data["sentence_ids"] = sentence_ids_from_offsets(texts, encoded["offset_mapping"],
                                                                 encoded["attention_mask"])
        if images is not None:
            data.update(self.image_processor(images, return_tensors="pt", return_raw=return_raw_images))
        return BatchFeature(data=data, tensor_type=return_tensors)

    @property
    def model_input_names(self):
        return ["input_ids", "attention_mask", "pixel_values"]


def sentence_ids_from_offsets(texts: list[str], offsets: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Map each token to the sentence whose character span contains it (-1 for special and padding tokens)."""
    from .data.sentences import split_sentences

    ids = torch.full(attention_mask.shape, -1, dtype=torch.long)
    for b, text in enumerate(texts):
        spans = split_sentences(text, return_spans=True)
        for t in range(offsets.shape[1]):
            start, end = (int(v) for v in offsets[b, t])
            if attention_mask[b, t] == 0 or end <= start:
                continue
            for s, (s0, s1) in enumerate(spans):
                if s0 <= start < s1:
                    ids[b, t] = s
                    break
    return ids
