"""LoVT local-alignment head: image regions <-> report sentences (Müller et al., ECCV 2022, arXiv:2112.02889).

Follows the published LoVT configuration (repository philip-mueller/lovt, ``configs/experiment/LoVT_100.yaml``
with the ``BiModalModelConfig`` defaults), from the image tower's region features and the text tower's token
features onwards:

1. sentences: each sentence is the max over its tokens' last hidden states (``sentence_aggregator: max``);
2. attention pooling of the regions and of the sentences (8-head attention whose query is the mean element,
   ``avgpool_attention``); its weights, detached, weight the elements in the local losses
   (``l_weights: from_aggregation``, ``l_weights_stop_grad: true``); its pooled outputs are LoVT's global
   features, returned as ``image_pooled`` / ``report_pooled`` for a caller that wants LoVT's global branch;
3. local projections: Linear -> BatchNorm -> ReLU -> Linear, 2048 hidden, 512 out (``d_z``, ``d_hidden``);
4. symmetric cross-attention on the projected elements: one key, one value and one output projection shared by
   both modalities, scaled dot-product scores, softmax over the other modality, BatchNorm on the output:
   the sentences attended onto each region and the regions attended onto each sentence;
5. four within-sample contrastive terms (`vlp.losses.local`), temperature 0.3, weight 0.375 each.

Choices where LoVT is silent are listed in ``docs/lovt.md`` (masked BatchNorm over valid elements only,
empty reports, region positions given as normalised centres).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlp.configuration import HeadInput, SubConfig
from vlp.losses.local import grid_positions, local_intra_sample_contrastive_loss, spatial_positive_weights
from vlp.registry import register_head

from ..outputs import TextEncoding
from ..towers import ImageFeatures, TextFeatures
from .base import HeadInputs, HeadOutput, TowerDims, VLPHead

__all__ = ["LOSS_NAMES", "LoVTConfig", "LoVTHead", "LoVTOutput", "grid_positions", "pool_sentences",
           "single_sentence_ids"]

# The four unweighted local terms. LoVT's names: local_a_l2att, local_a_att2l, local_b_l2att, local_b_att2l
# (a = scan, b = report, l2att = local -> attended, att2l = attended -> local).
LOSS_NAMES = (
    "local_region_to_attended",  # each region vs the sentences-attended-onto-regions of its image
    "local_attended_to_region",  # each sentences-attended-onto-a-region vs the regions of its image
    "local_sentence_to_attended",  # each sentence vs the regions-attended-onto-sentences of its report
    "local_attended_to_sentence",  # each regions-attended-onto-a-sentence vs the sentences of its report
)
_LOVT_LOCAL_WEIGHT = 0.375  # LoVT_100.yaml: loss_weights.local_{a,b}_{l2att,att2l}


@dataclass
class LoVTConfig(SubConfig):
    """LoVT head settings; defaults are LoVT's published ones (repository configs named in each comment).

    The loss weights live in `VLPConfig.loss.weights` as ``lovt/<term>`` (default 0.375 each, LoVT_100.yaml).
    """

    proj_dim: int = 512  # BiModalModelConfig.d_z
    proj_hidden_dim: int = 2048  # BiModalModelConfig.d_hidden
    norm: Literal["batch", "layer", "none"] = "batch"  # projection_norm and attention_norm
    projection_dropout: float = 0.0  # projection_dropout_prob
    attention_temperature: float = 1.0  # attention_temperature (scores are also divided by sqrt(proj_dim))
    attention_dropout: float = 0.0  # attention_prob_dropout_prob (probabilities renormalised after dropout)
    sentence_pooling: Literal["max", "mean"] = "max"  # report encoder sentence_aggregator
    pooling_heads: int = 8  # heads of the attention pooling (avgpool_attention: nn.MultiheadAttention, 8)
    temperature: float = 0.3  # similarity_temperature of both local objectives
    spatial_threshold: float = 0.5  # regions: distance_threshold, threshold_type relative
    spatial_lambda: float = 1.0  # regions: smooth_lambda
    spatial_smooth: bool = True  # regions: smooth_weights (False = LoVT's "no_spatial" ablation)
    element_weighting: Literal["attention", "uniform"] = "attention"  # l_weights from_aggregation / None
    # global_from_local: the model's global image/report embeddings are the projected attention-pooled regions
    # and sentences, so the global loss trains the pooling whose weights weight the local terms
    global_from_pooling: bool = True

    def __post_init__(self):
        if self.norm not in ("batch", "layer", "none"):
            raise ValueError(f"LoVTConfig.norm must be 'batch', 'layer' or 'none', got {self.norm!r}")
        if self.sentence_pooling not in ("max", "mean"):
            raise ValueError(f"LoVTConfig.sentence_pooling must be 'max' or 'mean', got {self.sentence_pooling!r}")
        if self.element_weighting not in ("attention", "uniform"):
            raise ValueError("LoVTConfig.element_weighting must be 'attention' or 'uniform', "
                             f"got {self.element_weighting!r}")
        if self.temperature <= 0 or self.attention_temperature <= 0:
            raise ValueError("LoVTConfig.temperature and attention_temperature must be > 0, got "
                             f"{self.temperature} and {self.attention_temperature}")
        if self.spatial_threshold < 0:
            raise ValueError(f"LoVTConfig.spatial_threshold must be >= 0, got {self.spatial_threshold}")


@dataclass
class LoVTOutput(HeadOutput):
    """What the LoVT head returns. ``losses`` holds the named, unweighted terms (`LOSS_NAMES`)."""

    region_embeds: torch.Tensor | None = None  # (B, R, D) projected regions (not L2-normalised; zero if invalid)
    sentence_embeds: torch.Tensor | None = None  # (B, S, D) projected sentences (zero for padding)
    sentence_mask: torch.Tensor | None = None  # (B, S) bool, True for real sentences
    region_attended_embeds: torch.Tensor | None = None  # (B, R, D) the sentences attended onto each region
    sentence_attended_embeds: torch.Tensor | None = None  # (B, S, D) the regions attended onto each sentence
    region_to_sentence_attention: torch.Tensor | None = None  # (B, R, S) rows sum to 1 over real sentences
    sentence_to_region_attention: torch.Tensor | None = None  # (B, S, R) rows sum to 1 over valid regions
    region_weights: torch.Tensor | None = None  # (B, R) attention-pooling weights, detached, sum 1 per sample
    sentence_weights: torch.Tensor | None = None  # (B, S) idem over real sentences (all 0 for an empty report)
    image_pooled: torch.Tensor | None = None  # (B, region_dim) attention-pooled regions (LoVT's global image)
    report_pooled: torch.Tensor | None = None  # (B, token_dim) attention-pooled sentences (0 for an empty report)


def pool_sentences(token_features: torch.Tensor, sentence_ids: torch.Tensor,
                   mode: Literal["max", "mean"] = "max") -> tuple[torch.Tensor, torch.Tensor]:
    """Pool token features into sentence features by ``sentence_ids``.

    ``token_features``: ``(B, T, D)``; ``sentence_ids``: ``(B, T)`` long, the sentence index of each token and -1
    for special and padding tokens. Returns ``(B, S, D)`` features (zero for padding sentences) and the ``(B, S)``
    bool mask of sentences that have at least one token, with ``S = max(1, max id + 1)``.
    """
    if sentence_ids.shape != token_features.shape[:2]:
        raise ValueError(f"sentence_ids must be (B, T) = {tuple(token_features.shape[:2])}, "
                         f"got {tuple(sentence_ids.shape)}")
    batch, _, dim = token_features.shape
    sentence_ids = sentence_ids.long()
    num_sentences = max(1, int(sentence_ids.max().item()) + 1) if sentence_ids.numel() else 1
    valid = sentence_ids >= 0
    rows = torch.arange(batch, device=sentence_ids.device)[:, None].expand_as(sentence_ids)
    flat_index = (rows * num_sentences + sentence_ids)[valid]  # (n_valid,)
    values = token_features[valid]  # (n_valid, D)
    counts = torch.zeros(batch * num_sentences, device=token_features.device)  # float32: exact token counts
    counts = counts.index_add(0, flat_index, torch.ones_like(flat_index, dtype=counts.dtype))
    pooled = token_features.new_zeros(batch * num_sentences, dim)
    index = flat_index[:, None].expand(-1, dim)
    if mode == "max":
        pooled = pooled.scatter_reduce(0, index, values, reduce="amax", include_self=False)
    elif mode == "mean":
        pooled = (pooled.index_add(0, flat_index, values) / counts.clamp_min(1)[:, None]).to(values.dtype)
    else:
        raise ValueError(f"sentence pooling must be 'max' or 'mean', got {mode!r}")
    return pooled.view(batch, num_sentences, dim), (counts > 0).view(batch, num_sentences)


class _MaskedNorm(nn.Module):
    """BatchNorm1d / LayerNorm / identity over the last dim of ``(B, N, D)``, computed on valid elements only.

    Invalid elements (padding sentences, images without a report to attend to) are set to zero and never
    enter the batch statistics. With fewer than two valid elements in training, BatchNorm normalises with
    its running statistics (a batch of one has no variance).
    """

    def __init__(self, kind: str, dim: int):
        super().__init__()
        self.kind = kind
        self.norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(kind, lambda _: nn.Identity())(dim)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        rows = x[mask]
        if isinstance(self.norm, nn.BatchNorm1d) and self.training and rows.shape[0] < 2:
            normed = F.batch_norm(rows, self.norm.running_mean, self.norm.running_var, self.norm.weight,
                                  self.norm.bias, training=False, eps=self.norm.eps)
        else:
            normed = self.norm(rows)
        out = normed.new_zeros(x.shape)  # normed's dtype: BatchNorm may run in float32 under autocast
        out[mask] = normed
        return out


class _LocalProjection(nn.Module):
    """LoVT's local projection (its ``SequenceMLP``): Linear -> norm -> ReLU -> dropout -> Linear."""

    def __init__(self, in_dim: int, hidden_dim: int, out_dim: int, norm: str, dropout: float):
        super().__init__()
        self.fc1 = nn.Linear(in_dim, hidden_dim)
        self.norm = _MaskedNorm(norm, hidden_dim)
        self.dropout = nn.Dropout(dropout)
        self.fc2 = nn.Linear(hidden_dim, out_dim)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LoVT's init: Kaiming-normal (fan-out) weights, zero biases."""
        nn.init.kaiming_normal_(self.fc1.weight, mode="fan_out", nonlinearity="relu")
        nn.init.kaiming_normal_(self.fc2.weight, mode="fan_out", nonlinearity="linear")
        nn.init.zeros_(self.fc1.bias)
        nn.init.zeros_(self.fc2.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        hidden = self.dropout(F.relu(self.norm(self.fc1(x), mask)))
        return self.fc2(hidden) * mask.unsqueeze(-1)


def single_sentence_ids(attention_mask: torch.Tensor) -> torch.Tensor:
    """Sentence ids that make each text one sentence: 0 for its tokens, -1 for padding and for the first and last
    token ([CLS]/[SEP]). For short texts given without sentence ids, such as zero-shot prompts."""
    ids = torch.zeros_like(attention_mask, dtype=torch.long).masked_fill(attention_mask == 0, -1)
    lengths = attention_mask.long().sum(-1)
    rows = torch.arange(ids.shape[0], device=ids.device)
    ids[:, 0] = -1
    ids[rows, (lengths - 1).clamp_min(0)] = -1
    return ids


class _AttentionPool(nn.Module):
    """LoVT's ``avgpool_attention``: multi-head attention whose single query is the mean of the valid elements.

    Returns the pooled ``(B, D)`` vector and the ``(B, N)`` attention weights averaged over heads. A sample with
    no valid element gets zero weights and a zero pooled vector.
    """

    def __init__(self, dim: int, heads: int, what: str):
        super().__init__()
        if dim % heads:
            raise ValueError(f"LoVTConfig.pooling_heads={heads} must divide the {what} feature size {dim}")
        self.attention = nn.MultiheadAttention(dim, heads, batch_first=True)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        has_any = mask.any(-1)
        safe_mask = mask | ~has_any[:, None]  # keeps softmax finite for empty samples, zeroed below
        query = (x * safe_mask.unsqueeze(-1)).sum(1) / safe_mask.sum(1, keepdim=True)
        pooled, weights = self.attention(query.unsqueeze(1), x, x, key_padding_mask=~safe_mask,
                                         need_weights=True, average_attn_weights=True)
        keep = has_any.to(x.dtype)
        return pooled.squeeze(1) * keep[:, None], weights.squeeze(1) * keep[:, None]


class _SymmetricCrossAttention(nn.Module):
    """LoVT's ``CrossAttention(symmetric=True)``: one key, value and output projection for both modalities.

    ``scores = K(regions) K(sentences)^T / (sqrt(d) * temperature)``; regions attend over the real sentences of
    their report and sentences over the valid regions of their image. Queries without anything to attend to
    get zero attention rows and zero outputs.
    """

    def __init__(self, dim: int, norm: str, temperature: float, attention_dropout: float):
        super().__init__()
        self.key = nn.Linear(dim, dim)
        self.value = nn.Linear(dim, dim)
        self.output = nn.Linear(dim, dim)
        self.norm = _MaskedNorm(norm, dim)
        self.scale = 1.0 / (math.sqrt(dim) * temperature)
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        """LoVT's init: Kaiming-normal (fan-out) weights, zero biases."""
        for layer in (self.key, self.value, self.output):
            nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="linear")
            nn.init.zeros_(layer.bias)

    def _attend(self, scores: torch.Tensor, values: torch.Tensor, query_mask: torch.Tensor,
                key_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        has_keys = key_mask.any(-1, keepdim=True)
        safe_keys = key_mask | ~has_keys
        probs = torch.softmax(scores.masked_fill(~safe_keys[:, None, :], float("-inf")), dim=-1)
        rows = query_mask & has_keys  # (B, N_query)
        probs = probs * rows.unsqueeze(-1)
        if self.training and self.attention_dropout.p > 0:
            probs = self.attention_dropout(probs)
            probs = probs / probs.sum(-1, keepdim=True).clamp_min(1e-12)
        attended = self.norm(self.output(probs @ values), rows)
        return attended, probs

    def forward(self, regions, sentences, region_mask, sentence_mask):
        scores = self.key(regions) @ self.key(sentences).transpose(1, 2) * self.scale  # (B, R, S)
        at_regions, region_probs = self._attend(scores, self.value(sentences), region_mask, sentence_mask)
        at_sentences, sentence_probs = self._attend(scores.transpose(1, 2), self.value(regions), sentence_mask,
                                                    region_mask)
        return at_regions, at_sentences, region_probs, sentence_probs


@register_head
class LoVTHead(VLPHead):
    """LoVT's local alignment between image regions and report sentences, with its four local losses.

    Built from a `LoVTConfig` and the towers' sizes (`TowerDims.region_dim` of the image regions,
    `token_dim` of the text tokens). `align` is the computation on plain tensors; `forward` runs it on what the
    towers produced. With `global_from_pooling` its attention pooling gives the model's global features.
    """

    name = "lovt"
    summary = ("LoVT's local alignment: image regions and report sentences attend to each other, with contrastive "
               "losses within each sample, for localised downstream tasks")
    citation = ("Müller, Kaissis, Zou, Rueckert. Joint Learning of Localized Representations from Medical Images and "
                "Reports. ECCV 2022. arXiv:2112.02889")
    config_class = LoVTConfig
    loss_names = LOSS_NAMES
    default_weights = dict.fromkeys(LOSS_NAMES, _LOVT_LOCAL_WEIGHT)
    output_class = LoVTOutput

    def __init__(self, config: LoVTConfig, dims: TowerDims, weights=None):
        super().__init__(config, dims, weights)
        region_dim, token_dim = dims.region_dim, dims.token_dim
        self.region_pool = _AttentionPool(region_dim, config.pooling_heads, "region")
        self.sentence_pool = _AttentionPool(token_dim, config.pooling_heads, "token")
        self.region_projection = _LocalProjection(region_dim, config.proj_hidden_dim, config.proj_dim,
                                                  config.norm, config.projection_dropout)
        self.sentence_projection = _LocalProjection(token_dim, config.proj_hidden_dim, config.proj_dim,
                                                    config.norm, config.projection_dropout)
        self.cross_attention = _SymmetricCrossAttention(config.proj_dim, config.norm,
                                                        config.attention_temperature, config.attention_dropout)

    # ------------------------------------------------------------------------------------------- protocol
    @classmethod
    def required_inputs(cls, config, weights):
        return frozenset({HeadInput.IMAGES, HeadInput.TEXT, HeadInput.SENTENCE_IDS})

    @classmethod
    def inference_inputs(cls, config, weights):
        return cls.required_inputs(config, weights)

    def forward(self, inputs: HeadInputs) -> LoVTOutput:
        regions = inputs.image.features.regions
        h, w = inputs.image.features.grid
        text = inputs.text
        sentence_ids = text.sentence_ids.masked_fill(text.attention_mask == 0, -1)
        return self.align(regions, grid_positions(h, w, regions.device), text.features.tokens, sentence_ids,
                          return_loss=inputs.return_loss)

    @property
    def replaces_global_pooling(self) -> bool:
        return self.config.global_from_pooling

    def pool_image(self, features: ImageFeatures) -> torch.Tensor:
        return self.pool_regions(features.regions)

    def pool_text(self, features: TextFeatures, attention_mask: torch.Tensor,
                  sentence_ids: torch.Tensor | None) -> torch.Tensor:
        """A text given without sentence ids (a zero-shot prompt) is one sentence."""
        ids = single_sentence_ids(attention_mask) if sentence_ids is None else sentence_ids
        return self.pool_report(features.tokens, ids.masked_fill(attention_mask == 0, -1))

    @property
    def grounds_text(self) -> bool:
        return True

    def region_text_similarity(self, inputs: HeadInputs) -> torch.Tensor:
        """cos(projected region, normalised mean of the normalised projected sentences of the text) ``(B, R)``."""
        text = inputs.text
        if text.sentence_ids is None:
            text = TextEncoding(text.embeds, text.features, text.attention_mask,
                                single_sentence_ids(text.attention_mask))
        local = self(HeadInputs(image=inputs.image, text=text))
        regions = F.normalize(local.region_embeds, dim=-1)
        mask = local.sentence_mask.unsqueeze(-1).to(regions.dtype)
        query = F.normalize((F.normalize(local.sentence_embeds, dim=-1) * mask).sum(1), dim=-1)
        return torch.einsum("brd,bd->br", regions, query)

    def idle_parameters(self) -> set[str]:
        """Without `global_from_pooling` the attention pooling only weights the local terms, detached."""
        if self.config.global_from_pooling:
            return set()
        return {f"{pool}.{name}" for pool in ("region_pool", "sentence_pool")
                for name, _ in getattr(self, pool).named_parameters()}

    # ------------------------------------------------------------------------------------ the computation
    def pool_regions(self, region_features: torch.Tensor) -> torch.Tensor:
        """LoVT's global image feature: the attention-pooled regions ``(B, region_dim)`` (all regions valid)."""
        mask = torch.ones(region_features.shape[:2], dtype=torch.bool, device=region_features.device)
        return self.region_pool(region_features, mask)[0]

    def pool_report(self, token_features: torch.Tensor, sentence_ids: torch.Tensor) -> torch.Tensor:
        """LoVT's global report feature: the attention-pooled sentences ``(B, token_dim)`` (0 for no sentence)."""
        sentences, sentence_mask = pool_sentences(token_features, sentence_ids, self.config.sentence_pooling)
        return self.sentence_pool(sentences, sentence_mask)[0]

    def align(self, region_features: torch.Tensor, region_positions: torch.Tensor,
              token_features: torch.Tensor, sentence_ids: torch.Tensor,
              region_mask: torch.Tensor | None = None, return_loss: bool = True) -> LoVTOutput:
        """Project, cross-attend and (with ``return_loss``) compute the four unweighted local terms.

        ``region_features``: ``(B, R, region_dim)``; ``region_positions``: ``(R, 2)`` or ``(B, R, 2)`` normalised
        ``(y, x)`` centres (`grid_positions`); ``token_features``: ``(B, T, token_dim)``; ``sentence_ids``:
        ``(B, T)``, -1 for special and padding tokens; ``region_mask``: ``(B, R)`` bool, default all valid.
        """
        batch, num_regions, _ = region_features.shape
        if token_features.shape[0] != batch:
            raise ValueError(f"region_features has batch size {batch} but token_features "
                             f"{token_features.shape[0]}")
        if region_positions.shape[-2:] != (num_regions, 2) or region_positions.dim() not in (2, 3):
            raise ValueError(f"region_positions must be ({num_regions}, 2) or (B, {num_regions}, 2) normalised "
                             f"(y, x) centres (see grid_positions); got {tuple(region_positions.shape)}")
        if region_mask is None:
            region_mask = torch.ones(batch, num_regions, dtype=torch.bool, device=region_features.device)
        region_mask = region_mask.bool()

        sentences, sentence_mask = pool_sentences(token_features, sentence_ids, self.config.sentence_pooling)
        has_sentences = sentence_mask.any(-1)
        image_pooled, region_weights = self.region_pool(region_features, region_mask)
        report_pooled, sentence_weights = self.sentence_pool(sentences, sentence_mask)

        region_embeds = self.region_projection(region_features, region_mask)
        sentence_embeds = self.sentence_projection(sentences, sentence_mask)
        at_regions, at_sentences, region_probs, sentence_probs = self.cross_attention(
            region_embeds, sentence_embeds, region_mask, sentence_mask)

        region_weights, sentence_weights = region_weights.detach(), sentence_weights.detach()
        losses = None
        if return_loss:
            use_attention = self.config.element_weighting == "attention"
            positives = spatial_positive_weights(region_positions.to(region_embeds.dtype),
                                                 self.config.spatial_threshold, self.config.spatial_lambda,
                                                 self.config.spatial_smooth)
            region_terms = local_intra_sample_contrastive_loss(
                region_embeds, at_regions, mask=region_mask, positive_weights=positives,
                weights=region_weights if use_attention else None, temperature=self.config.temperature,
                sample_mask=has_sentences)
            sentence_terms = local_intra_sample_contrastive_loss(
                sentence_embeds, at_sentences, mask=sentence_mask,
                weights=sentence_weights if use_attention else None, temperature=self.config.temperature)
            losses = dict(zip(LOSS_NAMES, (*region_terms, *sentence_terms)))

        return LoVTOutput(
            losses=losses, region_embeds=region_embeds, sentence_embeds=sentence_embeds,
            sentence_mask=sentence_mask, region_attended_embeds=at_regions, sentence_attended_embeds=at_sentences,
            region_to_sentence_attention=region_probs, sentence_to_region_attention=sentence_probs,
            region_weights=region_weights, sentence_weights=sentence_weights, image_pooled=image_pooled,
            report_pooled=report_pooled,
        )
