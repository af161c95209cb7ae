"""The training dataset a run asks for: a manifest through `ManifestDataset`, or the built-in demo data."""
from __future__ import annotations

import dataclasses
from pathlib import Path

from ..data.dataset import ColumnConfig, ManifestDataset, ManifestIterableDataset
from ..data.manifest import read_manifest
from .config import DataSection


def demo_manifest(data: DataSection) -> Path:
    """Generate (once, cached) the built-in phantom data and return its manifest."""
    from ..data.demo import DemoConfig, default_demo_dir, generate_demo_dataset

    out = Path(data.demo_dir) if data.demo_dir else default_demo_dir()
    return generate_demo_dataset(out, n_train=data.demo_train, n_test=data.demo_test,
                                 seed=data.demo_seed, config=DemoConfig(seed=data.demo_seed))


def build_train_dataset(data: DataSection, strict: bool = False, rank: int = 0,
                        world_size: int = 1) -> ManifestDataset | ManifestIterableDataset:
    """The rows to train on. With no `data.train`, the demo data's `train` split (labels: the demo findings).

    With `data.streaming` the manifest is read as it is needed (`ManifestIterableDataset`, rows dealt to the
    `world_size` processes by `rank`, shuffled within `data.shuffle_buffer` rows)."""
    if data.streaming:
        if data.train is None:
            raise ValueError("data.streaming needs a manifest (data.train / --train-data); the demo data fits in memory")
        if data.split_column:
            raise ValueError("data.split_column is not supported with data.streaming; write the split's rows to "
                             "their own manifest")
        return ManifestIterableDataset(Path(data.train), columns=_columns(data), image_root=data.image_root,
                                       strict=strict, shuffle_buffer=data.shuffle_buffer, seed=data.shuffle_seed,
                                       rank=rank, world_size=world_size)
    if data.train is None:
        from ..data.demo import FINDINGS

        return build_dataset(demo_manifest(data), data, split_column="split", split="train",
                             labels_column=data.labels_column or "labels",
                             label_names=data.label_names or list(FINDINGS), strict=strict)
    return build_dataset(Path(data.train), data, strict=strict)


def build_validation_dataset(data: DataSection, strict: bool = False) -> ManifestDataset | None:
    """The validation rows, or None: `data.val` (a manifest; with `data.val_split` only that split's rows), or
    without it the `data.val_split` rows of the training manifest (the demo data's when there is none)."""
    if data.val is None and data.val_split is None:
        return None
    split_column = (data.split_column or "split") if data.val_split is not None else None
    rows = dataclasses.replace(data, split_column=split_column, split=data.val_split)
    if data.val is None and data.train is None:
        from ..data.demo import FINDINGS

        return build_dataset(demo_manifest(data), rows, labels_column=data.labels_column or "labels",
                             label_names=data.label_names or list(FINDINGS), strict=strict)
    return build_dataset(Path(data.val or data.train), rows, strict=strict)


def build_dataset(manifest: Path, data: DataSection, split_column: str | None = None, split: str | None = None,
                  labels_column: str | None = None, label_names: list[str] | None = None,
                  strict: bool = False) -> ManifestDataset:
    split_column = split_column or data.split_column
    split = split or data.split
    columns = _columns(data, labels_column, label_names)
    if split_column and split is not None:
        rows = read_manifest(manifest)
        if split_column not in rows.column_names:
            raise ValueError(f"{manifest}: split column {split_column!r} not found; columns: {rows.column_names}")
        rows = rows.filter(lambda value: value == split, input_columns=split_column)
        return ManifestDataset(rows, columns=columns, image_root=data.image_root or manifest.parent, strict=strict)
    return ManifestDataset(manifest, columns=columns, image_root=data.image_root, strict=strict)


def _columns(data: DataSection, labels_column: str | None = None, label_names: list[str] | None = None) -> ColumnConfig:
    return ColumnConfig(image=data.image_column, text=data.text_column, labels=labels_column or data.labels_column,
                        label_names=label_names or data.label_names, boxes=data.boxes_column,
                        patient_id=data.patient_column, uncertain=data.uncertain)


def model_config_for_data(values: dict, label_names: list[str] | None) -> dict:
    """Model config values (`VLPConfig` keys) with each enabled head's settings completed from the training data
    by the head's `adapt_to_data` (the radiomics classifier takes its findings from the label columns)."""
    from ..configuration import normalize_heads
    from ..registry import head_class, registered_heads

    values = dict(values)
    legacy = {name: values.pop(name) for name in list(values) if name in registered_heads()}
    heads = normalize_heads(values.get("heads"), legacy)
    values["heads"] = {name: head_class(name).adapt_to_data(dict(settings or {}), label_names)
                       for name, settings in heads.items()}
    return values
