"""Zero-shot classification of findings from text prompts.

Two modes:
- `pos_neg` (CheXzero, Tiu et al., Nat. Biomed. Eng. 2022): each label is scored on its own from a positive and a
  negative prompt, p = exp(s_pos) / (exp(s_pos) + exp(s_neg)) with s the scaled image-prompt similarity. Right for
  multi-label chest X-rays, where findings co-occur and "none of them" is common.
- `softmax` (CLIP / open_clip): prompts from several templates are averaged per class, and the classes compete
  in one softmax. Right when exactly one class applies.
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

DEFAULT_POSITIVE_TEMPLATES = ("{}.", "There is {}.", "Findings consistent with {}.")
DEFAULT_NEGATIVE_TEMPLATES = ("No {}.", "There is no {}.", "No evidence of {}.")
DEFAULT_SOFTMAX_TEMPLATES = ("{}.", "There is {}.", "Findings consistent with {}.", "Chest X-ray showing {}.")


class ZeroShotClassifier:
    """`ZeroShotClassifier(model, processor, labels, mode)(images) -> (N, L)` probabilities.

    templates: for `pos_neg` a pair `(positive_templates, negative_templates)`; for `softmax` a list of
    templates; each template holds one `{}` for the label's name. Label prompts are encoded once.
    """

    def __init__(self, model, processor, labels: Sequence[str], mode: Literal["pos_neg", "softmax"] = "pos_neg",
                 templates=None, batch_size: int = 32):
        if mode not in ("pos_neg", "softmax"):
            raise ValueError(f"mode must be 'pos_neg' or 'softmax', got {mode!r}")
        if not labels:
            raise ValueError("labels must name at least one finding")
        self.model, self.processor, self.labels = model, processor, list(labels)
        self.mode, self.batch_size = mode, batch_size
        if mode == "pos_neg":
            positive, negative = templates or (DEFAULT_POSITIVE_TEMPLATES, DEFAULT_NEGATIVE_TEMPLATES)
            self.positive = self._class_embeddings(positive)
            self.negative = self._class_embeddings(negative)
        else:
            self.class_embeds = self._class_embeddings(templates or DEFAULT_SOFTMAX_TEMPLATES)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _class_embeddings(self, templates: Sequence[str]) -> torch.Tensor:
        """(L, D): each label's template embeddings averaged and re-normalised (open_clip's prompt ensembling)."""
        if isinstance(templates, str):
            templates = [templates]
        prompts = [t.format(label) for label in self.labels for t in templates]
        batch = self.processor(text=prompts, return_tensors="pt", padding=True).to(self.device)
        embeds = self.model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
        embeds = embeds.view(len(self.labels), len(templates), -1).mean(1)
        return F.normalize(embeds, dim=-1)

    @torch.no_grad()
    def image_embeddings(self, images) -> torch.Tensor:
        out = []
        for start in range(0, len(images), self.batch_size):
            batch = self.processor(images=list(images[start:start + self.batch_size]), return_tensors="pt")
            out.append(self.model.get_image_features(pixel_values=batch["pixel_values"].to(self.device)))
        return torch.cat(out)

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        was_training = self.model.training
        self.model.eval()
        try:
            image_embeds = self.image_embeddings(images)
        finally:
            self.model.train(was_training)
        return self.scores_from_embeddings(image_embeds)

    def scores_from_embeddings(self, image_embeds: torch.Tensor) -> torch.Tensor:
        scale = self.model.scale().detach()
        if self.mode == "pos_neg":
            pos = scale * image_embeds @ self.positive.T
            neg = scale * image_embeds @ self.negative.T
            return torch.sigmoid(pos - neg).cpu()  # exp(pos) / (exp(pos) + exp(neg))
        return (scale * image_embeds @ self.class_embeds.T).softmax(dim=-1).cpu()
