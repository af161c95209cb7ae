"""The augmentation stage: seeded, target-aware image transforms and report augmentation, run in dataloader workers
between the dataset and the processor (`vlp.augmentation.stage`)."""
from .stage import AugmentationConfig, Augmenter, load_augmentation, view_seed
from .text import TextAugmentationConfig, augment_report
from .transforms import (GeometricTransform, IntensityTransform, build_transform, register_transform,
                         registered_transforms)

__all__ = ["AugmentationConfig", "Augmenter", "load_augmentation", "view_seed", "TextAugmentationConfig",
           "augment_report", "GeometricTransform", "IntensityTransform", "build_transform", "register_transform",
           "registered_transforms"]
