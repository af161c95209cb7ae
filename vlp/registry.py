"""The head registry: head names -> head classes.

`register_head` (a class decorator, as open_clip's `register_pooler`) makes a head available by its `name` to
`VLPConfig(heads=...)`, `create_model_and_processor(..., heads=[...])` and `VLPModel.from_pretrained(..., heads=[...])`.
A head defined in a user's own module works once that module is imported; nothing in `vlp` needs editing.

This module sits at the bottom of the package (it imports nothing from `vlp`), so that the configuration can
validate a head's settings against the head's config class without importing the modeling code. The protocol a
head class follows is `vlp.modeling.heads.base.VLPHead`.
"""
from __future__ import annotations

import dataclasses

__all__ = ["register_head", "head_class", "registered_heads", "load_plugins"]

_HEADS: dict[str, type] = {}


def register_head(cls: type) -> type:
    """Register a head class under its `name`. Used as a decorator::

        @register_head
        class MyHead(VLPHead):
            name = "my_head"
            config_class = MyHeadConfig
            loss_names = ("my_term",)

    The name must be a Python identifier (it names the head's parameters in checkpoints, `model.<name>.*`, and its
    loss terms, `<name>/<term>`). Registering another class under a taken name is an error; registering the same
    class again (its module imported twice) replaces the entry.
    """
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name.isidentifier() or name.startswith("_"):
        raise ValueError(f"{cls.__qualname__}.name must be a Python identifier not starting with '_', got {name!r}")
    config_class = getattr(cls, "config_class", None)
    if not (isinstance(config_class, type) and dataclasses.is_dataclass(config_class)):
        raise TypeError(f"{cls.__qualname__}.config_class must be a dataclass, got {config_class!r}")
    loss_names = getattr(cls, "loss_names", None)
    if not isinstance(loss_names, tuple) or not all(isinstance(n, str) and n and "/" not in n for n in loss_names):
        raise TypeError(f"{cls.__qualname__}.loss_names must be a tuple of names without '/', got {loss_names!r}")
    existing = _HEADS.get(name)
    if existing is not None and _origin(existing) != _origin(cls):
        raise ValueError(f"a head named {name!r} is already registered ({existing.__module__}.{existing.__qualname__}); "
                         "choose another name")
    _HEADS[name] = cls
    return cls


def _origin(cls: type) -> tuple:
    """Where a class was defined: its source file (one file imported under two module names is one origin)."""
    import sys

    module = sys.modules.get(cls.__module__)
    return getattr(module, "__file__", None) or cls.__module__, cls.__qualname__


def head_class(name: str) -> type:
    """The head class registered as `name`; an unknown name is an error that lists the registered ones."""
    try:
        return _HEADS[name]
    except KeyError:
        raise ValueError(f"unknown head {name!r}; registered heads are: {', '.join(sorted(_HEADS)) or 'none'} "
                         "(a head defined in your own module registers with @vlp.register_head when that module "
                         "is imported: import it first)") from None


def registered_heads() -> list[str]:
    return sorted(_HEADS)


def load_plugins(specs: list[str] | tuple[str, ...]) -> None:
    """Import the modules that define (and register) heads of one's own: each spec is a module name
    (`my_project.heads`) or the path of a `.py` file. An import that fails is an error naming the spec."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    for spec in specs:
        path = Path(spec)
        try:
            if spec.endswith(".py"):
                if not path.is_file():
                    raise FileNotFoundError(f"no such file: {path}")
                name = f"vlp_plugin_{path.stem}"
                module_spec = importlib.util.spec_from_file_location(name, path)
                module = importlib.util.module_from_spec(module_spec)
                sys.modules[name] = module
                module_spec.loader.exec_module(module)
            else:
                importlib.import_module(spec)
        except Exception as err:  # noqa: BLE001 - any failure of the user's module, named with the spec
            raise ImportError(f"plugin {spec!r} could not be imported ({type(err).__name__}: {err})") from err
