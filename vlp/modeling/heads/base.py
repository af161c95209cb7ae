"""The head protocol: what a head of `VLPModel` is, what it receives and what it returns.

A head is an `nn.Module` subclass of `VLPHead` with

- ``name``: its registry name (`vlp.register_head`), the prefix of its loss terms and parameters;
- ``config_class``: a dataclass of its settings, stored in `VLPConfig.heads[name]`;
- ``loss_names``: the unweighted terms its forward may return; their default weights in ``default_weights``
  (1 if absent), overridden by `VLPConfig.loss.weights["<name>/<term>"]`;
- ``required_inputs(config, weights)``: the batch inputs it needs in training (`HeadInput`), so that the processor
  and the collator produce them and the model can say which one is missing; ``inference_inputs`` those without
  which it does not run at all outside training;
- ``forward(inputs: HeadInputs) -> HeadOutput``: it receives what the towers produced (and the batch's other
  inputs) and returns its losses, its outputs and the values to log; it never changes another object.

Optional hooks, each with a default that leaves the shared behaviour alone:

- ``replaces_global_pooling`` + ``pool_image`` / ``pool_text``: the features under the global embeddings (LoVT's
  attention pooling); at most one enabled head may replace them;
- ``score_modes`` + ``pairwise_logits``: image-text scores other than the global cosine, used by zero-shot
  classification and retrieval through `VLPModel.pairwise_logits(score_from=...)`;
- ``grounds_text`` + ``region_text_similarity``: the per-region similarity behind phrase grounding maps;
- ``idle_parameters``: parameters the configuration never trains (a data-parallel run must not wait for their
  gradients); ``data_dependent_graph`` when some steps leave parameters without gradient;
- ``uses_image_embeds``: whether its losses read the global image embedding (so an image-only run still trains
  the image projection);
- ``adapt_to_data(values, label_names)``: settings taken from the training data (the radiomics classifier's
  findings from the label columns).

Parameters initialise through ``reset_parameters`` (each module's own, or one the head defines), which the
model also calls for a head added to a saved checkpoint.
"""
from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn
from transformers.utils import ModelOutput

from ...configuration import HeadInput
from ..outputs import ImageEncoding, TextEncoding
from ..towers import ImageFeatures, TextFeatures

__all__ = ["HeadInput", "HeadInputs", "HeadOutput", "TowerDims", "VLPHead", "missing_input_message"]

_HOW_TO_GET = {
    HeadInput.IMAGES: "give images (pixel_values from the processor)",
    HeadInput.TEXT: "give reports (input_ids and attention_mask from the processor)",
    HeadInput.SENTENCE_IDS: "call the processor with return_sentence_ids=True (a processor created or saved with "
                            "this model does so by default)",
    HeadInput.RAW_IMAGES: "call the processor with return_raw_images=True (a processor created or saved with this "
                          "model does so by default)",
    HeadInput.LABELS: "give labels (B, L), NaN where unknown (the recipe: --labels-column)",
    HeadInput.VIEWS: "give further augmented views of each image (the recipe: an augmentation with views: 2 or more)",
}


def missing_input_message(head: str, missing: Iterable[HeadInput]) -> str:
    needs = "; ".join(f"{i.value}: {_HOW_TO_GET[i]}" for i in sorted(missing, key=lambda i: i.value))
    return f"the {head!r} head needs inputs that were not given: {needs}"


@dataclass
class TowerDims:
    """Feature sizes a head is built for."""

    region_dim: int  # channels of an image region (and of the image tower's pooled feature)
    token_dim: int  # hidden size of the text tower's tokens
    embed_dim: int  # the shared embedding space (`VLPConfig.projection_dim`)


@dataclass
class HeadInputs:
    """What a head's forward receives."""

    image: ImageEncoding | None = None
    text: TextEncoding | None = None
    labels: torch.Tensor | None = None  # (B, L), NaN where unknown
    raw_images: torch.Tensor | None = None  # (B, H, W) unnormalised [0, 1] model-input images
    views: torch.Tensor | None = None  # (B, k - 1, C, S, S) further augmented views of each image
    logit_scale: torch.Tensor | None = None  # exp of the global logit scale, clamped
    return_loss: bool = False

    def provided(self) -> set[HeadInput]:
        given = {HeadInput.IMAGES: self.image, HeadInput.TEXT: self.text, HeadInput.LABELS: self.labels,
                 HeadInput.RAW_IMAGES: self.raw_images, HeadInput.VIEWS: self.views,
                 HeadInput.SENTENCE_IDS: None if self.text is None else self.text.sentence_ids}
        return {key for key, value in given.items() if value is not None}


@dataclass
class HeadOutput(ModelOutput):
    """Base of every head's output: its unweighted loss terms (by bare name) and its values to log."""

    losses: dict[str, torch.Tensor] | None = None
    logs: dict[str, torch.Tensor] | None = None


class VLPHead(nn.Module):
    """Base class of the heads (see the module docstring for the protocol)."""

    name: ClassVar[str]
    config_class: ClassVar[type]
    loss_names: ClassVar[tuple[str, ...]] = ()
    default_weights: ClassVar[Mapping[str, float]] = {}
    legacy_loss_names: ClassVar[Mapping[str, str]] = {}  # vlp 0.1 term names -> current ones
    output_class: ClassVar[type] = HeadOutput
    data_dependent_graph: ClassVar[bool] = False
    score_modes: ClassVar[tuple[str, ...]] = ()
    summary: ClassVar[str] = ""  # one sentence on what the head adds (model cards)
    citation: ClassVar[str] = ""  # the method's publication (model cards)

    def __init__(self, config: Any, dims: TowerDims, weights: Mapping[str, float] | None = None):
        super().__init__()
        if not isinstance(config, self.config_class):
            raise TypeError(f"{type(self).__name__} takes a {self.config_class.__name__}, got {type(config).__name__}")
        self.config = config
        self.dims = dims
        self.loss_weights = {name: float(self.default_weights.get(name, 1.0)) for name in self.loss_names}
        self.loss_weights.update(weights or {})

    # ------------------------------------------------------------------------------------------- protocol
    @classmethod
    def required_inputs(cls, config: Any, weights: Mapping[str, float]) -> frozenset[HeadInput]:
        """The batch inputs this head needs in training, given its settings and its loss weights."""
        return frozenset({HeadInput.IMAGES})

    @classmethod
    def inference_inputs(cls, config: Any, weights: Mapping[str, float]) -> frozenset[HeadInput]:
        """The inputs without which the head does not run outside training; default: the images and reports of
        `required_inputs` (the head makes do without the rest, as the radiomics head without raw images)."""
        return cls.required_inputs(config, weights) & {HeadInput.IMAGES, HeadInput.TEXT}

    @classmethod
    def adapt_to_data(cls, values: dict[str, Any], label_names: list[str] | None) -> dict[str, Any]:
        """Settings `values` (a plain dict) completed from the training data; default: unchanged."""
        return values

    def forward(self, inputs: HeadInputs) -> HeadOutput:
        raise NotImplementedError

    # ------------------------------------------------------------------------------------ optional hooks
    @property
    def replaces_global_pooling(self) -> bool:
        return False

    def pool_image(self, features: ImageFeatures) -> torch.Tensor:
        """(B, region_dim) feature under the global image embedding (with `replaces_global_pooling`)."""
        raise NotImplementedError

    def pool_text(self, features: TextFeatures, attention_mask: torch.Tensor,
                  sentence_ids: torch.Tensor | None) -> torch.Tensor:
        """(B, token_dim) feature under the global text embedding (with `replaces_global_pooling`)."""
        raise NotImplementedError

    def pairwise_logits(self, mode: str, image: ImageEncoding, text: TextEncoding,
                        logit_scale: torch.Tensor) -> torch.Tensor:
        """(N_images, N_texts) scores of every image with every text for a mode in `score_modes`."""
        raise NotImplementedError

    @property
    def grounds_text(self) -> bool:
        return False

    def region_text_similarity(self, inputs: HeadInputs) -> torch.Tensor:
        """(B, R) similarity of each region of image b with text b (with `grounds_text`)."""
        raise NotImplementedError

    def idle_parameters(self) -> set[str]:
        """Names (relative to the head) of trainable parameters this configuration never trains."""
        return set()

    @property
    def uses_image_embeds(self) -> bool:
        return False
