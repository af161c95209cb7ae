"""Grad-CAM: the formula on hand-made features, the map-to-pixel geometry on non-square inputs, and the layout
of real towers' regions (ResNet feature map, ViT patch tokens) against Grad-CAM taken on the tower itself."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from vlp.gradcam import boxes_to_masks, cam_boxes, empty_maps, grad_cam, grad_cam_from_gradients, upsample_cams


def test_formula_on_a_hand_made_case():
    """Two regions, two channels: A = [[1, 2], [3, -1]], dy/dA = [[1, 0], [0, 0]] + [[0, 0], [1, 2]].

    alpha = mean over regions of the gradients = [(1 + 1) / 2, (0 + 2) / 2] = [1, 1];
    cam = ReLU(A @ alpha) = ReLU([3, 2]) = [3, 2] -> min-max -> [1, 0].
    """
    regions = torch.tensor([[[1.0, 2.0], [3.0, -1.0]]])
    gradients = torch.tensor([[[1.0, 0.0], [1.0, 2.0]]])
    cam = grad_cam_from_gradients(regions, gradients, (1, 2))
    torch.testing.assert_close(cam, torch.tensor([[[1.0, 0.0]]]))
    # alpha = [-1, -1]: A @ alpha = [-3, -2], which ReLU zeroes everywhere; such a map marks nothing (no NaN)
    cam = grad_cam_from_gradients(regions, torch.full_like(gradients, -1.0), (1, 2))
    torch.testing.assert_close(cam, torch.zeros(1, 1, 2))


def test_grad_cam_of_mean_pool_linear_classifier_is_the_class_activation_map():
    """For logits = W mean_r(A_r) + b, dy_c/dA_r = W_c / R, so Grad-CAM = ReLU(A_r . W_c) up to scale (CAM)."""
    g = torch.Generator().manual_seed(0)
    regions = torch.randn(3, 12, 5, generator=g)
    linear = nn.Linear(5, 4)
    targets = torch.tensor([0, 3, 1])
    cams = grad_cam(regions, (3, 4), lambda r: linear(r.mean(1)), targets)
    for b in range(3):
        ref = torch.relu(regions[b] @ linear.weight[targets[b]].detach())
        ref = (ref - ref.min()) / (ref.max() - ref.min())
        torch.testing.assert_close(cams[b], ref.reshape(3, 4), rtol=1e-5, atol=1e-6)


def test_no_grad_and_inference_mode_give_the_same_maps_and_leave_no_gradients():
    g = torch.Generator().manual_seed(1)
    tower = nn.Linear(6, 8)
    linear = nn.Linear(8, 3)
    x = torch.randn(2, 10, 6, generator=g)
    targets = torch.tensor([2, 0])
    regions = tower(x)  # carries a graph back to the "tower"
    in_train = grad_cam(regions, (2, 5), lambda r: linear(r.mean(1)), targets)
    assert tower.weight.grad is None and linear.weight.grad is None  # no .grad accumulated anywhere
    assert not in_train.requires_grad
    with torch.no_grad():
        under_no_grad = grad_cam(tower(x), (2, 5), lambda r: linear(r.mean(1)), targets)
    with torch.inference_mode():
        under_inference = grad_cam(tower(x), (2, 5), lambda r: linear(r.mean(1)), targets)
    torch.testing.assert_close(under_no_grad, in_train)
    torch.testing.assert_close(under_inference.clone(), in_train)
    # the tower's own graph is intact: a loss on the regions still backpropagates once
    regions.sum().backward()
    assert tower.weight.grad is not None and linear.weight.grad is None


@pytest.mark.parametrize("cell, expected_box", [((1, 3), (48.0, 16.0, 16.0, 16.0)),
                                                ((0, 0), (0.0, 0.0, 16.0, 16.0)),
                                                ((2, 4), (64.0, 32.0, 16.0, 16.0))])
def test_peak_cell_lands_on_its_pixels_of_a_non_square_image(cell, expected_box):
    """Grid 3 x 5 on a 48 x 80 image: each cell covers a 16 x 16 pixel block, cell (i, j) the rows
    [16 i, 16 i + 16) and the columns [16 j, 16 j + 16). A map that is 1 at one cell and 0 elsewhere,
    upsampled bilinearly and thresholded at 0.5, keeps exactly that block (pixel centres within 8 px of the
    cell centre are >= 0.5)."""
    cams = torch.zeros(1, 3, 5)
    cams[0, cell[0], cell[1]] = 1.0
    maps = upsample_cams(cams, (48, 80))
    assert maps.shape == (1, 48, 80)
    (box,) = cam_boxes(maps, threshold=0.5)
    assert box == expected_box
    mask = boxes_to_masks([box], 48, 80)[0]
    expected = torch.zeros(48, 80, dtype=torch.bool)
    expected[16 * cell[0]:16 * cell[0] + 16, 16 * cell[1]:16 * cell[1] + 16] = True
    assert torch.equal(mask, expected)


def test_box_of_the_largest_region_min_size_and_fallback():
    maps = torch.zeros(3, 20, 30)
    maps[0, 2:4, 3:5] = 1.0  # small blob
    maps[0, 10:18, 12:25] = 0.9  # larger blob wins
    maps[1, 5, 7] = 1.0  # a single pixel: widened to min_size about its centre
    boxes = cam_boxes(maps, threshold=0.5, min_size=4)
    assert boxes[0] == (12.0, 10.0, 13.0, 8.0)
    assert boxes[1] == (5.0, 3.0, 4.0, 4.0)
    assert boxes[2] == (0.0, 0.0, 30.0, 20.0)  # a constant map marks nothing: the whole image
    assert empty_maps(maps).tolist() == [False, False, True]


def _tower_cam(features_bchw: torch.Tensor, linear: nn.Linear, target: int) -> np.ndarray:
    """Reference Grad-CAM on a (1, C, h, w) feature map that carries the tower's graph (retain_grad)."""
    features_bchw.retain_grad()
    score = linear(features_bchw.mean(dim=(2, 3)))[0, target]
    score.backward()
    alpha = features_bchw.grad.mean(dim=(2, 3))[0]  # (C,)
    cam = torch.relu(torch.einsum("c,chw->hw", alpha, features_bchw[0].detach()))
    cam = (cam - cam.min()) / (cam.max() - cam.min())
    return cam.numpy()


def test_resnet_regions_follow_the_feature_map_layout_on_a_non_square_input():
    """timm resnet18 on a 96 x 160 input: a 3 x 5 feature map; the regions' Grad-CAM reshaped on the grid equals
    Grad-CAM taken directly on the (C, h, w) map."""
    from vlp.configuration import ImageTowerConfig
    from vlp.modeling.towers import ImageTower

    torch.manual_seed(0)
    tower = ImageTower(ImageTowerConfig(model_name="resnet18", in_chans=1)).eval()
    linear = nn.Linear(tower.num_features, 3)
    with torch.no_grad():  # positive weights on the (non-negative, post-ReLU) features: a non-trivial map
        linear.weight[2].abs_()
    x = torch.randn(1, 1, 96, 160)
    feats = tower(x)
    assert feats.grid == (3, 5)
    ours = grad_cam(feats.regions, feats.grid, lambda r: linear(r.mean(1)), torch.tensor([2]))[0]
    reference = _tower_cam(tower.model.forward_features(x), linear, 2)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-4, atol=1e-5)
    assert (ours > 0).any()


def test_vit_patch_tokens_follow_the_patch_grid_on_a_non_square_input():
    """A small timm ViT on a 64 x 128 input (patch 16): a 4 x 8 grid of patch tokens in row-major order; the
    CLS token is not a region, and Grad-CAM of a classifier on the mean patch token is not zero."""
    from vlp.configuration import ImageTowerConfig
    from vlp.modeling.towers import ImageTower

    torch.manual_seed(0)
    cfg = ImageTowerConfig(model_name="vit_tiny_patch16_224", image_size=(64, 128), in_chans=1,
                           model_kwargs={"embed_dim": 48, "depth": 2, "num_heads": 3})
    tower = ImageTower(cfg).eval()
    linear = nn.Linear(tower.num_features, 2)
    x = torch.randn(1, 1, 64, 128)
    feats = tower(x)
    assert feats.grid == (4, 8) and feats.regions.shape[1] == 32
    ours = grad_cam(feats.regions, feats.grid, lambda r: linear(r.mean(1)), torch.tensor([1]))[0]
    tokens = tower.model.forward_features(x)[:, tower.model.num_prefix_tokens:]  # (1, 32, C)
    as_map = tokens.transpose(1, 2).reshape(1, -1, 4, 8)  # patch (i, j) -> row i, column j
    reference = _tower_cam(as_map, linear, 1)
    np.testing.assert_allclose(ours.numpy(), reference, rtol=1e-4, atol=1e-5)
    assert (ours > 0).any()
    # the pitfall the head avoids: CLS pooling does not depend on the final patch tokens (zero gradient)
    tokens = tower.model.forward_features(x)
    cls_score = linear(tower.model.forward_head(tokens, pre_logits=True))[0, 1]
    (grad,) = torch.autograd.grad(cls_score, tokens)
    assert grad[:, tower.model.num_prefix_tokens:].abs().max() == 0


def test_bad_shapes_raise():
    with pytest.raises(ValueError, match="grid"):
        grad_cam_from_gradients(torch.zeros(1, 6, 2), torch.zeros(1, 6, 2), (2, 2))
    with pytest.raises(ValueError, match="targets"):
        grad_cam(torch.zeros(2, 4, 3), (2, 2), lambda r: r.mean(1), torch.tensor([0]))
