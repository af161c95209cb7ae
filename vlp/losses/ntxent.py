"""NT-Xent: the normalised temperature-scaled cross-entropy of SimCLR, between two paired sets of features.

SimCLR (Chen et al., "A Simple Framework for Contrastive Learning of Visual Representations", ICML 2020, eq. 1)
takes ``2N`` embeddings made of ``N`` positive pairs. For an anchor ``i`` whose positive is ``j``::

    l(i, j) = -log( exp(sim(z_i, z_j) / tau) / sum_{k != i} exp(sim(z_i, z_k) / tau) )

with cosine similarity ``sim``, and the loss is the mean of ``l`` over all ``2N`` anchors (both members of every
pair). Han et al. (WACV 2022, "Knowledge-Augmented Contrastive Learning for Abnormality Classification and
Localization in Chest X-rays with Radiomics using a Feedback Loop") use it with the image embedding and the
radiomics embedding of the same X-ray as the pair, at temperature ``tau = 0.05``.

``negatives="all"`` is SimCLR's form: an anchor's negatives are the other ``2N - 2`` embeddings of both kinds
(the other images' radiomics *and* the other images). ``negatives="cross"`` keeps only the other kind (an image
against the radiomics of the other images, and vice versa); it is CLIP's symmetric InfoNCE at a fixed
temperature.

With several processes, each process scores its own rows against the rows of every process (gathered with
gradients, as the global image-report loss), so the data-parallel mean of the per-process losses and gradients
equals one process on the whole global batch (when every process holds as many pairs). A process with no pair
still takes part in the gather and returns a zero that keeps its inputs in the graph.
"""
from __future__ import annotations

from typing import Literal

import torch
import torch.nn.functional as F

from .distributed import gather_features

NEGATIVES = ("all", "cross")


def nt_xent_loss(anchors: torch.Tensor, positives: torch.Tensor, temperature: float = 0.05,
                 negatives: Literal["all", "cross"] = "all", gather: bool = True,
                 with_grad: bool = True) -> torch.Tensor:
    """NT-Xent between ``anchors[i]`` and ``positives[i]`` (both ``(N, D)``, L2-normalised here), a scalar.

    temperature: ``tau``; 0.05 as Han et al. (WACV 2022).
    negatives: ``"all"`` (SimCLR: both kinds) or ``"cross"`` (only the other kind); see the module docstring.
    gather / with_grad: take the negatives from every process, with gradients through the gather.
    """
    if anchors.shape != positives.shape or anchors.dim() != 2:
        raise ValueError(f"nt_xent_loss needs two (N, D) tensors of the same shape, got {tuple(anchors.shape)} "
                         f"and {tuple(positives.shape)}")
    if negatives not in NEGATIVES:
        raise ValueError(f"negatives must be one of {NEGATIVES}, got {negatives!r}")
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    a = F.normalize(anchors, dim=-1)
    p = F.normalize(positives, dim=-1)
    all_a, all_p, offset = a, p, 0
    if gather:
        all_a, offset = gather_features(a, with_grad)
        all_p, _ = gather_features(p, with_grad)
    n, total = a.shape[0], all_a.shape[0]
    if n == 0:  # no pair on this process: zero, through the gathers (their backward is a collective too)
        return (all_a.sum() + all_p.sum()) * 0.0
    own = torch.arange(n, device=a.device) + offset  # this process's rows in the gathered order
    if negatives == "cross":
        a_to_p = F.cross_entropy(a @ all_p.T / temperature, own)
        p_to_a = F.cross_entropy(p @ all_a.T / temperature, own)
        return (a_to_p + p_to_a) / 2
    # SimCLR: the 2N local anchors against the 2G gathered embeddings [all_a; all_p], self-similarity removed
    logits = torch.cat([a, p]) @ torch.cat([all_a, all_p]).T / temperature  # (2N, 2G)
    self_cols = torch.cat([own, own + total])
    logits = logits.masked_fill(F.one_hot(self_cols, 2 * total).bool(), float("-inf"))
    targets = torch.cat([own + total, own])  # an anchor's positive is its partner of the other kind
    return F.cross_entropy(logits, targets)
