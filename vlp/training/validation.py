"""Validation during training: image->text and text->image retrieval on held-out image-report pairs, and zero-shot
AUROC per label when the rows have labels. Runs the model over a dataloader (above the model, beside the recipe);
the metrics themselves are functions of arrays in `vlp.evaluation`."""
from __future__ import annotations

import math

import numpy as np
import torch

from ..evaluation.classification import per_label_auroc
from ..evaluation.retrieval import retrieval_recalls
from ..zeroshot import ZeroShotClassifier

__all__ = ["validate"]


@torch.no_grad()
def validate(accelerator, model, processor, loader, label_names: list[str] | None) -> dict[str, float]:
    """Metrics named `val/...` over every row of `loader` (sharded over the processes and gathered). The model is in
    eval mode while this runs and goes back to its mode after."""
    was_training = model.training
    model.eval()
    try:
        classifier = ZeroShotClassifier(model, processor, label_names) if label_names else None
        images, texts, scores, labels = [], [], [], []
        for batch in loader:
            if "pixel_values" not in batch:  # every row of this batch was bad
                continue
            with accelerator.autocast():
                image = model.encode_images(batch["pixel_values"])
                rows = {"image": image.embeds.float()}
                if "input_ids" in batch:
                    rows["text"] = model.encode_texts(batch["input_ids"], batch["attention_mask"],
                                                      batch.get("sentence_ids")).embeds.float()
                if classifier is not None and "labels" in batch:
                    rows["scores"] = classifier.scores(image).to(accelerator.device).float()
                    rows["labels"] = batch["labels"].float()
            rows = accelerator.gather_for_metrics(rows)
            images.append(rows["image"].cpu())
            if "text" in rows:
                texts.append(rows["text"].cpu())
            if "scores" in rows:
                scores.append(rows["scores"].cpu())
                labels.append(rows["labels"].cpu())
    finally:
        model.train(was_training)
    metrics: dict[str, float] = {"val/rows": float(sum(len(x) for x in images))}
    if texts:
        metrics.update({f"val/{k}": v for k, v in retrieval_recalls(torch.cat(images).numpy(),
                                                                     torch.cat(texts).numpy()).items()})
    if scores:
        aurocs = per_label_auroc(torch.cat(scores).numpy(), torch.cat(labels).numpy(), label_names)
        metrics.update({f"val/auroc/{name}": value for name, value in aurocs.items()})
        defined = [v for v in aurocs.values() if not math.isnan(v)]
        metrics["val/mean_auroc"] = float(np.mean(defined)) if defined else math.nan
    return metrics
