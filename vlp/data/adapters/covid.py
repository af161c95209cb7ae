"""COVID-19 Image Data Collection (Cohen et al., arXiv:2006.11988) -> manifest.

Release layout (GitHub ieee8023/covid-chestxray-dataset):

    ROOT/metadata.csv    patientid, offset, sex, age, finding, [RT_PCR_positive,] survival, ..., view, modality,
                         date, location, folder, filename, doi, url, license, clinical_notes, other_notes
    ROOT/images/<filename>                       (the `folder` column names the folder; CT volumes are elsewhere)
    ROOT/annotations/imageannotation_ai_lung_bounding_boxes.json   (optional: COCO lung boxes)

Rows: X-ray images found on disk (`modality` == "X-ray" when the column exists), `text` the cleaned clinical notes
(may be empty: the dataset then skips the row), `labels` the names in `finding` split on "," (early releases:
"COVID-19, ARDS") and on "/" (later releases: "Pneumonia/Viral/COVID-19" gives all three levels), `boxes` the
Right Lung / Left Lung boxes, scaled from the annotated image size to the stored file's size when they differ.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path

import pandas as pd

from ..images import BadImageError, image_size
from ..manifest import manifest_relative, write_manifest
from ..reports import clean_report

__all__ = ["prepare_covid", "covid_labels", "read_coco_boxes"]

logger = logging.getLogger(__name__)
_LUNG_BOXES = Path("annotations") / "imageannotation_ai_lung_bounding_boxes.json"


def covid_labels(finding: str | None) -> list[str]:
    """Label names in a `finding` cell, in order, without duplicates."""
    if not isinstance(finding, str):
        return []
    names: list[str] = []
    for part in finding.split(","):
        for name in part.split("/"):
            name = name.strip()
            if name and name not in names:
                names.append(name)
    return names


def read_coco_boxes(path: str | Path) -> dict[str, dict]:
    """A COCO box file as {file_name: {"size": (height, width), "boxes": [{"label", "x", "y", "w", "h"}]}};
    annotations without a bbox are skipped."""
    data = json.loads(Path(path).read_text())
    categories = {c["id"]: c["name"] for c in data.get("categories", [])}
    images = {im["id"]: im for im in data.get("images", [])}
    out: dict[str, dict] = {}
    for ann in data.get("annotations", []):
        image = images.get(ann.get("image_id"))
        bbox = ann.get("bbox")
        if image is None or not bbox or len(bbox) != 4 or any(v is None for v in bbox):
            continue
        entry = out.setdefault(image["file_name"], {"size": (image.get("height"), image.get("width")), "boxes": []})
        x, y, w, h = (float(v) for v in bbox)
        entry["boxes"].append({"label": categories.get(ann.get("category_id"), str(ann.get("category_id"))),
                               "x": x, "y": y, "w": w, "h": h})
    return out


def _text(value) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def prepare_covid(root: str | Path, out: str | Path, metadata: str | Path | None = None,
                  lung_boxes: str | Path | None = None, modality: str | None = "X-ray",
                  views: list[str] | None = None) -> Path:
    """Write the COVID-19 image data collection manifest to `out` and return its path.

    `metadata` defaults to `root/metadata.csv`, `lung_boxes` to the COCO file under `root/annotations/` (skipped when
    absent). `modality=None` keeps every modality; `views` keeps only those views (e.g. `["PA", "AP"]`).
    """
    root, out = Path(root), Path(out)
    metadata = Path(metadata) if metadata else root / "metadata.csv"
    if not metadata.is_file():
        raise FileNotFoundError(f"COVID-19 metadata.csv not found: {metadata} (give --metadata)")
    table = pd.read_csv(metadata, dtype=str, keep_default_na=False)
    for required in ("filename", "finding"):
        if required not in table.columns:
            raise ValueError(f"{metadata}: column {required!r} missing; columns are {list(table.columns)}")
    box_path = Path(lung_boxes) if lung_boxes else root / _LUNG_BOXES
    coco = read_coco_boxes(box_path) if box_path.is_file() else {}
    rows, missing, dropped = [], 0, 0
    for record in table.to_dict("records"):
        if modality and "modality" in record and record["modality"].strip().lower() != modality.lower():
            dropped += 1
            continue
        if views and record.get("view", "").strip() not in views:
            dropped += 1
            continue
        path = root / (record.get("folder") or "images").strip() / record["filename"].strip()
        if not path.is_file():
            missing += 1
            continue
        boxes = []
        annotated = coco.get(record["filename"].strip())
        if annotated:
            try:
                height, width = image_size(path)
                ah, aw = annotated["size"]
                sx, sy = (width / aw, height / ah) if aw and ah else (1.0, 1.0)
            except BadImageError as e:
                logger.warning("COVID: cannot read the size of %s (%s); boxes kept as annotated", path, e)
                sx = sy = 1.0
            boxes = [{"label": b["label"], "x": b["x"] * sx, "y": b["y"] * sy, "w": b["w"] * sx, "h": b["h"] * sy}
                     for b in annotated["boxes"]]
        notes = _text(record.get("clinical_notes", record.get("clinical notes")))
        rows.append({
            "image": manifest_relative(path, out),
            "text": clean_report(notes) if notes else None,
            "labels": covid_labels(record["finding"]),
            "boxes": boxes,
            "patient_id": _text(record.get("patientid")),
            "finding": _text(record["finding"]),
            "view": _text(record.get("view")),
            "offset": _text(record.get("offset")),
            "sex": _text(record.get("sex")),
            "age": _text(record.get("age")),
            "clinical_notes": notes,
            "license": _text(record.get("license")),
            "doi": _text(record.get("doi")),
            "url": _text(record.get("url")),
            "dataset": "covid-chestxray",
        })
    if not rows:
        raise FileNotFoundError(f"no image listed in {metadata} was found under {root} (folder/filename columns)")
    logger.info("COVID: %d rows written, %d images not found, %d rows of other modality/view", len(rows), missing,
                dropped)
    return write_manifest(rows, out)
