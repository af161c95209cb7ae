"""Zero-shot classification of findings from text prompts.

Two modes:
- `pos_neg` (CheXzero, Tiu et al., Nat. Biomed. Eng. 2022): each label is scored on its own from a positive and a
  negative prompt, p = exp(s_pos) / (exp(s_pos) + exp(s_neg)) with s the scaled image-prompt similarity. Right for
  multi-label chest X-rays, where findings co-occur and "none of them" is common.
- `softmax` (CLIP / open_clip): prompts from several templates are averaged per class, and the classes compete
  in one softmax. Right when exactly one class applies.

The image-prompt score is the model's `pairwise_logits(score_from=...)`: "global" (the scaled cosine of the global
embeddings; a label's templates are averaged as normalised embeddings, open_clip's prompt ensembling) or a score a
head supplies (`model.score_modes()`; its templates are averaged as scores).
"""
from __future__ import annotations

from typing import Literal, Sequence

import torch
import torch.nn.functional as F

from .modeling.model import GLOBAL_SCORE
from .modeling.outputs import TextEncoding

DEFAULT_POSITIVE_TEMPLATES = ("{}.", "There is {}.", "Findings consistent with {}.")
DEFAULT_NEGATIVE_TEMPLATES = ("No {}.", "There is no {}.", "No evidence of {}.")
DEFAULT_SOFTMAX_TEMPLATES = ("{}.", "There is {}.", "Findings consistent with {}.", "Chest X-ray showing {}.")


class ZeroShotClassifier:
    """`ZeroShotClassifier(model, processor, labels, mode)(images) -> (N, L)` probabilities.

    templates: for `pos_neg` a pair `(positive_templates, negative_templates)`; for `softmax` a list of
    templates; each template holds one `{}` for the label's name. Label prompts are encoded once.
    score_from: the image-prompt score, one of `model.score_modes()` ("global" by default).
    """

    def __init__(self, model, processor, labels: Sequence[str], mode: Literal["pos_neg", "softmax"] = "pos_neg",
                 templates=None, batch_size: int = 32, score_from: str = GLOBAL_SCORE):
        if mode not in ("pos_neg", "softmax"):
            raise ValueError(f"mode must be 'pos_neg' or 'softmax', got {mode!r}")
        if not labels:
            raise ValueError("labels must name at least one finding")
        if score_from not in model.score_modes():
            raise ValueError(f"score_from={score_from!r} is not offered by this model; it offers: "
                             f"{', '.join(model.score_modes())}")
        self.model, self.processor, self.labels = model, processor, list(labels)
        self.mode, self.batch_size, self.score_from = mode, batch_size, score_from
        if mode == "pos_neg":
            positive, negative = templates or (DEFAULT_POSITIVE_TEMPLATES, DEFAULT_NEGATIVE_TEMPLATES)
            self.prompt_sets = [self._encode_prompts(positive), self._encode_prompts(negative)]
        else:
            self.prompt_sets = [self._encode_prompts(templates or DEFAULT_SOFTMAX_TEMPLATES)]

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @torch.no_grad()
    def _encode_prompts(self, templates: Sequence[str]) -> tuple[TextEncoding, int]:
        """Every label's prompts, label-major, and the number of templates. For the global score the templates
        are already ensembled: one normalised mean embedding per label."""
        if isinstance(templates, str):
            templates = [templates]
        prompts = [t.format(label) for label in self.labels for t in templates]
        with _eval(self.model):
            batch = self.processor(text=prompts, return_tensors="pt", padding=True).to(self.device)
            text = self.model.encode_texts(batch["input_ids"], batch["attention_mask"], batch.get("sentence_ids"))
        if self.score_from == GLOBAL_SCORE:
            embeds = F.normalize(text.embeds.view(len(self.labels), len(templates), -1).mean(1), dim=-1)
            return TextEncoding(embeds, None, None), 1
        return text, len(templates)

    @torch.no_grad()
    def image_embeddings(self, images) -> torch.Tensor:
        """(N, D) global image embeddings, in batches, in eval mode."""
        with _eval(self.model):
            return torch.cat([self.model.get_image_features(pixel_values=pixel_values)
                              for pixel_values in self._pixel_batches(images)])

    def _pixel_batches(self, images):
        for start in range(0, len(images), self.batch_size):
            batch = self.processor(images=list(images[start:start + self.batch_size]), return_tensors="pt")
            yield batch["pixel_values"].to(self.device)

    @torch.no_grad()
    def __call__(self, images) -> torch.Tensor:
        with _eval(self.model):
            return torch.cat([self.scores(self.model.encode_images(pixel_values))
                              for pixel_values in self._pixel_batches(images)])

    @torch.no_grad()
    def scores(self, image) -> torch.Tensor:
        """(n, L) probabilities for images already encoded (`model.encode_images`, an `ImageEncoding`)."""
        logits = []
        for text, num_templates in self.prompt_sets:
            pairwise = self.model.pairwise_logits(image, text, self.score_from)  # (n, L * templates)
            logits.append(pairwise.view(pairwise.shape[0], len(self.labels), num_templates).mean(-1))
        if self.mode == "pos_neg":
            return torch.sigmoid(logits[0] - logits[1]).cpu()  # exp(pos) / (exp(pos) + exp(neg))
        return logits[0].softmax(dim=-1).cpu()


class _eval:
    """Put a model in eval mode for a block and restore its mode after."""

    def __init__(self, model):
        self.model = model

    def __enter__(self):
        self.was_training = self.model.training
        self.model.eval()

    def __exit__(self, *exc):
        self.model.train(self.was_training)
