"""The two towers: a timm image model and a Hugging Face text encoder, each returning global and local features.

A tower's `__init__` only builds the architecture (so `VLPModel.from_pretrained` never touches the network);
pretrained tower weights are loaded once, by `load_pretrained_weights`, when a model is first created.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import timm
import torch
from torch import nn
from transformers import AutoConfig, AutoModel

from ..configuration import ImageTowerConfig, TextTowerConfig
from ..paths import resolve_location


class TowerUnavailableError(OSError):
    """A tower's weights or files are named but not available locally."""


@dataclass
class ImageFeatures:
    pooled: torch.Tensor | None  # (B, C) the tower's own global pooling (None when it was not asked for)
    regions: torch.Tensor  # (B, R, C) feature-map cells (CNN) or patch tokens (ViT), row-major over `grid`
    grid: tuple[int, int]  # (h, w) with h * w == R


@dataclass
class TextFeatures:
    pooled: torch.Tensor  # (B, H)
    tokens: torch.Tensor  # (B, T, H) last hidden state


class ImageTower(nn.Module):
    """A timm backbone without its classifier. Regions are the last feature map's cells or the patch tokens."""

    def __init__(self, config: ImageTowerConfig):
        super().__init__()
        self.config = config
        self.model = self._build()
        self.is_vit = hasattr(self.model, "patch_embed")
        self.num_features = self.model.num_features

    def _build(self) -> nn.Module:
        config = self.config
        kwargs = dict(pretrained=False, num_classes=0, in_chans=config.in_chans, **config.model_kwargs)
        try:  # transformer families need the input size at construction; CNNs do not take it
            return timm.create_model(config.model_name, img_size=config.image_size, **kwargs)
        except TypeError:
            return timm.create_model(config.model_name, **kwargs)
        except RuntimeError as err:  # unknown model name
            raise ValueError(f"image_tower.model_name={config.model_name!r}: {err}") from None

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """timm's own initialisation: a freshly built copy of the model gives every tensor that no checkpoint
        filled (`transformers.initialization.copy_` leaves the loaded ones, which carry its flag, alone)."""
        from transformers import initialization as init

        fresh = self._build()
        fresh_tensors = {**dict(fresh.named_parameters()), **dict(fresh.named_buffers())}
        for name, tensor in [*self.model.named_parameters(), *self.model.named_buffers()]:
            init.copy_(tensor, fresh_tensors[name].to(tensor.dtype))

    def pooling_parameter_names(self) -> set[str]:
        """Names (relative to the tower) of the parameters used only by the tower's own global pooling
        (`forward_head`: a ConvNeXt's head norm, a ViT's `fc_norm` or attention pool); found by differentiating
        a pooled feature with respect to every parameter on a one-image probe."""
        size = self.config.image_size
        params = [(name, p) for name, p in self.named_parameters() if p.requires_grad]
        if not params:
            return set()
        was_training = self.training
        self.eval()
        try:
            with torch.enable_grad():
                device = params[0][1].device
                probe = torch.zeros(1, self.config.in_chans, size, size, device=device)
                feats = self.model.forward_features(probe).detach()
                pooled = self.model.forward_head(feats, pre_logits=True)
                if not pooled.requires_grad:  # parameter-free pooling (a ResNet's average pool)
                    return set()
                grads = torch.autograd.grad(pooled.float().sum(), [p for _, p in params], allow_unused=True)
        finally:
            self.train(was_training)
        return {name for (name, _), grad in zip(params, grads) if grad is not None}

    def forward(self, pixel_values: torch.Tensor, pool: bool = True) -> ImageFeatures:
        """Regions, and with `pool` the tower's own pooled feature (a head that pools the regions itself leaves
        it out, and with it the tower's pooling parameters)."""
        feats = self.model.forward_features(pixel_values)
        pooled = self.model.forward_head(feats, pre_logits=True) if pool else None
        if self.is_vit:
            prefix = getattr(self.model, "num_prefix_tokens", 0)
            regions = feats[:, prefix:]
            grid = tuple(self.model.patch_embed.dynamic_feat_size(pixel_values.shape[-2:])
                         if getattr(self.model.patch_embed, "dynamic_img_size", False)
                         else self.model.patch_embed.grid_size)
        else:
            grid = tuple(feats.shape[-2:])
            regions = feats.flatten(2).transpose(1, 2)
        return ImageFeatures(pooled=pooled, regions=regions, grid=grid)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        self.model.set_grad_checkpointing(enable)

    def load_pretrained_weights(self) -> None:
        """Load timm weights from `checkpoint_path`, or timm's pretrained weights from the local cache."""
        cfg = self.config
        if cfg.checkpoint_path:
            path = Path(cfg.checkpoint_path)
            if not path.is_file():
                raise TowerUnavailableError(f"image_tower.checkpoint_path {path} does not exist")
            timm.models.load_checkpoint(self.model, str(path), strict=False)
        elif cfg.pretrained:
            try:
                with _offline(not _downloads_allowed()):
                    weights = timm.create_model(cfg.model_name, pretrained=True, num_classes=0,
                                                in_chans=cfg.in_chans, **cfg.model_kwargs).state_dict()
            except Exception as err:  # noqa: BLE001 - timm raises many kinds when the file is missing
                raise TowerUnavailableError(
                    f"pretrained weights for image tower {cfg.model_name!r} are not in the local cache ({err}). "
                    "Set image_tower.checkpoint_path to a local weights file, set image_tower.pretrained=false "
                    "for random init, or set VLP_ALLOW_DOWNLOAD=1 on a machine with internet.") from None
            self.model.load_state_dict(weights, strict=False)


class TextTower(nn.Module):
    """A Hugging Face encoder (BERT family). Pooled output: [CLS] token or mean over real tokens."""

    def __init__(self, config: TextTowerConfig):
        super().__init__()
        self.config = config
        hf_config = resolve_text_config(config)
        try:  # the tower reads the last hidden states: no pooler where the model class lets it go
            self.model = AutoModel.from_config(hf_config, add_pooling_layer=False)
        except TypeError:
            self.model = AutoModel.from_config(hf_config)
        self.hidden_size = hf_config.hidden_size

    def embeddings_and_layers(self) -> tuple[nn.Module, nn.ModuleList]:
        """The encoder's embedding module and its list of transformer layers, in order (for freezing the first N
        layers, as LoVT and ConVIRT freeze Bio_ClinicalBERT's embeddings and first six layers)."""
        model = self.model
        embeddings = getattr(model, "embeddings", None)
        for path in ("encoder.layer", "transformer.layer", "encoder.layers", "layers", "layer"):
            layers = model
            for part in path.split("."):
                layers = getattr(layers, part, None)
            if isinstance(layers, nn.ModuleList) and embeddings is not None:
                return embeddings, layers
        raise ValueError(f"cannot find the embeddings and layer list of text tower {type(model).__name__}; freeze "
                         "its parameters by name patterns instead (train.freeze.patterns)")

    def idle_parameter_names(self) -> set[str]:
        """Names (relative to the tower) of parameters its forward never uses: a pooler the model class keeps."""
        return {f"model.{name}" for name, _ in self.model.named_parameters() if name.startswith("pooler.")}

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> TextFeatures:
        tokens = self.model(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        if self.config.pooling == "cls":
            pooled = tokens[:, 0]
        else:
            mask = attention_mask.unsqueeze(-1).to(tokens.dtype)
            pooled = (tokens * mask).sum(1) / mask.sum(1).clamp_min(1.0)
        return TextFeatures(pooled=pooled, tokens=tokens)

    def set_grad_checkpointing(self, enable: bool = True) -> None:
        if enable:
            self.model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        else:
            self.model.gradient_checkpointing_disable()

    def load_pretrained_weights(self) -> None:
        """Load the named model's weights (local cache or directory only, unless downloads are allowed)."""
        name = resolve_location(self.config.model_name)
        if not name:
            return
        allow = self.config.allow_download or _downloads_allowed()
        try:
            with _offline(not allow):
                pretrained = AutoModel.from_pretrained(name, local_files_only=not allow)
        except OSError as err:
            raise TowerUnavailableError(_missing_text_model_message(name, err)) from None
        missing, unexpected = self.model.load_state_dict(pretrained.state_dict(), strict=False)
        missing = [k for k in missing if "pooler" not in k]
        if missing:
            raise TowerUnavailableError(f"text tower {name!r}: weights missing for {missing[:5]}...")


def resolve_text_config(config: TextTowerConfig):
    """The text model's architecture: the inline `model_config`, else the named model's config from local files.

    The resolved dict is written back to `config.model_config`, so a saved VLP checkpoint is self-contained.
    """
    if config.model_config is not None:
        values = dict(config.model_config)
        model_type = values.pop("model_type", "bert")
        return AutoConfig.for_model(model_type, **values)
    if not config.model_name:
        raise ValueError("text_tower needs model_name (a hub id or local path) or model_config (an inline config)")
    allow = config.allow_download or _downloads_allowed()
    try:
        with _offline(not allow):
            hf_config = AutoConfig.from_pretrained(resolve_location(config.model_name), local_files_only=not allow)
    except OSError as err:
        raise TowerUnavailableError(_missing_text_model_message(config.model_name, err)) from None
    config.model_config = {k: v for k, v in hf_config.to_diff_dict().items()
                           if k not in ("transformers_version", "architectures", "_name_or_path")}
    config.model_config["model_type"] = hf_config.model_type
    return hf_config


def _missing_text_model_message(name: str, err: Exception) -> str:
    return (f"text tower {name!r} is not available locally and vlp does not download at run time. "
            f"Download it once on a machine with internet (e.g. `huggingface-cli download {name}`) and copy the "
            "Hugging Face cache, or point text_tower.model_name (and text_tower.tokenizer) to a local directory "
            "that holds config.json and the weights; set text_tower.allow_download=true (or VLP_ALLOW_DOWNLOAD=1) "
            f"to let vlp download. ({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})")


def _downloads_allowed() -> bool:
    return os.environ.get("VLP_ALLOW_DOWNLOAD", "0") not in ("", "0", "false", "False")


class _offline:
    """Context manager that sets HF_HUB_OFFLINE so that no library call waits on the network."""

    def __init__(self, enable: bool):
        self.enable = enable

    def __enter__(self):
        if self.enable:
            self.saved = {k: os.environ.get(k) for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
            os.environ["HF_HUB_OFFLINE"] = "1"
            os.environ["TRANSFORMERS_OFFLINE"] = "1"
            _refresh_hub_constants()

    def __exit__(self, *exc):
        if self.enable:
            for k, v in self.saved.items():
                if v is None:
                    os.environ.pop(k, None)
                else:
                    os.environ[k] = v
            _refresh_hub_constants()


def _refresh_hub_constants():
    """huggingface_hub reads HF_HUB_OFFLINE once at import; keep its constant in step with the variable."""
    try:
        from huggingface_hub import constants
        constants.HF_HUB_OFFLINE = os.environ.get("HF_HUB_OFFLINE", "0") not in ("", "0", "false", "False")
    except (ImportError, AttributeError):
        pass
