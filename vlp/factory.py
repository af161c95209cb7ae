"""`create_model_and_processor(preset, **overrides)`: a model and its matching processor from a named preset.

Presets are small JSON files in `vlp/presets/` (or a path to your own JSON/YAML file with the same keys).
`tiny` builds random-init towers offline in seconds; the others name real towers, whose weights must be in the
local cache or a local directory (vlp never downloads at run time unless asked).
"""
from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from .configuration import HeadInput, VLPConfig
from .modeling.model import VLPModel
from .modeling.towers import TowerUnavailableError, _downloads_allowed, _offline
from .paths import resolve_location
from .processing import VLPImageProcessor, VLPProcessor

PRESET_DIR = Path(__file__).parent / "presets"


def available_presets() -> list[str]:
    return sorted(p.stem for p in PRESET_DIR.glob("*.json"))


def load_preset(preset: str | Path | dict[str, Any]) -> dict[str, Any]:
    """The config dict of a named preset, of a JSON/YAML file, or a copy of a dict given as is."""
    if isinstance(preset, dict):
        return copy.deepcopy(preset)
    path = Path(preset)
    if not path.is_file():
        path = PRESET_DIR / f"{preset}.json"
        if not path.is_file():
            raise ValueError(f"unknown preset {str(preset)!r}; available: {', '.join(available_presets())} "
                             "(or give the path of a JSON/YAML config file)")
    text = path.read_text()
    if path.suffix in (".yaml", ".yml"):
        import yaml
        values = yaml.safe_load(text) or {}
    else:
        values = json.loads(text)
    return {k: v for k, v in values.items() if not k.startswith("_")}


def merge(base: dict[str, Any], overrides: dict[str, Any]) -> dict[str, Any]:
    """Recursive dict update: nested dicts merge key by key, anything else (an empty dict too) replaces.

    A nested dict that names a different `model_name` replaces its base whole: a tower's `model_kwargs`
    belong to its architecture and must not leak into another (a ResNet's `output_stride` into a ViT).
    """
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        base_value = out.get(key)
        new_model = (isinstance(value, dict) and isinstance(base_value, dict) and "model_name" in value
                     and value["model_name"] != base_value.get("model_name"))
        if isinstance(value, dict) and value and isinstance(base_value, dict) and not new_model:
            out[key] = merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def create_processor(config: VLPConfig) -> VLPProcessor:
    """The processor that matches `config`: the text tower's tokenizer and the image tower's input."""
    text = config.text_tower
    source = resolve_location(text.tokenizer or text.model_name)
    if not source:
        raise ValueError("text_tower.tokenizer is required when text_tower.model_name is empty")
    allow = text.allow_download or _downloads_allowed()
    try:
        with _offline(not allow):
            tokenizer = AutoTokenizer.from_pretrained(source, local_files_only=not allow)
    except OSError as err:
        raise TowerUnavailableError(
            f"tokenizer {source!r} is not available locally; point text_tower.tokenizer to a local directory "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    tokenizer.model_max_length = text.max_length
    image = config.image_tower
    image_processor = VLPImageProcessor(image_size=image.image_size, num_channels=image.in_chans,
                                        image_mean=image.image_mean, image_std=image.image_std)
    processor = VLPProcessor(image_processor=image_processor, tokenizer=tokenizer)
    return configure_processor(processor, config)


def configure_processor(processor: VLPProcessor, config: VLPConfig) -> VLPProcessor:
    """Make `processor` return by default the inputs the heads of `config` need (sentence ids, raw images)."""
    needs = config.head_inputs()
    processor.return_sentence_ids = HeadInput.SENTENCE_IDS in needs
    processor.return_raw_images = HeadInput.RAW_IMAGES in needs
    return processor


def create_model_and_processor(preset: str | Path | dict[str, Any] = "tiny", load_pretrained: bool = True,
                               init: str | Path | None = None, revision: str | None = None,
                               **overrides: Any) -> tuple[VLPModel, VLPProcessor]:
    """Build `VLPModel` and `VLPProcessor` from a preset (a name, a JSON/YAML file or a config dict), with config
    keys overridden by keyword; or with `init` load a saved model: a folder, or a Hub repo id (`revision`: a branch,
    tag or commit), then `heads=` may choose its heads (new ones start from their initial values).

    Example: `create_model_and_processor("tiny", heads=["lovt"], image_tower={"image_size": 96})`,
    `create_model_and_processor(init="my-lab/cxr-vlp", heads=["lovt"])`.
    `load_pretrained` loads the towers' pretrained weights where the preset names them.
    """
    if init is not None:
        return _load_model_and_processor(str(init), revision, **overrides)
    values = merge(load_preset(preset), overrides)
    config = VLPConfig(**values)
    processor = create_processor(config)
    text = config.text_tower
    if text.model_config is not None and "vocab_size" not in text.model_config:
        text.model_config = {**text.model_config, "vocab_size": len(processor.tokenizer)}
    model = VLPModel(config)
    if load_pretrained:
        model.load_pretrained_towers()
    return model, processor


def _load_model_and_processor(init: str, revision: str | None, heads: Any = None,
                              **others: Any) -> tuple[VLPModel, VLPProcessor]:
    from transformers import AutoProcessor

    if others:
        raise ValueError(f"with init=, only heads= can change the saved model (got {sorted(others)}); the rest of its "
                         "config is what it was trained with")
    try:
        model = VLPModel.from_pretrained(init, revision=revision, heads=heads)
        processor = AutoProcessor.from_pretrained(init, revision=revision)
    except OSError as err:
        raise TowerUnavailableError(
            f"init={init!r}: no saved vlp model there, and it could not be downloaded (not a folder; a Hub id must be "
            "in the local cache when HF_HUB_OFFLINE=1 or without network). "
            f"({type(err).__name__}: {str(err).splitlines()[0] if str(err) else ''})") from None
    return model, configure_processor(processor, model.config)
