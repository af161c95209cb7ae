"""MIMIC-CXR-JPG 2.0.0 (+ the MIMIC-CXR reports) -> manifest (Johnson et al., Sci. Data 2019).

Release layout (PhysioNet; credentialed access):

    ROOT/files/p10/p10000032/s50414267/02aa804e-bde0afdd-112c0b34-7bc16630-4e384014.jpg
    ROOT/mimic-cxr-2.0.0-metadata.csv.gz   dicom_id,subject_id,study_id,PerformedProcedureStepDescription,
                                           ViewPosition,Rows,Columns,StudyDate,StudyTime,...
    ROOT/mimic-cxr-2.0.0-chexpert.csv.gz   subject_id,study_id,Atelectasis,Cardiomegaly,...,Support Devices
    ROOT/mimic-cxr-2.0.0-negbio.csv.gz     (same columns, NegBio labeler)
    ROOT/mimic-cxr-2.0.0-split.csv.gz      dicom_id,study_id,subject_id,split   (train / validate / test)

The reports are in MIMIC-CXR (not -JPG): `mimic-cxr-reports.zip`, which holds `files/p10/p10000032/s50414267.txt`.
Give the zip itself or the folder it was extracted to (`--reports`); by default ROOT/mimic-cxr-reports.zip,
ROOT/mimic-cxr-reports/ and ROOT/files/ are tried.

Rows: one per image, `text` = `report_text` of the report (findings then impression; for the ~9k reports with
neither, the report's other body text), `findings` / `impression` from `extract_sections`, `labels` a dict
{label: 1 | 0 | -1 | null} from the CheXpert (or NegBio) CSV after the `uncertain` policy (default "keep": the
manifest stays lossless and the dataset's `ColumnConfig.uncertain` decides at training time).
"""
from __future__ import annotations

import logging
import zipfile
from pathlib import Path

import pandas as pd

from ..dataset import UncertainPolicy, label_to_number
from ..manifest import manifest_relative, write_manifest
from ..reports import extract_sections, report_text

__all__ = ["prepare_mimic_cxr", "MIMIC_LABELS", "MimicReports"]

logger = logging.getLogger(__name__)

MIMIC_LABELS = ["Atelectasis", "Cardiomegaly", "Consolidation", "Edema", "Enlarged Cardiomediastinum", "Fracture",
                "Lung Lesion", "Lung Opacity", "No Finding", "Pleural Effusion", "Pleural Other", "Pneumonia",
                "Pneumothorax", "Support Devices"]
_PREFIX = "mimic-cxr-2.0.0"


def _csv(root: Path, kind: str) -> Path | None:
    for name in (f"{_PREFIX}-{kind}.csv.gz", f"{_PREFIX}-{kind}.csv"):
        if (root / name).is_file():
            return root / name
    return None


def _study_relpath(subject_id: int, study_id: int) -> str:
    return f"files/p{str(subject_id)[:2]}/p{subject_id}/s{study_id}"


class MimicReports:
    """Reads `files/pXX/pSUBJECT/sSTUDY.txt` from `mimic-cxr-reports.zip` or from an extracted folder."""

    def __init__(self, location: Path):
        self.location = location
        self._zip: zipfile.ZipFile | None = None
        self._names: dict[str, str] = {}
        if location.is_file():
            self._zip = zipfile.ZipFile(location)
            for name in self._zip.namelist():  # the zip may nest files/ under a top folder
                if name.endswith(".txt") and "files/" in name:
                    self._names[name[name.index("files/"):]] = name
        else:
            self._base = location if (location / "files").is_dir() else location.parent if location.name == "files" \
                else location

    def read(self, subject_id: int, study_id: int) -> bytes | None:
        rel = _study_relpath(subject_id, study_id) + ".txt"
        if self._zip is not None:
            name = self._names.get(rel)
            return self._zip.read(name) if name else None
        path = self._base / rel
        return path.read_bytes() if path.is_file() else None


def _find_reports(root: Path) -> Path | None:
    for candidate in (root / "mimic-cxr-reports.zip", root / "mimic-cxr-reports", root):
        if candidate.is_file():
            return candidate
        if candidate.is_dir() and (candidate / "files").is_dir() and any((candidate / "files").rglob("s*.txt")):
            return candidate
    return None


def prepare_mimic_cxr(root: str | Path, out: str | Path, reports: str | Path | None = None,
                      labels: str = "chexpert", uncertain: UncertainPolicy | str = UncertainPolicy.KEEP,
                      views: list[str] | None = None, split: str | None = None, keep_missing: bool = False) -> Path:
    """Write the MIMIC-CXR-JPG manifest to `out` and return its path.

    `labels` is "chexpert", "negbio" or "none"; `uncertain` the policy for -1 labels (ones / zeros / ignore / keep);
    `views` keeps only those ViewPosition values (e.g. `["PA", "AP"]`); `split` keeps one official split ("train",
    "validate", "test"). Images not on disk are dropped unless `keep_missing`.
    """
    root, out = Path(root), Path(out)
    uncertain = UncertainPolicy(uncertain)
    meta_path = _csv(root, "metadata")
    if meta_path is None:
        raise FileNotFoundError(f"{_PREFIX}-metadata.csv.gz not found in {root}; ROOT must be the MIMIC-CXR-JPG "
                                "folder (with files/ and the CSVs)")
    meta = pd.read_csv(meta_path, dtype={"dicom_id": str})
    split_path = _csv(root, "split")
    split_of = {}
    if split_path is not None:
        table = pd.read_csv(split_path, dtype={"dicom_id": str})
        split_of = dict(zip(table["dicom_id"], table["split"], strict=True))
    label_of: dict[tuple[int, int], dict] = {}
    if labels != "none":
        label_path = _csv(root, labels)
        if label_path is None:
            raise FileNotFoundError(f"{_PREFIX}-{labels}.csv.gz not found in {root} (or use labels='none')")
        table = pd.read_csv(label_path)
        names = [c for c in table.columns if c not in ("subject_id", "study_id")]
        for record in table.to_dict("records"):
            key = (int(record["subject_id"]), int(record["study_id"]))
            label_of[key] = {name: label_to_number(record[name], uncertain) for name in names}
    reports_path = Path(reports) if reports else _find_reports(root)
    if reports_path is None or not reports_path.exists():
        raise FileNotFoundError(f"MIMIC-CXR reports not found (tried {reports or root}); download "
                                "mimic-cxr-reports.zip from MIMIC-CXR and give --reports")
    reader = MimicReports(reports_path)
    rows, missing, no_report, no_sections = [], 0, 0, 0
    sections_cache: dict[tuple[int, int], tuple[str | None, str | None, str]] = {}
    for record in meta.to_dict("records"):
        view = record.get("ViewPosition")
        view = view if isinstance(view, str) and view else None
        if views and view not in views:
            continue
        dicom_id = record["dicom_id"]
        if split and split_of.get(dicom_id) != split:
            continue
        subject, study = int(record["subject_id"]), int(record["study_id"])
        path = root / _study_relpath(subject, study) / f"{dicom_id}.jpg"
        if not keep_missing and not path.is_file():
            missing += 1
            continue
        key = (subject, study)
        if key not in sections_cache:
            raw = reader.read(subject, study)
            if raw is None:
                no_report += 1
                sections_cache[key] = (None, None, "")
            else:
                found = extract_sections(raw)
                if found["findings"] is None and found["impression"] is None:
                    no_sections += 1
                sections_cache[key] = (found["findings"], found["impression"], report_text(raw))
        findings, impression, text = sections_cache[key]
        rows.append({
            "image": manifest_relative(path, out),
            "text": text or None,
            "findings": findings,
            "impression": impression,
            "labels": label_of.get(key) if labels != "none" else None,
            "boxes": None,
            "patient_id": str(subject),
            "study_id": str(study),
            "dicom_id": dicom_id,
            "view": view,
            "split": split_of.get(dicom_id),
            "dataset": "mimic-cxr-jpg",
        })
    if not rows:
        raise FileNotFoundError(f"no MIMIC-CXR-JPG image listed in {meta_path.name} was found under {root}/files")
    logger.info("MIMIC-CXR: %d rows written; %d images not found, %d studies without report, %d reports without "
                "findings or impression", len(rows), missing, no_report, no_sections)
    return write_manifest(rows, out)
