"""`vlp radiomics --manifest M --out features.parquet`: radiomic features of every region a manifest names.

A region is an image with either a mask file (``--mask-column``: nonzero pixels are the region, the mask has the
image's size) or a box (``--boxes-column``, default ``boxes``: each box of the row's list is one region; boxes in
any form ``vlp.data.dataset.normalize_box`` accepts, in pixels of the stored image). One output row per region:
``row`` (manifest row), ``image``, ``region`` (box number in the row, 0 for a mask), ``label``, ``x, y, w, h``
(boxes) or ``mask``, the ``--keep-columns``, then the features (PyRadiomics' names). Parquet, or CSV for a
``.csv`` name.

Intensities are the stored pixel values (``--intensity raw``, default; ``vlp.data.load_raw_image``): 8/16-bit
gray levels, the luma of colour files, DICOM values after the modality LUT (RescaleSlope/Intercept), as
PyRadiomics would read the file; that is what its default bin width 25 is made for. ``--intensity unit`` uses
``vlp.data.load_image`` (the model's [0, 1] range; pair it with a small ``--bin-width`` or ``--bin-count``).

A region that cannot be used (missing or unreadable image or mask, a mask of another size, no or a bad box, a
region PyRadiomics refuses: empty, one pixel, one pixel thick) is skipped, logged with its row, file and reason,
and counted in the summary; ``--strict`` makes the first one an error instead.

`vlp/cli.py` wires it in with ``add_arguments(subparsers.add_parser("radiomics"))`` and ``run(args)``; ``main(argv)``
runs it alone (``python -m vlp.radiomics.cli``).
"""
from __future__ import annotations

import argparse
import logging
import os
import sys
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Literal

import numpy as np
import torch

from vlp.data.images import BadImageError, load_image, load_raw_image

from .extractor import ALL_FEATURE_CLASSES, RadiomicsExtractor, box_mask, region_problem

__all__ = ["RadiomicsRowError", "RunSummary", "add_arguments", "extract_manifest", "main", "run"]

logger = logging.getLogger(__name__)

Intensity = Literal["raw", "unit"]


class RadiomicsRowError(ValueError):
    """A bad region met with ``strict=True``: names the manifest row, the file and the reason."""

    def __init__(self, row: int, path: str, reason: str, detail: str = ""):
        self.row, self.path, self.reason, self.detail = row, path, reason, detail
        extra = f" ({detail})" if detail else ""
        super().__init__(f"row {row} ({path}): {reason}{extra}. Fix or remove the row, or run without --strict "
                         "to skip bad rows and count them.")


@dataclass
class RunSummary:
    """What `extract_manifest` did: rows read, regions written, and the skipped regions by reason."""

    out: Path
    rows: int = 0
    regions: int = 0
    skipped: Counter = field(default_factory=Counter)

    def format(self) -> str:
        text = f"wrote {self.regions} regions from {self.rows} manifest rows to {self.out}"
        if self.skipped:
            parts = ", ".join(f"{reason} {n}" for reason, n in self.skipped.most_common())
            text += f"; skipped {sum(self.skipped.values())} regions: {parts}"
        else:
            text += "; skipped 0 regions"
        return text


class _Skip(Exception):
    def __init__(self, reason: str, detail: str = ""):
        super().__init__(reason, detail)
        self.reason, self.detail = reason, detail


def _read(path: Path, intensity: Intensity, what: str = "image") -> np.ndarray:
    try:
        return load_raw_image(path) if intensity == "raw" else load_image(path)
    except BadImageError as e:
        if what == "image":  # the row's message names the image already
            raise _Skip(e.reason.value, e.detail) from None
        raise _Skip(f"{what}: {e.reason.value}", f"{path}: {e.detail}" if e.detail else str(path)) from None


@dataclass
class _Region:
    row: int
    image: np.ndarray  # cropped to the region's bounding box
    mask: np.ndarray
    meta: dict[str, Any]


def _crop(image: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    rows = np.flatnonzero(mask.any(1))
    cols = np.flatnonzero(mask.any(0))
    sl = (slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1))
    return image[sl], mask[sl]


def _check_region(mask: np.ndarray) -> None:
    problem = region_problem(mask)
    if problem is not None:
        reason = "empty mask" if "empty" in problem else "single-pixel mask" if "single" in problem else "line mask"
        raise _Skip(reason, problem)


def _stack(regions: list[_Region]) -> tuple[np.ndarray, np.ndarray]:
    """Pad the cropped regions to one (B, H, W) shape (background outside the masks changes no feature)."""
    h = max(r.image.shape[0] for r in regions)
    w = max(r.image.shape[1] for r in regions)
    dtype = np.result_type(*[r.image.dtype for r in regions])
    images = np.zeros((len(regions), h, w), dtype=dtype)
    masks = np.zeros((len(regions), h, w), dtype=bool)
    for k, r in enumerate(regions):
        images[k, : r.image.shape[0], : r.image.shape[1]] = r.image
        masks[k, : r.mask.shape[0], : r.mask.shape[1]] = r.mask
    return images, masks


def _resolve(value: Any, root: Path) -> Path | None:
    if not isinstance(value, (str, os.PathLike)) or not str(value).strip():
        return None
    path = Path(os.path.expanduser(str(value)))
    return path if path.is_absolute() else root / path


def extract_manifest(
    manifest: str | os.PathLike,
    out: str | os.PathLike,
    *,
    image_column: str = "image",
    mask_column: str | None = None,
    boxes_column: str = "boxes",
    keep_columns: tuple[str, ...] = (),
    image_root: str | os.PathLike | None = None,
    intensity: Intensity = "raw",
    batch_size: int = 64,
    strict: bool = False,
    extractor: RadiomicsExtractor | None = None,
) -> RunSummary:
    """Write the features of every region of `manifest` to `out` (.parquet or .csv); return the summary.

    Paths in the manifest are relative to `image_root` (default: the manifest's folder) unless absolute.
    `extractor` defaults to ``RadiomicsExtractor("torch")``; features are written as float64.
    """
    import pandas as pd

    from vlp.data.dataset import normalize_box
    from vlp.data.manifest import read_manifest

    manifest = Path(manifest)
    out = Path(out)
    if out.suffix.lower() not in (".parquet", ".csv"):
        raise ValueError(f"--out {out}: use a .parquet or .csv file name")
    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    if intensity not in ("raw", "unit"):
        raise ValueError(f"intensity must be 'raw' or 'unit', got {intensity!r}")
    ds = read_manifest(manifest)
    columns = list(ds.column_names)
    needed = [image_column, mask_column if mask_column else boxes_column, *keep_columns]
    missing = [c for c in needed if c not in columns]
    if missing:
        hint = "--mask-column" if mask_column else "--boxes-column (or --mask-column for mask files)"
        raise ValueError(f"{manifest}: no column(s) {missing}; the manifest has {columns}. Name yours with "
                         f"--image-column, {hint} and --keep-columns.")
    root = Path(image_root).expanduser() if image_root is not None else manifest.absolute().parent
    extractor = extractor or RadiomicsExtractor("torch")
    summary = RunSummary(out=out)
    meta_rows: list[dict] = []
    feature_rows: list[torch.Tensor] = []

    def skip(row: int, path: Any, reason: str, detail: str) -> None:
        if strict:
            raise RadiomicsRowError(row, str(path), reason, detail)
        summary.skipped[reason] += 1
        logger.warning("row %d (%s): skipped, %s%s", row, path, reason, f" ({detail})" if detail else "")

    def regions() -> Iterator[_Region]:
        for index, row in enumerate(ds):
            summary.rows += 1
            raw_path = row.get(image_column)
            path = _resolve(raw_path, root)
            shown = path if path is not None else repr(raw_path)
            keep = {c: row.get(c) for c in keep_columns}
            try:
                if path is None:
                    raise _Skip("no image path", f"column {image_column!r} is {raw_path!r}")
                if mask_column:
                    mask_path = _resolve(row.get(mask_column), root)
                    if mask_path is None:
                        raise _Skip("no mask path", f"column {mask_column!r} is {row.get(mask_column)!r}")
                    image = _read(path, intensity)
                    mask = _read(mask_path, "raw", what="mask") != 0
                    if mask.shape != image.shape:
                        raise _Skip("mask size differs from the image", f"mask {mask.shape}, image {image.shape}")
                    _check_region(mask)
                    yield _Region(index, *_crop(image, mask), {"row": index, "image": raw_path, "region": 0,
                                                               "label": None, "mask": row.get(mask_column), **keep})
                    continue
                cell = row.get(boxes_column)
                if cell is None or (isinstance(cell, (list, tuple)) and len(cell) == 0):
                    raise _Skip("no boxes", f"column {boxes_column!r} is {cell!r}")
                if not isinstance(cell, (list, tuple)):
                    raise _Skip("bad boxes", f"column {boxes_column!r} holds {type(cell).__name__}, not a list")
                image = _read(path, intensity)
            except _Skip as s:
                skip(index, shown, s.reason, s.detail)
                continue
            for number, raw_box in enumerate(cell):
                try:
                    try:
                        box = normalize_box(raw_box)
                    except ValueError as e:
                        raise _Skip("bad boxes", str(e)) from None
                    mask = box_mask(box["x"], box["y"], box["w"], box["h"], *image.shape)
                    _check_region(mask)
                except _Skip as s:
                    skip(index, f"{shown} box {number}", s.reason, s.detail)
                    continue
                meta = {"row": index, "image": raw_path, "region": number, "label": box["label"],
                        "x": box["x"], "y": box["y"], "w": box["w"], "h": box["h"], **keep}
                yield _Region(index, *_crop(image, mask), meta)

    def flush(batch: list[_Region]) -> None:
        images, masks = _stack(batch)
        feature_rows.append(extractor(images, masks).to("cpu", torch.float64))
        meta_rows.extend(r.meta for r in batch)

    batch: list[_Region] = []
    for region in regions():
        batch.append(region)
        if len(batch) == batch_size:
            flush(batch)
            batch = []
    if batch:
        flush(batch)

    names = extractor.feature_names
    feats = torch.cat(feature_rows).numpy() if feature_rows else np.zeros((0, len(names)))
    table = pd.concat([pd.DataFrame(meta_rows), pd.DataFrame(feats, columns=names)], axis=1)
    summary.regions = len(table)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    if out.suffix.lower() == ".csv":
        table.to_csv(tmp, index=False)
    else:
        table.to_parquet(tmp, index=False)
    os.replace(tmp, out)
    return summary


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The options of `vlp radiomics` (added to a sub-parser by `vlp/cli.py`)."""
    p.add_argument("--manifest", required=True, type=Path, help="manifest (.jsonl, .csv, .parquet or a saved dataset)")
    p.add_argument("--out", required=True, type=Path, help="features file to write (.parquet or .csv)")
    p.add_argument("--image-column", default="image", help="column with the image path (default: image)")
    p.add_argument("--mask-column", default=None,
                   help="column with a mask file per row (nonzero = region); without it, boxes are used")
    p.add_argument("--boxes-column", default="boxes", help="column with a list of boxes (default: boxes)")
    p.add_argument("--keep-columns", default="", help="comma-separated manifest columns copied to the output")
    p.add_argument("--image-root", type=Path, default=None,
                   help="folder that relative paths start from (default: the manifest's folder)")
    p.add_argument("--intensity", choices=["raw", "unit"], default="raw",
                   help="raw: stored pixel values (default); unit: vlp's [0, 1] image range")
    p.add_argument("--backend", choices=["torch", "pyradiomics"], default="torch")
    p.add_argument("--batch-size", type=int, default=64, help="regions per extractor call (default: 64)")
    p.add_argument("--feature-classes", default=",".join(ALL_FEATURE_CLASSES),
                   help=f"comma-separated, from {','.join(ALL_FEATURE_CLASSES)} (default: all)")
    p.add_argument("--bin-width", type=float, default=25.0, help="gray-level bin width (PyRadiomics binWidth, 25)")
    p.add_argument("--bin-count", type=int, default=None, help="a fixed number of gray levels instead of a bin width")
    p.add_argument("--device", default=None, help="torch backend: device, e.g. cuda (default: cpu)")
    p.add_argument("--num-workers", type=int, default=0, help="pyradiomics backend: processes (default: 0)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch backend: CPU threads (default 1; more only pay off on otherwise idle cores)")
    p.add_argument("--strict", action="store_true", help="stop at the first bad row instead of skipping it")


def run(args: argparse.Namespace) -> int:
    """Run `vlp radiomics` with parsed arguments; prints the summary, returns the exit status."""
    classes = tuple(c.strip() for c in args.feature_classes.split(",") if c.strip())
    keep = tuple(c.strip() for c in args.keep_columns.split(",") if c.strip())
    try:
        extractor = RadiomicsExtractor(args.backend, feature_classes=classes, bin_width=args.bin_width,
                                       bin_count=args.bin_count, device=args.device, num_workers=args.num_workers,
                                       num_threads=args.threads, dtype=torch.float64)
        with extractor:
            summary = extract_manifest(args.manifest, args.out, image_column=args.image_column,
                                       mask_column=args.mask_column, boxes_column=args.boxes_column,
                                       keep_columns=keep, image_root=args.image_root, intensity=args.intensity,
                                       batch_size=args.batch_size, strict=args.strict, extractor=extractor)
    except (RadiomicsRowError, ValueError, FileNotFoundError) as e:
        print(f"vlp radiomics: error: {e}", file=sys.stderr)
        return 2
    print(summary.format())
    if summary.regions == 0:
        print("vlp radiomics: no region could be used; see the skipped reasons above", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    """`vlp radiomics ...` as a function: parse `argv` (default: sys.argv[1:]) and run."""
    parser = argparse.ArgumentParser(prog="vlp radiomics", description=__doc__.split("\n")[0])
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
