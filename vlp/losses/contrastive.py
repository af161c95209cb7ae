"""Global image-report objectives as functions of normalised embeddings (never of the model).

With several processes, each process scores its own rows against the columns of the whole global batch
(open_clip's `local_loss=True, gather_with_grad=True`): the data-parallel average of the per-process losses
and of their gradients then equals the single-process loss and gradients on the same global batch.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from .distributed import gather_features


def clip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
              gather: bool = True, with_grad: bool = True) -> dict[str, torch.Tensor]:
    """Symmetric InfoNCE (CLIP, Radford et al. 2021): softmax cross-entropy over the batch in both directions.

    `logit_scale` is the exponentiated inverse temperature. Returns the two directions as named terms;
    CLIP's loss is their mean.
    """
    all_images, all_texts, offset = image_embeds, text_embeds, 0
    if gather:
        all_images, offset = gather_features(image_embeds, with_grad)
        all_texts, _ = gather_features(text_embeds, with_grad)
    labels = torch.arange(image_embeds.shape[0], device=image_embeds.device) + offset
    logits_per_image = logit_scale * image_embeds @ all_texts.T
    logits_per_text = logit_scale * text_embeds @ all_images.T
    return {
        "global_image_to_text": F.cross_entropy(logits_per_image, labels),
        "global_text_to_image": F.cross_entropy(logits_per_text, labels),
    }


def siglip_loss(image_embeds: torch.Tensor, text_embeds: torch.Tensor, logit_scale: torch.Tensor,
                logit_bias: torch.Tensor, gather: bool = True, with_grad: bool = True) -> dict[str, torch.Tensor]:
    """Pairwise sigmoid loss (SigLIP, Zhai et al., ICCV 2023): every image-text pair is a binary problem.

    loss = -1/|B| * sum_ij log sigmoid(z_ij * (t * x_i . y_j + b)), z_ij = 1 for matching pairs, else -1.
    Local images are scored against the texts of every process.
    """
    all_texts, offset = text_embeds, 0
    if gather:
        all_texts, offset = gather_features(text_embeds, with_grad)
    logits = logit_scale * image_embeds @ all_texts.T + logit_bias
    targets = -torch.ones_like(logits)
    rows = torch.arange(image_embeds.shape[0], device=logits.device)
    targets[rows, rows + offset] = 1.0
    return {"global_sigmoid": -F.logsigmoid(targets * logits).sum() / image_embeds.shape[0]}
