"""Localisation metrics (`vlp.evaluation.localization`) on hand-made maps and boxes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import measure

from vlp.evaluation.localization import (
    box_to_mask,
    boxes_to_mask,
    heatmap_iou,
    iou,
    largest_component_box,
    localization_accuracy,
    normalize_map,
    pointing_game,
)


def test_box_to_mask_integer_fractional_and_clipped():
    mask = box_to_mask((1, 2, 3, 2), height=5, width=6)  # x=1..3, y=2..3
    expected = np.zeros((5, 6), dtype=bool)
    expected[2:4, 1:4] = True
    np.testing.assert_array_equal(mask, expected)
    assert mask.sum() == 3 * 2
    # a pixel belongs to the box when its centre is inside: x in [0.6, 2.4] holds only the centre 1.5
    fractional = box_to_mask((0.6, 0.0, 1.8, 1.0), height=2, width=4)
    np.testing.assert_array_equal(fractional, [[False, True, False, False], [False, False, False, False]])
    clipped = box_to_mask((4, -3, 10, 5), height=5, width=6)  # reaches past the right and top edges
    expected = np.zeros((5, 6), dtype=bool)
    expected[0:2, 4:6] = True
    np.testing.assert_array_equal(clipped, expected)
    assert not box_to_mask((10, 10, 2, 2), 5, 6).any()
    union = boxes_to_mask([(0, 0, 1, 1), (5, 4, 1, 1)], 5, 6)
    assert union.sum() == 2 and union[0, 0] and union[4, 5]


def test_pointing_game():
    heatmap = np.zeros((10, 10))
    heatmap[7, 2] = 1.0  # row 7 (y), column 2 (x)
    assert pointing_game(heatmap, (1, 6, 3, 3))  # x 1..3, y 6..8
    assert not pointing_game(heatmap, (6, 1, 3, 3))  # the transposed box misses: x and y are not swapped
    assert pointing_game(heatmap, [(6, 1, 3, 3), (2, 7, 1, 1)])  # any box of the finding
    assert pointing_game(torch.tensor(heatmap), [(2, 7, 1, 1)])
    assert not pointing_game(np.ones((4, 4)), (2, 2, 2, 2))  # a flat map points at the first pixel only
    with pytest.raises(ValueError, match="NaN"):
        pointing_game(np.full((2, 2), np.nan), (0, 0, 1, 1))


def test_iou_hand_computed():
    a = box_to_mask((0, 0, 2, 2), 4, 4)  # 4 pixels
    b = box_to_mask((1, 1, 2, 2), 4, 4)  # 4 pixels, 1 shared
    assert iou(a, b) == pytest.approx(1 / 7)
    assert iou(a, a) == 1.0
    assert iou(a, np.zeros((4, 4), bool)) == 0.0
    assert iou(torch.from_numpy(a), torch.from_numpy(b)) == pytest.approx(1 / 7)
    with pytest.raises(ValueError, match="both masks are empty"):
        iou(np.zeros((2, 2), bool), np.zeros((2, 2), bool))
    with pytest.raises(ValueError, match="same shape"):
        iou(np.zeros((2, 2), bool), np.zeros((2, 3), bool))


def test_heatmap_iou_over_thresholds():
    # values 0..1 in steps: a bright 2x2 core (1.0) inside a 4x4 ring of 0.5, background 0.2 on an 8x8 map
    heatmap = np.full((8, 8), 0.2)
    heatmap[2:6, 2:6] = 0.5
    heatmap[3:5, 3:5] = 1.0
    box = (2, 2, 4, 4)  # exactly the 4x4 ring
    # min-max normalised: background 0, ring 0.375, core 1
    result = heatmap_iou(heatmap, box, thresholds=(0.0, 0.3, 0.5, 1.0))
    assert result == {0.0: pytest.approx(16 / 64), 0.3: 1.0, 0.5: pytest.approx(4 / 16), 1.0: pytest.approx(4 / 16)}
    raw = heatmap_iou(heatmap, box, thresholds=(0.4, 0.9), normalize=False)
    assert raw == {0.4: 1.0, 0.9: pytest.approx(0.25)}
    # the union of two boxes is the target
    two = heatmap_iou(heatmap, [(2, 2, 4, 2), (2, 4, 4, 2)], thresholds=(0.3,))
    assert two[0.3] == 1.0
    np.testing.assert_allclose(normalize_map(np.full((3, 3), 7.0)), 0.0)


def test_localization_accuracy():
    ious = [0.05, 0.3, 0.6, 0.1]
    acc = localization_accuracy(ious, iou_thresholds=(0.1, 0.5, 0.7))
    assert acc == {0.1: 0.75, 0.5: 0.25, 0.7: 0.0}
    assert list(localization_accuracy([0.5])) == [0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7]
    with pytest.raises(ValueError):
        localization_accuracy([])


def test_largest_component_box():
    heatmap = np.zeros((10, 12))
    heatmap[1:3, 1:3] = 1.0  # small bright blob, 4 pixels
    heatmap[5:9, 6:11] = 0.8  # large blob, 20 pixels: x 6..10, y 5..8
    assert largest_component_box(heatmap, threshold=0.5) == (6, 5, 5, 4)
    assert largest_component_box(heatmap, threshold=0.9) == (1, 1, 2, 2)  # only the bright blob remains
    assert largest_component_box(np.zeros((4, 4)), threshold=0.5) is None
    # diagonal neighbours connect under 8-connectivity only
    diagonal = np.zeros((5, 5))
    diagonal[[0, 1, 2], [0, 1, 2]] = 1.0
    diagonal[4, 3:5] = 1.0
    assert largest_component_box(diagonal, 0.5, connectivity=8) == (0, 0, 3, 3)
    assert largest_component_box(diagonal, 0.5, connectivity=4) == (3, 4, 2, 1)


def test_largest_component_box_matches_skimage():
    rng = np.random.default_rng(0)
    compared = 0
    for _ in range(5):
        heatmap = rng.random((24, 20))
        box = largest_component_box(heatmap, threshold=0.6)
        regions = measure.regionprops(measure.label(normalize_map(heatmap) >= 0.6, connectivity=2))
        sizes = [r.area for r in regions]
        if sizes.count(max(sizes)) > 1:
            continue  # ties are ranked by map mass here; skimage has no rule to compare against
        min_row, min_col, max_row, max_col = max(regions, key=lambda r: r.area).bbox
        assert box == (min_col, min_row, max_col - min_col, max_row - min_row)
        compared += 1
    assert compared >= 3
