"""A head defined outside `vlp`, as a user would write one: registered with `@register_head`, it trains, logs,
saves and reloads, and supplies a pairwise score, without any change to `vlp`.

The objective: every image's regions, projected and averaged, against its own report's global embedding
(InfoNCE over the batch, both directions), at a fixed temperature."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vlp import HeadInput, HeadInputs, HeadOutput, VLPHead, register_head
from vlp.configuration import SubConfig
from vlp.losses.contrastive import clip_loss


@dataclass
class RegionMatchConfig(SubConfig):
    hidden_dim: int = 32
    temperature: float = 0.1


@register_head
class RegionMatchHead(VLPHead):
    name = "region_match"
    config_class = RegionMatchConfig
    loss_names = ("image_to_text", "text_to_image")
    default_weights = {"image_to_text": 0.25, "text_to_image": 0.25}
    score_modes = ("region_mean",)

    def __init__(self, config, dims, weights=None):
        super().__init__(config, dims, weights)
        self.projection = nn.Sequential(nn.Linear(dims.region_dim, config.hidden_dim), nn.ReLU(),
                                        nn.Linear(config.hidden_dim, dims.embed_dim))

    @classmethod
    def required_inputs(cls, config, weights):
        return frozenset({HeadInput.IMAGES, HeadInput.TEXT})

    def embed(self, regions: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.projection(regions).mean(1), dim=-1)

    def forward(self, inputs: HeadInputs) -> HeadOutput:
        z = self.embed(inputs.image.features.regions)
        text = inputs.text.embeds
        out = HeadOutput(logs={"positive_cosine": (z * text).sum(-1).mean().detach()})
        if inputs.return_loss:
            terms = clip_loss(z, text, torch.tensor(1.0 / self.config.temperature, device=z.device))
            out.losses = {"image_to_text": terms["global_image_to_text"],
                          "text_to_image": terms["global_text_to_image"]}
        return out

    def pairwise_logits(self, mode, image, text, logit_scale):
        return logit_scale * self.embed(image.features.regions) @ text.embeds.T
