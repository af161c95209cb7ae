"""Reading manifests (JSONL, CSV, Parquet or a saved `datasets` dataset) through `datasets`."""
from __future__ import annotations

from pathlib import Path

import datasets

_BUILDERS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


def read_manifest(path: str | Path, streaming: bool = False) -> datasets.Dataset | datasets.IterableDataset:
    """Load a manifest file or a `save_to_disk` directory as a `datasets` dataset (one row per image)."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"manifest not found: {path}")
    if path.is_dir():
        if streaming:
            return datasets.load_from_disk(str(path)).to_iterable_dataset()
        return datasets.load_from_disk(str(path))
    builder = _BUILDERS.get(path.suffix.lower())
    if builder is None:
        raise ValueError(f"{path}: unknown manifest format {path.suffix!r}; use .jsonl, .csv, .parquet or a saved dataset folder")
    return datasets.load_dataset(builder, data_files=str(path), split="train", streaming=streaming)
