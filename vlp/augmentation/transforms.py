"""Named image transforms with typed settings, and their registry.

Two kinds. *Geometric* transforms draw a warp (`sample_matrix`: output -> input pixel positions) that moves the image
and everything tied to it (boxes, masks, heatmaps); the stage composes them into one warp. *Intensity* transforms
(`apply`) change the image's values only. Every draw comes from the `torch.Generator` the stage passes in, so a view is
a pure function of its seed.

The defaults are those of LoVT's `ScanAugmentationConfig` (Müller et al., ECCV 2022; repository philip-mueller/lovt,
``src/models/image/scan_transforms.py``), which follows ConVIRT (Zhang et al., 2020): random resized crop of 60-100%
of the area, rotation of up to 20 degrees, 10% translation, 0.95-1.05 scaling, brightness and contrast factors in
0.6-1.4, Gaussian blur with sigma in 0.1-3.0 and a kernel of a tenth of the image side. LoVT also flips horizontally
with probability 0.5; the `lovt` preset leaves the flip out (see docs/augmentation.md: on a chest X-ray left and right
are anatomy, and reports name the side).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F

from ..configuration import SubConfig, config_from_dict
from .geometry import affine_matrix, crop_matrix, hflip_matrix

__all__ = ["Transform", "GeometricTransform", "IntensityTransform", "register_transform", "build_transform",
           "registered_transforms"]

_TRANSFORMS: dict[str, type] = {}


def register_transform(cls: type) -> type:
    """Make a transform class available by its `name` in augmentation configs (a class decorator)."""
    if not isinstance(getattr(cls, "name", None), str) or not issubclass(cls, Transform):
        raise TypeError(f"{cls.__qualname__} must subclass GeometricTransform or IntensityTransform and set name")
    _TRANSFORMS[cls.name] = cls
    return cls


def registered_transforms() -> list[str]:
    return sorted(_TRANSFORMS)


def build_transform(spec: dict[str, Any]) -> "Transform":
    """A transform from ``{"name": ..., **settings}``; an unknown name or setting is an error that lists the valid."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ValueError(f"a transform is a mapping with a 'name' (one of {registered_transforms()}), got {spec!r}")
    name = spec["name"]
    if name not in _TRANSFORMS:
        raise ValueError(f"unknown transform {name!r}; registered transforms are: {', '.join(registered_transforms())}")
    cls = _TRANSFORMS[name]
    settings = {k: v for k, v in spec.items() if k != "name"}
    return cls(config_from_dict(cls.config_class, settings, f"transform {name!r}"))


def _uniform(low: float, high: float, generator: torch.Generator) -> float:
    return low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))


def _check_range(name: str, values, low: float = -math.inf, high: float = math.inf) -> tuple[float, float]:
    values = tuple(float(v) for v in values)
    if len(values) != 2 or not low <= values[0] <= values[1] <= high:
        raise ValueError(f"{name} must be [min, max] with {low} <= min <= max <= {high}, got {list(values)}")
    return values


class Transform:
    name: ClassVar[str]
    config_class: ClassVar[type]

    def __init__(self, config):
        self.config = config

    def applies(self, generator: torch.Generator) -> bool:
        """Whether this draw applies the transform at all (its probability `p`); always draws, so that the
        stream of random numbers does not depend on `p`."""
        return float(torch.rand((), generator=generator, dtype=torch.float64)) < self.config.p


class GeometricTransform(Transform):
    def sample_matrix(self, size: tuple[int, int], generator: torch.Generator) -> torch.Tensor:
        """3 x 3 output -> input map for an image of `size` (h, w); the output has the same size."""
        raise NotImplementedError


class IntensityTransform(Transform):
    def apply(self, image: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """(H, W) image in [0, 1] -> the transformed image in [0, 1]."""
        raise NotImplementedError


@dataclass
class RandomResizedCropConfig(SubConfig):
    """torchvision's `RandomResizedCrop`: a crop of `scale` of the area and an aspect ratio drawn log-uniformly in
    `ratio`, stretched back to the image's size. The ratio is relative to the image's own aspect (1: the crop has the
    image's shape, so a non-square X-ray is not distorted on average); for a square image it is torchvision's."""

    scale: tuple[float, float] = (0.6, 1.0)  # LoVT / ConVIRT crop_scale_range
    ratio: tuple[float, float] = (3 / 4, 4 / 3)  # torchvision's default
    p: float = 1.0

    def __post_init__(self):
        self.scale = _check_range("random_resized_crop.scale", self.scale, 0.0, 1.0)
        self.ratio = _check_range("random_resized_crop.ratio", self.ratio, 0.0)


@register_transform
class RandomResizedCrop(GeometricTransform):
    name = "random_resized_crop"
    config_class = RandomResizedCropConfig

    def sample_matrix(self, size, generator):
        h, w = size
        use = self.applies(generator)
        cfg = self.config
        log_ratio = (math.log(cfg.ratio[0]), math.log(cfg.ratio[1]))
        for _ in range(10):  # torchvision's rejection sampling, then the whole image
            area = h * w * _uniform(*cfg.scale, generator)
            aspect = (w / h) * math.exp(_uniform(*log_ratio, generator))
            crop_w, crop_h = math.sqrt(area * aspect), math.sqrt(area / aspect)
            x0, y0 = _uniform(0, max(w - crop_w, 0), generator), _uniform(0, max(h - crop_h, 0), generator)
            if crop_w <= w and crop_h <= h:
                break
        else:
            x0, y0, crop_w, crop_h = 0.0, 0.0, float(w), float(h)
        if not use:
            return torch.eye(3, dtype=torch.float64)
        return crop_matrix(x0, y0, crop_w, crop_h, w, h)


@dataclass
class RandomAffineConfig(SubConfig):
    """torchvision's `RandomAffine` without shear: rotation in `degrees`, translation up to `translate` of the width
    and height, scaling in `scale`, about the image centre."""

    degrees: tuple[float, float] = (-20.0, 20.0)  # LoVT / ConVIRT rotation_angle_range
    translate: tuple[float, float] = (0.1, 0.1)  # horizontal / vertical translation fraction
    scale: tuple[float, float] = (0.95, 1.05)  # scaling_range
    p: float = 1.0

    def __post_init__(self):
        self.degrees = _check_range("random_affine.degrees", self.degrees, -180, 180)
        self.scale = _check_range("random_affine.scale", self.scale, 0.0)
        self.translate = tuple(float(t) for t in self.translate)
        if len(self.translate) != 2 or not all(0 <= t <= 1 for t in self.translate):
            raise ValueError(f"random_affine.translate must be two fractions in [0, 1], got {list(self.translate)}")


@register_transform
class RandomAffine(GeometricTransform):
    name = "random_affine"
    config_class = RandomAffineConfig

    def sample_matrix(self, size, generator):
        h, w = size
        use = self.applies(generator)
        cfg = self.config
        angle = _uniform(*cfg.degrees, generator)
        tx = _uniform(-cfg.translate[0], cfg.translate[0], generator) * w
        ty = _uniform(-cfg.translate[1], cfg.translate[1], generator) * h
        scale = _uniform(*cfg.scale, generator)
        return affine_matrix(angle, (tx, ty), scale, w, h) if use else torch.eye(3, dtype=torch.float64)


@dataclass
class HorizontalFlipConfig(SubConfig):
    p: float = 0.5  # LoVT's horizontal_flip_prob; not in the lovt preset (laterality)


@register_transform
class HorizontalFlip(GeometricTransform):
    name = "horizontal_flip"
    config_class = HorizontalFlipConfig

    def sample_matrix(self, size, generator):
        return hflip_matrix(size[1]) if self.applies(generator) else torch.eye(3, dtype=torch.float64)


@dataclass
class ColorJitterConfig(SubConfig):
    """torchvision's `ColorJitter` on a grayscale image: brightness (scale the values) and contrast (scale them about
    the image mean) by factors drawn in the ranges, in a random order; the result is clipped to [0, 1]."""

    brightness: tuple[float, float] = (0.6, 1.4)  # LoVT / ConVIRT brightness_jitter_ratio_range
    contrast: tuple[float, float] = (0.6, 1.4)  # contrast_jitter_ratio_range
    p: float = 1.0  # LoVT jitter_prob

    def __post_init__(self):
        self.brightness = _check_range("color_jitter.brightness", self.brightness, 0.0)
        self.contrast = _check_range("color_jitter.contrast", self.contrast, 0.0)


@register_transform
class ColorJitter(IntensityTransform):
    name = "color_jitter"
    config_class = ColorJitterConfig

    def apply(self, image, generator):
        use = self.applies(generator)
        brightness = _uniform(*self.config.brightness, generator)
        contrast = _uniform(*self.config.contrast, generator)
        contrast_first = bool(torch.rand((), generator=generator) < 0.5)
        if not use:
            return image
        for op in (("contrast", "brightness") if contrast_first else ("brightness", "contrast")):
            if op == "brightness":
                image = (image * brightness).clamp(0, 1)
            else:
                image = ((image - image.mean()) * contrast + image.mean()).clamp(0, 1)
        return image


@dataclass
class GaussianBlurConfig(SubConfig):
    """torchvision's `GaussianBlur` with sigma drawn in `sigma` (pixels of the model input) and an odd kernel of
    `kernel_fraction` of the longer image side, reflect-padded."""

    sigma: tuple[float, float] = (0.1, 3.0)  # LoVT / ConVIRT gaussian_blur_sigma_range
    kernel_fraction: float = 0.1  # LoVT: kernel_size = int(0.1 * max(image_size)), made odd
    p: float = 1.0

    def __post_init__(self):
        self.sigma = _check_range("gaussian_blur.sigma", self.sigma, 1e-6)
        if not 0 < self.kernel_fraction <= 1:
            raise ValueError(f"gaussian_blur.kernel_fraction must be in (0, 1], got {self.kernel_fraction}")


@register_transform
class GaussianBlur(IntensityTransform):
    name = "gaussian_blur"
    config_class = GaussianBlurConfig

    def apply(self, image, generator):
        use = self.applies(generator)
        sigma = _uniform(*self.config.sigma, generator)
        if not use:
            return image
        size = int(self.config.kernel_fraction * max(image.shape))
        size += 1 - size % 2
        radius = min(size // 2, min(image.shape) - 1)  # reflect padding needs a radius below the side
        if radius < 1:
            return image
        offsets = torch.arange(-radius, radius + 1, dtype=torch.float32)
        kernel = torch.exp(-0.5 * (offsets / sigma) ** 2)
        kernel = (kernel / kernel.sum()).to(image.dtype)
        x = F.pad(image[None, None], (radius, radius, radius, radius), mode="reflect")
        x = F.conv2d(x, kernel.view(1, 1, 1, -1))
        x = F.conv2d(x, kernel.view(1, 1, -1, 1))
        return x[0, 0]
