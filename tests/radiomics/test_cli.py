"""`vlp radiomics`: features of the box or mask regions of a manifest built from real NIH images and boxes."""
from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vlp.radiomics import RadiomicsExtractor, box_mask
from vlp.radiomics.cli import extract_manifest, main


def _write_jsonl(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    return path


@pytest.fixture()
def box_manifest(tmp_path, nih_picks):
    """Rows 0-2 good (row 0 with a relative path), 3 missing image, 4 garbage file, 5 a zero-width and a good box,
    6 no boxes."""
    garbage = tmp_path / "broken.png"
    garbage.write_bytes(b"not a png at all")
    (tmp_path / "imgs").mkdir()
    first = tmp_path / "imgs" / nih_picks[0][0].name
    first.symlink_to(nih_picks[0][0])
    rows = [{"image": "imgs/" + first.name, "boxes": [nih_picks[0][1]], "patient_id": "p0"}]
    rows += [{"image": str(p), "boxes": [b], "patient_id": f"p{k + 1}"} for k, (p, b) in enumerate(nih_picks[1:])]
    good_box = dict(nih_picks[1][1])
    flat_box = {"finding": "Flat", "x": 10.0, "y": 10.0, "w": 0.0, "h": 5.0}
    rows += [
        {"image": str(tmp_path / "missing.png"), "boxes": [good_box], "patient_id": "p3"},
        {"image": str(garbage), "boxes": [good_box], "patient_id": "p4"},
        {"image": str(nih_picks[1][0]), "boxes": [flat_box, good_box], "patient_id": "p5"},
        {"image": str(nih_picks[2][0]), "boxes": [], "patient_id": "p6"},
    ]
    return _write_jsonl(tmp_path / "boxes.jsonl", rows)


def _expected(paths_and_boxes, **settings) -> torch.Tensor:
    """The extractor on the uncropped images with the box masks (independent of the CLI's crop-and-pad batching)."""
    images, masks = [], []
    for path, b in paths_and_boxes:
        image = np.asarray(Image.open(path))
        images.append(image)
        masks.append(box_mask(b["x_resized"], b["y_resized"], b["w_resized"], b["h_resized"], *image.shape))
    return RadiomicsExtractor("torch", dtype=torch.float64, **settings)(np.stack(images), np.stack(masks))


def test_box_rows_features_and_skips(box_manifest, nih_picks, tmp_path, capsys, caplog):
    out = tmp_path / "features.parquet"
    with caplog.at_level(logging.WARNING, logger="vlp.radiomics.cli"):
        code = main(["--manifest", str(box_manifest), "--out", str(out), "--keep-columns", "patient_id",
                     "--batch-size", "2"])
    assert code == 0
    table = pd.read_parquet(out)
    names = RadiomicsExtractor("torch").feature_names
    assert list(table.columns[:9]) == ["row", "image", "region", "label", "x", "y", "w", "h", "patient_id"]
    assert list(table.columns[9:]) == names
    assert table["row"].tolist() == [0, 1, 2, 5] and table["region"].tolist() == [0, 0, 0, 1]
    assert table["patient_id"].tolist() == ["p0", "p1", "p2", "p5"]
    assert table["label"].tolist() == [b["finding"] for _, b in nih_picks] + [nih_picks[1][1]["finding"]]
    expected = _expected(list(nih_picks) + [nih_picks[1]])
    torch.testing.assert_close(torch.from_numpy(table[names].to_numpy()), expected, rtol=1e-10, atol=1e-10,
                               equal_nan=True)
    # every skipped region is counted and logged with its row and file
    summary = capsys.readouterr().out
    assert "wrote 4 regions from 7 manifest rows" in summary
    for part in ("skipped 4 regions", "missing file 1", "unreadable image 1", "empty mask 1", "no boxes 1"):
        assert part in summary
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "row 3 (" in logged and "missing.png): skipped, missing file" in logged
    assert "row 4 (" in logged and "broken.png" in logged
    assert "row 5 (" in logged and "box 0): skipped, empty mask" in logged
    assert "row 6 (" in logged and "no boxes" in logged


def test_strict_stops_at_the_first_bad_row(box_manifest, tmp_path, capsys):
    out = tmp_path / "features.parquet"
    assert main(["--manifest", str(box_manifest), "--out", str(out), "--strict"]) == 2
    err = capsys.readouterr().err
    assert "row 3 (" in err and "missing.png" in err and "missing file" in err and "--strict" in err
    assert not out.exists()


def test_mask_rows_and_options(tmp_path, nih_picks, capsys):
    rows = []
    for k, (path, b) in enumerate(nih_picks[:2]):
        mask = box_mask(b["x_resized"], b["y_resized"], b["w_resized"], b["h_resized"], 256, 256)
        Image.fromarray(mask.astype(np.uint8) * 255).save(tmp_path / f"mask{k}.png")
        rows.append({"path": str(path), "roi": f"mask{k}.png", "finding": b["finding"]})
    Image.fromarray(np.zeros((256, 256), np.uint8)).save(tmp_path / "empty.png")
    Image.fromarray(np.ones((100, 100), np.uint8)).save(tmp_path / "small.png")
    rows += [{"path": str(nih_picks[0][0]), "roi": "empty.png", "finding": "x"},
             {"path": str(nih_picks[0][0]), "roi": "small.png", "finding": "x"},
             {"path": str(nih_picks[0][0]), "roi": "gone.png", "finding": "x"}]
    manifest = _write_jsonl(tmp_path / "masks.jsonl", rows)
    out = tmp_path / "glcm.csv"
    code = main(["--manifest", str(manifest), "--out", str(out), "--image-column", "path", "--mask-column", "roi",
                 "--keep-columns", "finding", "--feature-classes", "glcm,firstorder", "--bin-width", "10",
                 "--threads", "1"])
    assert code == 0
    table = pd.read_csv(out)
    names = RadiomicsExtractor("torch", feature_classes=("glcm", "firstorder")).feature_names
    assert list(table.columns) == ["row", "image", "region", "label", "mask", "finding"] + names
    assert table["mask"].tolist() == ["mask0.png", "mask1.png"]
    expected = _expected(nih_picks[:2], feature_classes=("glcm", "firstorder"), bin_width=10)
    torch.testing.assert_close(torch.from_numpy(table[names].to_numpy()), expected, rtol=1e-9, atol=1e-9)
    summary = capsys.readouterr().out
    for part in ("empty mask 1", "mask size differs from the image 1", "mask: missing file 1"):
        assert part in summary


def test_pyradiomics_backend_and_vlp_entry_point(tmp_path, nih_picks):
    """`vlp radiomics` through vlp/cli.py, with the reference backend: the same features within the parity bound."""
    from vlp.cli import main as vlp_main

    manifest = _write_jsonl(tmp_path / "m.jsonl", [{"image": str(p), "boxes": [b]} for p, b in nih_picks[:2]])
    out = tmp_path / "ref.parquet"
    assert vlp_main(["radiomics", "--manifest", str(manifest), "--out", str(out), "--backend", "pyradiomics",
                     "--feature-classes", "shape2D,glszm"]) == 0
    table = pd.read_parquet(out)
    names = RadiomicsExtractor("torch", feature_classes=("shape2D", "glszm")).feature_names
    expected = _expected(nih_picks[:2], feature_classes=("shape2D", "glszm"))
    torch.testing.assert_close(torch.from_numpy(table[names].to_numpy()), expected, rtol=1e-3, atol=1e-6)


def test_bad_invocations_fail_clearly(box_manifest, tmp_path, capsys):
    assert main(["--manifest", str(box_manifest), "--out", str(tmp_path / "f.parquet"), "--image-column", "file"]) == 2
    err = capsys.readouterr().err
    assert "no column(s) ['file']" in err and "'image'" in err and "--image-column" in err
    assert main(["--manifest", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "f.parquet")]) == 2
    assert "manifest not found" in capsys.readouterr().err
    assert main(["--manifest", str(box_manifest), "--out", str(tmp_path / "f.txt")]) == 2
    assert "parquet or .csv" in capsys.readouterr().err
    assert main(["--manifest", str(box_manifest), "--out", str(tmp_path / "f.csv"), "--feature-classes", "glcm,x"]) == 2
    assert "unknown radiomics feature classes" in capsys.readouterr().err
    with pytest.raises(ValueError, match="batch_size"):
        extract_manifest(box_manifest, tmp_path / "f.csv", batch_size=0)
