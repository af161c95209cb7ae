"""Typed outputs of `VLPModel` (Hugging Face `ModelOutput`s: attribute, key and tuple access)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput


@dataclass
class VLPOutput(ModelOutput):
    """Everything one forward pass produces. Fields of heads that are not enabled stay None.

    `loss` is the weighted sum of the named, unweighted terms in `losses`.
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    logits_per_image: torch.Tensor | None = None  # (B_img, B_txt) scaled cosine similarities
    logits_per_text: torch.Tensor | None = None  # (B_txt, B_img)
    image_embeds: torch.Tensor | None = None  # (B, D) L2-normalised
    text_embeds: torch.Tensor | None = None  # (B, D) L2-normalised
    region_grid: tuple[int, int] | None = None  # (h, w) of the image tower's regions
    # LoVT head
    region_embeds: torch.Tensor | None = None  # (B, R, D_local)
    sentence_embeds: torch.Tensor | None = None  # (B, S, D_local)
    sentence_mask: torch.Tensor | None = None  # (B, S) True for real sentences
    region_to_sentence_attention: torch.Tensor | None = None  # (B, R, S)
    sentence_to_region_attention: torch.Tensor | None = None  # (B, S, R)
    # radiomics head
    class_logits: torch.Tensor | None = None  # (B, L) multi-label logits
    cams: torch.Tensor | None = None  # (B, h, w) Grad-CAM maps on the region grid, in [0, 1]
    empty_cams: torch.Tensor | None = None  # (B,) bool: the map is all zero (marks no region)
    radiomics_embeds: torch.Tensor | None = None  # (B, D) L2-normalised


@dataclass
class FeatureCache:
    """Detached embeddings of every micro-batch of one optimizer step (gradient accumulation that keeps all
    micro-batches as negatives, as open_clip's `--accum-freq`): the current micro-batch's rows
    `[start, start + n)` are replaced by its grad-carrying embeddings before the global loss.
    `num_chunks` is the number of micro-batches: each pass sends 1/num_chunks of the temperature's gradient,
    so that the step's sum equals the big batch's."""

    image_embeds: torch.Tensor
    text_embeds: torch.Tensor
    start: int
    num_chunks: int = 1
