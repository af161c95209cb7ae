"""Adapters: MIMIC-CXR-JPG and CheXpert on tiny fake release trees with the real file layout and column names;
NIH, COVID-19 and IU X-ray on the real files in ../shared/data (the release folders: tests/release_layouts.py);
the `vlp prepare` command line."""
from __future__ import annotations

import argparse
import json
import zipfile
from pathlib import Path

import numpy as np
import pytest

from vlp.data.adapters import (
    ADAPTERS, prepare_chexpert, prepare_covid, prepare_iu_xray, prepare_mimic_cxr, prepare_nih, read_iu_reports,
)
from vlp.data.adapters import cli
from vlp.data.adapters.covid import covid_labels
from vlp.data.adapters.nih import read_nih_entries
from vlp.data.dataset import ColumnConfig, ManifestDataset


def _rows(path: Path) -> list[dict]:
    return [json.loads(line) for line in open(path, encoding="utf-8")]


# --- MIMIC-CXR-JPG ---------------------------------------------------------------------------------------------


def test_mimic_cxr(mimic_root, tmp_path):
    out = prepare_mimic_cxr(mimic_root, tmp_path / "out" / "mimic.jsonl")
    rows = _rows(out)
    assert len(rows) == 3  # the image missing on disk is dropped
    first = rows[0]
    assert first["findings"] == "Mild cardiomegaly. Possible small left effusion."
    assert first["impression"] == "Cardiomegaly."
    assert first["text"] == "Mild cardiomegaly. Possible small left effusion. Cardiomegaly."
    assert first["labels"]["Cardiomegaly"] == 1.0 and first["labels"]["Pleural Effusion"] == -1.0
    assert first["labels"]["No Finding"] is None
    assert (first["patient_id"], first["study_id"], first["view"], first["split"]) == ("10000032", "50414267", "PA",
                                                                                       "train")
    # a report with neither section: text from its body paragraph
    third = rows[2]
    assert third["findings"] is None and third["impression"] is None
    assert third["text"] == "Lungs are clear. No pneumothorax."
    # the manifest loads: paths resolve from the manifest's folder, labels from the dicts
    ds = ManifestDataset(out, ColumnConfig(labels="labels", patient_id="patient_id", uncertain="ones"))
    item = ds[0]
    assert "skip" not in item and item["image"].shape == (64, 48)
    labels = dict(zip(ds.label_names, item["labels"].tolist()))
    assert labels["Cardiomegaly"] == 1.0 and labels["Pleural Effusion"] == 1.0 and np.isnan(labels["No Finding"])


def test_mimic_cxr_options(mimic_root, tmp_path):
    rows = _rows(prepare_mimic_cxr(mimic_root, tmp_path / "m.jsonl", views=["PA", "AP"], uncertain="zeros"))
    assert [r["view"] for r in rows] == ["PA", "AP"] and rows[0]["labels"]["Pleural Effusion"] == 0.0
    rows = _rows(prepare_mimic_cxr(mimic_root, tmp_path / "m.jsonl", split="test", labels="negbio"))
    assert [r["split"] for r in rows] == ["test"] and rows[0]["labels"]["No Finding"] == 1.0
    rows = _rows(prepare_mimic_cxr(mimic_root, tmp_path / "m.jsonl", labels="none", keep_missing=True))
    assert len(rows) == 4 and rows[0]["labels"] is None
    assert rows[3]["text"] is None  # no report for that study
    # reports extracted to a folder instead of the zip
    extracted = tmp_path / "reports"
    with zipfile.ZipFile(mimic_root / "mimic-cxr-reports.zip") as z:
        z.extractall(extracted)
    rows = _rows(prepare_mimic_cxr(mimic_root, tmp_path / "m.jsonl", reports=extracted))
    assert rows[0]["impression"] == "Cardiomegaly."
    with pytest.raises(FileNotFoundError, match="metadata"):
        prepare_mimic_cxr(tmp_path, tmp_path / "x.jsonl")


# --- CheXpert --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("policy, value", [("keep", -1.0), ("ones", 1.0), ("zeros", 0.0), ("ignore", None)])
def test_chexpert_uncertain_policies(chexpert_root, tmp_path, policy, value):
    rows = _rows(prepare_chexpert(chexpert_root, tmp_path / "c.jsonl", uncertain=policy))
    assert len(rows) == 4
    assert rows[1]["labels"]["Cardiomegaly"] == value and rows[1]["labels"]["Lung Opacity"] == 1.0
    assert rows[1]["labels"]["No Finding"] is None
    assert rows[0]["patient_id"] == "patient00001" and rows[1]["study_id"] == "patient00002/study2"
    assert [r["split"] for r in rows] == ["train", "train", "train", "valid"]


def test_chexpert_root_or_parent_and_frontal_only(chexpert_root, tmp_path):
    a = _rows(prepare_chexpert(chexpert_root, tmp_path / "a.jsonl", frontal_only=True))
    assert len(a) == 3 and all("lateral" not in r["image"] for r in a)
    ds = ManifestDataset(tmp_path / "a.jsonl", ColumnConfig(text=None, labels="labels", uncertain="ones"))
    assert all("skip" not in ds[i] for i in range(len(ds)))
    assert ds.label_names[:3] == ["No Finding", "Enlarged Cardiomediastinum", "Cardiomegaly"]


# --- NIH ChestX-ray14 (real files) -----------------------------------------------------------------------------


def test_nih_real_release(nih_release, tmp_path):
    root, reference = nih_release
    out = prepare_nih(root, tmp_path / "nih.jsonl")
    rows = _rows(out)
    assert len(rows) == len(reference) == 629  # the images on disk
    n_boxes = 0
    for row in rows:
        ref = reference[row["image_id"]]
        assert row["labels"] == ref["nih_finding_labels"] and row["patient_id"] == str(ref["patient_id"])
        assert row["view"] == ref["view_position"] and row["age"] == ref["patient_age"]
        # boxes scaled from NIH's 1024 px PNGs to the stored 256 px files: the shared data's own x_resized values
        assert len(row["boxes"]) == len(ref["boxes"])
        for got, want in zip(row["boxes"], ref["boxes"], strict=True):
            n_boxes += 1
            assert got["label"] == want["finding"]
            for key in "xywh":
                assert got[key] == pytest.approx(want[f"{key}_resized"], abs=1e-3)
    assert n_boxes == 702
    ds = ManifestDataset(out, ColumnConfig(text=None, labels="labels", boxes="boxes"))
    assert ds[0]["image"].shape == (256, 256) and ds[0]["boxes"] == [
        {k: v for k, v in b.items()} for b in rows[0]["boxes"]]


def test_nih_entries_first_release_format(tmp_path):
    # the 2017 file: trailing comma in the header and ages such as "058Y"
    path = tmp_path / "Data_Entry_2017.csv"
    path.write_text("Image Index,Finding Labels,Follow-up #,Patient ID,Patient Age,Patient Gender,View Position,"
                    "OriginalImage[Width,Height],OriginalImagePixelSpacing[x,y],\n"
                    "00000001_000.png,Cardiomegaly|Emphysema,0,1,058Y,M,PA,2682,2749,0.143,0.143,\n")
    entry = read_nih_entries(path)[0]
    assert entry["labels"] == ["Cardiomegaly", "Emphysema"] and entry["age"] == 58
    assert (entry["original_width"], entry["original_height"]) == (2682, 2749)
    with pytest.raises(ValueError, match="not an NIH Data_Entry"):
        (tmp_path / "other.csv").write_text("a,b\n1,2\n")
        read_nih_entries(tmp_path / "other.csv")


# --- COVID-19 image data collection (real files) ---------------------------------------------------------------


def test_covid_real_release(covid_release, tmp_path):
    root, reference = covid_release
    out = prepare_covid(root, tmp_path / "covid.jsonl")
    rows = _rows(out)
    assert len(rows) == len(reference) == 435  # CT row and absent image dropped
    with_boxes = 0
    for row, ref in zip(rows, reference, strict=True):
        assert Path(row["image"]).name == Path(ref["image_path"]).name
        assert row["labels"] == ref["finding_labels"]
        assert row["clinical_notes"] == ((ref["clinical_notes"] or "").strip() or None)
        assert (row["text"] is None) == (ref["clinical_notes"] is None)
        got = {b["label"]: b for b in row["boxes"]}
        want = {b["label"]: b["bbox_xywh_resized"] for b in ref["lung_boxes"] or []}
        assert set(got) == set(want)
        for label, xywh in want.items():
            with_boxes += 1
            # the shared manifest's boxes were rescaled to the stored image independently (rounded to 0.01 px)
            assert [got[label][k] for k in "xywh"] == pytest.approx(xywh, abs=0.011)
    assert with_boxes == sum(len(r["lung_boxes"] or []) for r in reference) > 200
    ds = ManifestDataset(out, ColumnConfig(labels="labels", boxes="boxes", patient_id="patient_id"))
    assert len(ds.validation.empty_texts) == sum(1 for r in reference if not r["clinical_notes"]) == 79


def test_covid_labels():
    assert covid_labels("COVID-19, ARDS") == ["COVID-19", "ARDS"]
    assert covid_labels("Pneumonia/Viral/COVID-19") == ["Pneumonia", "Viral", "COVID-19"]
    assert covid_labels(None) == [] and covid_labels("A, A") == ["A"]


# --- IU X-ray (real report XMLs) -------------------------------------------------------------------------------

def test_iu_xray_reports_and_images(shared_data, iu_root, tmp_path):
    reports = read_iu_reports(shared_data / "iu_reports" / "NLMCXR_reports.tgz")
    assert len(reports) == 3955
    assert sum(1 for r in reports if r["findings"]) == 3425  # the counts SOURCE.md gives
    assert sum(1 for r in reports if r["impression"]) == 3921
    out = prepare_iu_xray(iu_root, tmp_path / "iu_all.jsonl", keep_missing=True)
    rows = _rows(out)
    assert len(rows) == 7470  # one row per image id, as in image_report_index.csv
    first = rows[0]
    assert first["image_id"] == "CXR1_1_IM-0001-3001" and first["patient_id"] == "CXR1"
    assert first["impression"] == "Normal chest x-___." and first["labels"] == ["normal"]
    assert first["text"].endswith("There is no evidence of pneumothorax. Normal chest x-___.")
    # the images on disk: three with Open-i names, one (CXR2) with the Kaggle name
    rows = _rows(prepare_iu_xray(iu_root, tmp_path / "iu.jsonl"))
    assert [r["image_id"] for r in rows] == ["CXR1_1_IM-0001-3001", "CXR2_IM-0652-1001", "CXR3_IM-1384-1001",
                                             "CXR4_IM-2050-1001"]
    assert rows[1]["labels"] == ["Cardiomegaly", "Pulmonary Artery"]
    ds = ManifestDataset(tmp_path / "iu.jsonl")
    assert ds[1]["text"].startswith("Borderline cardiomegaly. Midline sternotomy ___.")


# --- command line ----------------------------------------------------------------------------------------------

def test_cli(chexpert_root, tmp_path, capsys):
    parser = argparse.ArgumentParser(prog="vlp prepare")
    cli.add_arguments(parser)
    for name in ADAPTERS:
        args = parser.parse_args([name, "--root", "R", "--out", "O"])
        assert args.dataset == name and args.root == Path("R")
    args = parser.parse_args(["chexpert", "--root", str(chexpert_root), "--out", str(tmp_path / "c.jsonl"),
                              "--uncertain", "ones", "--frontal-only"])
    out = cli.run(args)
    assert "wrote 3 rows" in capsys.readouterr().out
    assert _rows(out)[1]["labels"]["Cardiomegaly"] == 1.0
    cli.main(["chexpert", "--root", str(chexpert_root), "--out", str(tmp_path / "d.jsonl")])
    assert len(_rows(tmp_path / "d.jsonl")) == 4
    with pytest.raises(SystemExit):
        parser.parse_args(["unknown", "--root", "R", "--out", "O"])
