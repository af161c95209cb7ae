"""LoVT's local objectives as functions of features (never of the model).

Müller, Kaissis, Zou, Rueckert, "Joint Learning of Localized Representations from Medical Images and
Reports", ECCV 2022 (arXiv:2112.02889). LoVT aligns every local element (an image region or a report
sentence) with its *attended* counterpart, the cross-modal representation that attention assembled for it
from the other modality, contrastively and *within one sample*: the candidates of an element are the
attended representations of the other elements of the same image (or report), never those of other samples.

For one sample with local embeddings ``z_1..z_N``, attended embeddings ``a_1..a_N``, scores
``s_ij = cos(z_i, a_j) / tau`` and positive weights ``p_ij`` (row-normalised over valid ``j``)::

    local -> attended:   l_i = - sum_j p_ij s_ij + log sum_j exp(s_ij)
    attended -> local:   l'_i = - sum_j p_ij s_ji + log sum_j exp(s_ji)

i.e. a cross-entropy whose target is the distribution ``p_i.``. Each sample's loss is ``sum_i w_i l_i`` with
the element weights ``w`` (LoVT: the attention-pooling weights, detached) renormalised over the valid elements;
the batch loss is the mean over samples. As in LoVT's published configuration (the repository's
``scan_local_intra_contrastive.yaml`` and ``report_sent_intra_contrastive.yaml``):

- regions: ``p_ij ∝ 1[d_ij <= 0.5] * exp(-1.0 * d_ij)`` with ``d`` the relative distance of the regions
  (see `relative_distances`): regions nearer than half the image diagonal are *soft positives* of each other,
  so they are pulled together instead of being pushed apart as negatives; the farther ones are negatives;
- sentences: ``p = identity`` (LoVT's threshold 0): each sentence against the other sentences of its report;
- temperature 0.3 for both, no normalisation by the number of negatives.

Where LoVT has no rule (it never meets these cases): samples without any valid element (an empty report) are
left out of the batch mean instead of producing NaN, and `sample_mask` can leave more samples out (the
head uses it to drop the region terms of an image whose report has no sentence to attend to).
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F


def grid_positions(height: int, width: int, device: torch.device | str | None = None,
                   dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Normalised ``(y, x)`` centres in [0, 1] of the cells of a ``height x width`` grid, row-major.

    Row-major matches ``features.flatten(2).transpose(1, 2)`` of a ``(B, C, h, w)`` feature map and the patch
    order of a ViT. Returns ``(height * width, 2)``.
    """
    if height < 1 or width < 1:
        raise ValueError(f"grid_positions needs a grid of at least 1x1 cells, got {height}x{width}")
    ys = (torch.arange(height, device=device, dtype=dtype) + 0.5) / height
    xs = (torch.arange(width, device=device, dtype=dtype) + 0.5) / width
    grid_y, grid_x = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([grid_y.reshape(-1), grid_x.reshape(-1)], dim=-1)


def relative_distances(positions: torch.Tensor) -> torch.Tensor:
    """Pairwise Euclidean distances of normalised positions divided by the unit square's diagonal sqrt(2).

    ``positions``: ``(N, 2)`` or ``(B, N, 2)`` in [0, 1]; returns ``(N, N)`` or ``(B, N, N)`` in [0, 1].
    On a square grid this equals LoVT's relative distance (cell indices divided by the grid's diagonal
    ``sqrt(h^2 + w^2)``): neighbouring cells of a 7x7 grid are ``1 / sqrt(98)`` apart in both.
    """
    diff = positions.unsqueeze(-2) - positions.unsqueeze(-3)
    return diff.pow(2).sum(-1).sqrt() / math.sqrt(2.0)


def spatial_positive_weights(positions: torch.Tensor, threshold: float = 0.5, smooth_lambda: float = 1.0,
                             smooth: bool = True) -> torch.Tensor:
    """LoVT's unnormalised positive weights of region pairs: ``1[d <= threshold] * exp(-smooth_lambda * d)``.

    ``d`` is `relative_distances`. Every region is its own positive (``d = 0``, weight 1). ``smooth=False``
    gives weight 1 to every region within the threshold (LoVT's "no spatial smoothing" ablation), and
    ``threshold=0`` keeps only the region itself (plain InfoNCE). Returns ``(N, N)`` or ``(B, N, N)``.
    """
    distances = relative_distances(positions)
    weights = (distances <= threshold).to(positions.dtype)
    if smooth:
        weights = weights * torch.exp(-smooth_lambda * distances)
    return weights


def intra_sample_contrastive_terms(local: torch.Tensor, attended: torch.Tensor,
                                   positive_weights: torch.Tensor | None = None,
                                   mask: torch.Tensor | None = None,
                                   temperature: float = 0.3) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-element losses of both directions, ``(B, N)`` each, before weighting (see the module docstring).

    ``local``, ``attended``: ``(B, N, D)`` (any scale: they are L2-normalised here). ``positive_weights``:
    ``(N, N)`` or ``(B, N, N)``, row ``i`` the non-negative weights of the candidates ``j`` of anchor ``i``;
    None means the identity. ``mask``: ``(B, N)`` bool, True for valid elements; invalid elements are
    neither positives nor negatives, and their own rows are finite but meaningless (weight them 0).
    Always finite, also for samples without a valid element. Computed in float32 (or float64) even under
    autocast.
    """
    if local.shape != attended.shape or local.dim() != 3:
        raise ValueError(f"local and attended must both be (B, N, D); got {tuple(local.shape)} and "
                         f"{tuple(attended.shape)}")
    with torch.autocast(device_type=local.device.type, enabled=False):  # scores in float32 at least
        dtype = torch.promote_types(local.dtype, torch.float32)
        return _intra_sample_terms(local.to(dtype), attended.to(dtype), positive_weights, mask, temperature)


def _intra_sample_terms(local, attended, positive_weights, mask, temperature):
    batch, num, _ = local.shape
    mask = torch.ones(batch, num, dtype=torch.bool, device=local.device) if mask is None else mask.bool()
    if mask.shape != (batch, num):
        raise ValueError(f"mask must be (B, N) = ({batch}, {num}), got {tuple(mask.shape)}")
    if positive_weights is None:
        positive_weights = torch.eye(num, dtype=local.dtype, device=local.device)
    if positive_weights.shape[-2:] != (num, num):
        raise ValueError(f"positive_weights must be ({num}, {num}) or (B, {num}, {num}); "
                         f"got {tuple(positive_weights.shape)}")
    targets = positive_weights.to(local.dtype).expand(batch, num, num) * mask[:, None, :]
    targets = targets / targets.sum(-1, keepdim=True).clamp_min(1e-12)

    # a sample without valid elements keeps all its columns so that its (ignored) rows stay finite
    columns = mask | ~mask.any(-1, keepdim=True)
    scores = F.normalize(local, dim=-1) @ F.normalize(attended, dim=-1).transpose(1, 2) / temperature
    per_direction = []
    for direction_scores in (scores, scores.transpose(1, 2)):  # [i, j]: anchor i, candidate j
        positive = (targets * direction_scores).sum(-1)
        normaliser = torch.logsumexp(direction_scores.masked_fill(~columns[:, None, :], float("-inf")), dim=-1)
        per_direction.append(normaliser - positive)
    return per_direction[0], per_direction[1]


def weighted_sample_mean(per_element: torch.Tensor, mask: torch.Tensor | None = None,
                         weights: torch.Tensor | None = None,
                         sample_mask: torch.Tensor | None = None) -> torch.Tensor:
    """``mean_b sum_i w_bi l_bi`` with ``w`` renormalised over each sample's valid elements.

    ``per_element``, ``mask``, ``weights``: ``(B, N)``; ``sample_mask``: ``(B,)``. Samples whose valid weights
    sum to zero, or that ``sample_mask`` drops, are left out of the mean; with none left the result is a zero
    that still carries the graph (backward gives zero gradients, never NaN).
    """
    if weights is None:
        weights = torch.ones_like(per_element)
    weights = weights.to(per_element.dtype)
    if mask is not None:
        weights = weights * mask
    totals = weights.sum(-1)
    keep = totals > 0
    if sample_mask is not None:
        keep = keep & sample_mask.bool()
    weights = weights / totals.clamp_min(1e-12).unsqueeze(-1)
    per_sample = (weights * per_element).sum(-1) * keep
    return per_sample.sum() / keep.sum().clamp_min(1)


def local_intra_sample_contrastive_loss(local: torch.Tensor, attended: torch.Tensor, *,
                                        mask: torch.Tensor | None = None,
                                        weights: torch.Tensor | None = None,
                                        positive_weights: torch.Tensor | None = None,
                                        temperature: float = 0.3,
                                        sample_mask: torch.Tensor | None = None
                                        ) -> tuple[torch.Tensor, torch.Tensor]:
    """LoVT's local intra-sample contrastive loss: ``(local -> attended, attended -> local)`` scalars.

    LoVT's ``LocalIntraSampleContrastiveLoss`` (names ``l2att`` / ``att2l``) with
    ``normalize_by_num_negatives=False``. See `intra_sample_contrastive_terms` for the arguments and
    `weighted_sample_mean` for the reduction. Pass detached ``weights`` for LoVT's stop-gradient weighting.
    """
    local_to_attended, attended_to_local = intra_sample_contrastive_terms(
        local, attended, positive_weights=positive_weights, mask=mask, temperature=temperature)
    return (weighted_sample_mean(local_to_attended, mask, weights, sample_mask),
            weighted_sample_mean(attended_to_local, mask, weights, sample_mask))
