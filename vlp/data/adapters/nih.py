"""NIH ChestX-ray14 (Wang et al., CVPR 2017) -> manifest.

Release layout (NIH Box folder or Kaggle "nih-chest-xrays/data"):

    ROOT/Data_Entry_2017.csv            (or Data_Entry_2017_v2020.csv; .gz accepted)
         Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,
         OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y]
    ROOT/BBox_List_2017.csv             Image Index,Finding Label,Bbox [x,y,w,h],,,   (984 boxes, optional)
    ROOT/train_val_list.txt, test_list.txt   (optional: the official patient-wise split)
    ROOT/images/*.png  or  ROOT/images_001/images/*.png ... images_012/   (1024 x 1024 PNG)

Rows: one per image found on disk, `text` None (NIH has no reports), `labels` the `Finding Labels` split on "|"
("No Finding" kept as a name), `boxes` from BBox_List_2017.csv. The box coordinates refer to the 1024 x 1024 PNGs
NIH released; when the file on disk has another size (a downscaled copy), they are scaled by (width / 1024,
height / 1024) so they stay in the pixels of the stored image.
"""
from __future__ import annotations

import csv
import gzip
import io
import logging
import re
from pathlib import Path

from ..images import BadImageError, image_size
from ..manifest import index_files, manifest_relative, write_manifest

__all__ = ["prepare_nih", "read_nih_entries", "read_nih_boxes", "NIH_LABELS"]

logger = logging.getLogger(__name__)

NIH_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Effusion", "Emphysema", "Fibrosis", "Hernia",
              "Infiltration", "Mass", "Nodule", "Pleural_Thickening", "Pneumonia", "Pneumothorax", "No Finding"]
NIH_RELEASED_SIZE = 1024
_ENTRY_NAMES = ("Data_Entry_2017_v2020.csv", "Data_Entry_2017.csv")
_ENTRY_HEADER = ["Image Index", "Finding Labels", "Follow-up #", "Patient ID", "Patient Age", "Patient Gender",
                 "View Position"]


def _open_text(path: Path) -> io.TextIOBase:
    if path.suffix == ".gz":
        return io.TextIOWrapper(gzip.open(path), encoding="utf-8-sig", newline="")
    return open(path, encoding="utf-8-sig", newline="")


def _find(root: Path, names: tuple[str, ...]) -> Path | None:
    for name in names:
        for candidate in (root / name, root / f"{name}.gz"):
            if candidate.is_file():
                return candidate
    return None


def read_nih_entries(path: str | Path) -> list[dict]:
    """Rows of Data_Entry_2017(_v2020).csv as dicts (image, labels, follow_up, patient_id, age, sex, view,
    original_width, original_height). Columns are read by position: the bracketed header names contain commas."""
    path = Path(path)
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = [h.strip() for h in next(reader)]
        if header[:7] != _ENTRY_HEADER:
            raise ValueError(f"{path}: not an NIH Data_Entry file; expected columns {_ENTRY_HEADER}, found {header[:7]}")
        rows = []
        for line in reader:
            if not line or not line[0].strip():
                continue
            age = re.sub(r"\D", "", line[4])  # "58" (2020 file) or "058Y" (first release)
            rows.append({
                "image": line[0].strip(),
                "labels": [name.strip() for name in line[1].split("|") if name.strip()],
                "follow_up": int(line[2]) if line[2].strip().isdigit() else None,
                "patient_id": line[3].strip(),
                "age": int(age) if age else None,
                "sex": line[5].strip() or None,
                "view": line[6].strip() or None,
                "original_width": int(float(line[7])) if len(line) > 8 and line[7].strip() else None,
                "original_height": int(float(line[8])) if len(line) > 8 and line[8].strip() else None,
            })
    return rows


def read_nih_boxes(path: str | Path) -> dict[str, list[dict]]:
    """BBox_List_2017.csv as {image name: [{"label", "x", "y", "w", "h"}]} in the released 1024 px space. The header
    `Image Index,Finding Label,Bbox [x,y,w,h],,,` is read by position."""
    path = Path(path)
    boxes: dict[str, list[dict]] = {}
    with _open_text(path) as f:
        reader = csv.reader(f)
        header = next(reader)
        if [h.strip() for h in header[:2]] != ["Image Index", "Finding Label"]:
            raise ValueError(f"{path}: not an NIH BBox_List file (header {header})")
        for line in reader:
            if len(line) < 6 or not line[0].strip():
                continue
            x, y, w, h = (float(v) for v in line[2:6])
            boxes.setdefault(line[0].strip(), []).append({"label": line[1].strip(), "x": x, "y": y, "w": w, "h": h})
    return boxes


def _split_lists(root: Path) -> dict[str, str]:
    split: dict[str, str] = {}
    for name, value in (("train_val_list.txt", "train"), ("test_list.txt", "test")):
        path = root / name
        if path.is_file():
            for line in path.read_text().split():
                split[line.strip()] = value
    return split


def prepare_nih(root: str | Path, out: str | Path, entries: str | Path | None = None, bbox: str | Path | None = None,
                images: str | Path | None = None, keep_missing: bool = False) -> Path:
    """Write the NIH ChestX-ray14 manifest to `out` and return its path.

    `entries` / `bbox` default to the files in `root` (see the module docstring); `images` is the folder searched
    for the PNGs (default `root`, recursively). Rows whose image is not on disk are dropped unless `keep_missing`
    (then `image` is `images/<name>` under `root`).
    """
    root = Path(root)
    out = Path(out)
    entries_path = Path(entries) if entries else _find(root, _ENTRY_NAMES)
    if entries_path is None or not entries_path.is_file():
        raise FileNotFoundError(f"NIH Data_Entry_2017.csv not found in {root} (give --entries)")
    if bbox and not Path(bbox).is_file():
        raise FileNotFoundError(f"NIH box list not found: {bbox}")
    bbox_path = Path(bbox) if bbox else _find(root, ("BBox_List_2017.csv",))
    boxes = read_nih_boxes(bbox_path) if bbox_path else {}
    found = index_files(Path(images) if images else root, (".png",))
    split = _split_lists(root)
    rows, missing = [], 0
    for entry in read_nih_entries(entries_path):
        name = entry["image"]
        path = found.get(name)
        if path is None:
            missing += 1
            if not keep_missing:
                continue
            path = root / "images" / name
        image_boxes = [dict(b) for b in boxes.get(name, [])]
        if image_boxes and path.is_file():
            try:
                height, width = image_size(path)
            except BadImageError as e:
                logger.warning("NIH: cannot read the size of %s (%s); boxes left in 1024 px", path, e)
                height = width = NIH_RELEASED_SIZE
            sx, sy = width / NIH_RELEASED_SIZE, height / NIH_RELEASED_SIZE
            for b in image_boxes:
                b.update(x=b["x"] * sx, y=b["y"] * sy, w=b["w"] * sx, h=b["h"] * sy)
        rows.append({
            "image": manifest_relative(path, out),
            "text": None,
            "labels": entry["labels"],
            "boxes": image_boxes,
            "patient_id": entry["patient_id"],
            "image_id": name,
            "view": entry["view"],
            "age": entry["age"],
            "sex": entry["sex"],
            "follow_up": entry["follow_up"],
            "split": split.get(name),
            "dataset": "nih-chestxray14",
        })
    if not rows:
        raise FileNotFoundError(f"none of the NIH images listed in {entries_path} were found under "
                                f"{images or root}; point --images at the folder holding images_001/ ... or the PNGs")
    logger.info("NIH: %d rows written, %d listed images not found", len(rows), missing)
    return write_manifest(rows, out)
