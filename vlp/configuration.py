"""`VLPConfig`: one Hugging Face config with typed sub-configs for the towers, the losses and the heads.

Sub-configs are small dataclasses. They are stored on the config as dataclass objects and written to
`config.json` as plain dicts. An unknown key anywhere is an error that names the key and lists the valid ones,
so a typo in a YAML file never silently falls back to a default.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from transformers import PretrainedConfig

DEFAULT_TEXT_MODEL = "emilyalsentzer/Bio_ClinicalBERT"


class Head(str, Enum):
    """Optional heads, each a switch in `VLPConfig.heads`."""

    LOVT = "lovt"  # LoVT region-sentence alignment (Mueller et al., ECCV 2022)
    RADIOMICS = "radiomics"  # radiomics third modality with the Grad-CAM feedback loop (Han et al., WACV 2022)


class ContrastiveKind(str, Enum):
    """The global image-report objective."""

    INFONCE = "infonce"  # CLIP's symmetric softmax cross-entropy
    SIGLIP = "siglip"  # SigLIP's pairwise sigmoid loss (Zhai et al., ICCV 2023)


def _from_dict(cls, values: dict[str, Any] | None, where: str):
    """Build dataclass `cls` from `values`, refusing keys it does not define."""
    if values is None:
        return cls()
    if isinstance(values, cls):
        return values
    if not isinstance(values, dict):
        raise TypeError(f"{where} must be a mapping, got {type(values).__name__}")
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ValueError(f"unknown key(s) {unknown} in {where}; valid keys are: {', '.join(sorted(names))}")
    return cls(**values)


@dataclass
class ImageTowerConfig:
    """A timm image model. ResNet (feature-map cells as regions) and ViT (patch tokens as regions) families."""

    model_name: str = "resnet50"
    image_size: int = 224
    in_chans: int = 3
    pretrained: bool = False  # timm weights; needs them in the local cache (no download at run time)
    checkpoint_path: str | None = None  # a local timm/torch checkpoint to load instead
    model_kwargs: dict[str, Any] = field(default_factory=dict)  # passed to timm.create_model (depth, embed_dim, ...)
    image_mean: float = 0.5  # normalisation of the grayscale [0, 1] image, owned by the processor
    image_std: float = 0.25


@dataclass
class TextTowerConfig:
    """A Hugging Face encoder: a hub id or local path (pretrained weights), or an inline config (random init).

    `model_config` is the encoder's architecture as a config dict (`model_type` defaults to "bert"). Left empty,
    it is read from `model_name`'s local files when the model is first built and stored here, so that a saved
    checkpoint rebuilds its text tower without the original files.
    """

    model_name: str | None = DEFAULT_TEXT_MODEL
    model_config: dict[str, Any] | None = None
    tokenizer: str | None = None  # hub id, local path or "bundled:radiology-wordpiece"; default: model_name
    max_length: int = 256
    pooling: Literal["cls", "mean"] = "cls"
    allow_download: bool = False  # offline by default: only the local cache or a local directory is used


@dataclass
class LossConfig:
    """Global objective and the weight of every named loss term (terms not listed get weight 1)."""

    contrastive: ContrastiveKind = ContrastiveKind.INFONCE
    logit_scale_init: float = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
    logit_scale_max: float = math.log(100.0)  # CLIP clamps the scale at 100
    learn_logit_scale: bool = True
    logit_bias_init: float = -10.0  # SigLIP's initial bias
    gather_with_grad: bool = True  # negatives from every process, gradients through the gather
    weights: dict[str, float] = field(
        default_factory=lambda: {"global_image_to_text": 0.5, "global_text_to_image": 0.5}
    )

    def __post_init__(self):
        self.contrastive = ContrastiveKind(self.contrastive)


class VLPConfig(PretrainedConfig):
    """Configuration of `VLPModel`: image tower, text tower, projection size, losses and enabled heads.

    Example::

        config = VLPConfig(image_tower={"model_name": "vit_base_patch16_224"}, heads=["lovt"])
    """

    model_type = "vlp"

    image_tower: Any = None
    text_tower: Any = None
    projection_dim: int = 512
    heads: list = field(default_factory=list)
    loss: Any = None
    lovt: dict | None = None  # `vlp.modeling.heads.lovt.LoVTConfig` fields
    radiomics: dict | None = None  # `vlp.modeling.heads.radiomics.RadiomicsHeadConfig` fields

    # keys that transformers itself writes into config.json or passes through from_pretrained
    _passthrough = {"transformers_version", "model_type", "architectures", "torch_dtype", "dtype", "name_or_path",
                    "_name_or_path", "_commit_hash", "auto_map", "output_attentions", "attn_implementation",
                    "experts_implementation", "return_dict", "output_hidden_states", "use_cache", "id2label",
                    "label2id", "num_labels", "problem_type", "tie_word_embeddings", "chunk_size_feed_forward",
                    "is_encoder_decoder"}

    def __post_init__(self, **kwargs):
        unknown = sorted(k for k in kwargs if k not in self._passthrough and not k.startswith("_"))
        if unknown:
            valid = sorted(f.name for f in dataclasses.fields(VLPConfig) if f.name in _OWN_FIELDS)
            raise ValueError(f"unknown key(s) {unknown} in VLPConfig; valid keys are: {', '.join(valid)}")
        self.image_tower = _from_dict(ImageTowerConfig, self.image_tower, "image_tower")
        self.text_tower = _from_dict(TextTowerConfig, self.text_tower, "text_tower")
        self.loss = _from_dict(LossConfig, self.loss, "loss")
        try:
            self.heads = [Head(h) for h in (self.heads or [])]
        except ValueError as err:
            raise ValueError(f"{err}; valid heads are: {', '.join(h.value for h in Head)}") from None
        super().__post_init__(**kwargs)

    def has_head(self, head: Head | str) -> bool:
        return Head(head) in self.heads

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in ("image_tower", "text_tower", "loss"):
            value = getattr(self, key)
            out[key] = _plain(dataclasses.asdict(value)) if dataclasses.is_dataclass(value) else value
        out["heads"] = [Head(h).value for h in self.heads]
        return out


def _plain(value):
    """Enums to their values so the dict is JSON."""
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_OWN_FIELDS = {"image_tower", "text_tower", "projection_dim", "heads", "loss", "lovt", "radiomics"}
