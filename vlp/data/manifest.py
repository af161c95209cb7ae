"""Manifests: reading (JSONL, CSV, Parquet or a saved `datasets` dataset, through `datasets`) and writing JSONL.

A manifest has one row per image. The adapters in `vlp.data.adapters` write the columns `image` (path relative to
the manifest's folder), `text`, `labels`, `boxes`, `patient_id` and dataset-specific extras; see `docs/data.md`.
"""
from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import datasets

__all__ = ["read_manifest", "write_manifest", "manifest_relative", "index_files"]

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


def _plain(value: Any) -> Any:
    """JSON-safe copy: NaN/inf -> None, numpy scalars -> Python, paths -> str, tuples -> lists."""
    if isinstance(value, float):
        return None if not math.isfinite(value) else value
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return Path(value).as_posix()
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:  # numpy scalar
        return _plain(value.item())
    return value


def write_manifest(rows: Iterable[dict], out: str | Path) -> Path:
    """Write `rows` as JSON Lines to `out` (parent folders created; written to a temporary file, then renamed, so a
    failed run leaves no half manifest). NaN becomes null. Returns the path."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(_plain(row), ensure_ascii=False) + "\n")
    os.replace(tmp, out)
    return out


def manifest_relative(path: str | Path, manifest: str | Path) -> str:
    """`path` relative to the manifest's folder (POSIX separators), so `ManifestDataset` finds it with no
    `image_root`; absolute when no relative path exists (another drive)."""
    path = Path(path).absolute()
    base = Path(manifest).absolute().parent
    try:
        return Path(os.path.relpath(path, base)).as_posix()
    except ValueError:
        return path.as_posix()


def index_files(root: str | Path, suffixes: Iterable[str] = (".png", ".jpg", ".jpeg", ".dcm")) -> dict[str, Path]:
    """Map file name -> path for every file under `root` with one of `suffixes` (case-insensitive), following the
    release folders wherever the images were unpacked (e.g. NIH's `images_001/images/`). The first path found wins
    for a duplicated name."""
    suffixes = tuple(s.lower() for s in suffixes)
    found: dict[str, Path] = {}
    for folder, _dirs, files in os.walk(root, followlinks=True):
        for name in files:
            if name.lower().endswith(suffixes) and name not in found:
                found[name] = Path(folder) / name
    return found
