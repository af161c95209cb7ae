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
    config: dict[str, Any] = field(default_factory=dict)  # VLPConfig keys that override the preset (or init_from)
    plugins: list[str] = field(default_factory=list)  # modules or .py files to import first (heads of your own)
    # a saved VLPModel (folder or hub id in the local cache) to start from; its config replaces the preset's,
    # `config` still overrides it (new heads start from their initial values)
    init_from: str | None = None


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
    # the augmentation stage: None/"none", a preset name ("lovt", vlp/augmentation/presets) or YAML file, or a mapping
    augmentation: str | dict[str, Any] | None = None
    # validation: a manifest (`val`), and/or the rows of a split (`val_split`) of `val` or of the training manifest
    val: str | None = None
    val_split: str | None = None
    demo_train: int = 2000  # size of the built-in demo data
    demo_test: int = 400
    demo_seed: int = 0
    demo_dir: str | None = None


@dataclass
class FreezeSection:
    """Parameters that do not train: excluded from the optimizer (and from DistributedDataParallel)."""

    image_tower: bool = False  # the whole image tower (open_clip's --lock-image)
    text_tower: bool = False  # the whole text tower (open_clip's --lock-text)
    text_layers: int = 0  # the text tower's embeddings and its first N layers (LoVT / ConVIRT: 6); 0: none
    norms: bool = False  # the weights and biases of every norm layer (running statistics still update)
    patterns: list[str] = field(default_factory=list)  # parameter-name patterns (fnmatch), e.g. "image_tower.*"


@dataclass
class ParamGroupSection:
    """Parameters whose names match `patterns` (fnmatch; the first group that matches wins) train with their own
    learning rate and weight decay (None: the run's). Biases, norms and the logit scale never get weight decay."""

    name: str
    patterns: list[str]
    lr: float | None = None
    weight_decay: float | None = None


@dataclass
class TrainSection:
    batch_size: int = 32  # per process, per micro-batch
    grad_accum: int = 1  # micro-batches per optimizer step
    # with grad_accum > 1: every micro-batch of a step serves as negatives of the global loss (feature caching, as
    # open_clip's --accum-freq); False: each micro-batch has its own negatives (plain gradient accumulation, LoVT's)
    cache_negatives: bool = True
    lr: float = 1e-3
    weight_decay: float = 0.1
    param_groups: list[ParamGroupSection] = field(default_factory=list)
    freeze: FreezeSection = field(default_factory=FreezeSection)
    warmup_steps: int = 50
    max_steps: int = 200
    max_grad_norm: float | None = 1.0
    # None: the launcher's choice (accelerate launch --mixed_precision, or `accelerate config`) stands
    mixed_precision: Literal["no", "fp16", "bf16"] | None = None
    grad_checkpointing: bool = False
    seed: int = 0
    log_every: int = 10
    save_every: int = 100
    keep_checkpoints: int = 2
    eval_every: int = 0  # validate every N steps (and at the end); 0: at the end only, when there is validation data
    best_metric: str = "val/mean_recall"  # the logged metric that picks OUTPUT_DIR/best (higher is better)
    report_to: str = "tensorboard"  # Accelerate trackers: tensorboard, wandb, ..., "all" or "none" (comma-separated)
    # CPU-only runs: intra-op threads per process. None: the measured default (docs/benchmarks/cpu_threads.md)
    cpu_threads: int | None = None

    def __post_init__(self):
        self.param_groups = [config_from_dict(ParamGroupSection, g, "train.param_groups[]") for g in self.param_groups]
        self.freeze = config_from_dict(FreezeSection, self.freeze, "train.freeze")


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
