"""Turning dataset items into model batches, setting aside the rows that could not be read."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import numpy as np
import torch

from ..augmentation import Augmenter
from ..configuration import HeadInput
from ..processing import VLPProcessor


@dataclass
class VLPCollator:
    """Callable for `DataLoader(collate_fn=...)`.

    Items are dicts with `image` (float (H, W) in [0, 1]), `text` (str or None), optional `labels`; an item with
    a `skip` key is a bad row: it is left out of the batch and reported in `batch["skipped"]` as
    `(index, path, reason)`, so the training loop can log and count it. `inputs` are the batch inputs the model's
    heads require (`VLPModel.batch_inputs()`): the processor makes sentence ids and raw images when they are named.
    `augmenter` (`vlp.augmentation.Augmenter`) augments every good item first, seeded by the epoch set with
    `set_epoch` and the item's row index; its extra views become `views` (B, k - 1, C, S, S).
    """

    processor: VLPProcessor
    inputs: frozenset[HeadInput] = frozenset()
    augmenter: Augmenter | None = None
    epoch: int = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def __call__(self, items: list[dict]) -> dict:
        good = [item for item in items if "skip" not in item]
        skipped = [(item.get("index"), item.get("path"), item["skip"]) for item in items if "skip" in item]
        batch: dict = {"skipped": skipped, "indices": [item.get("index") for item in good]}
        if not good:
            return batch
        if self.augmenter is not None:
            good = [self.augmenter(item, self.epoch) for item in good]
        texts = [item.get("text") for item in good]
        kwargs = {}
        if all(t is not None for t in texts):
            kwargs["text"] = texts
            kwargs["return_sentence_ids"] = HeadInput.SENTENCE_IDS in self.inputs
        batch.update(self.processor(images=[item["image"] for item in good], return_tensors="pt", padding=True,
                                    return_raw_images=HeadInput.RAW_IMAGES in self.inputs, **kwargs))
        if "views" in good[0]:
            extra = [view for item in good for view in item["views"]]
            pixels = self.processor(images=extra, return_tensors="pt")["pixel_values"]
            batch["views"] = pixels.view(len(good), -1, *pixels.shape[1:])
        if all(item.get("labels") is not None for item in good):
            batch["labels"] = torch.as_tensor(np.stack([item["labels"] for item in good]), dtype=torch.float32)
        return batch


@dataclass
class SkipCounter:
    """Bad rows met so far in an epoch, by reason; each row counted once even if read again."""

    seen: dict = field(default_factory=dict)

    def add(self, skipped: list[tuple]) -> list[tuple]:
        """Record rows; returns the ones not seen before (to log each bad row once)."""
        new = [s for s in skipped if s[0] not in self.seen]
        for index, path, reason in new:
            self.seen[index] = (path, reason)
        return new

    def counts(self) -> Counter:
        return Counter(reason.split(":")[0] for _, reason in self.seen.values())

    def summary(self) -> str:
        if not self.seen:
            return "no rows skipped"
        parts = ", ".join(f"{n} {reason}" for reason, n in sorted(self.counts().items()))
        return f"{len(self.seen)} rows skipped ({parts})"
