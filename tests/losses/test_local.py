"""LoVT local losses (`vlp.losses.local`) against hand-computed values and a plain-loop reference."""
from __future__ import annotations

import math

import pytest
import torch

from vlp.losses.local import (
    grid_positions,
    intra_sample_contrastive_terms,
    local_intra_sample_contrastive_loss,
    relative_distances,
    spatial_positive_weights,
    weighted_sample_mean,
)


def reference_loss(local, attended, mask, weights, positive_weights, temperature, sample_mask=None):
    """Straightforward loops over samples, anchors and candidates (no masking tricks, no vectorisation)."""
    batch, num, _ = local.shape
    totals_ab, totals_ba, kept = 0.0, 0.0, 0
    for b in range(batch):
        valid = [i for i in range(num) if mask[b, i]]
        if not valid or (sample_mask is not None and not sample_mask[b]):
            continue
        z = [local[b, i] / local[b, i].norm() for i in range(num)]
        a = [attended[b, i] / attended[b, i].norm() for i in range(num)]
        weight_sum = sum(float(weights[b, i]) for i in valid)
        sample_ab, sample_ba = 0.0, 0.0
        for i in valid:
            pos = {j: float(positive_weights[b, i, j]) for j in valid}
            pos_sum = sum(pos.values())
            pos = {j: p / pos_sum for j, p in pos.items()}
            s_ab = {j: float(z[i] @ a[j]) / temperature for j in valid}
            s_ba = {j: float(a[i] @ z[j]) / temperature for j in valid}
            loss_ab = -sum(pos[j] * s_ab[j] for j in valid) + math.log(sum(math.exp(s) for s in s_ab.values()))
            loss_ba = -sum(pos[j] * s_ba[j] for j in valid) + math.log(sum(math.exp(s) for s in s_ba.values()))
            w = float(weights[b, i]) / weight_sum
            sample_ab += w * loss_ab
            sample_ba += w * loss_ba
        totals_ab += sample_ab
        totals_ba += sample_ba
        kept += 1
    return totals_ab / max(kept, 1), totals_ba / max(kept, 1)


def test_grid_positions_are_row_major_cell_centres():
    positions = grid_positions(2, 3)
    expected = torch.tensor([[0.25, 1 / 6], [0.25, 0.5], [0.25, 5 / 6], [0.75, 1 / 6], [0.75, 0.5], [0.75, 5 / 6]])
    torch.testing.assert_close(positions, expected)
    # row-major like flatten(2) of a (B, C, h, w) map: cell (i, j) is element i * w + j
    features = torch.arange(6.0).view(1, 1, 2, 3)
    assert features.flatten(2)[0, 0, 4] == features[0, 0, 1, 1]


def test_relative_distance_matches_lovt_normalisation_on_square_grid():
    # LoVT divides cell-index distances by the grid diagonal sqrt(h^2 + w^2): neighbours of 7x7 are 1/sqrt(98) apart
    distances = relative_distances(grid_positions(7, 7))
    assert distances[0, 1].item() == pytest.approx(1 / math.sqrt(98))
    assert distances[0, 8].item() == pytest.approx(math.sqrt(2) / math.sqrt(98))  # diagonal neighbour
    assert distances[0, 48].item() == pytest.approx(math.sqrt(72) / math.sqrt(98))  # opposite corners


def test_spatial_positive_weights_threshold_and_smoothing():
    # three regions on a horizontal line: x = 0, 0.3 and 0.9 (relative distances 0.212, 0.636, 0.424)
    positions = torch.tensor([[0.5, 0.0], [0.5, 0.3], [0.5, 0.9]])
    d01, d02, d12 = 0.3 / math.sqrt(2), 0.9 / math.sqrt(2), 0.6 / math.sqrt(2)
    weights = spatial_positive_weights(positions, threshold=0.5, smooth_lambda=1.0)
    expected = torch.tensor([[1.0, math.exp(-d01), 0.0],
                             [math.exp(-d01), 1.0, math.exp(-d12)],
                             [0.0, math.exp(-d12), 1.0]])
    torch.testing.assert_close(weights, expected)
    assert d02 > 0.5  # the far pair is a negative
    hard = spatial_positive_weights(positions, threshold=0.5, smooth=False)
    torch.testing.assert_close(hard, (expected > 0).float())
    torch.testing.assert_close(spatial_positive_weights(positions, threshold=0.0), torch.eye(3))


def test_hand_computed_two_elements():
    # z = (e1, e2), a = (e1, (e1 + e2)/sqrt(2)), temperature 1, identity positives, weights (0.25, 0.75)
    r = 1 / math.sqrt(2)
    local = torch.tensor([[[1.0, 0.0], [0.0, 1.0]]])
    attended = torch.tensor([[[1.0, 0.0], [r, r]]])
    weights = torch.tensor([[0.25, 0.75]])
    # scores s_ij = z_i . a_j = [[1, r], [0, r]]
    l2a = [-1 + math.log(math.e + math.exp(r)), -r + math.log(1 + math.exp(r))]
    # attended -> local uses s_ji: row 0 = (1, 0), row 1 = (r, r)
    a2l = [-1 + math.log(math.e + 1), math.log(2.0)]
    loss_ab, loss_ba = local_intra_sample_contrastive_loss(local, attended, weights=weights, temperature=1.0)
    assert loss_ab.item() == pytest.approx(0.25 * l2a[0] + 0.75 * l2a[1])
    assert loss_ba.item() == pytest.approx(0.25 * a2l[0] + 0.75 * a2l[1])
    # scale invariance: embeddings are L2-normalised inside
    again = local_intra_sample_contrastive_loss(3 * local, 0.5 * attended, weights=weights, temperature=1.0)
    assert again[0].item() == pytest.approx(loss_ab.item())


def test_matches_loop_reference_with_masks_weights_and_soft_positives():
    torch.manual_seed(0)
    batch, h, w, dim = 3, 2, 3, 5
    num = h * w
    local, attended = torch.randn(batch, num, dim), torch.randn(batch, num, dim)
    mask = torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 0, 1, 0, 1], [1, 0, 0, 0, 0, 0]], dtype=torch.bool)
    weights = torch.rand(batch, num) + 0.1
    positives = spatial_positive_weights(grid_positions(h, w), threshold=0.5, smooth_lambda=2.0)
    got = local_intra_sample_contrastive_loss(local, attended, mask=mask, weights=weights,
                                              positive_weights=positives, temperature=0.3)
    expected = reference_loss(local, attended, mask, weights, positives.expand(batch, num, num), 0.3)
    assert got[0].item() == pytest.approx(expected[0], rel=1e-5)
    assert got[1].item() == pytest.approx(expected[1], rel=1e-5)


def test_near_regions_are_pulled_far_regions_pushed():
    # regions at x = 0, 0.3, 0.9: region 1 is within the threshold of region 0, region 2 is not
    positions = torch.tensor([[0.5, 0.0], [0.5, 0.3], [0.5, 0.9]])
    positives = spatial_positive_weights(positions, threshold=0.5)
    targets = positives[0] / positives[0].sum()

    # the gradient of anchor 0's loss w.r.t. its scores is softmax - target; at equal scores (softmax 1/3):
    # negative (pulled together) for itself and the near region, positive (pushed apart) for the far one
    scores = torch.zeros(3, requires_grad=True)
    (-(targets * scores).sum() + torch.logsumexp(scores, 0)).backward()
    assert scores.grad[0] < 0 and scores.grad[1] < 0 and scores.grad[2] > 0
    torch.testing.assert_close(scores.grad, torch.full((3,), 1 / 3) - targets)

    # the same in the loss: from equal scores, moving a_1 towards z_0 lowers anchor 0's loss, moving a_2 raises it
    # (a high temperature keeps the move small: a soft target is not maximised by an arbitrarily large score)
    torch.manual_seed(5)
    local = torch.randn(1, 3, 4)
    base = torch.ones(1, 3, 4)
    towards_near, towards_far = base.clone(), base.clone()
    towards_near[0, 1] = local[0, 0]
    towards_far[0, 2] = local[0, 0]

    def anchor0(attended, weights):
        return intra_sample_contrastive_terms(local, attended, positive_weights=weights, temperature=10.0)[0][0, 0]

    assert anchor0(towards_near, positives) < anchor0(base, positives) < anchor0(towards_far, positives)
    # with threshold 0 the near region is a plain negative: moving it towards the anchor now raises the loss
    hard = spatial_positive_weights(positions, threshold=0.0)
    assert anchor0(towards_near, hard) > anchor0(base, hard)


def test_padding_equals_unpadded_samples():
    torch.manual_seed(1)
    dim = 6
    lengths = [4, 2, 3]
    samples = [(torch.randn(1, n, dim), torch.randn(1, n, dim), torch.rand(1, n) + 0.1) for n in lengths]
    num = max(lengths)
    local = torch.zeros(len(lengths), num, dim)
    attended = torch.zeros(len(lengths), num, dim)
    weights = torch.full((len(lengths), num), 5.0)  # large weights on padding must not matter
    mask = torch.zeros(len(lengths), num, dtype=torch.bool)
    for b, (z, a, w) in enumerate(samples):
        n = lengths[b]
        local[b, :n], attended[b, :n], weights[b, :n], mask[b, :n] = z[0], a[0], w[0], True
        local[b, n:] = torch.randn(num - n, dim)  # garbage in padded rows
    got = local_intra_sample_contrastive_loss(local, attended, mask=mask, weights=weights)
    per_sample = [local_intra_sample_contrastive_loss(z, a, weights=w) for z, a, w in samples]
    for direction in range(2):
        expected = sum(p[direction] for p in per_sample) / len(per_sample)
        torch.testing.assert_close(got[direction], expected)


def test_empty_samples_are_left_out_without_nan():
    torch.manual_seed(2)
    local = torch.randn(3, 4, 5, requires_grad=True)
    attended = torch.randn(3, 4, 5, requires_grad=True)
    mask = torch.tensor([[1, 1, 1, 0], [0, 0, 0, 0], [1, 1, 0, 0]], dtype=torch.bool)
    weights = torch.rand(3, 4)
    loss_ab, loss_ba = local_intra_sample_contrastive_loss(local, attended, mask=mask, weights=weights)
    (loss_ab + loss_ba).backward()
    assert torch.isfinite(loss_ab) and torch.isfinite(loss_ba)
    assert torch.isfinite(local.grad).all() and torch.isfinite(attended.grad).all()
    assert local.grad[1].abs().sum() == 0 and local.grad[0, 3].abs().sum() == 0  # nothing flows to padding
    keep = [0, 2]
    expected = local_intra_sample_contrastive_loss(local[keep], attended[keep], mask=mask[keep],
                                                   weights=weights[keep])
    torch.testing.assert_close(loss_ab, expected[0])
    torch.testing.assert_close(loss_ba, expected[1])


def test_sample_mask_and_all_empty_batch():
    torch.manual_seed(3)
    local, attended = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    dropped = local_intra_sample_contrastive_loss(local, attended, sample_mask=torch.tensor([True, False]))
    only_first = local_intra_sample_contrastive_loss(local[:1], attended[:1])
    torch.testing.assert_close(dropped[0], only_first[0])

    local = torch.randn(2, 3, 4, requires_grad=True)
    empty = torch.zeros(2, 3, dtype=torch.bool)
    loss_ab, loss_ba = local_intra_sample_contrastive_loss(local, torch.randn(2, 3, 4), mask=empty)
    assert loss_ab.item() == 0.0 and loss_ba.item() == 0.0
    (loss_ab + loss_ba).backward()
    assert torch.equal(local.grad, torch.zeros_like(local))


def test_weights_only_scale_within_a_sample():
    per_element = torch.tensor([[1.0, 3.0], [2.0, 2.0]])
    # sample 0: (1*1 + 3*3)/4 = 2.5; sample 1: 2; mean 2.25
    assert weighted_sample_mean(per_element, weights=torch.tensor([[1.0, 3.0], [7.0, 1.0]])).item() == 2.25
    assert weighted_sample_mean(per_element).item() == pytest.approx((2.0 + 2.0) / 2)


def test_gradient_does_not_reach_detached_weights():
    torch.manual_seed(4)
    local = torch.randn(2, 3, 4, requires_grad=True)
    raw_weights = torch.rand(2, 3, requires_grad=True)
    loss, _ = local_intra_sample_contrastive_loss(local, torch.randn(2, 3, 4), weights=raw_weights.detach())
    loss.backward()
    assert raw_weights.grad is None and local.grad is not None
