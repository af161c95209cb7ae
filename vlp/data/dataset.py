"""`ManifestDataset`: image-report pairs (and optional labels and boxes) from a manifest, loaded lazily.

A manifest has one row per image (see `docs/data.md`). Image paths are relative to the manifest's folder, or to
`image_root` when given; absolute paths are used as they are. A row that cannot give a sample (missing file,
zero-byte or truncated image, unreadable DICOM, empty or non-text report, malformed labels or boxes) comes back as
`{"index": i, "path": str, "skip": reason, "detail": str}` so one bad file does not stop a long run:
`collate_skipping` drops those items from a batch and `SkipLog` counts them by reason for the epoch's log. With
`strict=True` the first bad row raises `BadSampleError` instead.

Labels (`ColumnConfig.labels`) come in three supported forms, each returned as float32 (L,) in the order of
`label_names`, with NaN for "unknown":

1. `LabelForm.NAMES`: one column whose cells list the positive names (`["Cardiomegaly", "Edema"]`, or one string
   `"Cardiomegaly|Edema"` as in NIH's `Finding Labels`). Listed names are 1, the other names 0; a null cell is all
   NaN. Names not in `label_names` are ignored. `label_names` defaults to the sorted union over the manifest.
2. `LabelForm.DICT`: one column of dicts `{name: 1 | 0 | -1 | null}` (CheXpert-style labeler output). 1 and 0
   are kept, null / missing names are NaN, -1 (uncertain) follows `ColumnConfig.uncertain`. `label_names`
   defaults to the dict's keys.
3. `LabelForm.COLUMNS`: a list of columns, one per label, each holding 1 / 0 / -1 / blank as in CheXpert's
   `train.csv`. `label_names` defaults to the column names.

Boxes (`ColumnConfig.boxes`): a column of lists of dicts, returned as `{"label", "x", "y", "w", "h"}` in pixels of
the image file that is loaded. Accepted box dicts: `{label|finding|name|category, x, y, w, h}`, the same with
`x_resized, y_resized, w_resized, h_resized` (preferred when present: the shared NIH manifest keeps both the
original 1024 px and the stored 256 px coordinates), `bbox_xywh_resized` / `bbox_xywh` / `bbox` lists `[x, y, w, h]`,
or `x1, y1, x2, y2`.
"""
from __future__ import annotations

import logging
import math
import os
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from enum import Enum
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import torch

from .images import BadImageError, SkipReason, check_image_file, load_image
from .manifest import read_manifest
from .reports import decode_text, report_text

__all__ = [
    "BadSampleError", "ColumnConfig", "LabelForm", "ManifestDataset", "ManifestIterableDataset", "SkipLog",
    "SkipReason", "SkipRecord", "UncertainPolicy", "ValidationReport", "collate_skipping", "label_to_number",
    "normalize_box",
]

logger = logging.getLogger(__name__)


class UncertainPolicy(str, Enum):
    """What an uncertain (-1) label becomes (Irvin et al., CheXpert, AAAI 2019: U-Ignore, U-Ones, U-Zeros)."""

    IGNORE = "ignore"  # NaN: masked out of the loss
    ONES = "ones"
    ZEROS = "zeros"
    KEEP = "keep"  # -1 stays -1


class LabelForm(str, Enum):
    """How the labels are stored in the manifest (see the module docstring)."""

    NAMES = "names"
    DICT = "dict"
    COLUMNS = "columns"


@dataclass
class ColumnConfig:
    """Which manifest columns hold what. `text=None` reads images only; `labels`, `boxes`, `patient_id` are optional."""

    image: str = "image"
    text: str | None = "text"
    labels: str | list[str] | None = None
    boxes: str | None = None
    patient_id: str | None = None
    label_names: list[str] | None = None
    uncertain: UncertainPolicy | str = UncertainPolicy.IGNORE

    def __post_init__(self):
        self.uncertain = UncertainPolicy(self.uncertain)
        if isinstance(self.labels, tuple):
            self.labels = list(self.labels)

    def named_columns(self) -> list[str]:
        cols = [self.image, self.text, self.boxes, self.patient_id]
        cols += self.labels if isinstance(self.labels, list) else [self.labels]
        return [c for c in cols if c is not None]


class BadSampleError(Exception):
    """A bad row met with `strict=True`: names the row, the file and the reason."""

    def __init__(self, index: int, path: str, reason: SkipReason | str, detail: str = ""):
        self.index, self.path, self.reason, self.detail = index, path, SkipReason(reason), detail
        extra = f" ({detail})" if detail else ""
        super().__init__(f"row {index} ({path}): {self.reason.value}{extra}. Fix or remove the row, or run without "
                         "strict mode (--strict) to skip bad rows and count them.")

    def __reduce__(self):
        return (type(self), (self.index, self.path, self.reason, self.detail))


class _Skip(Exception):
    def __init__(self, reason: SkipReason, detail: str = ""):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


@dataclass
class SkipRecord:
    index: int
    path: str
    reason: str
    detail: str = ""


@dataclass
class SkipLog:
    """Collects skipped rows; the training loop adds each batch's skipped items and logs `format()` per epoch."""

    records: list[SkipRecord] = field(default_factory=list)

    def add(self, items: dict | SkipRecord | Iterable[dict | SkipRecord]) -> None:
        """Record one skipped item (a dict with a "skip" key, as `__getitem__` returns) or several."""
        if isinstance(items, (dict, SkipRecord)):
            items = [items]
        for item in items:
            if isinstance(item, SkipRecord):
                self.records.append(item)
            elif isinstance(item, dict) and "skip" in item:
                self.records.append(SkipRecord(int(item["index"]), str(item.get("path", "")), str(item["skip"]),
                                               str(item.get("detail", ""))))

    def summary(self) -> dict[str, int]:
        """Counts by reason, most frequent first."""
        return dict(Counter(r.reason for r in self.records).most_common())

    def format(self) -> str:
        """One log line, e.g. `skipped 3 rows: missing file 2, empty report 1`."""
        if not self.records:
            return "skipped 0 rows"
        parts = ", ".join(f"{reason} {count}" for reason, count in self.summary().items())
        return f"skipped {len(self.records)} rows: {parts}"

    def reset(self) -> None:
        self.records.clear()

    def __len__(self) -> int:
        return len(self.records)


def collate_skipping(batch: Sequence[dict]) -> tuple[list[dict], list[dict]]:
    """DataLoader `collate_fn`: splits a batch into (good items, skipped items). The processor turns the good items
    into tensors; the skipped ones go to `SkipLog.add`."""
    good = [item for item in batch if "skip" not in item]
    skipped = [item for item in batch if "skip" in item]
    return good, skipped


# ---------------------------------------------------------------------------------------------------------------
# Row decoding shared by the map-style and the streaming dataset


def _feature_kind(feature: Any) -> str:
    """"dict", "list", "number" or "value" for a `datasets` feature (None when unknown)."""
    if isinstance(feature, dict):
        return "dict"
    if type(feature).__name__ in ("List", "Sequence", "LargeList") or isinstance(feature, list):
        return "list"
    dtype = str(getattr(feature, "dtype", ""))
    if dtype.startswith(("int", "uint", "float", "bool")):
        return "number"
    return "value"


def label_to_number(value: Any, uncertain: UncertainPolicy | str = UncertainPolicy.KEEP) -> float | None:
    """A label cell as 1.0, 0.0 or -1.0 (after the `uncertain` policy), or None for unknown (null, NaN, blank, or
    uncertain under `ignore`). Accepts numbers, booleans and their strings ("1.0", "-1", ""). Raises ValueError for
    anything else. Adapters use it to write manifests; the datasets map None to NaN."""
    uncertain = UncertainPolicy(uncertain)
    if value is None or (isinstance(value, str) and value.strip() == ""):
        return None
    if isinstance(value, bool):
        return float(value)
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"label value {value!r} is not 1, 0, -1 or blank") from None
    if math.isnan(number):
        return None
    if number == -1:
        return {UncertainPolicy.IGNORE: None, UncertainPolicy.ONES: 1.0, UncertainPolicy.ZEROS: 0.0,
                UncertainPolicy.KEEP: -1.0}[uncertain]
    if number in (0.0, 1.0):
        return number
    raise ValueError(f"label value {value!r} is not 1, 0, -1 or blank")


def _label_value(value: Any, policy: UncertainPolicy) -> float:
    try:
        number = label_to_number(value, policy)
    except ValueError as e:
        raise _Skip(SkipReason.BAD_LABELS, str(e)) from None
    return math.nan if number is None else number


def _positive_names(cell: Any) -> list[str] | None:
    if cell is None:
        return None
    if isinstance(cell, str):
        return [name.strip() for name in cell.split("|") if name.strip()]
    if isinstance(cell, (list, tuple)):
        return [str(name).strip() for name in cell if name is not None and str(name).strip()]
    raise _Skip(SkipReason.BAD_LABELS, f"labels cell {cell!r} is not a list of names")


def _number(box: dict, key: str) -> float | None:
    value = box.get(key)
    return None if value is None else float(value)


def normalize_box(box: dict) -> dict:
    """One box as `{"label", "x", "y", "w", "h"}` (floats, pixels of the stored image) from the accepted forms
    listed in the module docstring. Raises ValueError for a dict without usable coordinates."""
    if not isinstance(box, dict):
        raise ValueError(f"box {box!r} is not a dict")
    label = next((box[k] for k in ("label", "finding", "name", "category") if box.get(k) is not None), None)
    coords = None
    if all(box.get(k) is not None for k in ("x_resized", "y_resized", "w_resized", "h_resized")):
        coords = [box["x_resized"], box["y_resized"], box["w_resized"], box["h_resized"]]
    else:
        for key in ("bbox_xywh_resized", "bbox_xywh", "bbox", "xywh"):
            if box.get(key) is not None:
                coords = list(box[key])
                break
    if coords is None and all(box.get(k) is not None for k in ("x", "y", "w", "h")):
        coords = [box["x"], box["y"], box["w"], box["h"]]
    if coords is None and all(box.get(k) is not None for k in ("x1", "y1", "x2", "y2")):
        x1, y1, x2, y2 = (float(box[k]) for k in ("x1", "y1", "x2", "y2"))
        coords = [x1, y1, x2 - x1, y2 - y1]
    if coords is None or len(coords) != 4:
        raise ValueError(f"box {box!r} has no x, y, w, h coordinates")
    x, y, w, h = (float(c) for c in coords)
    if not all(math.isfinite(v) for v in (x, y, w, h)) or w < 0 or h < 0:
        raise ValueError(f"box {box!r} has invalid coordinates")
    return {"label": None if label is None else str(label), "x": x, "y": y, "w": w, "h": h}


class _RowReader:
    """Turns one manifest row into a sample dict or a skip dict. Holds no open files (safe to pickle to workers)."""

    def __init__(self, columns: ColumnConfig, root: Path, strict: bool, text_fn: Callable | None,
                 label_form: LabelForm | None, label_names: list[str] | None):
        self.columns, self.root, self.strict, self.text_fn = columns, root, strict, text_fn
        self.label_form, self.label_names = label_form, label_names
        self._label_index = {name: i for i, name in enumerate(label_names or [])}

    def resolve(self, value: Any) -> Path | None:
        if not isinstance(value, (str, os.PathLike)) or str(value).strip() == "":
            return None
        path = Path(os.path.expanduser(str(value)))
        return path if path.is_absolute() else self.root / path

    def text(self, row: dict) -> str | None:
        col = self.columns.text
        if col is None:
            return None
        raw = row.get(col)
        if raw is None:
            raise _Skip(SkipReason.EMPTY_REPORT, f"column {col!r} is null")
        if not isinstance(raw, (str, bytes, bytearray)):
            raise _Skip(SkipReason.REPORT_NOT_TEXT, f"column {col!r} holds {type(raw).__name__}, not text")
        text = self.text_fn(raw) if self.text_fn is not None else decode_text(raw)
        if not isinstance(text, str):
            raise _Skip(SkipReason.REPORT_NOT_TEXT, f"text_fn returned {type(text).__name__}")
        if not text.strip():
            raise _Skip(SkipReason.EMPTY_REPORT, f"column {col!r} has no text")
        return text

    def labels(self, row: dict) -> np.ndarray | None:
        if self.label_form is None:
            return None
        out = np.full(len(self.label_names), np.nan, dtype=np.float32)
        policy = self.columns.uncertain
        if self.label_form is LabelForm.NAMES:
            names = _positive_names(row.get(self.columns.labels))
            if names is not None:
                out[:] = 0.0
                for name in names:
                    if name in self._label_index:
                        out[self._label_index[name]] = 1.0
        elif self.label_form is LabelForm.DICT:
            cell = row.get(self.columns.labels)
            if cell is not None:
                if not isinstance(cell, dict):
                    raise _Skip(SkipReason.BAD_LABELS, f"labels cell {cell!r} is not a dict")
                for name, i in self._label_index.items():
                    out[i] = _label_value(cell.get(name), policy)
        else:
            for i, col in enumerate(self.columns.labels):
                out[i] = _label_value(row.get(col), policy)
        return out

    def boxes(self, row: dict) -> list[dict] | None:
        col = self.columns.boxes
        if col is None:
            return None
        cell = row.get(col)
        if cell is None:
            return []
        if not isinstance(cell, (list, tuple)):
            raise _Skip(SkipReason.BAD_BOXES, f"column {col!r} holds {type(cell).__name__}, not a list of boxes")
        try:
            return [normalize_box(box) for box in cell]
        except ValueError as e:
            raise _Skip(SkipReason.BAD_BOXES, str(e)) from None

    def __call__(self, index: int, row: dict) -> dict:
        raw_path = row.get(self.columns.image)
        path = self.resolve(raw_path)
        shown = str(path) if path is not None else repr(raw_path)
        try:
            if path is None:
                raise _Skip(SkipReason.MISSING_FILE, f"column {self.columns.image!r} has no path")
            text = self.text(row)
            labels = self.labels(row)
            boxes = self.boxes(row)
            image = load_image(path)
        except BadImageError as e:
            return self._bad(index, shown, e.reason, e.detail)
        except _Skip as e:
            return self._bad(index, shown, e.reason, e.detail)
        patient = row.get(self.columns.patient_id) if self.columns.patient_id else None
        return {"index": index, "path": shown, "image": image, "text": text, "labels": labels, "boxes": boxes,
                "patient_id": patient}

    def _bad(self, index: int, path: str, reason: SkipReason, detail: str) -> dict:
        if self.strict:
            raise BadSampleError(index, path, reason, detail)
        return {"index": index, "path": path, "skip": reason.value, "detail": detail}


def _check_columns(names: Sequence[str], columns: ColumnConfig, where: str) -> None:
    missing = [c for c in columns.named_columns() if c not in names]
    if missing:
        raise ValueError(
            f"{where}: column(s) {missing} not found; the manifest has columns {list(names)}. "
            "Name the right ones with ColumnConfig(image=..., text=..., ...) or the recipe's --image-column / "
            "--text-column options.")


def _label_spec(columns: ColumnConfig, features: Any, first_rows: Callable[[], Iterable[dict]] | None,
                column_values: Callable[[str], list] | None) -> tuple[LabelForm | None, list[str] | None]:
    """The label form and names, from the column types (and the data when names must be collected)."""
    if columns.labels is None:
        return None, None
    if isinstance(columns.labels, list):
        return LabelForm.COLUMNS, list(columns.label_names or columns.labels)
    col = columns.labels
    feature = features[col] if features is not None and col in features else None
    kind = _feature_kind(feature) if feature is not None else None
    if kind == "number":  # a single 0/1/-1 column named as a string
        columns.labels = [col]
        return LabelForm.COLUMNS, list(columns.label_names or [col])
    if kind is None and first_rows is not None:  # no schema (streaming JSON): look at the first non-null cell
        cell = next((r.get(col) for r in first_rows() if r.get(col) is not None), None)
        kind = "dict" if isinstance(cell, dict) else "list"
    if kind == "dict":
        names = columns.label_names or (list(feature) if isinstance(feature, dict) else None)
        if names is None and first_rows is not None:
            cell = next((r.get(col) for r in first_rows() if isinstance(r.get(col), dict)), {})
            names = list(cell)
        return LabelForm.DICT, list(names or [])
    names = columns.label_names
    if names is None:
        if column_values is None:
            raise ValueError(f"labels column {col!r} lists positive names; a streaming manifest needs "
                             "ColumnConfig(label_names=[...]) since the names cannot be collected up front")
        found: set[str] = set()
        for cell in column_values(col):
            try:
                found.update(_positive_names(cell) or [])
            except _Skip:
                continue
        names = sorted(found)
    return LabelForm.NAMES, list(names)


@dataclass
class ValidationReport:
    """What the start-up check found: rows whose image file is missing or empty, rows without report text, and the
    decode test of a few images (index -> reason for the failures)."""

    n_rows: int
    missing_files: list[int] = field(default_factory=list)
    empty_files: list[int] = field(default_factory=list)
    empty_texts: list[int] = field(default_factory=list)
    decoded: int = 0
    decode_failures: dict[int, str] = field(default_factory=dict)

    @property
    def bad_rows(self) -> set[int]:
        return set(self.missing_files) | set(self.empty_files) | set(self.empty_texts)


def _usable_raw_text(value: Any) -> bool:
    if isinstance(value, str):
        return bool(value.strip())
    return isinstance(value, (bytes, bytearray)) and bool(bytes(value).strip())


class ManifestDataset(torch.utils.data.Dataset):
    """Map-style dataset over a manifest (a file that `read_manifest` reads, or a `datasets.Dataset`).

    `__getitem__(i)` returns `{"index", "path", "image": float32 (H, W) in [0, 1], "text": str | None,
    "labels": float32 (L,) | None, "boxes": list[dict] | None, "patient_id"}` or, for a bad row,
    `{"index", "path", "skip": reason, "detail"}` (see the module docstring). Images load in `__getitem__`, so in
    the DataLoader's workers.

    At construction the dataset checks that the named columns exist, that some rows have an existing non-empty
    image file and report text, and that a few images decode (`validate=False` skips the row checks, e.g. for a
    very large manifest on slow storage). With `strict=True` a bad row found there raises `BadSampleError` at once.
    """

    def __init__(self, source: str | os.PathLike | datasets.Dataset, columns: ColumnConfig | None = None,
                 image_root: str | os.PathLike | None = None, strict: bool = False,
                 text_fn: Callable[[str | bytes], str] | None = report_text, validate: bool = True,
                 decode_check: int = 8):
        self.columns = replace(columns) if columns is not None else ColumnConfig()
        if isinstance(source, datasets.Dataset):
            self.data, self.source_name = source, "manifest (datasets.Dataset)"
            default_root = Path.cwd()
        elif isinstance(source, (str, os.PathLike)):
            self.data, self.source_name = read_manifest(source), str(source)
            default_root = Path(source).expanduser().resolve().parent
            if not isinstance(self.data, datasets.Dataset):
                raise TypeError(f"{source}: expected a map-style dataset; use ManifestIterableDataset for streaming")
        else:
            raise TypeError(f"source must be a manifest path or a datasets.Dataset, got {type(source).__name__}")
        self.root = Path(image_root).expanduser() if image_root is not None else default_root
        self.strict = strict
        self.text_fn = text_fn
        _check_columns(self.data.column_names, self.columns, self.source_name)
        form, names = _label_spec(self.columns, self.data.features, None, lambda c: self.data[c])
        self.label_form, self.label_names = form, names
        self._reader = _RowReader(self.columns, self.root, strict, text_fn, form, names)
        self.validation: ValidationReport | None = None
        if validate:
            self.validation = self._validate(decode_check)

    def __len__(self) -> int:
        return len(self.data)

    def __getitem__(self, index: int) -> dict:
        index = int(index)
        if index < 0:
            index += len(self)
        return self._reader(index, self.data[index])

    def patient_ids(self) -> list:
        """The patient id of every row (for `patient_split`); needs `ColumnConfig.patient_id`."""
        if self.columns.patient_id is None:
            raise ValueError("ColumnConfig.patient_id is not set; name the manifest's patient column")
        return list(self.data[self.columns.patient_id])

    def subset(self, indices: Sequence[int]) -> ManifestDataset:
        """The rows `indices` as a new dataset with the same settings (label names kept), without re-validation."""
        new = object.__new__(ManifestDataset)
        new.__dict__.update(self.__dict__)
        new.data = self.data.select(list(indices))
        new.validation = None
        return new

    def _validate(self, decode_check: int) -> ValidationReport:
        n = len(self.data)
        where = self.source_name
        if n == 0:
            raise ValueError(f"{where}: the manifest has no rows")
        report = ValidationReport(n)
        for i, value in enumerate(self.data[self.columns.image]):
            path = self._reader.resolve(value)
            try:
                if path is None:
                    raise BadImageError(repr(value), SkipReason.MISSING_FILE)
                check_image_file(path)
            except BadImageError as e:
                (report.empty_files if e.reason is SkipReason.EMPTY_FILE else report.missing_files).append(i)
                if self.strict:
                    raise BadSampleError(i, e.path, e.reason, e.detail) from None
        if self.columns.text is not None:
            for i, value in enumerate(self.data[self.columns.text]):
                if not _usable_raw_text(value):
                    report.empty_texts.append(i)
                    if self.strict:
                        path = self._reader.resolve(self.data[i][self.columns.image])
                        reason = SkipReason.EMPTY_REPORT if value is None or isinstance(value, str) \
                            else SkipReason.REPORT_NOT_TEXT
                        raise BadSampleError(i, str(path), reason, f"column {self.columns.text!r}")
        bad = report.bad_rows
        if len(bad) == n:
            raise ValueError(self._all_bad_message(report))
        candidates = [i for i in range(n) if i not in bad]
        step = max(1, len(candidates) // max(1, decode_check))
        for i in candidates[::step][:decode_check]:
            path = self._reader.resolve(self.data[i][self.columns.image])
            try:
                load_image(path)
                report.decoded += 1
            except BadImageError as e:
                report.decode_failures[i] = f"{e.reason.value}: {e}"
                if self.strict:
                    raise BadSampleError(i, e.path, e.reason, e.detail) from None
        if report.decode_failures and report.decoded == 0:
            examples = "; ".join(list(report.decode_failures.values())[:3])
            raise ValueError(f"{where}: none of the {len(report.decode_failures)} images tried could be decoded "
                             f"({examples}). Check that the image column points at PNG, JPEG or DICOM files "
                             "(DICOM needs pydicom).")
        if bad:
            counts = {"missing file": len(report.missing_files), "empty file": len(report.empty_files),
                      "empty report": len(report.empty_texts)}
            summary = ", ".join(f"{k} {v}" for k, v in counts.items() if v)
            logger.warning("%s: %d of %d rows will be skipped (%s)", where, len(bad), n, summary)
        return report

    def _all_bad_message(self, report: ValidationReport) -> str:
        n, where = report.n_rows, self.source_name
        lines = [f"{where}: every one of the {n} rows is unusable."]
        if report.missing_files:
            first = report.missing_files[0]
            path = self._reader.resolve(self.data[first][self.columns.image])
            lines.append(
                f"{len(report.missing_files)} image paths do not exist (first: row {first} -> {path}). Paths are "
                f"resolved against {self.root}; pass image_root (--image-root) for the folder the paths in column "
                f"{self.columns.image!r} are relative to, or check that column.")
        if report.empty_files:
            lines.append(f"{len(report.empty_files)} image files have zero bytes (first: row "
                         f"{report.empty_files[0]}); re-copy or re-download them.")
        if report.empty_texts:
            lines.append(f"{len(report.empty_texts)} rows have no text in column {self.columns.text!r}; name the "
                         "report column with ColumnConfig(text=...) / --text-column, or text=None for images only.")
        return " ".join(lines)


class ManifestIterableDataset(torch.utils.data.IterableDataset):
    """Streaming version of `ManifestDataset` for manifests too big for memory (rows are read as they are needed,
    through `datasets`' streaming mode). Yields the same dicts; `index` is the row number in the manifest.

    Rows are dealt round-robin to DataLoader workers and, with `world_size > 1`, to distributed ranks (pass the
    process's `rank`). `shuffle_buffer > 0` shuffles within a buffer of that many rows (`set_epoch` reseeds it).
    Start-up checks cover the column names and the first `check_rows` rows.
    """

    def __init__(self, source: str | os.PathLike | datasets.IterableDataset | datasets.Dataset,
                 columns: ColumnConfig | None = None, image_root: str | os.PathLike | None = None,
                 strict: bool = False, text_fn: Callable[[str | bytes], str] | None = report_text,
                 shuffle_buffer: int = 0, seed: int = 0, rank: int = 0, world_size: int = 1, check_rows: int = 32):
        self.columns = replace(columns) if columns is not None else ColumnConfig()
        if isinstance(source, datasets.Dataset):
            data, name, default_root = source.to_iterable_dataset(), "manifest (datasets.Dataset)", Path.cwd()
        elif isinstance(source, datasets.IterableDataset):
            data, name, default_root = source, "manifest (datasets.IterableDataset)", Path.cwd()
        elif isinstance(source, (str, os.PathLike)):
            data, name = read_manifest(source, streaming=True), str(source)
            default_root = Path(source).expanduser().resolve().parent
        else:
            raise TypeError(f"source must be a manifest path or a datasets dataset, got {type(source).__name__}")
        self.data, self.source_name = data, name
        self.root = Path(image_root).expanduser() if image_root is not None else default_root
        self.strict, self.text_fn, self.seed = strict, text_fn, seed
        self.shuffle_buffer, self.rank, self.world_size = shuffle_buffer, rank, world_size
        self.epoch = 0
        head = list(self._rows(limit=check_rows, shuffle=False))
        if not head:
            raise ValueError(f"{name}: the manifest has no rows")
        names = list(data.features) if data.features is not None else list(head[0][1])
        _check_columns(names, self.columns, name)
        form, label_names = _label_spec(self.columns, data.features, lambda: (r for _, r in head), None)
        self.label_form, self.label_names = form, label_names
        self._reader = _RowReader(self.columns, self.root, False, text_fn, form, label_names)
        checked = [self._reader(i, row) for i, row in head]
        if all("skip" in item for item in checked):
            reasons = Counter(item["skip"] for item in checked)
            first = checked[0]
            raise ValueError(f"{name}: all of the first {len(checked)} rows are unusable ({dict(reasons)}; first: "
                             f"{first['path']}: {first['skip']} {first['detail']}). Check the image column and "
                             f"image_root (--image-root; now {self.root}) and the text column.")
        self._reader.strict = strict

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _rows(self, limit: int | None = None, shuffle: bool = True) -> Iterator[tuple[int, dict]]:
        data = self.data
        if shuffle and self.shuffle_buffer > 0:
            # tag rows with their position first so `index` stays the manifest row number
            data = data.map(lambda row, i: {"__row__": i}, with_indices=True)
            data = data.shuffle(seed=self.seed, buffer_size=self.shuffle_buffer)
            data.set_epoch(self.epoch)
        # `iter(batch_size)` reads every row in every worker (plain iteration would let `datasets` hand whole files
        # to workers, leaving all but one idle for a one-file manifest); rows are dealt to workers in `__iter__`.
        i = 0
        for batch in data.iter(batch_size=256):
            keys = list(batch)
            for j in range(len(batch[keys[0]]) if keys else 0):
                if limit is not None and i >= limit:
                    return
                row = {key: batch[key][j] for key in keys}
                yield row.pop("__row__", i), row
                i += 1

    def __iter__(self) -> Iterator[dict]:
        info = torch.utils.data.get_worker_info()
        workers, worker = (info.num_workers, info.id) if info is not None else (1, 0)
        shards, shard = workers * self.world_size, self.rank * workers + worker
        for position, (index, row) in enumerate(self._rows()):
            if position % shards == shard:
                yield self._reader(index, row)
