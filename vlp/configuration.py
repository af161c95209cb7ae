"""`VLPConfig`: one Hugging Face config with typed sub-configs for the towers, the losses and the heads.

Sub-configs are small dataclasses. They are stored on the config as dataclass objects and written to
`config.json` as plain dicts. An unknown key anywhere is an error that names the key and lists the valid ones,
so a typo in a YAML file never silently falls back to a default.

Heads are named in `VLPConfig.heads`, a mapping head name -> the head's settings, each validated by the config
class of the head registered under that name (`vlp.registry`). Every loss term has one weight, in
`loss.weights`: the global terms by their names, a head's terms as `<head>/<term>`; what is not set there keeps
its default (the global loss's, or the head's).
"""
from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Literal

from transformers import PretrainedConfig

from .registry import head_class, registered_heads

DEFAULT_TEXT_MODEL = "emilyalsentzer/Bio_ClinicalBERT"


class ContrastiveKind(str, Enum):
    """The global image-report objective."""

    INFONCE = "infonce"  # CLIP's symmetric softmax cross-entropy
    SIGLIP = "siglip"  # SigLIP's pairwise sigmoid loss (Zhai et al., ICCV 2023)


# The global terms of each objective and their default weights (CLIP's loss is the mean of its two directions).
GLOBAL_LOSS_TERMS: dict[ContrastiveKind, dict[str, float]] = {
    ContrastiveKind.INFONCE: {"global_image_to_text": 0.5, "global_text_to_image": 0.5},
    ContrastiveKind.SIGLIP: {"global_sigmoid": 1.0},
}
_ALL_GLOBAL_TERMS = {name for terms in GLOBAL_LOSS_TERMS.values() for name in terms}


class HeadInput(str, Enum):
    """Batch inputs a head can require, named by their keys in a batch (and `VLPModel.forward`'s arguments)."""

    IMAGES = "pixel_values"
    TEXT = "input_ids"  # the report, tokenised (with its attention_mask)
    SENTENCE_IDS = "sentence_ids"  # the sentence of every token (processor: return_sentence_ids)
    RAW_IMAGES = "raw_images"  # the unnormalised [0, 1] model-input images (processor: return_raw_images)
    LABELS = "labels"  # (B, L) finding labels, NaN where unknown (the recipe: --labels-column)
    VIEWS = "views"  # (B, k - 1, C, S, S) further augmented views of each image (augmentation: views: k)


def config_from_dict(cls, values: Any, where: str):
    """Build dataclass `cls` from a mapping, refusing keys it does not define (None gives the defaults)."""
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


def plain(value):
    """Dataclasses to dicts and enums to their values, recursively, so the result is JSON."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return plain(dataclasses.asdict(value))
    if isinstance(value, Enum):
        return value.value
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    return value


class SubConfig:
    """What every typed sub-config (a dataclass) has: `from_dict` that refuses unknown keys, `to_dict` to JSON."""

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None, where: str | None = None):
        return config_from_dict(cls, values, where or cls.__name__)

    def to_dict(self) -> dict[str, Any]:
        return plain(self)


@dataclass
class ImageTowerConfig(SubConfig):
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
class TextTowerConfig(SubConfig):
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
class ProjectionConfig(SubConfig):
    """The projections of the towers' pooled features into the shared space: one bias-free linear layer (CLIP's),
    or an MLP Linear -> norm -> ReLU -> Linear (LoVT's global projection: 2048 hidden units, BatchNorm)."""

    kind: Literal["linear", "mlp"] = "linear"
    hidden_dim: int = 2048
    norm: Literal["batch", "layer", "none"] = "batch"

    def __post_init__(self):
        if self.kind not in ("linear", "mlp"):
            raise ValueError(f"projection.kind must be 'linear' or 'mlp', got {self.kind!r}")
        if self.norm not in ("batch", "layer", "none"):
            raise ValueError(f"projection.norm must be 'batch', 'layer' or 'none', got {self.norm!r}")


@dataclass
class LossConfig(SubConfig):
    """The global objective, and the weights of loss terms that differ from their defaults.

    weights: term name -> weight. Global terms by name (`global_image_to_text`, ...), a head's terms as
    `<head>/<term>` (`lovt/local_region_to_attended`). Terms not listed keep their defaults
    (`VLPConfig.loss_weights()` gives them all); a name no enabled part of the model produces is an error.
    """

    contrastive: ContrastiveKind = ContrastiveKind.INFONCE
    logit_scale_init: float = math.log(1 / 0.07)  # CLIP's initial temperature 0.07
    logit_scale_max: float = math.log(100.0)  # CLIP clamps the scale at 100
    learn_logit_scale: bool = True
    logit_bias_init: float = -10.0  # SigLIP's initial bias
    gather_with_grad: bool = True  # negatives from every process, gradients through the gather
    weights: dict[str, float] = field(default_factory=dict)

    def __post_init__(self):
        self.contrastive = ContrastiveKind(self.contrastive)
        self.weights = {str(k): float(v) for k, v in (self.weights or {}).items()}


def normalize_heads(heads: Any, legacy: dict[str, Any] | None = None) -> dict[str, Any]:
    """`heads` as a mapping head name -> settings (None: the head's defaults).

    Accepts a list of names (`["lovt"]`) or a mapping (`{"lovt": {"proj_dim": 64}}`). `legacy` holds the per-head
    top-level keys of vlp 0.1 config files (`lovt: {...}` next to `heads: [lovt]`): they give the settings of a
    head the list names, and are ignored for a head it does not name (those files wrote `lovt: null` always).
    """
    if heads is None:
        heads = {}
    elif isinstance(heads, (list, tuple)):
        names = [str(getattr(h, "value", h)) for h in heads]
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"heads names {repeated} more than once")
        heads = dict.fromkeys(names)
    elif isinstance(heads, dict):
        heads = {str(k): v for k, v in heads.items()}
    else:
        raise TypeError(f"heads must be a list of head names or a mapping name -> settings, got {type(heads).__name__}")
    for name, values in (legacy or {}).items():
        if name in heads and heads[name] is None and values is not None:
            heads[name] = values
    return heads


def select_heads(current: dict[str, Any], requested: Any) -> dict[str, dict[str, Any]]:
    """Exactly the heads `requested` names (a list or a mapping name -> settings), each with the settings `current`
    gives it (name -> settings) and the requested settings over them."""
    selected = {}
    for name, settings in normalize_heads(requested).items():
        merged = dict(current.get(name) or {})
        merged.update(settings or {})
        selected[name] = merged
    return selected


class VLPConfig(PretrainedConfig):
    """Configuration of `VLPModel`: image tower, text tower, projection size, losses and enabled heads.

    Example::

        config = VLPConfig(image_tower={"model_name": "vit_base_patch16_224"}, heads={"lovt": {"proj_dim": 256}},
                           loss={"weights": {"global_image_to_text": 0.75, "global_text_to_image": 0.25}})
    """

    model_type = "vlp"

    image_tower: Any = None
    text_tower: Any = None
    projection_dim: int = 512
    projection: Any = None  # ProjectionConfig
    heads: Any = None  # head name -> its config dataclass (given as a list of names or a mapping)
    loss: Any = None

    # keys that transformers itself writes into config.json or passes through from_pretrained
    _passthrough = {"transformers_version", "model_type", "architectures", "torch_dtype", "dtype", "name_or_path",
                    "_name_or_path", "_commit_hash", "auto_map", "output_attentions", "attn_implementation",
                    "experts_implementation", "return_dict", "output_hidden_states", "use_cache", "id2label",
                    "label2id", "num_labels", "problem_type", "tie_word_embeddings", "chunk_size_feed_forward",
                    "is_encoder_decoder"}

    def __post_init__(self, **kwargs):
        # vlp 0.1 wrote each head's settings as a top-level key named after the head
        legacy = {name: kwargs.pop(name) for name in list(kwargs) if name in registered_heads()}
        unknown = sorted(k for k in kwargs if k not in self._passthrough and not k.startswith("_"))
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in VLPConfig; valid keys are: {', '.join(sorted(_OWN_FIELDS))}")
        self.image_tower = config_from_dict(ImageTowerConfig, self.image_tower, "image_tower")
        self.text_tower = config_from_dict(TextTowerConfig, self.text_tower, "text_tower")
        self.projection = config_from_dict(ProjectionConfig, self.projection, "projection")
        self.loss = config_from_dict(LossConfig, copy.deepcopy(self.loss), "loss")
        heads, legacy_weights = {}, {}
        for name, values in normalize_heads(self.heads, legacy).items():
            cls = head_class(name)
            if isinstance(values, dict) and "weights" in values:  # vlp 0.1: a head's weights in its own settings
                values = dict(values)
                legacy_weights.update({f"{name}/{cls.legacy_loss_names.get(k, k)}": v
                                       for k, v in values.pop("weights").items()})
            heads[name] = config_from_dict(cls.config_class, values, f"heads.{name}")
        self.heads = heads
        self.loss.weights = {**{k: float(v) for k, v in legacy_weights.items()},
                             **{self._qualified_term(k): v for k, v in self.loss.weights.items()}}
        unknown = sorted(set(self.loss.weights) - set(self.loss_weights(defaults_only=True)) - _ALL_GLOBAL_TERMS)
        if unknown:
            raise ValueError(f"unknown loss term(s) {unknown} in loss.weights; the terms of this configuration are: "
                             f"{', '.join(self.loss_weights(defaults_only=True))}")
        super().__post_init__(**kwargs)

    def _qualified_term(self, name: str) -> str:
        """`<head>/<term>` for a head's term given by its bare (or vlp 0.1) name; other names unchanged."""
        if name in _ALL_GLOBAL_TERMS or "/" in name:
            return name
        owners = [f"{head}/{cls.legacy_loss_names.get(name, name)}" for head, cls in self.head_classes().items()
                  if name in cls.loss_names or name in cls.legacy_loss_names]
        if len(owners) > 1:
            raise ValueError(f"loss term {name!r} is ambiguous: write it as one of {owners}")
        return owners[0] if owners else name

    # ------------------------------------------------------------------------------------------------ heads
    def has_head(self, name: str) -> bool:
        return str(getattr(name, "value", name)) in self.heads

    def head_classes(self) -> dict[str, type]:
        """Enabled head name -> its registered class, in the order of `heads`."""
        return {name: head_class(name) for name in self.heads}

    def head_loss_weights(self, name: str) -> dict[str, float]:
        """The weights of head `name`'s terms, by their bare names."""
        prefix = f"{name}/"
        return {k[len(prefix):]: v for k, v in self.loss_weights().items() if k.startswith(prefix)}

    def loss_weights(self, defaults_only: bool = False) -> dict[str, float]:
        """Every loss term this configuration produces -> its weight: defaults, then `loss.weights`."""
        weights = dict(GLOBAL_LOSS_TERMS[self.loss.contrastive])
        for name, cls in self.head_classes().items():
            defaults = getattr(cls, "default_weights", {})
            weights.update({f"{name}/{term}": float(defaults.get(term, 1.0)) for term in cls.loss_names})
        if not defaults_only:
            weights.update({k: v for k, v in self.loss.weights.items() if k in weights})
        return weights

    def head_inputs(self) -> set[HeadInput]:
        """The batch inputs the enabled heads require in training."""
        return {HeadInput(i) for name, cls in self.head_classes().items()
                for i in cls.required_inputs(self.heads[name], self.head_loss_weights(name))}

    def with_heads(self, heads: Any) -> "VLPConfig":
        """A copy whose heads are exactly `heads` (a list of names or a mapping name -> settings): a head already
        here keeps its settings (a mapping's settings are merged over them), a new one gets its defaults; the loss
        weights of heads left out are dropped."""
        values = self.to_dict()
        values["heads"] = new = select_heads(values["heads"], heads)
        values["loss"]["weights"] = {k: v for k, v in values["loss"]["weights"].items()
                                     if "/" not in k or k.split("/", 1)[0] in new}
        return type(self)(**{k: v for k, v in values.items() if k != "transformers_version"})

    def to_dict(self) -> dict[str, Any]:
        out = super().to_dict()
        for key in ("image_tower", "text_tower", "projection", "loss"):
            out[key] = plain(getattr(self, key))
        out["heads"] = {name: plain(settings) for name, settings in self.heads.items()}
        return out


_OWN_FIELDS = {"image_tower", "text_tower", "projection_dim", "projection", "heads", "loss"}
