"""Phrase grounding: maps land on the original image's pixels whatever the processor's resize, pad or crop."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from vlp import create_model_and_processor
from vlp.cli import main as cli_main
from vlp import VLPConfig
from vlp.factory import create_processor, load_preset
from vlp.grounding import grid_to_image, similarity_map

GRID = 8


def _tiny_processor():
    return create_processor(VLPConfig(**load_preset("tiny")))


def _image_with_square(height, width, top, left, side):
    image = np.zeros((height, width), dtype=np.float32)
    image[top:top + side, left:left + side] = 1.0
    return image


def _grid_from_processed(processor, image) -> torch.Tensor:
    """What the model sees, averaged over its 8x8 regions: the square's mass as a region map."""
    pixels = processor(images=[image], return_tensors="pt")["pixel_values"][0, 0]
    pixels = pixels - pixels.min()
    return F.adaptive_avg_pool2d(pixels[None, None], GRID)[0, 0]


@pytest.mark.parametrize("mode", ["pad", "crop"])
@pytest.mark.parametrize("shape,square", [((200, 320), (110, 150, 40)),   # wide
                                          ((330, 210), (60, 90, 50)),     # tall
                                          ((256, 256), (30, 180, 48))])   # square
def test_a_region_map_comes_back_over_the_same_pixels(mode, shape, square):
    """Forward through the processor, pool to the region grid, map back: the peak sits on the square."""
    processor = _tiny_processor()
    processor.image_processor.resize_mode = mode
    top, left, side = square
    image = _image_with_square(*shape, top, left, side)
    geometry = processor.image_processor.geometry(*shape)
    heat = grid_to_image(_grid_from_processed(processor, image), geometry)
    assert heat.shape == shape
    y, x = np.unravel_index(np.argmax(heat), heat.shape)
    cell = geometry.size / GRID / geometry.scale  # one region in original pixels
    assert top - cell / 2 <= y <= top + side + cell / 2 and left - cell / 2 <= x <= left + side + cell / 2
    inside = heat[top:top + side, left:left + side].mean()
    far = np.ones(shape, bool)
    near = (slice(max(0, int(top - 2 * cell)), int(top + side + 2 * cell)),
            slice(max(0, int(left - 2 * cell)), int(left + side + 2 * cell)))
    far[near] = False
    assert inside > heat[far].max()


def test_crop_mode_gives_the_cut_away_sides_the_minimum():
    processor = _tiny_processor()
    processor.image_processor.resize_mode = "crop"
    geometry = processor.image_processor.geometry(100, 300)  # wide: the centre crop drops the left and right
    grid = torch.arange(GRID * GRID, dtype=torch.float32).view(GRID, GRID) + 1
    heat = grid_to_image(grid, geometry)
    kept = 100  # the centre square of a 100 x 300 image
    margin = (300 - kept) // 2
    assert np.all(heat[:, :margin - 2] == grid.min().item())
    assert np.all(heat[:, margin + kept + 2:] == grid.min().item())
    assert heat[:, margin + 2:margin + kept - 2].min() >= grid.min().item()
    assert heat[:, margin + 2:margin + kept - 2].max() > grid.min().item() + 10


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model_and_processor("tiny")


@pytest.mark.parametrize("heads", [[], ["lovt"]])
def test_similarity_map_has_the_image_shape(heads):
    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny", heads=heads, lovt={"proj_dim": 32, "proj_hidden_dim": 64})
    image = (np.random.default_rng(0).random((150, 230)) * 65535).astype(np.uint16)
    heat = similarity_map(model, processor, image, "Small right pleural effusion. No pneumothorax.")
    assert heat.shape == (150, 230) and np.isfinite(heat).all()
    assert -1.0 <= heat.min() < heat.max() <= 1.0  # cosine similarities, not constant


def test_vlp_ground_writes_an_overlay_png(tiny, tmp_path):
    model, processor = tiny
    model.save_pretrained(tmp_path / "model")
    processor.save_pretrained(tmp_path / "model")
    image = (np.random.default_rng(1).random((120, 180)) * 255).astype(np.uint8)
    Image.fromarray(image).save(tmp_path / "cxr.png")
    out = tmp_path / "overlay.png"
    assert cli_main(["ground", "--model", str(tmp_path / "model"), "--image", str(tmp_path / "cxr.png"),
                     "--text", "Cardiomegaly.", "--out", str(out)]) == 0
    written = Image.open(out)
    assert written.size[0] > 100 and written.size[1] > 60
    assert np.asarray(written.convert("RGB")).std() > 0
