"""The data layer on real chest X-ray data (../shared/data): the NIH and COVID manifests through ManifestDataset,
box geometry against the stored images, IU report sectioning, and bad rows in a copy of a real manifest."""
from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vlp.data.adapters import read_iu_reports
from vlp.data.dataset import ColumnConfig, ManifestDataset, SkipLog, collate_skipping
from vlp.data.reports import extract_sections, report_text
from vlp.data.sentences import split_sentences

NIH_COLUMNS = ColumnConfig(image="image_path", text=None, labels="nih_finding_labels", boxes="boxes",
                           patient_id="patient_id")
COVID_COLUMNS = ColumnConfig(image="image_path", text="clinical_notes", labels="finding_labels", boxes="lung_boxes",
                             patient_id="patientid")


@pytest.fixture(scope="module")
def nih(shared_data):
    manifest = shared_data / "nih_bbox" / "manifest.jsonl"
    rows = [json.loads(line) for line in open(manifest)]
    return ManifestDataset(manifest, NIH_COLUMNS), rows


@pytest.fixture(scope="module")
def covid(shared_data):
    manifest = shared_data / "covid_cxr_text" / "manifest.jsonl"
    rows = [json.loads(line) for line in open(manifest)]
    return ManifestDataset(manifest, COVID_COLUMNS), rows


def test_nih_manifest_loads(nih):
    ds, rows = nih
    assert len(ds) == 629 and ds.validation.bad_rows == set()
    assert "Cardiomegaly" in ds.label_names and "Infiltration" in ds.label_names
    for i in (0, 100, 628):
        item = ds[i]
        assert item["image"].shape == (256, 256) and item["image"].dtype == np.float32
        assert 0.0 <= item["image"].min() and item["image"].max() <= 1.0 and item["image"].std() > 0.05
        positives = {ds.label_names[j] for j in np.flatnonzero(item["labels"] == 1)}
        assert positives == set(rows[i]["nih_finding_labels"])


def test_nih_boxes_map_to_the_stored_pixels(nih):
    ds, rows = nih
    boxes = [(i, b) for i, r in enumerate(rows) for b in r["boxes"]]
    assert len(boxes) == 702
    for _, b in boxes:
        # the stored 256 px coordinates are the NIH 1024 px ones times 0.25
        for key in "xywh":
            assert b[f"{key}_resized"] == pytest.approx(b[key] * 0.25, abs=1e-3)
        assert -0.5 <= b["x_resized"] and b["x_resized"] + b["w_resized"] <= 256.5
        assert -0.5 <= b["y_resized"] and b["y_resized"] + b["h_resized"] <= 256.5
    # the dataset returns the stored-image coordinates
    i, b = boxes[0]
    got = ds[i]["boxes"][0]
    assert (got["label"], got["x"], got["w"]) == (b["finding"], b["x_resized"], b["w_resized"])


def test_nih_cardiomegaly_boxes_sit_over_the_heart(nih):
    ds, rows = nih
    centres, brighter = [], []
    for i, r in enumerate(rows):
        for b in ds[i]["boxes"] if any(x["finding"] == "Cardiomegaly" for x in r["boxes"]) else []:
            if b["label"] != "Cardiomegaly":
                continue
            x, y, w, h = b["x"], b["y"], b["w"], b["h"]
            centres.append((x + w / 2, y + h / 2, w))
            image = ds[i]["image"]
            heart = image[int(y):int(y + h), int(x):int(x + w)].mean()
            above = image[max(0, int(y - h)):int(y), int(x):int(x + w)].mean()  # upper lung fields: darker
            brighter.append(heart > above)
    centres = np.array(centres)
    assert len(centres) == 105
    # central, in the lower-middle chest, to the image's right of the midline (the patient's left), 30-70% wide
    assert (centres[:, 0] > 96).all() and (centres[:, 0] < 200).all()
    assert (centres[:, 1] > 90).all() and (centres[:, 1] < 200).all()
    assert centres[:, 0].mean() > 128
    assert (centres[:, 2] / 256 > 0.3).all() and (centres[:, 2] / 256 < 0.7).all()
    assert np.mean(brighter) > 0.95  # the heart is radio-opaque


def test_covid_manifest_loads_with_clinical_notes(covid):
    ds, rows = covid
    assert len(ds) == 435
    assert len(ds.validation.empty_texts) == 79  # rows without clinical notes
    good = [i for i in range(len(ds)) if rows[i]["clinical_notes"]]
    assert len(good) == 356
    item = ds[good[0]]
    assert item["text"] == " ".join(rows[good[0]]["clinical_notes"].split())
    assert item["image"].shape == (rows[good[0]]["height"], rows[good[0]]["width"])
    assert ds[[i for i in range(len(ds)) if not rows[i]["clinical_notes"]][0]]["skip"] == "empty report"


def test_covid_lung_boxes_map_to_the_stored_pixels(covid):
    ds, rows = covid
    pairs = 0
    for i, r in enumerate(rows):
        if not r["lung_boxes"]:
            continue
        item = ds[i] if r["clinical_notes"] else None
        boxes = {b["label"]: b for b in (item["boxes"] if item else [])}
        for ref in r["lung_boxes"]:
            x, y, w, h = ref["bbox_xywh_resized"]
            ax, ay, aw, ah = ref["bbox_xywh_annotated"]
            # rescaled from the annotated size to the stored size
            assert x == pytest.approx(ax * r["width"] / ref["annotated_size"][0], abs=0.01)
            assert h == pytest.approx(ah * r["height"] / ref["annotated_size"][1], abs=0.01)
            assert -0.5 <= x and x + w <= r["width"] + 0.5 and -0.5 <= y and y + h <= r["height"] + 0.5
            if item:
                assert [boxes[ref["label"]][k] for k in "xywh"] == [x, y, w, h]
                assert item["image"].shape == (r["height"], r["width"])
        labels = {b["label"]: b["bbox_xywh_resized"] for b in r["lung_boxes"]}
        if {"Right Lung", "Left Lung"} <= set(labels):
            pairs += 1
            # radiological convention: the patient's right lung is on the image's left
            right, left = labels["Right Lung"], labels["Left Lung"]
            assert right[0] + right[2] / 2 < left[0] + left[2] / 2
    assert pairs == 125


def _iu_as_text(report: dict, style: int) -> str:
    """An IU report's XML sections written out as a report with headers, in three layouts."""
    parts = [("INDICATION", report["indication"]), ("COMPARISON", report["comparison"]),
             ("FINDINGS", report["findings"]), ("IMPRESSION", report["impression"])]
    if style == 0:
        return " ".join(f"{name}: {text or ''}" for name, text in parts)
    if style == 1:
        return "\n".join(f" {name}:  \n \n {text or ''}\n " for name, text in parts)
    return "\n".join(f"{name.title()} : {text or ''}" for name, text in parts)


def test_iu_reports_section_and_split(shared_data):
    reports = read_iu_reports(shared_data / "iu_reports" / "NLMCXR_reports.tgz")
    assert len(reports) == 3955
    for style in (0, 1, 2):
        sections = [extract_sections(_iu_as_text(r, style)) for r in reports]
        assert sum(s["findings"] is not None for s in sections) == 3425  # as SOURCE.md counts them
        assert sum(s["impression"] is not None for s in sections) == 3921
    # the sectioned text is the XML's, cleaned
    sample = reports[:200]
    for r in sample:
        s = extract_sections(_iu_as_text(r, 1))
        assert s["findings"] == (extract_sections(f"FINDINGS: {r['findings']}")["findings"] if r["findings"] else None)
    # every report gives some text to train on, and its sentences cover it
    texts = [report_text(_iu_as_text(r, 0)) for r in reports]
    assert all(texts)
    n_sentences = [len(split_sentences(t)) for t in texts[:500]]
    assert min(n_sentences) >= 1 and np.mean(n_sentences) > 3


def test_bad_rows_in_a_copy_of_a_real_manifest(shared_data, tmp_path):
    """A copy of 12 COVID rows with their images, broken in four ways: the bad rows are skipped and counted."""
    src = shared_data / "covid_cxr_text"
    rows = [json.loads(line) for line in open(src / "manifest.jsonl")]
    rows = [r for r in rows if r["clinical_notes"] and r["image_path"].endswith(".png")][:12]
    (tmp_path / "images").mkdir()
    for r in rows:
        shutil.copy(src / r["image_path"], tmp_path / r["image_path"])
    (tmp_path / rows[0]["image_path"]).unlink()  # missing file
    (tmp_path / rows[1]["image_path"]).write_bytes(b"")  # zero-byte image
    data = (tmp_path / rows[2]["image_path"]).read_bytes()
    (tmp_path / rows[2]["image_path"]).write_bytes(data[: len(data) // 3])  # truncated PNG
    rows[3]["clinical_notes"] = "  \n "  # empty report
    with open(tmp_path / "manifest.jsonl", "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")
    ds = ManifestDataset(tmp_path / "manifest.jsonl", COVID_COLUMNS)
    loader = torch.utils.data.DataLoader(ds, batch_size=4, num_workers=2, collate_fn=collate_skipping)
    log, good = SkipLog(), []
    for items, skipped in loader:
        good += [item["index"] for item in items]
        log.add(skipped)
    assert log.summary() == {"missing file": 1, "empty file": 1, "truncated image": 1, "empty report": 1}
    assert {r.index: r.reason for r in log.records} == {0: "missing file", 1: "empty file", 2: "truncated image",
                                                         3: "empty report"}
    assert sorted(good) == list(range(4, 12))
    assert Path(log.records[0].path).name == Path(rows[0]["image_path"]).name
