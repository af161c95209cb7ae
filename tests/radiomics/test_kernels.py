"""The compiled CPU kernels (numba) of the torch backend against its numpy/torch path.

Every kernel's output (packed canvas, co-occurrence counts, run-length cells, zones, dependence counts, NGTDM sums,
shape sums, intensity histograms) is compared with what the path without kernels computes on the same canvas, on
the real NIH regions (box, irregular and ellipse masks) and on edge cases: one-pixel-wide parts, regions touching
the image border, two isolated pixels, hundreds of gray levels, float intensities. Then the full feature vectors
with the kernels on and off. The parity of both with PyRadiomics is test_parity.py's.
"""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlp.radiomics import ALL_FEATURE_CLASSES, RadiomicsExtractor
from vlp.radiomics import torch_backend
from vlp.radiomics.torch_backend import discretisation, glcm, gldm, glrlm, glszm, kernels, ngtdm, shape2d

pytest.importorskip("numba", reason="numba is optional; without it the kernels are not used")


@pytest.fixture(autouse=True)
def kernels_on(monkeypatch):
    """The kernels enabled (whatever VLP_RADIOMICS_NUMBA says); tests switch them off where they compare."""
    monkeypatch.setattr(kernels, "ENABLED", True)

RNG = np.random.default_rng(3)


def _edge_batch() -> tuple[np.ndarray, np.ndarray]:
    """Edge-case regions on 20 x 24 images: an L of one-pixel-wide arms, a region touching two image borders, a
    cross, two isolated pixels, a checkerboard (runs and zones of one pixel), a ring, a full image."""
    h, w = 20, 24
    masks = np.zeros((7, h, w), dtype=bool)
    masks[0, 3:15, 4] = True  # L: a one-pixel-wide column and row
    masks[0, 14, 4:18] = True
    masks[1, 0:9, 15:24] = True  # touching the top and right borders
    masks[2, 8, 2:20] = True  # cross
    masks[2, 2:18, 10] = True
    masks[3, 5, 5] = masks[3, 12, 17] = True  # two isolated pixels
    masks[4, 4:16, 3:21] = True  # checkerboard below
    masks[5, 2:18, 2:22] = True  # ring
    masks[5, 7:13, 8:16] = False
    masks[6] = True
    images = RNG.integers(0, 256, (7, h, w)).astype(np.uint8)
    images[4, 4:16, 3:21] = np.where(np.indices((12, 18)).sum(0) % 2 == 0, 10, 200)
    return images, masks


def _canvases(images: np.ndarray, masks: np.ndarray, monkeypatch, **kw):
    """The same batch packed with the kernels (on) and without them (off)."""
    img = torch.from_numpy(np.ascontiguousarray(images))
    msk = torch.from_numpy(masks)
    boxes = RadiomicsExtractor("torch").check(img, msk)
    on = discretisation.prepare_canvas(img, msk, boxes, **kw)
    with monkeypatch.context() as m:
        m.setattr(kernels, "ENABLED", False)
        off = discretisation.prepare_canvas(img, msk, boxes, **kw)
    assert on.kernels and not off.kernels
    return on, off


def _batches(nih_regions):
    edge_images, edge_masks = _edge_batch()
    sixteen = (nih_regions.images.astype(np.uint16) * 257 + RNG.integers(0, 257, nih_regions.images.shape)).astype(
        np.uint16)
    return {
        "NIH, bin width 25": (nih_regions.images, nih_regions.masks, {}),
        "NIH, bin count 32": (nih_regions.images, nih_regions.masks, {"bin_count": 32}),
        "NIH float, bin width 17.3": (nih_regions.images * 3.7 + 0.31, nih_regions.masks, {"bin_width": 17.3}),
        "NIH 16-bit, bin width 40 (hundreds of levels)": (sixteen[:6], nih_regions.masks[:6], {"bin_width": 40}),
        "edge cases": (edge_images, edge_masks, {"bin_width": 25}),
        "edge cases, bin width 1": (edge_images, edge_masks, {"bin_width": 1}),
    }


BATCHES = ["NIH, bin width 25", "NIH, bin count 32", "NIH float, bin width 17.3",
           "NIH 16-bit, bin width 40 (hundreds of levels)", "edge cases", "edge cases, bin width 1"]


@pytest.fixture(params=BATCHES)
def pair(request, nih_regions, monkeypatch):
    images, masks, kw = _batches(nih_regions)[request.param]
    return _canvases(images, masks, monkeypatch, **kw)


def test_mask_bounds_match_torch(nih_regions, monkeypatch):
    """Region bounds and row/column counts of real and edge-case masks, plus an empty one, as the torch path."""
    edge_masks = _edge_batch()[1]
    masks = np.concatenate([nih_regions.masks[:, :20, :24], edge_masks, np.zeros((1, 20, 24), bool)])
    masks = torch.from_numpy(np.ascontiguousarray(masks))
    with monkeypatch.context() as m:
        m.setattr(kernels, "ENABLED", False)
        expected = torch.stack(discretisation.region_boxes(masks), 1)
    assert torch.equal(torch.stack(discretisation.region_boxes(masks), 1), expected)
    assert expected[-1].tolist() == [0, 19, 0, 23, 0, 0]
    full = torch.from_numpy(nih_regions.masks)
    with monkeypatch.context() as m:
        m.setattr(kernels, "ENABLED", False)
        expected = torch.stack(discretisation.region_boxes(full), 1)
    assert torch.equal(torch.stack(discretisation.region_boxes(full), 1), expected)


def test_packing_matches_numpy(pair):
    on, off = pair
    assert torch.equal(on.levels.long(), off.levels.long()) and on.n_levels == off.n_levels
    assert torch.equal(on.region.long(), off.region.long())
    inside = off.region > 0
    if on.values is None:  # the packing counted the histogram of the intensity offsets instead of writing them
        r, span = on.value_hist.shape
        key = off.region.long() * span + off.values.long()
        expected = torch.bincount(key[inside], minlength=(r + 1) * span).view(r + 1, span)[1:]
        assert torch.equal(on.value_hist, expected)
    else:
        assert on.value_hist is None
        assert torch.equal(on.values[inside].double(), off.values[inside].double())
    for name in ("max_level", "count", "min_value", "max_value"):
        assert torch.equal(getattr(on, name), getattr(off, name)), name
    assert torch.equal(on.level_hist, off.level_hist)


def test_texture_counts_match_numpy(pair):
    on, off = pair
    assert torch.equal(glcm.glcm_matrices(on), glcm.glcm_matrices(off))
    by_level, length_sq, entropy = glrlm.run_sums(on)
    by_level_off, length_sq_off, entropy_off = glrlm.run_sums(off)
    assert torch.equal(length_sq, length_sq_off)  # sums of squared run counts by length: integers
    assert torch.equal(by_level[:3], by_level_off[:3])  # sums of count * 1, j, j^2: integers
    torch.testing.assert_close(by_level[3], by_level_off[3], rtol=1e-14, atol=0)  # count / j^2
    torch.testing.assert_close(entropy, entropy_off, rtol=1e-13, atol=1e-15)
    for alpha in (0, 1.5):
        assert torch.equal(gldm.gldm_matrix(on, alpha), gldm.gldm_matrix(off, alpha))
    n_on, s_on = ngtdm.ngtdm_matrix(on)
    n_off, s_off = ngtdm.ngtdm_matrix(off)
    assert torch.equal(n_on, n_off)
    torch.testing.assert_close(s_on, s_off, rtol=1e-13, atol=0)


def test_zones_match_numpy(pair):
    on, off = pair

    def triples(z):
        return sorted(zip(*(t.tolist() for t in z)))

    zones = glszm.zones(on)
    assert triples(zones) == triples(glszm.zones(off)) == triples(glszm.zones(off, "label"))
    assert sum(zones[2].tolist()) == int(on.count.sum())  # every region pixel in exactly one zone
    sums, pg = glszm.zone_sums(on)
    sums_off, pg_off = glszm.zone_sums(off)
    assert torch.equal(pg, pg_off)
    exact = [glszm.ZONE_SUMS.index(k) for k in ("count", "g2", "s2", "g2s2", "size_counts2")]  # integers
    assert torch.equal(sums[:, exact], sums_off[:, exact])
    torch.testing.assert_close(sums, sums_off, rtol=1e-13, atol=1e-15)


def test_shape_matches_numpy(pair):
    on, off = pair
    torch.testing.assert_close(shape2d.compute(on), shape2d.compute(off), rtol=1e-12, atol=1e-12, equal_nan=True)


def test_first_order_histogram_matches_numpy(pair):
    on, off = pair
    if on.integer_valued:
        span = int((on.max_value - on.min_value).max()) + 1
        if on.values is None:
            hist = on.value_hist.numpy()
        else:
            hist = kernels.value_histogram(on.values.numpy(), on.boxes.numpy(), on.levels.numpy(), span)
        assert hist.shape[1] == span and hist.sum(1).tolist() == on.count.long().tolist()
    from vlp.radiomics.torch_backend import firstorder

    torch.testing.assert_close(firstorder.compute(on), firstorder.compute(off), rtol=1e-12, atol=1e-12,
                               equal_nan=True)


def test_packing_writes_the_values_when_their_histogram_would_be_large(nih_regions, monkeypatch):
    """Integer images whose regions * intensity range exceed VALUE_HIST_CELLS: the packing writes the values (and
    counts the levels) as without a lookup table; canvas and features as without the kernels."""
    monkeypatch.setattr(discretisation, "VALUE_HIST_CELLS", 0)
    on, off = _canvases(nih_regions.images, nih_regions.masks, monkeypatch)
    assert on.value_hist is None and on.values is not None
    inside = off.region > 0
    assert torch.equal(on.values[inside].long(), off.values[inside].long())
    assert torch.equal(on.levels.long(), off.levels.long()) and torch.equal(on.level_hist, off.level_hist)
    from vlp.radiomics.torch_backend import firstorder

    torch.testing.assert_close(firstorder.compute(on), firstorder.compute(off), rtol=1e-12, atol=1e-12)


def test_hand_counted_checkerboard():
    """A 3 x 4 checkerboard of levels 1 and 2 (level 1 where row + column is even), counted by hand: every
    horizontal and vertical run has length 1; each (1, 1) diagonal is one run, of lengths 2, 3, 1 (level 1) and 1,
    3, 2 (level 2); the zones are the two colours (diagonally connected); a pixel's dependence is its number of
    diagonal neighbours."""
    lv = np.zeros((5, 7), dtype=np.uint8)
    lv[1:4, 1:5] = 1 + np.indices((3, 4)).sum(0) % 2
    boxes = np.array([[1, 1, 3, 4]])
    runs = kernels.row_runs(lv, boxes)
    assert runs[0].tolist() == list(range(1, 5)) * 3 and runs[4].tolist() == [0, 12]  # 12 one-pixel row runs
    by_level, length_sq, entropy = kernels.glrlm_sums(lv, boxes, np.array([2]), 2, runs[0], runs[1], runs[2], runs[4])
    # vertical and horizontal: 12 one-pixel runs, 6 of each level; each diagonal: one run of each length 1, 2, 3
    # per level (lengths 2, 3, 1 of level 1 and 1, 3, 2 of level 2 along (1, 1); the same along (1, -1)), so runs
    # by length 2, 2, 2 on the diagonals and 12 on the others
    assert length_sq[0].tolist() == [2**2 * 3, 12**2, 2**2 * 3, 12**2]
    assert by_level[0, 0].tolist() == [[3, 3], [6, 6], [3, 3], [6, 6]]  # runs by angle and level
    assert by_level[1, 0, 0].tolist() == [6, 6]  # (1, 1): pixels by level, 1 + 2 + 3
    assert by_level[2, 0, 0].tolist() == [14, 14]  # sum of j^2: 1 + 4 + 9
    assert by_level[3, 0, 0].tolist() == [1 + 1 / 4 + 1 / 9] * 2
    p_diagonal, p_single = 1 / 6, 1 / 2  # each diagonal cell holds 1 of 6 runs; one-pixel runs: 6 of 12
    h_diagonal = -6 * p_diagonal * np.log2(p_diagonal + np.spacing(1))
    h_single = -2 * p_single * np.log2(p_single + np.spacing(1))
    np.testing.assert_allclose(entropy[0], [h_diagonal, h_single, h_diagonal, h_single], rtol=1e-15)

    zb, zg, zs = kernels.glszm_zones(*runs)
    assert sorted(zip(zg.tolist(), zs.tolist())) == [(1, 6), (2, 6)]
    dep, ngtdm_sums = kernels.neighbourhood_counts(lv, boxes, 2, 0)
    assert dep[0, 0].tolist() == [0, 2, 3, 0, 1, 0, 0, 0, 0]  # level 1: corners 1, edges 2, the centre pixel 4
    # NGTDM, level 1, sum of |1 * c - t| by neighbour count c: the two corners have c = 3 neighbours summing to t = 5
    # (2 each), the three edge pixels c = 5, t = 8 (3 each), the centre c = 8, t = 12 (4)
    assert ngtdm_sums[0, 1].tolist() == [0, 0, 0, 4, 0, 9, 0, 0, 4]
    counts = kernels.glcm_counts(lv, boxes, 2)
    assert counts[0, 3].tolist() == [[0, 9], [9, 0]]  # horizontal pairs (1, 2) 5 and (2, 1) 4: rows 1212, 2121, 1212


@pytest.mark.parametrize("setting", [{}, {"bin_count": 16}, {"gldm_alpha": 1, "bin_width": 10}])
def test_features_with_and_without_kernels(nih_regions, monkeypatch, setting):
    ext = RadiomicsExtractor("torch", dtype=torch.float64, **setting)
    edge_images, edge_masks = _edge_batch()
    for images, masks in ((nih_regions.images, nih_regions.masks), (edge_images, edge_masks)):
        on = ext(images, masks)
        with monkeypatch.context() as m:
            m.setattr(kernels, "ENABLED", False)
            off = ext(images, masks)
        torch.testing.assert_close(on, off, rtol=1e-10, atol=1e-12, equal_nan=True)
        assert on.shape[1] == len(ALL_FEATURE_CLASSES and ext.feature_names) == 102


@pytest.mark.parametrize("alpha", [0, 1])
def test_each_class_alone_matches_the_full_set(nih_regions, alpha):
    """Classes that share a compiled pass (GLDM and NGTDM the neighbourhood pass, GLCM and GLRLM the co-occurrence
    counts) give the same features alone as together, in either order of first use."""
    full_ext = RadiomicsExtractor("torch", dtype=torch.float64, gldm_alpha=alpha)
    full = full_ext(nih_regions.images, nih_regions.masks)
    for classes in [(c,) for c in ALL_FEATURE_CLASSES] + [("ngtdm", "gldm"), ("glrlm", "glcm")]:
        ext = RadiomicsExtractor("torch", dtype=torch.float64, gldm_alpha=alpha, feature_classes=classes)
        cols = [full_ext.feature_names.index(n) for n in ext.feature_names]
        torch.testing.assert_close(ext(nih_regions.images, nih_regions.masks), full[:, cols], rtol=0, atol=0,
                                   equal_nan=True)


def test_kernels_only_on_the_cpu_numpy_path(nih_regions, monkeypatch):
    img = torch.from_numpy(nih_regions.images[:3])
    msk = torch.from_numpy(nih_regions.masks[:3])
    boxes = RadiomicsExtractor("torch").check(img, msk)
    assert kernels.active() and discretisation.prepare_canvas(img, msk, boxes).kernels
    assert not discretisation.prepare_canvas(img, msk, boxes, vectorised=True).kernels
    assert not discretisation.prepare_canvas(img.to(torch.int8).to(torch.uint32), msk, boxes).kernels  # no kernel
    monkeypatch.setattr(kernels, "ENABLED", False)
    assert not kernels.active() and not discretisation.prepare_canvas(img, msk, boxes).kernels
    assert torch_backend.extract(img, msk, boxes, ("glcm",)).shape == (3, 24)


def test_warm_up_compiles_the_default_variant():
    assert kernels.warm_up() >= 0
