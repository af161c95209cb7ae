"""VLPProcessor: bit depths, range warnings, geometry of resize and pad, sentence ids."""
from __future__ import annotations

import re
import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from vlp.processing import PixelRangeWarning, VLPImageProcessor, to_unit_float


def test_8_bit_and_12_bit_in_16_bit_images_map_to_unit_range():
    assert to_unit_float(np.array([[0, 255]], dtype=np.uint8)).tolist() == [[0.0, 1.0]]
    twelve_bit = np.array([[0, 2048, 4095]], dtype=np.uint16)
    np.testing.assert_allclose(to_unit_float(twelve_bit), [[0.0, 2048 / 4095, 1.0]], rtol=1e-6)
    pil16 = Image.fromarray(np.array([[0, 65535], [1000, 30000]], dtype=np.uint16))
    assert to_unit_float(pil16).max() == pytest.approx(1.0)


def test_rgba_is_converted_to_grayscale():
    rgba = np.zeros((4, 4, 4), dtype=np.uint8)
    rgba[..., :3] = 200
    rgba[..., 3] = 255
    rgba[0, 0, :3] = 0
    out = to_unit_float(Image.fromarray(rgba, mode="RGBA"))
    assert out.shape == (4, 4) and out[1, 1] == pytest.approx(200 / 255, abs=1 / 255) and out[0, 0] == 0.0


def test_out_of_range_floats_and_constant_images_warn():
    with pytest.warns(PixelRangeWarning, match="expected \\[0, 1\\]"):
        out = to_unit_float(np.array([[0.0, 255.0], [10.0, 20.0]], dtype=np.float32))
    assert out.max() == pytest.approx(1.0)
    with pytest.warns(PixelRangeWarning, match="nearly constant"):
        to_unit_float(np.full((8, 8), 0.5, dtype=np.float32))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        to_unit_float(np.linspace(0, 1, 64, dtype=np.float32).reshape(8, 8))


@pytest.mark.parametrize("mode", ["pad", "crop"])
def test_a_bright_spot_lands_where_geometry_says(mode):
    proc = VLPImageProcessor(image_size=64, resize_mode=mode, image_mean=0.0, image_std=1.0)
    image = np.zeros((100, 200), dtype=np.float32)
    image[40:60, 90:110] = 1.0  # centre (50, 100)
    out = proc(image)["pixel_values"][0, 0]
    g = proc.geometry(100, 200)
    y = 50 * g.scale - g.crop_top + g.pad_top
    x = 100 * g.scale - g.crop_left + g.pad_left
    ys, xs = torch.nonzero(out > 0.5, as_tuple=True)
    assert ys.float().mean().item() == pytest.approx(y - 0.5, abs=1.0)
    assert xs.float().mean().item() == pytest.approx(x - 0.5, abs=1.0)
    if mode == "pad":  # 100x200 -> 32x64, padded by 16 rows above and below
        assert (g.pad_top, g.resized) == (16, (32, 64))
        assert out[:16].abs().max() == 0 and out[48:].abs().max() == 0


def test_processor_returns_sizes_channels_and_normalisation():
    proc = VLPImageProcessor(image_size=32, num_channels=3, image_mean=0.5, image_std=0.25)
    batch = proc([np.ones((40, 30), dtype=np.uint8) * 255, np.zeros((10, 10), dtype=np.uint8)])
    assert batch["pixel_values"].shape == (2, 3, 32, 32)
    assert batch["image_sizes"].tolist() == [[40, 30], [10, 10]]
    assert batch["pixel_values"][1].min().item() == pytest.approx(-2.0)  # (0 - 0.5) / 0.25


def test_sentence_ids_follow_the_sentences():
    from vlp import create_processor, VLPConfig
    from vlp.factory import load_preset
    processor = create_processor(VLPConfig(**load_preset("tiny")))
    batch = processor(text=["Heart is enlarged. No effusion.", "Clear lungs."], return_tensors="pt",
                      padding=True, return_sentence_ids=True)
    ids, tokens = batch["sentence_ids"], batch["input_ids"]
    words = processor.tokenizer.convert_ids_to_tokens(tokens[0])
    assert ids[0, 0] == -1  # [CLS]
    assert ids[0, words.index("heart")] == 0 and ids[0, words.index("effusion")] == 1
    assert ids[1][batch["attention_mask"][1] == 0].eq(-1).all()
    assert set(ids[1].tolist()) == {-1, 0}


def test_a_missing_weights_package_names_the_command_that_installs_it():
    import sys

    from vlp.paths import resolve_location

    with pytest.raises(FileNotFoundError, match=rf"`{re.escape(sys.executable)} -m pip install no-such-weights`"):
        resolve_location("package:no_such_weights/model")
