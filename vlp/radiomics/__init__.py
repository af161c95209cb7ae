"""Radiomic features of 2D regions: a batched torch engine and the PyRadiomics reference behind one API.

    from vlp.radiomics import RadiomicsExtractor
    feats = RadiomicsExtractor("torch")(images, masks)   # (B, H, W) x2 -> (B, F)

See docs/radiomics_engine.md for the settings, the parity with PyRadiomics, the CLI and the speed.
"""
from .extractor import (
    ALL_FEATURE_CLASSES,
    RadiomicsBackend,
    RadiomicsExtractor,
    RadiomicsSettings,
    box_mask,
    region_problem,
)

__all__ = [
    "ALL_FEATURE_CLASSES",
    "RadiomicsBackend",
    "RadiomicsExtractor",
    "RadiomicsSettings",
    "box_mask",
    "region_problem",
]
