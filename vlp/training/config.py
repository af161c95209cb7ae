"""Typed configuration of a pretraining run: YAML file sections, each a small dataclass; unknown keys fail."""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from ..configuration import config_from_dict


@dataclass
class ModelSection:
    preset: str = "tiny"  # a name from vlp/presets or a JSON/YAML file
    config: dict[str, Any] = field(default_factory=dict)  # VLPConfig keys that override the preset
    plugins: list[str] = field(default_factory=list)  # modules or .py files to import first (heads of your own)


@dataclass
class DataSection:
    train: str | None = None  # manifest (JSONL/CSV/Parquet/saved dataset); None: the built-in demo data
    image_column: str = "image"
    text_column: str | None = "text"  # None: image-only training (heads that need no report)
    labels_column: str | None = None
    label_names: list[str] | None = None
    image_root: str | None = None  # image paths relative to this folder instead of the manifest's
    split_column: str | None = None  # keep only rows whose split_column equals split
    split: str | None = None
    strict: bool = False  # the first bad row stops the run with its file and row
    num_workers: int = 2
    boxes_column: str | None = None
    patient_column: str | None = None
    uncertain: Literal["ignore", "zeros", "ones", "keep"] = "ignore"  # CheXpert -1 labels (UncertainPolicy)
    streaming: bool = False  # read the manifest as needed (for manifests too big for memory)
    shuffle_buffer: int = 1000  # streaming: rows shuffled together
    shuffle_seed: int = 0
    demo_train: int = 2000  # size of the built-in demo data
    demo_test: int = 400
    demo_seed: int = 0
    demo_dir: str | None = None


@dataclass
class TrainSection:
    batch_size: int = 32  # per process, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step; all of them serve as negatives (feature caching)
    lr: float = 1e-3
    weight_decay: float = 0.1
    warmup_steps: int = 50
    max_steps: int = 200
    max_grad_norm: float | None = 1.0
    mixed_precision: Literal["no", "fp16", "bf16"] = "no"
    grad_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    keep_checkpoints: int = 2
    # CPU-only runs: intra-op threads per process. None: the machine's physical cores shared among the local
    # processes (what `accelerate launch --cpu` picks; plain `accelerate launch` would leave each process 1 thread)
    cpu_threads: int | None = None


@dataclass
class PretrainConfig:
    model: ModelSection = field(default_factory=ModelSection)
    data: DataSection = field(default_factory=DataSection)
    train: TrainSection = field(default_factory=TrainSection)
    output_dir: str = "runs/pretrain"

    @classmethod
    def from_dict(cls, values: dict[str, Any], where: str = "config") -> "PretrainConfig":
        values = dict(values or {})
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in {where}; valid top-level keys are: {', '.join(sorted(names))}")
        return cls(model=config_from_dict(ModelSection, values.get("model"), f"{where}: model"),
                   data=config_from_dict(DataSection, values.get("data"), f"{where}: data"),
                   train=config_from_dict(TrainSection, values.get("train"), f"{where}: train"),
                   output_dir=values.get("output_dir", cls.output_dir))

    @classmethod
    def from_yaml(cls, path: str | Path) -> "PretrainConfig":
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config file not found: {path}")
        return cls.from_dict(yaml.safe_load(path.read_text()) or {}, where=str(path))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)
