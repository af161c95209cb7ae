"""What trains and how fast: freezing by tower, layer and name pattern, and parameter groups with their own learning
rate and weight decay."""
from __future__ import annotations

from fnmatch import fnmatchcase

from torch import nn

from .config import FreezeSection, ParamGroupSection

__all__ = ["freeze", "parameter_groups", "no_weight_decay"]

DEFAULT_GROUP = "default"


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.LayerNorm, nn.GroupNorm)) \
        or "Norm" in type(module).__name__


def freeze(model: nn.Module, settings: FreezeSection) -> list[str]:
    """Set `requires_grad=False` on the parameters `settings` name; returns their names. A pattern that matches no
    parameter is an error (a typo would otherwise freeze nothing)."""
    frozen: set[str] = set()
    named = dict(model.named_parameters())
    if settings.image_tower:
        frozen |= {n for n in named if n.startswith("image_tower.")}
    if settings.text_tower:
        frozen |= {n for n in named if n.startswith("text_tower.")}
    if settings.text_layers:
        embeddings, layers = model.text_tower.embeddings_and_layers()
        if settings.text_layers > len(layers):
            raise ValueError(f"train.freeze.text_layers={settings.text_layers} but the text tower has {len(layers)} "
                             "layers")
        modules = [embeddings, *layers[:settings.text_layers]]
        ids = {id(p) for module in modules for p in module.parameters()}
        frozen |= {n for n, p in named.items() if id(p) in ids}
    if settings.norms:
        ids = {id(p) for module in model.modules() if _is_norm(module) for p in module.parameters(recurse=False)}
        frozen |= {n for n, p in named.items() if id(p) in ids}
    for pattern in settings.patterns:
        matched = {n for n in named if fnmatchcase(n, pattern)}
        if not matched:
            raise ValueError(f"train.freeze.patterns: {pattern!r} matches no parameter (names look like "
                             f"{', '.join(list(named)[:3])}, ...)")
        frozen |= matched
    for name in frozen:
        named[name].requires_grad_(False)
    return sorted(frozen)


def no_weight_decay(name: str, param) -> bool:
    """open_clip's rule: no weight decay on biases, norms, other 1-D parameters and the logit scale / bias."""
    return param.ndim < 2 or "norm" in name or "bias" in name or "logit_" in name


def parameter_groups(model: nn.Module, lr: float, weight_decay: float,
                     groups: list[ParamGroupSection] = ()) -> list[dict]:
    """Optimizer groups of the trainable parameters: each parameter joins the first group whose patterns match its
    name, else the default group (the run's lr and weight decay); every group is split into a decayed part and a
    no-decay part (`no_weight_decay`). A group that matches no trainable parameter is an error. Each dict has `name`."""
    members: dict[tuple[str, bool], list] = {}
    seen = set()
    for name, param in model.named_parameters():
        if not param.requires_grad:
            continue
        group = next((g for g in groups if any(fnmatchcase(name, p) for p in g.patterns)), None)
        key = (group.name if group else DEFAULT_GROUP, not no_weight_decay(name, param))
        members.setdefault(key, []).append(param)
        if group:
            seen.add(group.name)
    unused = [g.name for g in groups if g.name not in seen]
    if unused:
        raise ValueError(f"train.param_groups {unused} match no trainable parameter; check their patterns")
    settings = {g.name: g for g in groups}
    out = []
    for (group_name, decay), params in members.items():
        group = settings.get(group_name)
        group_lr = lr if group is None or group.lr is None else group.lr
        group_wd = weight_decay if group is None or group.weight_decay is None else group.weight_decay
        out.append({"name": group_name if decay else f"{group_name}/no_decay", "params": params, "lr": group_lr,
                    "weight_decay": group_wd if decay else 0.0})
    return out
