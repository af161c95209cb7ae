"""Warps against torchvision's own functions, and boxes, masks and heatmaps that stay on what they mark."""
from __future__ import annotations

import pytest
import torch
import torchvision.transforms.functional as TF
from torchvision.transforms import InterpolationMode

from vlp.augmentation.geometry import affine_matrix, crop_matrix, hflip_matrix, warp, warp_boxes


def _image(h=40, w=60, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(1, h, w, generator=g) * 0.2
    image[0, 8:18, 12:30] = 1.0
    return image


@pytest.mark.parametrize("angle, translate, scale", [(15.0, (3.0, -2.0), 1.0), (-10.0, (0.0, 0.0), 1.05),
                                                     (7.5, (-4.0, 5.0), 0.95)])
def test_affine_warp_equals_torchvision(angle, translate, scale):
    image = _image()
    ours = warp(image, affine_matrix(angle, translate, scale, 60, 40), (40, 60))
    theirs = TF.affine(image, angle=angle, translate=list(translate), scale=scale, shear=[0.0],
                       interpolation=InterpolationMode.BILINEAR)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-4)


def test_crop_warp_equals_torchvision_resized_crop_inside_the_crop():
    """torchvision resizes the cut-out block (its edge pixels repeated); the warp samples the image itself, so the
    two agree wherever the sample does not reach past the block's border."""
    image = _image()
    ours = warp(image, crop_matrix(7, 4, 30, 20, 60, 40), (40, 60))
    theirs = TF.resized_crop(image, top=4, left=7, height=20, width=30, size=[40, 60],
                             interpolation=InterpolationMode.BILINEAR, antialias=False)
    torch.testing.assert_close(ours[:, 2:-2, 2:-2], theirs[:, 2:-2, 2:-2], rtol=0, atol=1e-5)
    torch.testing.assert_close(warp(image, hflip_matrix(60), (40, 60)), image.flip(-1), rtol=0, atol=1e-5)


@pytest.mark.parametrize("matrix", [
    crop_matrix(10, 5, 36, 24, 60, 40),
    affine_matrix(18.0, (4.0, -3.0), 1.05, 60, 40),
    crop_matrix(5, 2, 50, 33, 60, 40) @ affine_matrix(-12.0, (2.0, 1.0), 0.97, 60, 40) @ hflip_matrix(60),
])
def test_a_box_drawn_into_the_image_ends_up_under_the_moved_box(matrix):
    image = torch.zeros(1, 40, 60)
    box = torch.tensor([[12.0, 8.0, 18.0, 10.0]])  # x, y, w, h: columns 12..29, rows 8..17
    image[0, 8:18, 12:30] = 1.0
    moved = warp(image, matrix, (40, 60))[0]
    (x, y, w, h), = warp_boxes(box, matrix, (40, 60)).tolist()
    bright = (moved > 0.5).nonzero().double() + 0.5  # (row, column) pixel centres
    assert len(bright) > 50
    # the moved box is the bounding box of the moved rectangle's pixels, to within the interpolation's pixel
    rows, cols = bright[:, 0], bright[:, 1]
    for edge, expected in ((x, cols.min()), (x + w, cols.max()), (y, rows.min()), (y + h, rows.max())):
        assert abs(edge - expected) <= 1.5, (edge, expected)


def test_masks_and_heatmaps_move_with_the_image():
    image = _image()
    heatmap = image.clone()
    mask = image > 0.5
    matrix = affine_matrix(11.0, (3.0, 2.0), 1.02, 60, 40) @ crop_matrix(6, 3, 48, 32, 60, 40)
    moved_image = warp(image, matrix, (40, 60))
    torch.testing.assert_close(warp(heatmap, matrix, (40, 60)), moved_image)  # the same samples
    moved_mask = warp(mask.float(), matrix, (40, 60), mode="nearest") > 0.5
    # the nearest-neighbour mask marks the bright part of the bilinear image, up to its one-pixel rim
    agree = (moved_mask == (moved_image > 0.5)).float().mean()
    assert agree > 0.97


def test_boxes_moved_out_of_the_image_have_no_area():
    shift = affine_matrix(0.0, (100.0, 0.0), 1.0, 60, 40)
    (_, _, w, h), = warp_boxes(torch.tensor([[5.0, 5.0, 10.0, 10.0]]), shift, (40, 60)).tolist()
    assert w == 0
