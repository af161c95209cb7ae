"""Report augmentation on sentences: LoVT's sentence shuffling by random swaps and sentence sampling.

LoVT (Müller et al., ECCV 2022; ``src/models/text/report_transforms.py``, ``ReportAugmentationConfig``):
- ``random_swaps``: the number of swaps is geometric, P(k) = (1 - q) q^k with q = `swap_prob` (0.6), and each swap
  exchanges two sentences drawn uniformly (LoVT's published run uses it);
- ``random_sentence``: keep one sentence drawn uniformly; ``random_crop``: keep a contiguous run whose length is a
  fraction in `crop_range` (0.2-1.0) of the report's sentences (LoVT's options; its published run uses neither).
The kept sentences are joined by single spaces, so the processor finds the same sentences again.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch

from ..configuration import SubConfig
from ..data.sentences import split_sentences

__all__ = ["TextAugmentationConfig", "augment_report"]


@dataclass
class TextAugmentationConfig(SubConfig):
    sentence_shuffling: Literal["none", "random_swaps"] = "none"
    swap_prob: float = 0.6  # LoVT's swap_prob
    sentence_sampling: Literal["none", "random_sentence", "random_crop"] = "none"
    crop_range: tuple[float, float] = (0.2, 1.0)  # LoVT's sentence_crop_range

    def __post_init__(self):
        if self.sentence_shuffling not in ("none", "random_swaps"):
            raise ValueError(f"text.sentence_shuffling must be 'none' or 'random_swaps', got {self.sentence_shuffling!r}")
        if self.sentence_sampling not in ("none", "random_sentence", "random_crop"):
            raise ValueError("text.sentence_sampling must be 'none', 'random_sentence' or 'random_crop', got "
                             f"{self.sentence_sampling!r}")
        if not 0 <= self.swap_prob < 1:
            raise ValueError(f"text.swap_prob must be in [0, 1), got {self.swap_prob}")
        self.crop_range = tuple(float(v) for v in self.crop_range)
        if len(self.crop_range) != 2 or not 0 < self.crop_range[0] <= self.crop_range[1] <= 1:
            raise ValueError(f"text.crop_range must be [min, max] fractions in (0, 1], got {list(self.crop_range)}")

    @property
    def active(self) -> bool:
        return self.sentence_shuffling != "none" or self.sentence_sampling != "none"


def _geometric(q: float, generator: torch.Generator) -> int:
    """k >= 0 with P(k) = (1 - q) q^k (torch's Geometric(probs=1 - q)), by inversion."""
    if q == 0:
        return 0
    u = float(torch.rand((), generator=generator, dtype=torch.float64))
    return int(math.floor(math.log1p(-u) / math.log(q)))


def augment_report(text: str, config: TextAugmentationConfig, generator: torch.Generator) -> str:
    """`text` with its sentences shuffled and/or sampled as `config` says (unchanged when it says nothing)."""
    if not config.active:
        return text
    sentences = split_sentences(text)
    if len(sentences) < 1:
        return text
    order = list(range(len(sentences)))
    if config.sentence_shuffling == "random_swaps":
        for _ in range(_geometric(config.swap_prob, generator)):
            i, j = torch.randint(len(order), (2,), generator=generator).tolist()
            order[i], order[j] = order[j], order[i]
    if config.sentence_sampling == "random_sentence":
        order = [order[int(torch.randint(len(order), (), generator=generator))]]
    elif config.sentence_sampling == "random_crop":
        low, high = config.crop_range
        fraction = low + (high - low) * float(torch.rand((), generator=generator, dtype=torch.float64))
        length = max(1, round(fraction * len(order)))
        start = int(torch.randint(len(order) - length + 1, (), generator=generator))
        order = order[start:start + length]
    return " ".join(sentences[i] for i in order)
