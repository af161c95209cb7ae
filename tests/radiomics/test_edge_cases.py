"""Edge cases, names, batching, devices and dtypes, and the PyRadiomics backend's cache.

Regions PyRadiomics refuses (empty mask, one pixel, a one-pixel-thick line) are refused by both backends with a
ValueError naming the batch index; regions it accepts (a constant region, a mask touching the image border or
covering the whole image, two isolated pixels) give PyRadiomics' values, NaN included.
"""
from __future__ import annotations

import logging
import pickle

import numpy as np
import pytest
import torch

from vlp.radiomics import ALL_FEATURE_CLASSES, RadiomicsExtractor, RadiomicsSettings, box_mask, region_problem
from vlp.radiomics import pyradiomics_backend, torch_backend
from vlp.radiomics.pyradiomics_backend import PyRadiomicsBackend, pyradiomics_params

RNG = np.random.default_rng(0)
IMAGE = RNG.integers(0, 256, (24, 28)).astype(np.uint8)


def _mask(*cells) -> np.ndarray:
    m = np.zeros(IMAGE.shape, dtype=bool)
    for rows, cols in cells:
        m[rows, cols] = True
    return m


def raw_pyradiomics(image: np.ndarray, mask: np.ndarray, classes=ALL_FEATURE_CLASSES) -> dict:
    """PyRadiomics called directly (no wrapper): the result dictionary without diagnostics."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    pyradiomics_backend.quiet_pyradiomics()
    ext = featureextractor.RadiomicsFeatureExtractor(force2D=True, force2Ddimension=0, additionalInfo=False)
    ext.disableAllFeatures()
    for c in classes:
        ext.enableFeatureClassByName(c)
    out = ext.execute(sitk.GetImageFromArray(image.astype(np.float64)[None]),
                      sitk.GetImageFromArray(mask.astype(np.uint8)[None]))
    return {k: float(v) for k, v in out.items() if not k.startswith("diagnostics_")}


REFUSED = {
    "empty": (_mask(), "empty", "No labels found"),
    "one pixel": (_mask((5, 5)), "single pixel", "1 segmented voxel"),
    "horizontal line": (_mask((5, slice(3, 9))), "one pixel thick", "too few dimensions"),
    "vertical line": (_mask((slice(3, 9), 5)), "one pixel thick", "too few dimensions"),
}


@pytest.mark.parametrize("case", list(REFUSED))
@pytest.mark.parametrize("backend", ["torch", "pyradiomics"])
def test_refused_regions_fail_clearly_like_pyradiomics(case, backend):
    mask, ours, theirs = REFUSED[case]
    with pytest.raises(ValueError, match=theirs):
        raw_pyradiomics(IMAGE, mask)
    good = _mask((slice(2, 6), slice(2, 6)))
    with pytest.raises(ValueError, match=rf"region 2 of the batch is invalid: .*{ours}"):
        RadiomicsExtractor(backend)(np.stack([IMAGE] * 3), np.stack([good, good, mask]))
    assert ours in region_problem(mask)


ACCEPTED = {
    "constant region": (np.full_like(IMAGE, 77), _mask((slice(4, 12), slice(3, 15)))),
    "touching the top-left corner": (IMAGE, _mask((slice(0, 7), slice(0, 9)))),
    "touching the bottom-right border": (IMAGE, _mask((slice(15, 24), slice(20, 28)))),
    "two diagonal pixels": (IMAGE, _mask((5, 5), (6, 6))),
    "two isolated pixels": (IMAGE, _mask((5, 5), (9, 12))),
    "ring with a hole": (IMAGE, _mask((slice(2, 20), slice(2, 20))) & ~_mask((slice(8, 12), slice(8, 12)))),
}


@pytest.mark.parametrize("case", list(ACCEPTED))
def test_accepted_edge_regions_match_raw_pyradiomics(compare_features, case):
    image, mask = ACCEPTED[case]
    ext = RadiomicsExtractor("torch", dtype=torch.float64)
    ours = ext(image[None], mask[None])
    ref = raw_pyradiomics(image, mask)
    assert sorted(ref) == sorted(ext.feature_names)
    failures = compare_features(ours, torch.tensor([[ref[n] for n in ext.feature_names]]), ext.feature_names, [case])
    assert not failures, "\n".join(failures)


def test_constant_region_values():
    """A flat region: one gray level, zero variance; PyRadiomics' conventions for the degenerate formulas."""
    image, mask = ACCEPTED["constant region"]
    ext = RadiomicsExtractor("torch", dtype=torch.float64)
    f = dict(zip(ext.feature_names, ext(image[None], mask[None])[0].tolist()))
    assert f["original_firstorder_Variance"] == 0 and f["original_firstorder_Skewness"] == 0
    assert f["original_firstorder_Kurtosis"] == 0 and f["original_firstorder_Entropy"] == pytest.approx(0, abs=1e-12)
    assert f["original_glcm_MCC"] == 1 and f["original_glcm_Correlation"] == 1
    assert f["original_ngtdm_Coarseness"] == 1e6 and f["original_ngtdm_Contrast"] == 0
    assert f["original_glszm_ZonePercentage"] == pytest.approx(1 / mask.sum())


def test_mask_covering_the_whole_image(compare_features):
    """PyRadiomics refuses a mask without background; both backends accept it (the reference pads the image)."""
    mask = np.ones_like(IMAGE, dtype=bool)
    with pytest.raises(ValueError, match="No labels found"):
        raw_pyradiomics(IMAGE, mask)
    padded = np.pad(IMAGE, 1)
    ref = raw_pyradiomics(padded, np.pad(mask, 1))
    ext = RadiomicsExtractor("torch", dtype=torch.float64)
    names = ext.feature_names
    for backend in ("torch", "pyradiomics"):
        feats = RadiomicsExtractor(backend, dtype=torch.float64)(IMAGE[None], mask[None])
        assert not compare_features(feats, torch.tensor([[ref[n] for n in names]]), names, [backend])


@pytest.mark.parametrize("classes", [ALL_FEATURE_CLASSES, ("glszm", "firstorder"), ("shape2D",)])
def test_feature_names_are_pyradiomics_names_in_class_order(classes):
    mask = _mask((slice(3, 15), slice(4, 20)))
    ref = raw_pyradiomics(IMAGE, mask, classes)
    names = RadiomicsExtractor("torch", feature_classes=classes).feature_names
    assert set(names) == set(ref)
    assert [n.split("_")[1] for n in names] == sorted([n.split("_")[1] for n in names], key=list(classes).index)
    assert RadiomicsExtractor("pyradiomics", feature_classes=classes).feature_names == names


def test_unknown_settings_fail_clearly():
    with pytest.raises(ValueError, match="unknown radiomics feature classes"):
        RadiomicsExtractor("torch", feature_classes=("glcm", "shape"))
    with pytest.raises(TypeError, match="unknown settings"):
        RadiomicsExtractor("torch", binWidth=10)
    with pytest.raises(ValueError, match="bin_width must be positive"):
        RadiomicsSettings(bin_width=0)
    with pytest.raises(ValueError):
        RadiomicsExtractor("cuda")


def test_input_shapes_and_values_fail_clearly():
    ext = RadiomicsExtractor("torch")
    mask = _mask((slice(3, 9), slice(3, 9)))
    with pytest.raises(ValueError, match="add a batch axis"):
        ext(IMAGE, mask)
    with pytest.raises(ValueError, match="differ in shape"):
        ext(IMAGE[None], mask[None, :, :-1])
    bad = IMAGE.astype(np.float32)
    bad[5, 5] = np.nan
    with pytest.raises(ValueError, match="region 0 .* NaN"):
        ext(bad[None], mask[None])
    bad[5, 5] = 1.0
    bad[0, 0] = np.nan  # outside the mask: ignored
    ext(bad[None], mask[None])


def test_batch_equals_one_by_one(nih_regions):
    """Packing many regions onto one canvas (and chunking it) gives each region's own features."""
    images, masks = nih_regions.images[:10], nih_regions.masks[:10]
    ext = RadiomicsExtractor("torch", dtype=torch.float64)
    batch = ext(images, masks)
    single = torch.cat([ext(images[k : k + 1], masks[k : k + 1]) for k in range(len(images))])
    torch.testing.assert_close(batch, single, rtol=1e-10, atol=1e-12, equal_nan=True)
    chunked = RadiomicsExtractor("torch", dtype=torch.float64, max_pixels=5000)(images, masks)
    torch.testing.assert_close(chunked, single, rtol=1e-10, atol=1e-12, equal_nan=True)
    reordered = ext(images[::-1].copy(), masks[::-1].copy())
    torch.testing.assert_close(reordered, single.flip(0), rtol=1e-10, atol=1e-12, equal_nan=True)


def test_many_gray_levels_are_split_into_bounded_chunks(nih_regions, monkeypatch):
    """With many gray levels the regions are re-packed in runs whose texture matrices stay bounded; the features
    are the same as in one canvas."""
    from vlp.radiomics import torch_backend

    images, masks = nih_regions.images[:9].astype(np.uint16) * 16, nih_regions.masks[:9]
    ext = RadiomicsExtractor("torch", dtype=torch.float64, bin_width=40)
    whole = ext(images, masks)
    calls = []
    real = torch_backend.compute_canvas

    def counted(canvas, *args):
        calls.append(canvas.n_regions)
        return real(canvas, *args)

    monkeypatch.setattr(torch_backend, "compute_canvas", counted)
    img, msk = torch.from_numpy(images), torch.from_numpy(masks)
    n_bins = torch_backend.prepare_canvas(img, msk, ext.check(img, msk), bin_width=40).n_bins
    monkeypatch.setattr(torch_backend, "MAX_MATRIX_CELLS", 3 * 4 * n_bins**2)  # at most 3 regions per canvas
    split = ext(images, masks)
    assert len(calls) >= 3 and sum(calls) == 9 and all(1 <= n <= 3 for n in calls)
    torch.testing.assert_close(split, whole, rtol=1e-10, atol=1e-12, equal_nan=True)


def test_dtypes_and_devices(nih_regions):
    images, masks = nih_regions.images[:4], nih_regions.masks[:4]
    ref = RadiomicsExtractor("torch", dtype=torch.float64)(images, masks)
    # output dtype and device follow the settings and the input
    out = RadiomicsExtractor("torch")(torch.from_numpy(images), torch.from_numpy(masks))
    assert out.dtype == torch.float32 and out.device.type == "cpu" and out.shape == (4, 102)
    torch.testing.assert_close(out, ref.float(), equal_nan=True)
    # integer widths, integer-valued floats (the float binning path) and 0/1 or 0/255 masks agree
    ext = RadiomicsExtractor("torch", dtype=torch.float64)
    for img in (images.astype(np.int16), images.astype(np.uint16), images.astype(np.int64), images.astype(np.float32),
                torch.from_numpy(images).double()):
        torch.testing.assert_close(ext(img, masks.astype(np.uint8) * 255), ref, rtol=1e-9, atol=1e-9, equal_nan=True)
    # explicit device
    torch.testing.assert_close(RadiomicsExtractor("torch", dtype=torch.float64, device="cpu")(images, masks), ref)
    if torch.cuda.is_available():
        gpu = RadiomicsExtractor("torch", dtype=torch.float64)(torch.from_numpy(images).cuda(),
                                                               torch.from_numpy(masks).cuda())
        assert gpu.device.type == "cuda"
        torch.testing.assert_close(gpu.cpu(), ref, rtol=1e-9, atol=1e-9, equal_nan=True)
    # CPU threads: set for the extraction only, then restored; the same features with torch's own setting
    before = torch.get_num_threads()
    seen = []
    real_extract = torch_backend.extract

    def spy(*args, **kwargs):
        seen.append(torch.get_num_threads())
        return real_extract(*args, **kwargs)

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(torch_backend, "extract", spy)
        torch.testing.assert_close(RadiomicsExtractor("torch", dtype=torch.float64, num_threads=1)(images, masks), ref)
        RadiomicsExtractor("torch", num_threads=None)(images, masks)
    assert seen == [1, before] and torch.get_num_threads() == before
    with pytest.raises(ValueError, match="num_threads"):
        RadiomicsSettings(num_threads=0)
    # features carry no gradient
    x = torch.from_numpy(images).double().requires_grad_()
    assert not RadiomicsExtractor("torch")(x, torch.from_numpy(masks)).requires_grad


class _Counter:
    def __init__(self, monkeypatch):
        self.calls = 0
        real = pyradiomics_backend.extract_one

        def counted(*args):
            self.calls += 1
            return real(*args)

        monkeypatch.setattr(pyradiomics_backend, "extract_one", counted)


def test_pyradiomics_cache_is_keyed_on_content(monkeypatch):
    counter = _Counter(monkeypatch)
    ext = RadiomicsExtractor("pyradiomics", feature_classes=("firstorder", "glcm"), cache_size=3)
    backend = ext._pyradiomics
    m1, m2 = _mask((slice(2, 8), slice(2, 9))), _mask((slice(10, 20), slice(5, 15)))
    first = ext(np.stack([IMAGE, IMAGE, IMAGE]), np.stack([m1, m2, m1]))
    assert counter.calls == 2 and backend.cache_len == 2  # the duplicate region is computed once
    torch.testing.assert_close(first[0], first[2])
    again = ext(np.stack([IMAGE.copy(), IMAGE]), np.stack([m2.copy(), m1]))  # new arrays, same content: hits
    assert counter.calls == 2
    torch.testing.assert_close(again, first[[1, 0]])
    changed = IMAGE.copy()
    changed[3, 3] ^= 0xFF  # inside m1: a different region
    ext(changed[None], m1[None])
    assert counter.calls == 3
    outside = IMAGE.copy()
    outside[23, 27] ^= 0xFF  # outside both masks: still a different key (the key hashes the whole image)
    ext(outside[None], m1[None])
    assert counter.calls == 4 and backend.cache_len == 3  # LRU: at most cache_size entries
    ext(IMAGE[None], m2[None])  # m2 was least recently used and evicted
    assert counter.calls == 5


def test_pyradiomics_cache_disabled(monkeypatch):
    counter = _Counter(monkeypatch)
    ext = RadiomicsExtractor("pyradiomics", feature_classes=("firstorder",), cache_size=0)
    m = _mask((slice(2, 8), slice(2, 9)))
    ext(np.stack([IMAGE, IMAGE]), np.stack([m, m]))
    ext(IMAGE[None], m[None])
    assert counter.calls == 3 and ext._pyradiomics.cache_len == 0


def test_pyradiomics_backend_is_quiet_and_pool_matches_serial(caplog, nih_regions):
    images, masks = nih_regions.images[:4], nih_regions.masks[:4]
    with caplog.at_level(logging.WARNING):
        serial = RadiomicsExtractor("pyradiomics", feature_classes=("glcm",))(images, masks)
    assert not [r for r in caplog.records if r.name.startswith("radiomics")]  # no "GLCM is symmetrical"
    with RadiomicsExtractor("pyradiomics", feature_classes=("glcm",), num_workers=2, cache_size=0) as pooled:
        torch.testing.assert_close(pooled(images, masks), serial)
        backend = pooled._pyradiomics
        assert backend._pool is not None
        clone = pickle.loads(pickle.dumps(backend))  # into a DataLoader worker: no pool, empty cache
        assert clone._pool is None and clone.cache_len == 0
    assert backend._pool is None


def test_box_mask_covers_overlapped_pixels():
    m = box_mask(1.5, 2.0, 3.0, 2.2, height=8, width=6)
    rows, cols = np.nonzero(m)
    assert (rows.min(), rows.max(), cols.min(), cols.max()) == (2, 4, 1, 4)
    assert box_mask(4.0, 4.0, 10.0, 10.0, 6, 6).sum() == 4  # clipped at the border
    assert box_mask(2.0, 2.0, 0.0, 3.0, 6, 6).sum() == 0  # zero width: empty
    assert pyradiomics_params(("glcm",), bin_count=8)["setting"]["binCount"] == 8
    assert isinstance(PyRadiomicsBackend, type)
