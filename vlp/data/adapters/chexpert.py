"""CheXpert v1.0 (Irvin et al., AAAI 2019) -> manifest.

Release layout (Stanford AIMI; the "small" copy is the usual download):

    CheXpert-v1.0-small/train.csv, valid.csv
        Path,Sex,Age,Frontal/Lateral,AP/PA,No Finding,Enlarged Cardiomediastinum,Cardiomegaly,Lung Opacity,
        Lung Lesion,Edema,Consolidation,Pneumonia,Atelectasis,Pneumothorax,Pleural Effusion,Pleural Other,
        Fracture,Support Devices
    CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg

`Path` starts with the release folder's own name, so ROOT may be that folder or its parent. Labels are 1.0
(positive), 0.0 (negative), -1.0 (uncertain) or blank (not mentioned); the `uncertain` policy chooses what -1
becomes (U-Ones, U-Zeros, U-Ignore of the CheXpert paper, or keep -1). CheXpert v1.0 has no reports: `text` is None.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import pandas as pd

from ..dataset import UncertainPolicy, label_to_number
from ..manifest import manifest_relative, write_manifest

__all__ = ["prepare_chexpert", "CHEXPERT_LABELS"]

logger = logging.getLogger(__name__)

CHEXPERT_LABELS = ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema",
                   "Consolidation", "Pneumonia", "Atelectasis", "Pneumothorax", "Pleural Effusion", "Pleural Other",
                   "Fracture", "Support Devices"]
_SPLITS = {"train.csv": "train", "valid.csv": "valid"}


def _resolve(root: Path, rel: str) -> Path:
    rel_path = Path(rel)
    for candidate in (root / rel_path, root.parent / rel_path, root / Path(*rel_path.parts[1:])):
        if candidate.is_file():
            return candidate
    # not on disk: the location it would have inside ROOT
    return root / Path(*rel_path.parts[1:]) if rel_path.parts[0] == root.name else root / rel_path


def prepare_chexpert(root: str | Path, out: str | Path, uncertain: UncertainPolicy | str = UncertainPolicy.KEEP,
                     csvs: tuple[str, ...] = ("train.csv", "valid.csv"), frontal_only: bool = False,
                     keep_missing: bool = False) -> Path:
    """Write the CheXpert manifest to `out` and return its path.

    `csvs` are the label files read from ROOT (their rows get `split` "train" / "valid"); `uncertain` is the policy
    for -1 labels; `frontal_only` keeps only `Frontal/Lateral == "Frontal"`. Images not on disk are dropped unless
    `keep_missing`.
    """
    root, out = Path(root), Path(out)
    uncertain = UncertainPolicy(uncertain)
    rows, missing = [], 0
    for name in csvs:
        path = root / name
        if not path.is_file():
            raise FileNotFoundError(f"CheXpert {name} not found in {root}; ROOT is the CheXpert-v1.0(-small) folder")
        table = pd.read_csv(path, dtype={"Path": str})
        absent = [c for c in ["Path", *CHEXPERT_LABELS] if c not in table.columns]
        if absent:
            raise ValueError(f"{path}: columns {absent} missing; columns are {list(table.columns)}")
        for record in table.to_dict("records"):
            if frontal_only and record.get("Frontal/Lateral") != "Frontal":
                continue
            image = _resolve(root, record["Path"])
            if not image.is_file():
                missing += 1
                if not keep_missing:
                    continue
            patient = re.search(r"(patient\d+)", record["Path"])
            study = re.search(r"(patient\d+/study\d+)", record["Path"])
            age = record.get("Age")
            rows.append({
                "image": manifest_relative(image, out),
                "text": None,
                "labels": {label: label_to_number(record[label], uncertain) for label in CHEXPERT_LABELS},
                "boxes": None,
                "patient_id": patient.group(1) if patient else None,
                "study_id": study.group(1) if study else None,
                "view": record.get("AP/PA") if isinstance(record.get("AP/PA"), str) else None,
                "frontal_lateral": record.get("Frontal/Lateral"),
                "sex": record.get("Sex"),
                "age": int(age) if isinstance(age, (int, float)) and age == age else None,
                "split": _SPLITS.get(name, Path(name).stem),
                "dataset": "chexpert",
            })
    if not rows:
        raise FileNotFoundError(f"no CheXpert image listed in {csvs} was found under {root} or {root.parent}")
    logger.info("CheXpert: %d rows written, %d images not found", len(rows), missing)
    return write_manifest(rows, out)
