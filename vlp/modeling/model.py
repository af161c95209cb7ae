"""`VLPModel`: a dual encoder (timm image tower, Hugging Face text tower) with switchable local heads."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from ..configuration import ContrastiveKind, Head, VLPConfig
from ..losses.contrastive import clip_loss, siglip_loss
from .outputs import FeatureCache, VLPOutput
from .towers import ImageFeatures, ImageTower, TextFeatures, TextTower


class VLPPreTrainedModel(PreTrainedModel):
    config_class = VLPConfig
    base_model_prefix = "vlp"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def _init_weights(self, module):
        """Towers initialise themselves (timm, transformers); the projections use PyTorch's defaults."""


class VLPModel(VLPPreTrainedModel):
    """Image tower + text tower + projections into one embedding space, and the heads named in `config.heads`.

    `forward(pixel_values=..., input_ids=..., attention_mask=..., return_loss=True)` returns a `VLPOutput`
    whose `loss` is the weighted sum of the named terms in `losses` (weights from `config.loss.weights`,
    then the head's own defaults, else 1).
    """

    def __init__(self, config: VLPConfig):
        super().__init__(config)
        self.image_tower = ImageTower(config.image_tower)
        self.text_tower = TextTower(config.text_tower)
        dim = config.projection_dim
        self.image_projection = nn.Linear(self.image_tower.num_features, dim, bias=False)
        self.text_projection = nn.Linear(self.text_tower.hidden_size, dim, bias=False)
        loss = config.loss
        self.logit_scale = nn.Parameter(torch.tensor(float(loss.logit_scale_init)),
                                        requires_grad=loss.learn_logit_scale)
        self.logit_bias = nn.Parameter(torch.tensor(float(loss.logit_bias_init))) \
            if loss.contrastive == ContrastiveKind.SIGLIP else None
        self.lovt = self.radiomics = None
        if config.has_head(Head.LOVT):
            from .heads.lovt import LoVTConfig, LoVTHead
            self.lovt = LoVTHead(LoVTConfig.from_dict(config.lovt or {}),
                                 region_dim=self.image_tower.num_features, token_dim=self.text_tower.hidden_size)
        if config.has_head(Head.RADIOMICS):
            from .heads.radiomics import RadiomicsHead, RadiomicsHeadConfig
            self.radiomics = RadiomicsHead(RadiomicsHeadConfig.from_dict(config.radiomics or {}),
                                           image_dim=self.image_tower.num_features, embed_dim=dim)
        self.post_init()

    # ----------------------------------------------------------------------------------------------- towers
    def load_pretrained_towers(self) -> None:
        """Load the towers' pretrained weights (local files only unless downloads are allowed)."""
        self.image_tower.load_pretrained_weights()
        self.text_tower.load_pretrained_weights()

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs=None):
        self.image_tower.set_grad_checkpointing(True)
        self.text_tower.set_grad_checkpointing(True)

    def gradient_checkpointing_disable(self):
        self.image_tower.set_grad_checkpointing(False)
        self.text_tower.set_grad_checkpointing(False)

    @property
    def _lovt_global(self) -> bool:
        return self.lovt is not None and self.lovt.config.global_from_pooling

    def encode_image(self, pixel_values: torch.Tensor) -> tuple[torch.Tensor, ImageFeatures]:
        """The global embedding and the tower's features. With the LoVT head (`global_from_pooling`), the global
        feature is the head's attention pooling of the regions, as in LoVT; else the tower's pooled output."""
        features = self.image_tower(pixel_values)
        pooled = self.lovt.pool_regions(features.regions) if self._lovt_global else features.pooled
        return F.normalize(self.image_projection(pooled), dim=-1), features

    def encode_text(self, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                    sentence_ids: torch.Tensor | None = None) -> tuple[torch.Tensor, TextFeatures]:
        """The global embedding and the tower's features (LoVT: attention pooling of the sentences)."""
        features = self.text_tower(input_ids, attention_mask)
        pooled = features.pooled
        if self._lovt_global:
            from .heads.lovt import single_sentence_ids
            ids = single_sentence_ids(attention_mask) if sentence_ids is None else sentence_ids
            pooled = self.lovt.pool_report(features.tokens, ids.masked_fill(attention_mask == 0, -1))
        return F.normalize(self.text_projection(pooled), dim=-1), features

    def get_image_features(self, pixel_values: torch.Tensor, **_) -> torch.Tensor:
        """L2-normalised image embeddings `(B, D)`."""
        return self.encode_image(pixel_values)[0]

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          sentence_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """L2-normalised report embeddings `(B, D)`. `sentence_ids` matter only with LoVT's pooled globals
        (without them each text is one sentence)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        return self.encode_text(input_ids, attention_mask, sentence_ids)[0]

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at exp(`loss.logit_scale_max`) as CLIP does."""
        return self.logit_scale.clamp(max=self.config.loss.logit_scale_max).exp()

    # ---------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sentence_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        raw_images: torch.Tensor | None = None,
        return_loss: bool = False,
        feature_cache: FeatureCache | None = None,
        **unused,
    ) -> VLPOutput:
        """Encode whatever is given; with `return_loss`, compute every enabled objective.

        sentence_ids: (B, T) sentence index of each token, -1 outside sentences (LoVT head).
        labels: (B, L) multi-label targets with NaN for unlabelled entries (radiomics head).
        raw_images: (B, H, W) the unnormalised [0, 1] images the radiomics features are computed from.
        feature_cache: embeddings of the other micro-batches of this optimizer step (gradient accumulation).
        """
        out = VLPOutput(losses={})
        image_features = text_features = None
        if pixel_values is not None:
            out.image_embeds, image_features = self.encode_image(pixel_values)
            out.region_grid = image_features.grid
        if input_ids is not None:
            if attention_mask is None:
                attention_mask = torch.ones_like(input_ids)
            out.text_embeds, text_features = self.encode_text(input_ids, attention_mask, sentence_ids)
        scale = self.scale()
        if out.image_embeds is not None and out.text_embeds is not None:
            out.logits_per_text = scale * out.text_embeds @ out.image_embeds.T
            out.logits_per_image = out.logits_per_text.T
            if return_loss:
                out.losses.update(self._global_losses(out.image_embeds, out.text_embeds, scale, feature_cache))
        if self.lovt is not None and image_features is not None and text_features is not None \
                and sentence_ids is not None:
            self._lovt_forward(out, image_features, text_features, attention_mask, sentence_ids, return_loss)
        if self.radiomics is not None and image_features is not None:
            self.radiomics(out, image_features, pixel_values, raw_images, labels, return_loss)
        if return_loss:
            if not out.losses:
                raise ValueError("return_loss=True but no objective applies: give images and texts "
                                 "(or enable a head that trains on images alone)")
            out.loss = sum(self.loss_weight(name) * value for name, value in out.losses.items())
        return out

    def loss_weight(self, name: str) -> float:
        """Weight of a named term: `config.loss.weights`, then the enabled head's defaults, else 1."""
        if name in self.config.loss.weights:
            return float(self.config.loss.weights[name])
        for head in (self.lovt, self.radiomics):
            if head is not None and name in head.config.weights:
                return float(head.config.weights[name])
        return 1.0

    def _global_losses(self, image_embeds, text_embeds, scale, cache: FeatureCache | None):
        if cache is not None:
            n, start = image_embeds.shape[0], cache.start
            image_embeds = torch.cat([cache.image_embeds[:start], image_embeds, cache.image_embeds[start + n:]])
            text_embeds = torch.cat([cache.text_embeds[:start], text_embeds, cache.text_embeds[start + n:]])
            # every micro-batch's loss depends on the temperature through all rows: pass 1/K of its gradient
            scale = scale.detach() + (scale - scale.detach()) / cache.num_chunks
        gather, with_grad = True, self.config.loss.gather_with_grad
        if self.config.loss.contrastive == ContrastiveKind.SIGLIP:
            bias = self.logit_bias
            if cache is not None:
                bias = bias.detach() + (bias - bias.detach()) / cache.num_chunks
            return siglip_loss(image_embeds, text_embeds, scale, bias, gather, with_grad)
        return clip_loss(image_embeds, text_embeds, scale, gather, with_grad)

    def _lovt_forward(self, out, image_features, text_features, attention_mask, sentence_ids, return_loss):
        from .heads.lovt import grid_positions
        h, w = image_features.grid
        positions = grid_positions(h, w).to(image_features.regions.device)
        sentence_ids = sentence_ids.masked_fill(attention_mask == 0, -1)
        local = self.lovt(image_features.regions, positions, text_features.tokens, sentence_ids,
                          return_loss=return_loss)
        out.region_embeds = local.region_embeds
        out.sentence_embeds = local.sentence_embeds
        out.sentence_mask = local.sentence_mask
        out.region_to_sentence_attention = local.region_to_sentence_attention
        out.sentence_to_region_attention = local.sentence_to_region_attention
        if return_loss:
            out.losses.update(local.losses)
