"""Typed outputs of `VLPModel` (Hugging Face `ModelOutput`s: attribute, key and tuple access) and the encodings
the towers produce."""
from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers.utils import ModelOutput

from .towers import ImageFeatures, TextFeatures


@dataclass
class ImageEncoding:
    """What the image side produces: the global embedding and the tower's features."""

    embeds: torch.Tensor  # (B, D) L2-normalised global embeddings
    features: ImageFeatures  # pooled, regions (B, R, C), grid (h, w)


@dataclass
class TextEncoding:
    """What the text side produces: the global embedding, the tower's features and the token layout."""

    embeds: torch.Tensor  # (B, D) L2-normalised global embeddings
    features: TextFeatures  # pooled, tokens (B, T, H)
    attention_mask: torch.Tensor  # (B, T)
    sentence_ids: torch.Tensor | None = None  # (B, T) sentence of each token, -1 outside sentences and padding


@dataclass
class VLPOutput(ModelOutput):
    """Everything one forward pass produces.

    `losses` holds every named, unweighted term (global terms by name, a head's as `<head>/<term>`); `loss` is
    their sum weighted with `VLPConfig.loss_weights()`. `heads` maps each head that ran to its own output;
    the fields below `heads` repeat the outputs of the built-in heads for convenience (None when the head is off).
    """

    loss: torch.Tensor | None = None
    losses: dict[str, torch.Tensor] | None = None
    logits_per_image: torch.Tensor | None = None  # (B_img, B_txt) scaled cosine similarities
    logits_per_text: torch.Tensor | None = None  # (B_txt, B_img)
    image_embeds: torch.Tensor | None = None  # (B, D) L2-normalised
    text_embeds: torch.Tensor | None = None  # (B, D) L2-normalised
    region_grid: tuple[int, int] | None = None  # (h, w) of the image tower's regions
    heads: dict[str, ModelOutput] | None = None  # head name -> its output (`HeadOutput` subclasses)
    logs: dict[str, torch.Tensor] | None = None  # detached values to log, `<head>/<name>`
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
