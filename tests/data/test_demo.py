"""The built-in demo phantoms: determinism, pixels that agree with labels and boxes, reports that carry them."""
from __future__ import annotations

import json
import re

import numpy as np
import pytest

from vlp.data import demo
from vlp.data.demo import (
    FINDINGS,
    DemoConfig,
    default_demo_dir,
    generate_demo_dataset,
    iter_demo_studies,
    make_phantom,
)

SMALL = DemoConfig(image_size=128)


def phantom(seed: int, labels=None, config: DemoConfig = SMALL):
    return make_phantom(np.random.default_rng(seed), config, labels=labels)


def sentences(section: str) -> list[str]:
    """Split a findings/impression section at sentence ends (a period followed by a space or the end)."""
    return [s for s in re.split(r"(?<=\.)\s+", section.strip()) if s]


# An independent rule-based labeler (keyword + negation cue per sentence, in the spirit of NegEx):
# the labels it reads from a report must be the labels the image was drawn with.
KEYWORDS = {
    "cardiomegaly": r"cardiomegaly|heart|cardiac|cardiomediastinal",
    "pleural effusion": r"effusion|costophrenic|fluid",
    "nodule": r"nodul",
    "mass": r"\bmass",
    "pneumothorax": r"pneumothora",
    "consolidation": r"consolidation|airspace",
}
NEGATION = r"\bno\b|\bnormal\b|\bsharp\b|within normal limits"


def read_labels(report: str) -> dict[str, int]:
    body = report.replace("FINDINGS:", " ").replace("IMPRESSION:", " ")
    found = {f: 0 for f in FINDINGS}
    for sent in sentences(body):
        low = sent.lower()
        for f, pattern in KEYWORDS.items():
            if re.search(pattern, low) and not re.search(NEGATION, low):
                found[f] = 1
    return found


# --------------------------------------------------------------------------------------------------


def test_same_seed_same_sample_and_different_seed_differs():
    a, b, c = phantom(7), phantom(7), phantom(8)
    assert a.image.dtype == np.float32 and a.image.shape == (128, 128)
    assert 0.0 <= a.image.min() and a.image.max() <= 1.0
    np.testing.assert_array_equal(a.image, b.image)
    assert (a.report, a.labels, a.boxes) == (b.report, b.labels, b.boxes)
    assert np.abs(a.image - c.image).mean() > 0.01


def test_phantoms_vary_between_patients():
    """Position, size and contrast differ between patients: the lung masks and intensities are not constant."""
    normals = [phantom(i, labels={}) for i in range(10)]
    lungs = [n.masks["lungs"] for n in normals]
    iou = [(a & b).sum() / (a | b).sum() for i, a in enumerate(lungs) for b in lungs[i + 1 :]]
    means = [n.image.mean() for n in normals]
    assert np.mean(iou) < 0.85 and max(iou) < 0.97
    assert max(means) - min(means) > 0.02


@pytest.mark.parametrize("finding", ["pleural effusion", "nodule", "mass", "consolidation"])
def test_opacities_brighten_their_box(finding):
    """The same patient with and without the finding: the box is brighter, and the change stays in the box."""
    for seed in range(5):
        base, sick = phantom(seed, labels={}), phantom(seed, labels={finding: 1})
        boxes = [b for b in sick.boxes if b["finding"] == finding]
        assert boxes and sick.labels[finding] == 1 and sum(sick.labels.values()) == 1
        changed = np.abs(sick.image - base.image)
        near = np.zeros(changed.shape, bool)
        for b in boxes:
            region = (slice(b["y"], b["y"] + b["h"]), slice(b["x"], b["x"] + b["w"]))
            assert sick.image[region].mean() > base.image[region].mean() + 0.04, (seed, b)
            near[max(b["y"] - 3, 0) : b["y"] + b["h"] + 3, max(b["x"] - 3, 0) : b["x"] + b["w"] + 3] = True
        assert changed[near].sum() > 0.98 * changed.sum()


def test_pneumothorax_is_darker_with_a_pleural_line():
    """The air between chest wall and lung edge is darker than the lung it replaces; the edge is a bright line."""
    from scipy import ndimage

    quiet = DemoConfig(image_size=128, noise=0.0)
    for seed in range(5):
        base, sick = phantom(seed, labels={}, config=quiet), phantom(seed, labels={"pneumothorax": 1}, config=quiet)
        air = sick.masks["pneumothorax"]
        assert air.sum() > 50
        assert sick.image[air].mean() < base.image[air].mean() - 0.05, seed
        # just medial to the air band, inside the lung: the visceral pleural line (brighter than before)
        edge = ndimage.binary_dilation(air, iterations=2) & ~air & sick.masks["lungs"]
        assert sick.image[edge].mean() > base.image[edge].mean() + 0.015, seed
        (box,) = sick.boxes
        assert box["side"] in ("right", "left")
        ys, xs = np.nonzero(air)
        assert (box["x"], box["y"], box["w"], box["h"]) == (xs.min(), ys.min(), np.ptp(xs) + 1, np.ptp(ys) + 1)


def lung_extent(lungs: np.ndarray) -> int:
    """Internal thoracic width: the widest distance between the outer edges of the two lung fields."""
    widest = 0
    for row in lungs:
        cols = np.nonzero(row)[0]
        if cols.size:
            widest = max(widest, int(cols[-1] - cols[0] + 1))
    return widest


def test_cardiothoracic_ratio_from_the_drawn_masks():
    for seed in range(8):
        for enlarged in (0, 1):
            s = phantom(seed, labels={"cardiomegaly": enlarged})
            heart_cols = np.nonzero(s.masks["heart"].any(axis=0))[0]
            ratio = (heart_cols[-1] - heart_cols[0] + 1) / lung_extent(s.masks["lungs"])
            assert (ratio > 0.5) == bool(enlarged), (seed, enlarged, ratio)
            assert ratio == pytest.approx(s.attributes["cardiothoracic_ratio"], abs=0.03)
            if enlarged:
                (box,) = s.boxes
                assert box["w"] == heart_cols[-1] - heart_cols[0] + 1


def test_boxes_sides_and_zones_follow_the_radiological_convention():
    """Patient's right is on the image left; upper-zone lesions sit above lower-zone ones in the lung."""
    checked = 0
    for seed in range(60):
        s = phantom(seed, labels={"nodule": 1, "mass": 1, "consolidation": 1, "pleural effusion": 1})
        lung_rows = np.nonzero(s.masks["lungs"].any(axis=1))[0]
        cols = np.nonzero(s.masks["lungs"].any(axis=0))[0]
        midline = (s.masks["mediastinum"].any(axis=0).nonzero()[0].mean() + (cols[0] + cols[-1]) / 2) / 2
        for b in s.boxes:
            assert 0 <= b["x"] and 0 <= b["y"] and b["w"] > 0 and b["h"] > 0
            assert b["x"] + b["w"] <= 128 and b["y"] + b["h"] <= 128
            cx, cy = b["x"] + b["w"] / 2, b["y"] + b["h"] / 2
            if b["side"] == "right":
                assert cx < midline, b
            elif b["side"] == "left":
                assert cx > midline, b
            if b["zone"] in ("upper", "lower"):
                frac = (cy - lung_rows[0]) / (lung_rows[-1] - lung_rows[0])
                assert (frac < 0.5) if b["zone"] == "upper" else (frac > 0.45), (b, frac)
                checked += 1
    assert checked > 50


def test_every_positive_finding_has_its_own_sentence_and_reports_parse():
    seen_negation = 0
    for seed in range(150):
        s = phantom(seed)
        m = re.fullmatch(r"FINDINGS: (.+)\nIMPRESSION: (.+)", s.report)
        assert m, s.report
        assert (m.group(1), m.group(2)) == (s.findings, s.impression)
        findings_sents = sentences(s.findings)
        assert all(x.endswith(".") for x in findings_sents + sentences(s.impression))
        positives = {b["finding"] for b in s.boxes}
        assert positives == {f for f in FINDINGS if s.labels[f]}
        for b in s.boxes:
            assert b["sentence"] in findings_sents  # a whole sentence of the report, verbatim
            assert re.search(KEYWORDS[b["finding"]], b["sentence"].lower())
            others = [f for f in FINDINGS if f != b["finding"] and re.search(KEYWORDS[f], b["sentence"].lower())]
            assert not others, (b["sentence"], others)  # one finding per grounded sentence
            if b["side"] == "right":
                assert "right" in b["sentence"].lower() or "bilateral" in b["sentence"].lower()
            if b["side"] == "left":
                assert re.search(r"left|lingula|bilateral", b["sentence"].lower())
        assert read_labels(s.report) == s.labels, s.report
        seen_negation += any(re.search(NEGATION, x.lower()) for x in findings_sents)
    assert seen_negation > 120  # most reports state some absent findings


def test_prevalence_config():
    assert all(sum(phantom(i, config=DemoConfig(image_size=64, prevalence={f: 0.0 for f in FINDINGS})).labels.values()) == 0 for i in range(5))
    every = DemoConfig(image_size=64, prevalence={f: 1.0 for f in FINDINGS})
    assert all(all(phantom(i, config=every).labels.values()) for i in range(3))
    normal = np.mean([sum(phantom(i, config=DemoConfig(image_size=32)).labels.values()) == 0 for i in range(300)])
    assert 0.3 < normal < 0.55  # about (1 - p) multiplied over the default prevalences: 0.40
    with pytest.raises(ValueError, match="effusion"):
        DemoConfig(prevalence={"effusion": 0.2})
    with pytest.raises(ValueError, match="within"):
        DemoConfig(prevalence={"mass": 1.5})


def test_studies_of_a_patient_share_anatomy_and_splits_are_by_patient():
    studies = list(iter_demo_studies(30, 10, DemoConfig(image_size=64)))
    assert [sp for sp, *_ in studies].count("train") == 30 and len(studies) == 40
    by_patient: dict[str, list] = {}
    for split, pid, _sid, s in studies:
        by_patient.setdefault(pid, []).append((split, s))
    assert all(len({sp for sp, _ in v}) == 1 for v in by_patient.values())
    multi = [v for v in by_patient.values() if len(v) > 1]
    assert multi
    def iou(a, b):
        return (a & b).sum() / (a | b).sum()
    same = np.mean([iou(v[0][1].masks["lungs"], v[1][1].masks["lungs"]) for v in multi])
    firsts = [v[0][1].masks["lungs"] for v in by_patient.values()]
    other = np.mean([iou(a, b) for a, b in zip(firsts[:-1], firsts[1:])])
    assert same > other


def test_generate_dataset_manifest_and_idempotence(tmp_path):
    datasets = pytest.importorskip("datasets")
    config = DemoConfig(image_size=64)
    manifest = generate_demo_dataset(tmp_path / "a", n_train=14, n_test=6, seed=3, config=config)
    assert manifest == tmp_path / "a" / "manifest.jsonl"
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    assert len(rows) == 20 and sum(r["split"] == "test" for r in rows) == 6
    assert not {r["patient_id"] for r in rows if r["split"] == "train"} & {r["patient_id"] for r in rows if r["split"] == "test"}
    info = json.loads((tmp_path / "a" / "demo_info.json").read_text())
    assert info["config"]["seed"] == 3 and info["label_vector_order"] == list(FINDINGS)

    from PIL import Image

    for r in rows:
        with Image.open(manifest.parent / r["image"]) as im:
            assert im.mode == "L" and im.size == (64, 64)
        assert r["labels"] == [f for f, v in zip(FINDINGS, r["label_vector"]) if v]
        assert {b["finding"] for b in r["boxes"]} == set(r["labels"])

    ds = datasets.load_dataset("json", data_files=str(manifest), split="train")
    assert ds.num_rows == 20
    assert {"image", "text", "labels", "label_vector", "boxes", "split", "patient_id"} <= set(ds.column_names)

    # same config and seed elsewhere: identical bytes; same folder again: nothing is rewritten
    again = generate_demo_dataset(tmp_path / "b", n_train=14, n_test=6, seed=3, config=config)
    assert again.read_text() == manifest.read_text()
    assert (tmp_path / "a" / rows[0]["image"]).read_bytes() == (tmp_path / "b" / rows[0]["image"]).read_bytes()
    stamp = manifest.stat().st_mtime_ns
    assert generate_demo_dataset(tmp_path / "a", n_train=14, n_test=6, seed=3, config=config) == manifest
    assert manifest.stat().st_mtime_ns == stamp
    # a different seed, or a missing image, regenerates
    (tmp_path / "a" / rows[0]["image"]).unlink()
    generate_demo_dataset(tmp_path / "a", n_train=14, n_test=6, seed=3, config=config)
    assert (tmp_path / "a" / rows[0]["image"]).is_file()
    generate_demo_dataset(tmp_path / "a", n_train=14, n_test=6, seed=4, config=config)
    assert manifest.read_text() != again.read_text()
    # a cache written by other generator code (another source hash, same version number) is regenerated
    info_path = tmp_path / "b" / "demo_info.json"
    info = json.loads(info_path.read_text())
    assert info["generator_hash"] == demo._generator_hash()
    info_path.write_text(json.dumps({**info, "generator_hash": "0" * 16}))
    stamp = again.stat().st_mtime_ns
    generate_demo_dataset(tmp_path / "b", n_train=14, n_test=6, seed=3, config=config)
    assert again.stat().st_mtime_ns != stamp and json.loads(info_path.read_text()) == info


def test_default_demo_dir(monkeypatch, tmp_path):
    monkeypatch.setenv("VLP_CACHE", str(tmp_path))
    assert default_demo_dir() == tmp_path / "demo"
    monkeypatch.delenv("VLP_CACHE")
    assert default_demo_dir().parts[-3:] == (".cache", "vlp", "demo")
