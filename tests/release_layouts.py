"""Release layouts of the public CXR sets, as the adapters meet them after a download (a pytest plugin that
tests/conftest.py loads, so the adapter tests and the recipe tests build the same folders).

MIMIC-CXR-JPG and CheXpert: tiny fake trees with the real file layout and column names (their data cannot be
shared). NIH ChestX-ray14, the COVID-19 image data collection and IU X-ray: the real files in ../shared/data.
Each fixture returns the release's root folder; NIH and COVID also return the shared manifest's rows as reference.
"""
from __future__ import annotations

import csv
import gzip
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


def write_jpg(path: Path, size=(64, 48)):
    """A random 8-bit grayscale JPEG (rows, columns = `size`)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(0).integers(0, 256, size, dtype=np.uint8)).save(path)


def write_csv(path: Path, header: list[str], rows: list[list], gz: bool = False):
    opener = (lambda: gzip.open(path, "wt", newline="")) if gz else (lambda: open(path, "w", newline=""))
    with opener() as f:
        writer = csv.writer(f)
        writer.writerow(header)
        writer.writerows(rows)


# --- MIMIC-CXR-JPG ---------------------------------------------------------------------------------------------

MIMIC_META = ["dicom_id", "subject_id", "study_id", "PerformedProcedureStepDescription", "ViewPosition", "Rows",
              "Columns", "StudyDate", "StudyTime", "ProcedureCodeSequence_CodeMeaning", "ViewCodeSequence_CodeMeaning",
              "PatientOrientationCodeSequence_CodeMeaning"]
MIMIC_LABEL_COLS = ["subject_id", "study_id", "Atelectasis", "Cardiomegaly", "Consolidation", "Edema",
                    "Enlarged Cardiomediastinum", "Fracture", "Lung Lesion", "Lung Opacity", "No Finding",
                    "Pleural Effusion", "Pleural Other", "Pneumonia", "Pneumothorax", "Support Devices"]
REPORT_A = """                                 FINAL REPORT
 EXAMINATION:  CHEST (PA AND LAT)
 
 INDICATION:  ___M with cough
 
 FINDINGS: 
 
 Mild cardiomegaly.  Possible small left effusion.
 
 IMPRESSION: 
 
 Cardiomegaly.
"""
REPORT_B = """                                 FINAL REPORT
 PORTABLE CHEST RADIOGRAPH ___
 
 COMPARISON:  ___.
 
 Lungs are clear.  No pneumothorax.
"""


@pytest.fixture(scope="module")
def mimic_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("mimic") / "mimic-cxr-jpg" / "2.0.0"
    images = [  # dicom_id, subject, study, view
        ("02aa804e-bde0afdd-112c0b34-7bc16630-4e384014", 10000032, 50414267, "PA"),
        ("174413ec-4ec4c1f7-34ea26b7-c5f994f8-79ef1962", 10000032, 50414267, "LATERAL"),
        ("2a2277a9-b0ded155-c0de8eb9-c124d10e-82c5caab", 10000032, 53189527, "AP"),
        ("68b5c4b1-227d0485-9cc38c3f-7b84ab51-4b472714", 11000011, 51111111, "PA"),  # not on disk
    ]
    for dicom, subject, study, _ in images[:3]:
        write_jpg(root / f"files/p{str(subject)[:2]}/p{subject}/s{study}/{dicom}.jpg")
    write_csv(root / "mimic-cxr-2.0.0-metadata.csv.gz", MIMIC_META,
               [[d, s, st, "CHEST (PA AND LAT)", v, 3056, 2544, 21800506, 213014.531, "CHEST (PA AND LAT)",
                 "postero-anterior", "Erect"] for d, s, st, v in images], gz=True)
    write_csv(root / "mimic-cxr-2.0.0-split.csv.gz", ["dicom_id", "study_id", "subject_id", "split"],
               [[d, st, s, "test" if st == 53189527 else "train"] for d, s, st, _ in images], gz=True)
    labels = {50414267: {"Cardiomegaly": 1.0, "Pleural Effusion": -1.0, "No Finding": None},
              53189527: {"No Finding": 1.0, "Pneumothorax": 0.0}}
    for kind in ("chexpert", "negbio"):
        write_csv(root / f"mimic-cxr-2.0.0-{kind}.csv.gz", MIMIC_LABEL_COLS,
                   [[10000032, study] + ["" if values.get(c) is None else values[c] for c in MIMIC_LABEL_COLS[2:]]
                    for study, values in labels.items()], gz=True)
    with zipfile.ZipFile(root / "mimic-cxr-reports.zip", "w") as z:
        z.writestr("files/p10/p10000032/s50414267.txt", REPORT_A)
        z.writestr("files/p10/p10000032/s53189527.txt", REPORT_B)
    return root


# --- CheXpert --------------------------------------------------------------------------------------------------

CHEXPERT_HEADER = ["Path", "Sex", "Age", "Frontal/Lateral", "AP/PA", "No Finding", "Enlarged Cardiomediastinum",
                   "Cardiomegaly", "Lung Opacity", "Lung Lesion", "Edema", "Consolidation", "Pneumonia", "Atelectasis",
                   "Pneumothorax", "Pleural Effusion", "Pleural Other", "Fracture", "Support Devices"]


@pytest.fixture(scope="module")
def chexpert_root(tmp_path_factory):
    parent = tmp_path_factory.mktemp("chexpert")
    root = parent / "CheXpert-v1.0-small"
    train = [["CheXpert-v1.0-small/train/patient00001/study1/view1_frontal.jpg", "Female", 68, "Frontal", "AP",
              1.0, "", "", "", "", "", "", "", "", 0.0, "", "", "", 1.0],
             ["CheXpert-v1.0-small/train/patient00002/study2/view1_frontal.jpg", "Female", 87, "Frontal", "AP",
              "", "", -1.0, 1.0, "", -1.0, -1.0, "", -1.0, "", -1.0, "", 1.0, ""],
             ["CheXpert-v1.0-small/train/patient00002/study2/view2_lateral.jpg", "Female", 87, "Lateral", "",
              "", "", -1.0, 1.0, "", -1.0, -1.0, "", -1.0, "", -1.0, "", 1.0, ""]]
    valid = [["CheXpert-v1.0-small/valid/patient64541/study1/view1_frontal.jpg", "Male", 73, "Frontal", "AP",
              0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0]]
    root.mkdir()
    write_csv(root / "train.csv", CHEXPERT_HEADER, train)
    write_csv(root / "valid.csv", CHEXPERT_HEADER, valid)
    for row in train + valid:
        write_jpg(parent / row[0])
    return root


# --- NIH ChestX-ray14 (real files) -----------------------------------------------------------------------------

@pytest.fixture(scope="module")
def nih_release(shared_data, tmp_path_factory):
    """An NIH release folder: the real Data_Entry csv and images, and BBox_List_2017.csv in its release format
    (header `Image Index,Finding Label,Bbox [x,y,w,h],,,`) rebuilt from the real box values of the shared manifest."""
    root = tmp_path_factory.mktemp("nih")
    reference = [json.loads(line) for line in open(shared_data / "nih_bbox" / "manifest.jsonl")]
    with open(root / "BBox_List_2017.csv", "w", newline="") as f:
        f.write("Image Index,Finding Label,Bbox [x,y,w,h],,,\n")
        for r in reference:
            for b in r["boxes"]:
                f.write(f"{Path(r['image_path']).name},{b['finding']},{b['x']},{b['y']},{b['w']},{b['h']},,,\n")
    (root / "images").symlink_to(shared_data / "nih_bbox" / "images")
    (root / "Data_Entry_2017_v2020.csv.gz").symlink_to(shared_data / "label_sets" / "Data_Entry_2017_v2020.csv.gz")
    return root, {Path(r["image_path"]).name: r for r in reference}


# --- COVID-19 image data collection (real files) ---------------------------------------------------------------

COVID_HEADER = ["patientid", "offset", "sex", "age", "finding", "survival", "intubated", "intubation_present",
                "went_icu", "in_icu", "needed_supplemental_O2", "extubated", "temperature", "pO2_saturation",
                "leukocyte_count", "neutrophil_count", "lymphocyte_count", "view", "modality", "date", "location",
                "folder", "filename", "doi", "url", "license", "clinical_notes", "other_notes", "Unnamed: 29"]


@pytest.fixture(scope="module")
def covid_release(shared_data, tmp_path_factory):
    """A release folder: the real images and COCO lung boxes, and metadata.csv with the release's columns holding the
    real values of the shared manifest (plus a CT row and a row whose image is absent)."""
    src = shared_data / "covid_cxr_text"
    root = tmp_path_factory.mktemp("covid")
    (root / "images").symlink_to(src / "images")
    (root / "annotations").mkdir()
    (root / "annotations" / "imageannotation_ai_lung_bounding_boxes.json").symlink_to(
        src / "imageannotation_ai_lung_bounding_boxes.json")
    reference = [json.loads(line) for line in open(src / "manifest.jsonl")]
    rows = []
    for r in reference:
        values = {"patientid": r["patientid"], "sex": r["sex"] or "", "age": r["age"] or "", "finding": r["finding"],
                  "view": r["view"], "modality": "X-ray", "folder": "images",
                  "filename": Path(r["image_path"]).name, "license": r["license"] or "",
                  "clinical_notes": r["clinical_notes"] or "", "doi": r["doi"] or "", "url": r["url"] or ""}
        rows.append([values.get(c, "") for c in COVID_HEADER])
    ct = dict(zip(COVID_HEADER, rows[0]))
    ct.update(modality="CT", view="Axial")
    missing = dict(zip(COVID_HEADER, rows[0]))
    missing.update(filename="not-in-this-copy.png")
    rows += [[ct[c] for c in COVID_HEADER], [missing[c] for c in COVID_HEADER]]
    write_csv(root / "metadata.csv", COVID_HEADER, rows)
    return root, reference


# --- IU X-ray (real report XMLs) -------------------------------------------------------------------------------

IU_IMAGES = ("png/CXR1_1_IM-0001-3001.png", "images_normalized/2_IM-0652-1001.dcm.png",  # Open-i and Kaggle names
             "png/CXR3_IM-1384-1001.png", "png/CXR4_IM-2050-1001.png")


@pytest.fixture(scope="module")
def iu_root(shared_data, tmp_path_factory):
    """The real report archive (NLMCXR_reports.tgz) with four of its images, stand-ins written as PNGs."""
    root = tmp_path_factory.mktemp("iu")
    (root / "NLMCXR_reports.tgz").symlink_to(shared_data / "iu_reports" / "NLMCXR_reports.tgz")
    for name in IU_IMAGES:
        write_jpg(root / name)
    return root
