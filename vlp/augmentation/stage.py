"""The augmentation stage: between the dataset and the processor, in the dataloader's workers.

For every sample it draws, from a seed that depends only on (run seed, epoch, row index, view), one view or several
independently augmented views of the image, and moves the sample's boxes, masks and heatmaps with each view; it
shuffles or samples the report's sentences. So a view is reproducible, whichever worker makes it and in whatever order
(a resumed run makes the same views), and differs from epoch to epoch.

Per view: the image is resized as the processor would resize it (longer side to the model input size, antialiased),
the geometric transforms are composed into one warp of that image (interpolated once), then the intensity transforms
run. The processor then only pads and normalises. Targets come in the image's pixel grid and leave in the view's.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ..configuration import SubConfig, config_from_dict
from .geometry import resize_unit, warp, warp_boxes
from .text import TextAugmentationConfig, augment_report
from .transforms import GeometricTransform, build_transform

__all__ = ["AugmentationConfig", "Augmenter", "load_augmentation", "view_seed", "PRESET_DIR"]

PRESET_DIR = Path(__file__).parent / "presets"
_TEXT_STREAM = 1 << 20  # the report's random stream, apart from the views' (0, 1, ...)


@dataclass
class AugmentationConfig(SubConfig):
    """transforms: ``[{"name": ..., **settings}, ...]`` (`vlp.augmentation.registered_transforms()`); geometric ones
    compose into one warp applied first, intensity ones follow, each in the listed order. text: sentence shuffling and
    sampling. views: images made per sample (objectives that compare two views of one image need 2)."""

    transforms: list[dict[str, Any]] = field(default_factory=list)
    text: TextAugmentationConfig = field(default_factory=TextAugmentationConfig)
    views: int = 1

    def __post_init__(self):
        self.transforms = [dict(t) for t in self.transforms]
        for spec in self.transforms:
            build_transform(spec)  # validates names and settings now, not in a worker
        self.text = config_from_dict(TextAugmentationConfig, self.text, "augmentation.text")
        if int(self.views) < 1:
            raise ValueError(f"augmentation.views must be >= 1, got {self.views}")
        self.views = int(self.views)


def load_augmentation(spec: str | dict | AugmentationConfig | None) -> AugmentationConfig | None:
    """None or "none": no augmentation; a preset name (`vlp/augmentation/presets/*.yaml`, e.g. "lovt") or a YAML
    file; a mapping with the `AugmentationConfig` keys."""
    if spec is None or isinstance(spec, AugmentationConfig):
        return spec
    if isinstance(spec, str):
        if spec.lower() == "none":
            return None
        path = Path(spec) if spec.endswith((".yaml", ".yml")) else PRESET_DIR / f"{spec}.yaml"
        if not path.is_file():
            presets = sorted(p.stem for p in PRESET_DIR.glob("*.yaml"))
            raise ValueError(f"unknown augmentation {spec!r}: not a YAML file and not a preset ({', '.join(presets)}, "
                             "or 'none')")
        import yaml

        return config_from_dict(AugmentationConfig, yaml.safe_load(path.read_text()) or {}, str(path))
    return config_from_dict(AugmentationConfig, spec, "augmentation")


def view_seed(seed: int, epoch: int, index: int, stream: int) -> int:
    """A 63-bit seed that depends only on its four arguments (numpy's SeedSequence mixes them)."""
    state = np.random.SeedSequence(entropy=int(seed), spawn_key=(int(epoch), int(index), int(stream)))
    low, high = state.generate_state(2, dtype=np.uint32)
    return int(high) << 31 ^ int(low)


class Augmenter:
    """`augmenter(item, epoch)` -> the item with its augmented image (and `views`: the extra views when
    `config.views > 1`), report and targets. `image_processor` gives the model input size."""

    def __init__(self, config: AugmentationConfig, image_processor, seed: int = 0):
        self.config = config
        self.image_processor = image_processor
        self.seed = int(seed)
        transforms = [build_transform(spec) for spec in config.transforms]
        self.geometric = [t for t in transforms if isinstance(t, GeometricTransform)]
        self.intensity = [t for t in transforms if not isinstance(t, GeometricTransform)]

    def __call__(self, item: dict, epoch: int) -> dict:
        index = item.get("index")
        if index is None:
            raise ValueError("the augmentation stage needs each sample's row 'index' (its seed depends on it)")
        out = dict(item)
        image = torch.as_tensor(np.asarray(item["image"], dtype=np.float32))
        views = [self.view(image, item, self._generator(epoch, index, v)) for v in range(self.config.views)]
        out.update(views[0])
        if len(views) > 1:
            out["views"] = [v["image"] for v in views[1:]]
            out["view_targets"] = [{k: v[k] for k in v if k != "image"} for v in views[1:]]
        if item.get("text") is not None:
            out["text"] = augment_report(item["text"], self.config.text, self._generator(epoch, index, _TEXT_STREAM))
        return out

    def _generator(self, epoch: int, index: int, stream: int) -> torch.Generator:
        return torch.Generator().manual_seed(view_seed(self.seed, epoch, index, stream))

    def view(self, image: torch.Tensor, targets: dict, generator: torch.Generator) -> dict:
        """One augmented view of `image` (H, W) and of the `boxes`, `masks`, `heatmaps` in `targets`."""
        height, width = image.shape
        size = tuple(self.image_processor.geometry(height, width).resized)  # the processor's resize
        scale_x, scale_y = size[1] / width, size[0] / height
        matrix = torch.eye(3, dtype=torch.float64)
        for transform in self.geometric:
            matrix = matrix @ transform.sample_matrix(size, generator)
        identity = torch.equal(matrix, torch.eye(3, dtype=torch.float64))
        out = {}
        resized = resize_unit(image[None], size)
        out["image"] = resized[0] if identity else warp(resized, matrix, size)[0]
        for transform in self.intensity:
            out["image"] = transform.apply(out["image"], generator)
        out["image"] = out["image"].clamp(0, 1)  # float rounding (a blur's sums) must not reach the processor's check
        if targets.get("boxes") is not None:
            boxes = targets["boxes"]
            coords = torch.tensor([[b["x"] * scale_x, b["y"] * scale_y, b["w"] * scale_x, b["h"] * scale_y]
                                   for b in boxes], dtype=torch.float64).reshape(-1, 4)
            moved = warp_boxes(coords, matrix, size).tolist()
            out["boxes"] = [{**box, "x": x, "y": y, "w": w, "h": h} for box, (x, y, w, h) in zip(boxes, moved)]
        for key, mode in (("heatmaps", "bilinear"), ("masks", "nearest")):
            if targets.get(key) is not None:
                maps = torch.as_tensor(np.asarray(targets[key]))
                flat = maps[None] if maps.dim() == 2 else maps
                dtype = flat.dtype
                resized_maps = resize_unit(flat.float(), size, mode)
                moved = resized_maps if identity else warp(resized_maps, matrix, size, mode)
                moved = moved.to(dtype) if dtype == torch.bool else moved
                out[key] = moved[0] if maps.dim() == 2 else moved
        return out
