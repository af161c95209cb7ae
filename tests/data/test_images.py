"""load_image and load_raw_image on small real files of each kind written in tmp_path, checked against Pillow and
pydicom references and hand-computed values."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image, PngImagePlugin

from vlp.data.images import BadImageError, SkipReason, image_size, load_image, load_raw_image, window_linear

RNG = np.random.default_rng(0)


def _check(x: np.ndarray, shape):
    assert x.dtype == np.float32 and x.shape == shape
    assert 0.0 <= x.min() and x.max() <= 1.0


def test_png_8bit(tmp_path):
    a = RNG.integers(0, 256, (20, 30), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    _check(x, (20, 30))
    np.testing.assert_allclose(x, a / 255.0, atol=1e-7)


def test_png_16bit_uses_real_bit_depth(tmp_path):
    # 12-bit data (max 4095) in a 16-bit PNG: divided by 4095, not 65535
    a = RNG.integers(0, 4096, (16, 16), dtype=np.uint16)
    a[0, 0] = 4095
    Image.fromarray(a).save(tmp_path / "a12.png")
    assert Image.open(tmp_path / "a12.png").mode.startswith("I")
    x = load_image(tmp_path / "a12.png")
    _check(x, (16, 16))
    np.testing.assert_allclose(x, a / 4095.0, atol=1e-6)
    # full 16-bit data
    b = a.astype(np.uint32) * 16
    b[0, 0] = 65535
    Image.fromarray(b.astype(np.uint16)).save(tmp_path / "a16.png")
    np.testing.assert_allclose(load_image(tmp_path / "a16.png"), b / 65535.0, atol=1e-6)


def test_png_16bit_sbit_chunk_sets_the_depth(tmp_path):
    # a dark 14-bit image whose maximum fits in 12 bits: the sBIT chunk says 14, so it stays dark
    a = RNG.integers(0, 4096, (8, 8), dtype=np.uint16)
    info = PngImagePlugin.PngInfo()
    info.add(b"sBIT", bytes([14]))
    Image.fromarray(a).save(tmp_path / "s.png", pnginfo=info)
    np.testing.assert_allclose(load_image(tmp_path / "s.png"), a / 16383.0, atol=1e-6)


def test_jpeg_grayscale_and_rgb(tmp_path):
    a = RNG.integers(0, 256, (24, 32), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "g.jpg", quality=95)
    ref = np.asarray(Image.open(tmp_path / "g.jpg"), dtype=np.float64) / 255.0  # Pillow's decode
    np.testing.assert_allclose(load_image(tmp_path / "g.jpg"), ref, atol=1e-7)
    rgb = RNG.integers(0, 256, (24, 32, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.jpeg", quality=95)
    decoded = np.asarray(Image.open(tmp_path / "c.jpeg"), dtype=np.float64)
    luma = (0.299 * decoded[..., 0] + 0.587 * decoded[..., 1] + 0.114 * decoded[..., 2]) / 255.0
    x = load_image(tmp_path / "c.jpeg")
    _check(x, (24, 32))
    np.testing.assert_allclose(x, luma, atol=1e-6)


def test_rgba_palette_and_la(tmp_path):
    rgba = RNG.integers(0, 256, (10, 12, 4), dtype=np.uint8)
    rgba[..., 3] = 255
    rgba[0, 0] = [200, 100, 50, 0]  # transparent pixel: composited over black
    rgba[0, 1] = [200, 100, 50, 128]
    Image.fromarray(rgba, "RGBA").save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png")
    luma = (rgba[..., :3].astype(np.float64) @ [0.299, 0.587, 0.114]) / 255.0
    expected = luma * rgba[..., 3] / 255.0
    np.testing.assert_allclose(x, expected, atol=1e-6)
    assert x[0, 0] == 0.0
    # opaque RGBA equals Pillow's own grayscale conversion (up to its integer rounding)
    opaque = rgba.copy()
    opaque[..., 3] = 255
    Image.fromarray(opaque, "RGBA").save(tmp_path / "o.png")
    pil_gray = np.asarray(Image.open(tmp_path / "o.png").convert("L"), dtype=np.float64) / 255.0
    assert np.abs(load_image(tmp_path / "o.png") - pil_gray).max() <= 1 / 255 + 1e-6
    gray = Image.fromarray(RNG.integers(0, 256, (6, 7), dtype=np.uint8))
    gray.convert("P").save(tmp_path / "p.png")
    np.testing.assert_allclose(load_image(tmp_path / "p.png"), np.asarray(gray) / 255.0, atol=1e-6)
    la = np.stack([np.full((4, 4), 100, np.uint8), np.full((4, 4), 255, np.uint8)], -1)
    Image.fromarray(la, "LA").save(tmp_path / "la.png")
    np.testing.assert_allclose(load_image(tmp_path / "la.png"), 100 / 255.0, atol=1e-7)


def test_bad_files(tmp_path):
    a = RNG.integers(0, 256, (64, 64), dtype=np.uint8)
    Image.fromarray(a).save(tmp_path / "ok.png")
    data = (tmp_path / "ok.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "text.png").write_bytes(b"not an image at all" * 10)
    Image.fromarray(a).save(tmp_path / "ok.jpg")
    jpg = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "trunc.jpg").write_bytes(jpg[: len(jpg) - 300])
    cases = {"missing.png": SkipReason.MISSING_FILE, "empty.png": SkipReason.EMPTY_FILE,
             "trunc.png": SkipReason.TRUNCATED_IMAGE, "trunc.jpg": SkipReason.TRUNCATED_IMAGE,
             "text.png": SkipReason.UNREADABLE_IMAGE}
    for name, reason in cases.items():
        with pytest.raises(BadImageError) as info:
            load_image(tmp_path / name)
        assert info.value.reason is reason, name
        assert info.value.path == str(tmp_path / name)
        assert name in str(info.value) and reason.value in str(info.value)
    with pytest.raises(BadImageError):
        load_image(tmp_path)  # a folder


def test_load_raw_image_keeps_stored_values(tmp_path):
    values = np.arange(0, 60000, 1000, dtype=np.uint16).reshape(6, 10)
    Image.fromarray(values).save(tmp_path / "sixteen.png")
    np.testing.assert_array_equal(load_raw_image(tmp_path / "sixteen.png"), values)
    rgb = np.zeros((4, 5, 3), np.uint8)
    rgb[..., 1] = 200
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(load_raw_image(tmp_path / "rgb.png"), np.full((4, 5), round(0.587 * 200)))
    gray = RNG.integers(0, 256, (7, 3), dtype=np.uint8)
    Image.fromarray(gray).save(tmp_path / "gray.png")
    raw = load_raw_image(tmp_path / "gray.png")
    np.testing.assert_array_equal(raw, gray)
    np.testing.assert_allclose(load_image(tmp_path / "gray.png"), raw / 255.0, atol=1e-7)  # same pixels, rescaled
    (tmp_path / "empty.png").write_bytes(b"")
    data = (tmp_path / "sixteen.png").read_bytes()
    (tmp_path / "trunc.png").write_bytes(data[: len(data) // 2])
    for name, reason in (("empty.png", SkipReason.EMPTY_FILE), ("trunc.png", SkipReason.TRUNCATED_IMAGE)):
        with pytest.raises(BadImageError, match=name) as info:
            load_raw_image(tmp_path / name)
        assert info.value.reason is reason


# --- DICOM ---------------------------------------------------------------------------------------------------

pydicom = pytest.importorskip("pydicom")


def _write_dicom(path, pixels: np.ndarray, bits: int = 12, photometric: str = "MONOCHROME2", signed: bool = False,
                 **tags):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.Modality = "CR"
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = pixels.astype(np.int16 if signed else np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)


def test_dicom_window_matches_pydicom_voi_lut(tmp_path):
    from pydicom.pixels import apply_voi_lut

    pixels = RNG.integers(0, 4096, (32, 40)).astype(np.uint16)
    _write_dicom(tmp_path / "w.dcm", pixels, WindowCenter=1500, WindowWidth=1000)
    x = load_image(tmp_path / "w.dcm")
    _check(x, (32, 40))
    ds = pydicom.dcmread(tmp_path / "w.dcm")
    reference = apply_voi_lut(ds.pixel_array, ds) / 4095.0  # pydicom scales to the stored range
    np.testing.assert_allclose(x, reference, atol=1e-5)
    assert (x == 0).any() and (x == 1).any()


def test_dicom_window_functions_hand_computed():
    x = np.array([0.0, 999.5, 1000.0, 1500.0, 2000.0, 3000.0])
    # LINEAR, c=1500, w=1001: 0 below c-0.5-(w-1)/2 = 999.5, 1 above 1999.5
    np.testing.assert_allclose(window_linear(x, 1500, 1001), [0, 0, 0.5 / 1000, 500.5 / 1000, 1, 1])
    np.testing.assert_allclose(window_linear(x, 1500, 1000, "LINEAR_EXACT"), [0, 0, 0, 0.5, 1, 1])
    np.testing.assert_allclose(window_linear(np.array([1500.0]), 1500, 1000, "SIGMOID"), [0.5])


def test_dicom_rescale_slope_intercept_then_window(tmp_path):
    pixels = np.array([[0, 500, 1000, 1500], [2000, 2500, 3000, 4095]], dtype=np.uint16)
    # modality values = 2 * p - 1000; window centre 1000, width 2001 -> [0, 2000] maps to [0, 1]
    _write_dicom(tmp_path / "r.dcm", pixels, RescaleSlope=2, RescaleIntercept=-1000, WindowCenter=1000,
                 WindowWidth=2001)
    modality = 2.0 * pixels - 1000
    expected = np.clip((modality - 999.5) / 2000 + 0.5, 0, 1)
    np.testing.assert_allclose(load_image(tmp_path / "r.dcm"), expected, atol=1e-6)


def test_dicom_without_window_uses_stored_bit_range_and_monochrome1(tmp_path):
    pixels = np.array([[0, 1024], [2048, 4095]], dtype=np.uint16)
    _write_dicom(tmp_path / "m2.dcm", pixels)
    np.testing.assert_allclose(load_image(tmp_path / "m2.dcm"), pixels / 4095.0, atol=1e-6)
    _write_dicom(tmp_path / "m1.dcm", pixels, photometric="MONOCHROME1")
    np.testing.assert_allclose(load_image(tmp_path / "m1.dcm"), 1 - pixels / 4095.0, atol=1e-6)
    # MONOCHROME1 with a window: windowed first, then inverted
    _write_dicom(tmp_path / "m1w.dcm", pixels, photometric="MONOCHROME1", WindowCenter=2048, WindowWidth=4096)
    expected = 1 - np.clip((pixels - 2047.5) / 4095 + 0.5, 0, 1)
    np.testing.assert_allclose(load_image(tmp_path / "m1w.dcm"), expected, atol=1e-6)
    # signed 12-bit data: range [-2048, 2047]
    signed = np.array([[-2048, 0], [1000, 2047]], dtype=np.int16)
    _write_dicom(tmp_path / "s.dcm", signed, signed=True)
    np.testing.assert_allclose(load_image(tmp_path / "s.dcm"), (signed + 2048) / 4095.0, atol=1e-6)


def test_load_raw_image_dicom_applies_only_the_modality_lut(tmp_path):
    pixels = np.array([[0, 500, 1000], [2000, 3000, 4095]], dtype=np.uint16)
    _write_dicom(tmp_path / "r.dcm", pixels, photometric="MONOCHROME1", RescaleSlope=2, RescaleIntercept=-1000,
                 WindowCenter=1000, WindowWidth=200)
    np.testing.assert_allclose(load_raw_image(tmp_path / "r.dcm"), 2.0 * pixels - 1000)  # no window, no inversion


def test_dicom_found_by_magic_without_suffix_and_size(tmp_path):
    pixels = RNG.integers(0, 4096, (6, 9)).astype(np.uint16)
    _write_dicom(tmp_path / "image_without_suffix", pixels)
    np.testing.assert_allclose(load_image(tmp_path / "image_without_suffix"), pixels / 4095.0, atol=1e-6)
    assert image_size(tmp_path / "image_without_suffix") == (6, 9)


def test_bad_dicom_files(tmp_path):
    pixels = RNG.integers(0, 4096, (32, 32)).astype(np.uint16)
    _write_dicom(tmp_path / "ok.dcm", pixels)
    data = (tmp_path / "ok.dcm").read_bytes()
    (tmp_path / "trunc.dcm").write_bytes(data[:-600])
    (tmp_path / "junk.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(BadImageError) as info:
        load_image(tmp_path / "trunc.dcm")
    assert info.value.reason is SkipReason.TRUNCATED_IMAGE
    with pytest.raises(BadImageError) as info:
        load_image(tmp_path / "junk.dcm")
    assert info.value.reason is SkipReason.UNREADABLE_DICOM


def test_missing_pydicom_gives_a_clear_error(tmp_path, monkeypatch):
    import builtins

    _write_dicom(tmp_path / "a.dcm", np.zeros((4, 4), np.uint16))
    real_import = builtins.__import__

    def no_pydicom(name, *args, **kwargs):
        if name == "pydicom" or name.startswith("pydicom."):
            raise ImportError("no pydicom here")
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_pydicom)
    with pytest.raises(ImportError, match="pip install"):
        load_image(tmp_path / "a.dcm")


def test_bad_image_error_pickles():
    import pickle

    e = BadImageError("/x/y.png", SkipReason.TRUNCATED_IMAGE, "cut")
    again = pickle.loads(pickle.dumps(e))
    assert (again.path, again.reason, again.detail, str(again)) == (e.path, e.reason, e.detail, str(e))
