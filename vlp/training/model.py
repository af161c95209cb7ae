"""The model a run trains: built from a preset, or started from a saved `VLPModel` (fine-tuning), with the run's
config keys merged over either and the heads' settings completed from the data."""
from __future__ import annotations

from collections import Counter
from typing import Any

from ..configuration import VLPConfig, normalize_heads, select_heads
from ..factory import configure_processor, create_model_and_processor, load_preset, merge
from ..modeling.model import VLPModel
from ..modeling.towers import TowerUnavailableError, _downloads_allowed, _offline
from ..registry import registered_heads
from .config import ModelSection
from .data import model_config_for_data

__all__ = ["run_model_values", "build_run_model", "loading_summary"]

_TRANSFORMERS_KEYS = ("transformers_version", "architectures", "model_type", "_name_or_path", "dtype", "torch_dtype")


def _saved_config(source: str) -> VLPConfig:
    allow = _downloads_allowed()
    try:
        with _offline(not allow):
            return VLPConfig.from_pretrained(source, local_files_only=not allow)
    except OSError as err:
        raise TowerUnavailableError(
            f"--init-from {source!r}: no saved VLP model there (a folder with config.json and model.safetensors, or a "
            f"hub id in the local cache; set VLP_ALLOW_DOWNLOAD=1 to download). ({err})") from None


def run_model_values(model: ModelSection) -> dict[str, Any]:
    """`VLPConfig` values of the run: the preset's, or with `init_from` the saved model's, with `model.config`
    merged over them. Heads that `model.config` names are exactly the run's heads; a head the saved model has keeps
    its settings (given settings merge over them)."""
    if model.init_from:
        base = {k: v for k, v in _saved_config(model.init_from).to_dict().items() if k not in _TRANSFORMERS_KEYS}
    else:
        base = load_preset(model.preset)
    overrides = dict(model.config)
    legacy = {name: base.pop(name) for name in list(base) if name in registered_heads()}
    base_heads = normalize_heads(base.get("heads"), legacy)
    values = merge(base, {k: v for k, v in overrides.items() if k != "heads"})
    if "heads" in overrides:
        over_legacy = {name: values.pop(name) for name in list(values) if name in registered_heads()}
        values["heads"] = select_heads(base_heads, normalize_heads(overrides["heads"], over_legacy))
    else:
        values["heads"] = base_heads
    return values


def build_run_model(model: ModelSection, values: dict[str, Any], label_names: list[str] | None):
    """(model, processor, loading report or None). The report of a fine-tuning start says which tensors were
    loaded, which are new (initialised as in a fresh model) and which of the checkpoint's were dropped."""
    values = model_config_for_data(values, label_names)
    if not model.init_from:
        net, processor = create_model_and_processor(values)
        return net, processor, None
    from transformers import AutoProcessor

    config = VLPConfig(**values)
    allow = _downloads_allowed()
    with _offline(not allow):
        net, info = VLPModel.from_pretrained(model.init_from, config=config, output_loading_info=True,
                                             local_files_only=not allow)
        processor = AutoProcessor.from_pretrained(model.init_from, local_files_only=not allow)
    configure_processor(processor, net.config)
    loaded = len(net.state_dict()) - len(info["missing_keys"]) - len(info.get("mismatched_keys") or [])
    return net, processor, {"loaded": loaded, "new": sorted(info["missing_keys"]),
                            "dropped": sorted(info["unexpected_keys"]),
                            "mismatched": sorted(str(k[0] if isinstance(k, tuple) else k)
                                                 for k in info.get("mismatched_keys") or [])}


def loading_summary(report: dict) -> str:
    """One line: counts of loaded, new and dropped tensors, new and dropped ones by their top-level module."""
    def by_module(keys):
        counts = Counter(key.split(".")[0] for key in keys)
        return ", ".join(f"{name}.* ({n})" for name, n in sorted(counts.items())) or "none"

    line = (f"{report['loaded']} tensors loaded; {len(report['new'])} new: {by_module(report['new'])}; "
            f"{len(report['dropped'])} dropped: {by_module(report['dropped'])}")
    if report["mismatched"]:
        line += f"; {len(report['mismatched'])} of another shape, re-initialised: {by_module(report['mismatched'])}"
    return line
