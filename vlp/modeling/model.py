"""`VLPModel`: a dual encoder (timm image tower, Hugging Face text tower) with switchable heads.

The model knows its heads only through the registry (`vlp.registry`) and the protocol of
`vlp.modeling.heads.base.VLPHead`: it builds the heads `config.heads` names, hands each what the towers
produced, collects their named losses (`<head>/<term>`), outputs and logs, and asks them for the hooks they
supply (global pooling, pairwise scores, grounding, idle parameters).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from transformers import PreTrainedModel

from ..configuration import ContrastiveKind, HeadInput, ProjectionConfig, VLPConfig
from ..losses.contrastive import clip_loss, siglip_loss
from .heads.base import HeadInputs, TowerDims, VLPHead, missing_input_message
from .outputs import FeatureCache, ImageEncoding, TextEncoding, VLPOutput
from .towers import ImageTower, TextTower

GLOBAL_SCORE = "global"
_FIELDS = list(VLPOutput.__dataclass_fields__)
_HEAD_FIELDS = frozenset(_FIELDS[_FIELDS.index("logs") + 1:])  # VLPOutput's copies of the built-in heads' outputs


def build_projection(config: ProjectionConfig, in_dim: int, out_dim: int) -> nn.Module:
    """A bias-free linear layer, or LoVT's MLP (Linear -> norm -> ReLU -> Linear, as its `SequenceMLP`)."""
    if config.kind == "linear":
        return nn.Linear(in_dim, out_dim, bias=False)
    norm = {"batch": nn.BatchNorm1d, "layer": nn.LayerNorm}.get(config.norm, lambda _: nn.Identity())
    return nn.Sequential(nn.Linear(in_dim, config.hidden_dim), norm(config.hidden_dim), nn.ReLU(),
                         nn.Linear(config.hidden_dim, out_dim))


class VLPPreTrainedModel(PreTrainedModel):
    config_class = VLPConfig
    base_model_prefix = "vlp"
    main_input_name = "pixel_values"
    supports_gradient_checkpointing = True

    def _initialize_weights(self, module: nn.Module, is_custom_code: bool = False) -> None:
        """Every module not yet initialised gets `_init_weights`, containers too: transformers skips a custom-code
        module whose own tensors are all loaded, which would skip the init of a head's module that sets up its
        children (LoVT's Kaiming projections). Ours initialise only through guarded functions, so nothing loaded is
        overwritten."""
        if getattr(module, "_is_hf_initialized", False):
            return
        self._init_weights(module)
        module._is_hf_initialized = True

    def _init_weights(self, module: nn.Module) -> None:
        """Initialise the tensors of `module` that no checkpoint filled, as a freshly built model has them.

        transformers 5 builds a model on the meta device, loads the checkpoint's tensors (flagging them
        `_is_hf_initialized`) and calls this for every module, children first. Each module initialises through its
        own `reset_parameters` (PyTorch's layers, and the heads' modules with an init of their own, which runs
        after their children's); norms get ones and zeros and fresh running statistics; the image tower copies a
        freshly built timm model. The `torch.nn.init` functions are guarded by transformers while this runs, so
        loaded tensors are never overwritten. A model built directly (not loaded) was initialised by its
        constructors and is left as it is.
        """
        tensors = [*module.parameters(), *module.buffers()]
        if not tensors or all(getattr(t, "_is_hf_initialized", False) for t in tensors):
            return
        if isinstance(module, VLPModel):  # its own parameters: the temperature (and SigLIP's bias)
            loss = module.config.loss
            nn.init.constant_(module.logit_scale, float(loss.logit_scale_init))
            if module.logit_bias is not None:
                nn.init.constant_(module.logit_bias, float(loss.logit_bias_init))
        elif id(module) in getattr(self, "_timm_module_ids", ()):
            return  # the image tower initialises its whole timm model at once (below)
        elif isinstance(module, nn.modules.batchnorm._NormBase):
            if module.affine:
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
            if module.track_running_stats:
                nn.init.zeros_(module.running_mean)
                nn.init.ones_(module.running_var)
                nn.init.zeros_(module.num_batches_tracked)
        elif callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()
        elif isinstance(module, nn.MultiheadAttention):
            module._reset_parameters()
        elif any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False)):
            raise TypeError(f"cannot initialise {type(module).__name__}: it holds parameters or buffers but has no "
                            "reset_parameters(); define one (it is how a module added to a saved model gets its "
                            "initial values)")


class VLPModel(VLPPreTrainedModel):
    """Image tower + text tower + projections into one embedding space, and the heads named in `config.heads`.

    `forward(pixel_values=..., input_ids=..., attention_mask=..., return_loss=True)` returns a `VLPOutput` whose
    `loss` is the weighted sum of the named terms in `losses` (weights: `config.loss_weights()`).
    Each head is a submodule named after it (`model.lovt`, `model.radiomics`); `model.heads` maps names to heads.
    """

    def __init__(self, config: VLPConfig):
        super().__init__(config)
        self.image_tower = ImageTower(config.image_tower)
        self.text_tower = TextTower(config.text_tower)
        dim = config.projection_dim
        self.image_projection = build_projection(config.projection, self.image_tower.num_features, dim)
        self.text_projection = build_projection(config.projection, self.text_tower.hidden_size, dim)
        loss = config.loss
        self.logit_scale = nn.Parameter(torch.tensor(float(loss.logit_scale_init)),
                                        requires_grad=loss.learn_logit_scale)
        self.logit_bias = nn.Parameter(torch.tensor(float(loss.logit_bias_init))) \
            if loss.contrastive == ContrastiveKind.SIGLIP else None
        dims = TowerDims(region_dim=self.image_tower.num_features, token_dim=self.text_tower.hidden_size,
                         embed_dim=dim)
        self.head_names: tuple[str, ...] = tuple(config.heads)
        for name, cls in config.head_classes().items():
            if hasattr(self, name):
                raise ValueError(f"head name {name!r} clashes with an attribute of VLPModel; register it under "
                                 "another name")
            self.add_module(name, cls(config.heads[name], dims, config.head_loss_weights(name)))
        poolers = [name for name, head in self.heads.items() if head.replaces_global_pooling]
        if len(poolers) > 1:
            raise ValueError(f"heads {poolers} each replace the global pooling; enable at most one of them")
        self._pooling_head = poolers[0] if poolers else None
        self._timm_module_ids = frozenset(id(m) for m in self.image_tower.model.modules())
        if not any(p.is_meta for p in self.parameters()):
            # built for real (not on the meta device for loading): every module was initialised by its constructor
            for module in self.modules():
                module._is_hf_initialized = True
        self.post_init()

    @classmethod
    def from_pretrained(cls, pretrained_model_name_or_path, *args, heads=None, **kwargs):
        """`PreTrainedModel.from_pretrained`, and with `heads` (a list of names or a mapping name -> settings) a
        model with exactly those heads: heads the checkpoint has keep their weights and settings, new ones start
        from their initialisation (as in a freshly built model), and the weights of heads left out are dropped."""
        if heads is not None:
            config = kwargs.pop("config", None)
            if config is None:
                hub = {k: kwargs[k] for k in ("cache_dir", "force_download", "local_files_only", "token", "revision",
                                              "subfolder") if k in kwargs}
                config = VLPConfig.from_pretrained(pretrained_model_name_or_path, **hub)
            kwargs["config"] = config.with_heads(heads)
        return super().from_pretrained(pretrained_model_name_or_path, *args, **kwargs)

    @property
    def heads(self) -> dict[str, VLPHead]:
        """Enabled head name -> head module, in the order of `config.heads`."""
        return {name: getattr(self, name) for name in self.head_names}

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
    def pooling_head(self) -> VLPHead | None:
        """The head whose pooling gives the global features (LoVT's attention pooling), if one does."""
        return None if self._pooling_head is None else getattr(self, self._pooling_head)

    def encode_images(self, pixel_values: torch.Tensor) -> ImageEncoding:
        """The global embeddings and the tower's features. The global feature is the tower's own pooling, or that
        of the head that replaces it (LoVT: attention pooling of the regions)."""
        pooler = self.pooling_head
        features = self.image_tower(pixel_values, pool=pooler is None)
        pooled = features.pooled if pooler is None else pooler.pool_image(features)
        return ImageEncoding(F.normalize(self.image_projection(pooled), dim=-1), features)

    def encode_texts(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                     sentence_ids: torch.Tensor | None = None) -> TextEncoding:
        """The global embeddings and the tower's features (LoVT: attention pooling of the sentences)."""
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        features = self.text_tower(input_ids, attention_mask)
        pooler = self.pooling_head
        pooled = features.pooled if pooler is None else pooler.pool_text(features, attention_mask, sentence_ids)
        return TextEncoding(F.normalize(self.text_projection(pooled), dim=-1), features, attention_mask, sentence_ids)

    def get_image_features(self, pixel_values: torch.Tensor, **_) -> torch.Tensor:
        """L2-normalised image embeddings `(B, D)`."""
        return self.encode_images(pixel_values).embeds

    def get_text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor | None = None,
                          sentence_ids: torch.Tensor | None = None, **_) -> torch.Tensor:
        """L2-normalised report embeddings `(B, D)`. `sentence_ids` matter only with LoVT's pooled globals
        (without them each text is one sentence)."""
        return self.encode_texts(input_ids, attention_mask, sentence_ids).embeds

    def scale(self) -> torch.Tensor:
        """exp(logit_scale), clamped at exp(`loss.logit_scale_max`) as CLIP does."""
        return self.logit_scale.clamp(max=self.config.loss.logit_scale_max).exp()

    # -------------------------------------------------------------------------------------- scores, maps
    def score_modes(self) -> tuple[str, ...]:
        """The pairwise image-text scores this model offers: "global", then those its heads supply."""
        return (GLOBAL_SCORE, *(mode for head in self.heads.values() for mode in head.score_modes))

    def pairwise_logits(self, image: ImageEncoding, text: TextEncoding, score_from: str = GLOBAL_SCORE) -> torch.Tensor:
        """(N_images, N_texts) scores: the scaled cosine of the global embeddings, or a head's score."""
        if score_from == GLOBAL_SCORE:
            return self.scale() * image.embeds @ text.embeds.T
        for head in self.heads.values():
            if score_from in head.score_modes:
                return head.pairwise_logits(score_from, image, text, self.scale())
        raise ValueError(f"score_from={score_from!r} is not offered by this model; it offers: "
                         f"{', '.join(self.score_modes())}")

    def region_text_similarity(self, pixel_values: torch.Tensor, input_ids: torch.Tensor,
                               attention_mask: torch.Tensor | None = None,
                               sentence_ids: torch.Tensor | None = None) -> torch.Tensor:
        """(B, h, w) similarity of each region of image b with text b: in the space of the head that grounds text
        (LoVT's local space), else the global one (regions through the image projection, as BioViL grounds)."""
        image = self.encode_images(pixel_values)
        text = self.encode_texts(input_ids, attention_mask, sentence_ids)
        h, w = image.features.grid
        for head in self.heads.values():
            if head.grounds_text:
                return head.region_text_similarity(HeadInputs(image=image, text=text)).view(-1, h, w)
        regions = image.features.regions
        projected = self.image_projection(regions.flatten(0, 1)).view(*regions.shape[:2], -1)  # MLPs take (N, C)
        return torch.einsum("brd,bd->br", F.normalize(projected, dim=-1), text.embeds).view(-1, h, w)

    # --------------------------------------------------------------------------------------- training
    def batch_inputs(self) -> set[HeadInput]:
        """The inputs a training batch needs beyond images and reports (what the collator must produce)."""
        return self.config.head_inputs()

    def idle_parameters(self, with_text: bool = True) -> list[str]:
        """Names of trainable parameters that training in this configuration never updates (so a data-parallel run
        must not wait for their gradients). `with_text=False`: image-only training, the text side is idle."""
        idle = {f"text_tower.{n}" for n in self.text_tower.idle_parameter_names()}
        for name, head in self.heads.items():
            idle |= {f"{name}.{n}" for n in head.idle_parameters()}
        uses_image_embeds = with_text or any(head.uses_image_embeds for head in self.heads.values())
        if not with_text:
            idle |= {n for n, _ in self.named_parameters()
                     if n.startswith(("text_tower.", "text_projection.")) or n in ("logit_scale", "logit_bias")}
        if not uses_image_embeds:
            idle |= {f"image_projection.{n}" for n, _ in self.image_projection.named_parameters()}
        if self.pooling_head is not None or not uses_image_embeds:
            idle |= {f"image_tower.{n}" for n in self.image_tower.pooling_parameter_names()}
        trainable = {n for n, p in self.named_parameters() if p.requires_grad}
        return sorted(idle & trainable)

    # ---------------------------------------------------------------------------------------------- forward
    def forward(
        self,
        pixel_values: torch.Tensor | None = None,
        input_ids: torch.Tensor | None = None,
        attention_mask: torch.Tensor | None = None,
        sentence_ids: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        raw_images: torch.Tensor | None = None,
        views: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        return_loss: bool = False,
        feature_cache: FeatureCache | None = None,
    ) -> VLPOutput:
        """Encode whatever is given; with `return_loss`, compute every enabled objective.

        sentence_ids: (B, T) sentence index of each token, -1 outside sentences (LoVT head).
        labels: (B, L) multi-label targets with NaN for unlabelled entries (radiomics head).
        raw_images: (B, H, W) the unnormalised [0, 1] images the radiomics features are computed from.
        views: (B, k - 1, C, S, S) further augmented views of each image (for heads that compare views).
        image_sizes: the processor's (B, 2) original sizes; accepted so that `model(**processor(...))` works.
        feature_cache: embeddings of the other micro-batches of this optimizer step (gradient accumulation).

        In training (`return_loss`) every enabled head must get the inputs it requires, else a ValueError says
        which and how to get them; without `return_loss` a head runs when its `inference_inputs` are given.
        """
        out = VLPOutput(losses={}, heads={}, logs={})
        image = text = None
        if pixel_values is not None:
            image = self.encode_images(pixel_values)
            out.image_embeds, out.region_grid = image.embeds, image.features.grid
        if input_ids is not None:
            text = self.encode_texts(input_ids, attention_mask, sentence_ids)
            out.text_embeds = text.embeds
        scale = self.scale()
        if image is not None and text is not None:
            out.logits_per_text = scale * text.embeds @ image.embeds.T
            out.logits_per_image = out.logits_per_text.T
            if return_loss:
                out.losses.update(self._global_losses(image.embeds, text.embeds, scale, feature_cache))
        inputs = HeadInputs(image=image, text=text, labels=labels, raw_images=raw_images, views=views,
                            logit_scale=scale, return_loss=return_loss)
        given = inputs.provided()
        for name, head in self.heads.items():
            if return_loss:
                missing = head.required_inputs(head.config, head.loss_weights) - given
                if missing:
                    raise ValueError(missing_input_message(name, missing))
            elif head.inference_inputs(head.config, head.loss_weights) - given:
                continue
            head_out = head(inputs)
            out.heads[name] = head_out
            if return_loss:
                undeclared = sorted(set(head_out.losses or {}) - set(head.loss_names))
                if undeclared:
                    raise ValueError(f"head {name!r} returned loss terms {undeclared} it does not declare in "
                                     f"loss_names {head.loss_names}")
                out.losses.update({f"{name}/{term}": value for term, value in (head_out.losses or {}).items()})
            out.logs.update({f"{name}/{key}": value for key, value in (head_out.logs or {}).items()})
            for key, value in head_out.items():  # the flat fields of the built-in heads
                if key in _HEAD_FIELDS:
                    setattr(out, key, value)
        if return_loss:
            if not out.losses:
                raise ValueError("return_loss=True but no objective applies: give images and texts "
                                 "(or enable a head that trains on images alone)")
            weights = self.config.loss_weights()
            out.loss = sum(weights[name] * value for name, value in out.losses.items())
        return out

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
