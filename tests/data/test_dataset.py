"""ManifestDataset / ManifestIterableDataset, SkipLog, collate_skipping, and patient-level splits."""
from __future__ import annotations

import json
import math

import datasets
import numpy as np
import pytest
import torch
from PIL import Image

from vlp.data.dataset import (
    BadSampleError, ColumnConfig, LabelForm, ManifestDataset, ManifestIterableDataset, SkipLog, collate_skipping,
    label_to_number, normalize_box,
)
from vlp.data.splits import patient_kfold, patient_split

RNG = np.random.default_rng(0)


def _png(path, size=(12, 10), value=None):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = RNG.integers(0, 256, size, dtype=np.uint8) if value is None else np.full(size, value, np.uint8)
    Image.fromarray(a).save(path)
    return a


def _write_jsonl(path, rows):
    with open(path, "w", encoding="utf-8") as f:
        for row in rows:
            f.write(json.dumps(row) + "\n")
    return path


@pytest.fixture
def tree(tmp_path):
    """A manifest with good rows and one row of each kind of bad input."""
    images = tmp_path / "data" / "images"
    good = [_png(images / f"g{i}.png", value=10 * i) for i in range(4)]
    _png(images / "t.png")
    data = (images / "t.png").read_bytes()
    (images / "t.png").write_bytes(data[: len(data) // 2])
    (images / "zero.png").write_bytes(b"")
    (images / "bad.dcm").write_bytes(b"\x00" * 200)
    rows = [
        {"image": "images/g0.png", "text": "FINDINGS: Heart normal. IMPRESSION: No acute disease.", "pid": "a"},
        {"image": "images/g1.png", "text": "Lungs clear.", "pid": "a"},
        {"image": "images/g2.png", "text": "Small effusion.", "pid": "b"},
        {"image": "images/g3.png", "text": "No pneumothorax.", "pid": "c"},
        {"image": "images/missing.png", "text": "x", "pid": "d"},
        {"image": "images/zero.png", "text": "x", "pid": "d"},
        {"image": "images/t.png", "text": "x", "pid": "e"},
        {"image": "images/bad.dcm", "text": "x", "pid": "e"},
        {"image": "images/g0.png", "text": "   \n ", "pid": "f"},
        {"image": "images/g0.png", "text": None, "pid": "f"},
    ]
    manifest = _write_jsonl(tmp_path / "data" / "manifest.jsonl", rows)
    return manifest, good


EXPECTED_SKIPS = {4: "missing file", 5: "empty file", 6: "truncated image", 7: "unreadable DICOM",
                  8: "empty report", 9: "empty report"}


def test_items_and_skips(tree):
    manifest, good = tree
    ds = ManifestDataset(manifest, ColumnConfig(patient_id="pid"))
    assert len(ds) == 10
    item = ds[0]
    assert item["index"] == 0 and item["path"] == str(manifest.parent / "images" / "g0.png")
    assert item["image"].dtype == np.float32 and item["image"].shape == (12, 10)
    np.testing.assert_allclose(item["image"], good[0] / 255.0)
    assert item["text"] == "Heart normal. No acute disease."  # report_text: findings + impression
    assert item["labels"] is None and item["boxes"] is None and item["patient_id"] == "a"
    for i, reason in EXPECTED_SKIPS.items():
        bad = ds[i]
        assert bad["skip"] == reason and bad["index"] == i and "image" not in bad, (i, bad)
    assert ds[7]["path"].endswith("bad.dcm")
    assert ds.validation.missing_files == [4] and ds.validation.empty_files == [5]
    assert ds.validation.empty_texts == [8, 9]
    assert ds[-1]["index"] == 9


def test_report_not_text_and_text_fn(tmp_path):
    _png(tmp_path / "a.png")
    data = datasets.Dataset.from_list([{"image": "a.png", "text": "A XXXX b."}])
    ds = ManifestDataset(data, image_root=tmp_path, text_fn=None)
    assert ds[0]["text"] == "A XXXX b."  # raw text when text_fn is None
    assert ManifestDataset(data, image_root=tmp_path)[0]["text"] == "A ___ b."
    numbers = datasets.Dataset.from_list([{"image": "a.png", "text": 5}, {"image": "a.png", "text": 7}])
    with pytest.raises(ValueError, match="no text in column 'text'"):
        ManifestDataset(numbers, image_root=tmp_path)
    mixed = ManifestDataset(numbers, image_root=tmp_path, validate=False)
    assert mixed[0]["skip"] == "report not text"
    images_only = ManifestDataset(numbers, ColumnConfig(text=None), image_root=tmp_path)
    assert images_only[0]["text"] is None and "skip" not in images_only[0]


def test_strict_raises_naming_row_and_file(tree):
    manifest, _ = tree
    with pytest.raises(BadSampleError, match=r"row 4 \(.*missing\.png\): missing file"):
        ManifestDataset(manifest, strict=True)  # found by the start-up check
    ds = ManifestDataset(manifest, validate=False, strict=True)
    assert ds[0]["text"]
    with pytest.raises(BadSampleError) as info:
        ds[6]
    assert info.value.index == 6 and info.value.path.endswith("t.png") and info.value.reason.value == "truncated image"


def test_paths_image_root_and_absolute(tmp_path):
    _png(tmp_path / "imgs" / "a.png")
    _png(tmp_path / "b.png")
    rows = [{"image": "a.png", "text": "t"}, {"image": str(tmp_path / "b.png"), "text": "t"}]
    manifest = _write_jsonl(tmp_path / "elsewhere.jsonl", rows)
    ds = ManifestDataset(manifest, image_root=tmp_path / "imgs")
    assert ds[0]["path"] == str(tmp_path / "imgs" / "a.png") and "skip" not in ds[0]
    assert ds[1]["path"] == str(tmp_path / "b.png") and "skip" not in ds[1]


def test_missing_columns_message(tree):
    manifest, _ = tree
    with pytest.raises(ValueError) as info:
        ManifestDataset(manifest, ColumnConfig(image="image_path", text="report"))
    message = str(info.value)
    assert "['image_path', 'report']" in message and "'image', 'text', 'pid'" in message


def test_all_rows_bad_messages(tmp_path):
    rows = [{"image": f"nope{i}.png", "text": "t"} for i in range(3)]
    manifest = _write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(ValueError) as info:
        ManifestDataset(manifest)
    message = str(info.value)
    assert "every one of the 3 rows" in message and "--image-root" in message and str(tmp_path) in message
    # files exist but none decodes
    for i in range(3):
        (tmp_path / f"nope{i}.png").write_bytes(b"garbage" * 20)
    with pytest.raises(ValueError, match="could be decoded"):
        ManifestDataset(manifest)


def test_label_forms():
    assert label_to_number("-1.0", "ones") == 1.0 and label_to_number(-1, "zeros") == 0.0
    assert label_to_number(-1, "ignore") is None and label_to_number(-1.0) == -1.0
    assert label_to_number("") is None and label_to_number(float("nan")) is None and label_to_number(True) == 1.0
    with pytest.raises(ValueError):
        label_to_number(2)


def _labels(rows, columns, tmp_path, **kw):
    _png(tmp_path / "a.png")
    rows = [{"image": "a.png", "text": "t", **r} for r in rows]
    ds = ManifestDataset(datasets.Dataset.from_list(rows), columns, image_root=tmp_path, **kw)
    return ds, [ds[i].get("labels") for i in range(len(ds))]


def test_labels_as_lists_of_names(tmp_path):
    rows = [{"y": ["Edema", "Mass"]}, {"y": []}, {"y": None}, {"y": ["Unknown", "Edema"]}]
    ds, labels = _labels(rows, ColumnConfig(labels="y", label_names=["Mass", "Edema", "Hernia"]), tmp_path)
    assert ds.label_form is LabelForm.NAMES
    np.testing.assert_array_equal(labels[0], [1, 1, 0])
    np.testing.assert_array_equal(labels[1], [0, 0, 0])
    assert np.isnan(labels[2]).all()
    np.testing.assert_array_equal(labels[3], [0, 1, 0])
    assert labels[0].dtype == np.float32
    # names collected from the manifest when not given, and NIH's "A|B" strings
    ds, labels = _labels([{"y": "Mass|Edema"}, {"y": "No Finding"}], ColumnConfig(labels="y"), tmp_path)
    assert ds.label_names == ["Edema", "Mass", "No Finding"]
    np.testing.assert_array_equal(labels[0], [1, 1, 0])


@pytest.mark.parametrize("policy, expected", [("ignore", math.nan), ("ones", 1.0), ("zeros", 0.0), ("keep", -1.0)])
def test_labels_as_dicts_with_uncertain_policy(tmp_path, policy, expected):
    rows = [{"y": {"Edema": 1, "Mass": -1, "Nodule": None}}, {"y": {"Edema": 0, "Mass": 0, "Nodule": 1}}]
    ds, labels = _labels(rows, ColumnConfig(labels="y", uncertain=policy), tmp_path)
    assert ds.label_form is LabelForm.DICT and ds.label_names == ["Edema", "Mass", "Nodule"]
    np.testing.assert_array_equal(labels[0][[0]], [1.0])
    assert (math.isnan(labels[0][1]) and math.isnan(expected)) or labels[0][1] == expected
    assert math.isnan(labels[0][2])
    np.testing.assert_array_equal(labels[1], [0, 0, 1])


def test_labels_as_columns(tmp_path):
    rows = [{"Edema": 1.0, "Mass": -1.0}, {"Edema": None, "Mass": 0.0}]
    ds, labels = _labels(rows, ColumnConfig(labels=["Edema", "Mass"], uncertain="zeros"), tmp_path)
    assert ds.label_form is LabelForm.COLUMNS and ds.label_names == ["Edema", "Mass"]
    np.testing.assert_array_equal(labels[0], [1, 0])
    assert math.isnan(labels[1][0]) and labels[1][1] == 0
    ds, labels = _labels(rows, ColumnConfig(labels="Edema"), tmp_path)  # one numeric column named as a string
    assert ds.label_names == ["Edema"] and labels[0].tolist() == [1.0]
    ds, _ = _labels([{"Edema": 3.0}], ColumnConfig(labels=["Edema"]), tmp_path)
    assert ds[0]["skip"] == "bad labels"


def test_boxes_are_normalised(tmp_path):
    assert normalize_box({"finding": "Mass", "x": 400, "y": 400, "w": 40, "h": 80, "x_resized": 100,
                          "y_resized": 100, "w_resized": 10, "h_resized": 20}) == \
        {"label": "Mass", "x": 100.0, "y": 100.0, "w": 10.0, "h": 20.0}
    assert normalize_box({"label": "Left Lung", "bbox_xywh_annotated": [1, 2, 3, 4],
                          "bbox_xywh_resized": [5, 6, 7, 8]}) == {"label": "Left Lung", "x": 5.0, "y": 6.0,
                                                                  "w": 7.0, "h": 8.0}
    assert normalize_box({"name": "A", "x1": 1, "y1": 2, "x2": 4, "y2": 10}) == \
        {"label": "A", "x": 1.0, "y": 2.0, "w": 3.0, "h": 8.0}
    with pytest.raises(ValueError):
        normalize_box({"label": "A", "x": 1})
    rows = [{"b": [{"label": "Mass", "x": 1, "y": 2, "w": 3, "h": 4}]}, {"b": None}, {"b": [{"label": "A", "w": -1}]}]
    _png(tmp_path / "a.png")
    ds = ManifestDataset(datasets.Dataset.from_list([{"image": "a.png", "text": "t", **r} for r in rows]),
                         ColumnConfig(boxes="b"), image_root=tmp_path)
    assert ds[0]["boxes"] == [{"label": "Mass", "x": 1.0, "y": 2.0, "w": 3.0, "h": 4.0}]
    assert ds[1]["boxes"] == []
    assert ds[2]["skip"] == "bad boxes"


def test_dataloader_with_workers_collate_and_skiplog(tree):
    manifest, _ = tree
    ds = ManifestDataset(manifest)
    loader = torch.utils.data.DataLoader(ds, batch_size=3, num_workers=2, collate_fn=collate_skipping)
    log = SkipLog()
    seen = []
    for good, skipped in loader:
        assert all("image" in item for item in good)
        seen += [item["index"] for item in good]
        log.add(skipped)
    assert sorted(seen) == [0, 1, 2, 3]
    assert log.summary() == {"empty report": 2, "missing file": 1, "empty file": 1, "truncated image": 1,
                             "unreadable DICOM": 1}
    assert sorted(r.index for r in log.records) == sorted(EXPECTED_SKIPS)
    assert log.format().startswith("skipped 6 rows: empty report 2")
    log.reset()
    assert len(log) == 0 and log.format() == "skipped 0 rows"


def test_subset_keeps_settings(tree):
    manifest, _ = tree
    ds = ManifestDataset(manifest)
    sub = ds.subset([1, 4])
    assert len(sub) == 2 and sub[0]["text"] == "Lungs clear." and sub[1]["skip"] == "missing file"


def test_streaming_matches_map_style(tree):
    manifest, _ = tree
    mapped = ManifestDataset(manifest)
    stream = ManifestIterableDataset(manifest)
    items = list(stream)
    assert [i["index"] for i in items] == list(range(10))
    for a in items:
        b = mapped[a["index"]]
        assert a.get("skip") == b.get("skip") and a.get("text") == b.get("text")
        if "image" in a:
            np.testing.assert_array_equal(a["image"], b["image"])
    # two workers: every row once
    loader = torch.utils.data.DataLoader(stream, batch_size=2, num_workers=2, collate_fn=collate_skipping)
    indices = [item["index"] for good, skipped in loader for item in good + skipped]
    assert sorted(indices) == list(range(10))
    # two ranks split the rows between them
    ranks = [[i["index"] for i in ManifestIterableDataset(manifest, rank=r, world_size=2)] for r in (0, 1)]
    assert sorted(ranks[0] + ranks[1]) == list(range(10)) and not set(ranks[0]) & set(ranks[1])
    # a shuffle buffer reorders rows but keeps each row's index attached to its content
    shuffled = list(ManifestIterableDataset(manifest, shuffle_buffer=10, seed=1))
    assert sorted(i["index"] for i in shuffled) == list(range(10))
    assert [i["index"] for i in shuffled] != list(range(10))
    for a in shuffled:
        assert a.get("text") == mapped[a["index"]].get("text")


def test_streaming_start_up_checks(tmp_path):
    rows = [{"image": f"nope{i}.png", "text": "t"} for i in range(3)]
    manifest = _write_jsonl(tmp_path / "m.jsonl", rows)
    with pytest.raises(ValueError, match="all of the first 3 rows are unusable"):
        ManifestIterableDataset(manifest)
    with pytest.raises(ValueError, match="not found"):
        ManifestIterableDataset(manifest, ColumnConfig(image="path"))
    with pytest.raises(ValueError, match="label_names"):
        ManifestIterableDataset(_write_jsonl(tmp_path / "n.jsonl", [{"image": "a", "text": "t", "y": ["A"]}]),
                                ColumnConfig(labels="y"))


# --- splits ------------------------------------------------------------------------------------------------------

def _ids():
    rng = np.random.default_rng(1)
    # 60 patients with 1 to 9 images each
    return [f"p{p}" for p in range(60) for _ in range(int(rng.integers(1, 10)))]


def test_patient_split_fractions_and_disjoint():
    ids = _ids()
    splits = patient_split(ids, fractions={"train": 0.7, "val": 0.1, "test": 0.2}, seed=0)
    assert sorted(sum(splits.values(), [])) == list(range(len(ids)))
    patients = {name: {ids[i] for i in rows} for name, rows in splits.items()}
    assert not patients["train"] & patients["val"] and not patients["train"] & patients["test"]
    assert not patients["val"] & patients["test"]
    for name, fraction in {"train": 0.7, "val": 0.1, "test": 0.2}.items():
        assert abs(len(splits[name]) / len(ids) - fraction) < 0.05, name
    assert patient_split(ids, test_size=0.25, seed=3) == patient_split(ids, test_size=0.25, seed=3)
    assert patient_split(ids, test_size=0.25, seed=3) != patient_split(ids, test_size=0.25, seed=4)
    assert set(patient_split(ids)) == {"train", "test"}


def test_patient_split_hand_case_and_missing_ids():
    # 5 single-image patients, test_size 0.2: exactly one patient in test
    splits = patient_split(["a", "b", "c", "d", "e"], test_size=0.2)
    assert len(splits["train"]) == 4 and len(splits["test"]) == 1
    # rows without an id are patients of their own; rows of patient "x" stay together
    ids = ["x", None, "x", float("nan"), "", "x"]
    for seed in range(10):
        s = patient_split(ids, test_size=0.5, seed=seed)
        assert {0, 2, 5} <= set(s["train"]) or {0, 2, 5} <= set(s["test"])
    with pytest.raises(ValueError):
        patient_split(ids, fractions={"a": 0.5}, test_size=0.5)


def test_patient_split_from_manifest_dataset(tree):
    manifest, _ = tree
    ds = ManifestDataset(manifest, ColumnConfig(patient_id="pid"))
    splits = patient_split(ds, test_size=0.3, seed=0)
    train_p = {ds.patient_ids()[i] for i in splits["train"]}
    test_p = {ds.patient_ids()[i] for i in splits["test"]}
    assert not train_p & test_p and len(splits["train"]) + len(splits["test"]) == 10
    data = datasets.Dataset.from_list([{"pid": p} for p in "aabbc"])
    assert sorted(sum(patient_split(data, patient_column="pid").values(), [])) == list(range(5))


def test_patient_kfold():
    ids = _ids()
    folds = patient_kfold(ids, k=5, seed=0)
    assert len(folds) == 5
    val_all = sorted(i for _, val in folds for i in val)
    assert val_all == list(range(len(ids)))  # each row validated exactly once
    sizes = [len(val) for _, val in folds]
    assert max(sizes) - min(sizes) <= 9  # greedy balance: within one patient's size
    for train, val in folds:
        assert not {ids[i] for i in train} & {ids[i] for i in val}
        assert sorted(train + val) == list(range(len(ids)))
    with pytest.raises(ValueError):
        patient_kfold(["a", "b"], k=3)
