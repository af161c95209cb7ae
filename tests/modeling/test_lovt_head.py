"""LoVT head (`vlp.modeling.heads.lovt`): shapes, masking, stop-gradient weights, config round trip."""
from __future__ import annotations

import json

import pytest
import torch

from vlp import VLPConfig
from vlp.losses.local import local_intra_sample_contrastive_loss, spatial_positive_weights
from vlp.modeling.heads.base import TowerDims
from vlp.modeling.heads.lovt import LOSS_NAMES, LoVTConfig, LoVTHead, grid_positions, pool_sentences

REGION_DIM, TOKEN_DIM, H, W = 32, 24, 3, 4
DIMS = TowerDims(region_dim=REGION_DIM, token_dim=TOKEN_DIM, embed_dim=8)


def lovt_loss(out, weights=None):
    """The head's terms weighted as the model weights them (LoVT's 0.375 each unless given)."""
    weights = weights or dict.fromkeys(LOSS_NAMES, 0.375)
    return sum(weights[name] * value for name, value in out.losses.items())


def small_config(**overrides) -> LoVTConfig:
    return LoVTConfig(**{"proj_dim": 16, "proj_hidden_dim": 32, "pooling_heads": 4, **overrides})


def make_batch(seed: int = 0):
    """3 samples: 3 sentences, 2 sentences (+ padding), and an empty report (only special tokens)."""
    generator = torch.Generator().manual_seed(seed)
    regions = torch.randn(3, H * W, REGION_DIM, generator=generator)
    tokens = torch.randn(3, 10, TOKEN_DIM, generator=generator)
    sentence_ids = torch.tensor([[-1, 0, 0, 1, 1, 1, 2, 2, -1, -1],
                                 [-1, 0, 0, 0, 1, -1, -1, -1, -1, -1],
                                 [-1, -1, -1, -1, -1, -1, -1, -1, -1, -1]])
    return regions, tokens, sentence_ids


def test_output_shapes_and_attention_rows():
    torch.manual_seed(0)
    head = LoVTHead(small_config(), DIMS)
    regions, tokens, sentence_ids = make_batch()
    out = head.align(regions, grid_positions(H, W), tokens, sentence_ids)
    R, S, D = H * W, 3, 16
    assert out.region_embeds.shape == (3, R, D) and out.region_attended_embeds.shape == (3, R, D)
    assert out.sentence_embeds.shape == (3, S, D) and out.sentence_attended_embeds.shape == (3, S, D)
    assert out.region_to_sentence_attention.shape == (3, R, S)
    assert out.sentence_to_region_attention.shape == (3, S, R)
    assert out.region_weights.shape == (3, R) and out.sentence_weights.shape == (3, S)
    assert out.image_pooled.shape == (3, REGION_DIM) and out.report_pooled.shape == (3, TOKEN_DIM)
    assert out.sentence_mask.tolist() == [[True, True, True], [True, True, False], [False, False, False]]
    assert set(out.losses) == set(LOSS_NAMES)

    r2s = out.region_to_sentence_attention
    torch.testing.assert_close(r2s[:2].sum(-1), torch.ones(2, R))
    assert r2s[1, :, 2].abs().max() == 0 and r2s[2].abs().max() == 0  # padding sentence, empty report
    s2r = out.sentence_to_region_attention
    torch.testing.assert_close(s2r.sum(-1), out.sentence_mask.float())
    torch.testing.assert_close(out.region_weights.sum(-1), torch.ones(3))
    torch.testing.assert_close(out.sentence_weights.sum(-1), torch.tensor([1.0, 1.0, 0.0]))
    assert out.sentence_weights[1, 2] == 0
    for name, value in out.items():
        if torch.is_tensor(value) and value.is_floating_point():
            assert torch.isfinite(value).all(), name
    assert out.sentence_embeds[1, 2].abs().max() == 0  # padding sentences are zero
    assert out.report_pooled[2].abs().max() == 0


def test_loss_equals_pure_function_on_output_fields():
    torch.manual_seed(1)
    config = small_config()
    head = LoVTHead(config, DIMS)
    regions, tokens, sentence_ids = make_batch(1)
    positions = grid_positions(H, W)
    out = head.align(regions, positions, tokens, sentence_ids)
    has_sentences = out.sentence_mask.any(-1)
    region_terms = local_intra_sample_contrastive_loss(
        out.region_embeds, out.region_attended_embeds, weights=out.region_weights, temperature=0.3,
        positive_weights=spatial_positive_weights(positions, 0.5, 1.0), sample_mask=has_sentences)
    sentence_terms = local_intra_sample_contrastive_loss(
        out.sentence_embeds, out.sentence_attended_embeds, mask=out.sentence_mask, weights=out.sentence_weights,
        temperature=0.3)
    for name, expected in zip(LOSS_NAMES, (*region_terms, *sentence_terms)):
        torch.testing.assert_close(out.losses[name], expected)


def test_pool_sentences_matches_loop():
    torch.manual_seed(2)
    tokens = torch.randn(2, 7, 5, requires_grad=True)
    sentence_ids = torch.tensor([[-1, 0, 0, 2, 2, 2, -1], [-1, 1, 1, 0, -1, -1, -1]])
    for mode, reduce in (("max", lambda x: x.max(0).values), ("mean", lambda x: x.mean(0))):
        pooled, mask = pool_sentences(tokens, sentence_ids, mode)
        assert pooled.shape == (2, 3, 5)
        assert mask.tolist() == [[True, False, True], [True, True, False]]  # sentence 1 of sample 0 has no token
        for b in range(2):
            for s in range(3):
                rows = tokens[b][sentence_ids[b] == s]
                expected = reduce(rows) if len(rows) else torch.zeros(5)
                torch.testing.assert_close(pooled[b, s], expected)
    pooled, _ = pool_sentences(tokens, sentence_ids, "max")
    pooled.sum().backward()
    assert torch.isfinite(tokens.grad).all() and tokens.grad[:, 0].abs().sum() == 0  # special tokens get nothing
    all_special, mask = pool_sentences(tokens.detach(), torch.full((2, 7), -1), "max")
    assert all_special.shape == (2, 1, 5) and not mask.any()


def test_empty_report_is_masked_out_of_all_terms():
    torch.manual_seed(3)
    head = LoVTHead(small_config(), DIMS).eval()  # running stats: samples are independent
    regions, tokens, sentence_ids = make_batch(3)
    positions = grid_positions(H, W)
    with torch.no_grad():
        full = head.align(regions, positions, tokens, sentence_ids)
        without_empty = head.align(regions[:2], positions, tokens[:2], sentence_ids[:2])
    for name in LOSS_NAMES:
        torch.testing.assert_close(full.losses[name], without_empty.losses[name])


def test_gradients_reach_inputs_but_not_pooling_weights():
    torch.manual_seed(4)
    head = LoVTHead(small_config(), DIMS).train()
    regions, tokens, sentence_ids = make_batch(4)
    regions.requires_grad_(True)
    tokens.requires_grad_(True)
    out = head.align(regions, grid_positions(H, W), tokens, sentence_ids)
    assert not out.region_weights.requires_grad and not out.sentence_weights.requires_grad
    lovt_loss(out).backward()
    assert torch.isfinite(regions.grad).all() and regions.grad[:2].abs().sum() > 0
    assert torch.isfinite(tokens.grad).all() and tokens.grad[:2].abs().sum() > 0
    assert tokens.grad[2].abs().sum() == 0  # the empty report has no tokens in any sentence
    # the local losses reach the pooling layers only through the weights, which are detached
    for pool in (head.region_pool, head.sentence_pool):
        assert all(p.grad is None for p in pool.parameters())
    for module in (head.region_projection, head.sentence_projection, head.cross_attention):
        assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in module.parameters())


def test_uniform_weighting():
    torch.manual_seed(5)
    head = LoVTHead(small_config(element_weighting="uniform"), DIMS)
    regions, tokens, sentence_ids = make_batch(5)
    out = head.align(regions, grid_positions(H, W), tokens, sentence_ids)
    expected = local_intra_sample_contrastive_loss(
        out.sentence_embeds, out.sentence_attended_embeds, mask=out.sentence_mask, temperature=0.3)
    torch.testing.assert_close(out.losses["local_sentence_to_attended"], expected[0])


def test_loss_weights_live_in_the_model_config_and_merge_with_lovts():
    """A partial `loss.weights` changes only the terms it names; bare (vlp 0.1) names are qualified."""
    config = VLPConfig(heads={"lovt": {}}, loss={"weights": {"lovt/local_region_to_attended": 1.0,
                                                             "local_attended_to_sentence": 0.0}})
    assert config.head_loss_weights("lovt") == {"local_region_to_attended": 1.0, "local_attended_to_region": 0.375,
                                                "local_sentence_to_attended": 0.375, "local_attended_to_sentence": 0.0}
    assert config.loss_weights()["global_image_to_text"] == 0.5
    with pytest.raises(ValueError, match="lovt/local_regin_to_attended"):
        VLPConfig(heads=["lovt"], loss={"weights": {"lovt/local_regin_to_attended": 1.0}})


def test_all_reports_empty_and_single_sentence_batch_are_finite():
    torch.manual_seed(6)
    head = LoVTHead(small_config(), DIMS).train()
    regions = torch.randn(2, H * W, REGION_DIM, requires_grad=True)
    tokens = torch.randn(2, 5, TOKEN_DIM)
    for sentence_ids in (torch.full((2, 5), -1), torch.tensor([[-1, 0, 0, -1, -1], [-1, -1, -1, -1, -1]])):
        out = head.align(regions, grid_positions(H, W), tokens, sentence_ids)
        loss = lovt_loss(out)
        loss.backward()
        assert torch.isfinite(loss) and torch.isfinite(regions.grad).all()


def test_per_sample_positions_and_region_mask():
    torch.manual_seed(7)
    head = LoVTHead(small_config(norm="layer"), DIMS)
    regions, tokens, sentence_ids = make_batch(7)
    positions = grid_positions(H, W)
    shared = head.align(regions, positions, tokens, sentence_ids)
    per_sample = head.align(regions, positions.expand(3, -1, -1), tokens, sentence_ids)
    torch.testing.assert_close(lovt_loss(shared), lovt_loss(per_sample))
    region_mask = torch.ones(3, H * W, dtype=torch.bool)
    region_mask[0, -4:] = False
    masked = head.align(regions, positions, tokens, sentence_ids, region_mask=region_mask)
    assert masked.sentence_to_region_attention[0, :, -4:].abs().max() == 0
    assert masked.region_weights[0, -4:].abs().max() == 0
    assert torch.isfinite(lovt_loss(masked))
    with pytest.raises(ValueError, match="region_positions"):
        head.align(regions, grid_positions(H + 1, W), tokens, sentence_ids)


def test_return_loss_false_gives_no_loss():
    head = LoVTHead(small_config(), DIMS).eval()
    regions, tokens, sentence_ids = make_batch()
    out = head.align(regions, grid_positions(H, W), tokens, sentence_ids, return_loss=False)
    assert out.losses is None and out.region_embeds is not None


def test_config_round_trip_and_errors():
    config = LoVTConfig(proj_dim=64, spatial_smooth=False)
    plain = json.loads(json.dumps(config.to_dict()))
    assert LoVTConfig.from_dict(plain) == config
    defaults = LoVTConfig()
    assert (defaults.proj_dim, defaults.proj_hidden_dim, defaults.temperature) == (512, 2048, 0.3)
    assert (defaults.spatial_threshold, defaults.spatial_lambda, defaults.pooling_heads) == (0.5, 1.0, 8)
    assert LoVTHead.default_weights == {name: 0.375 for name in LOSS_NAMES}
    with pytest.raises(ValueError, match="proj_dimm"):
        LoVTConfig.from_dict({"proj_dimm": 3})
    with pytest.raises(ValueError, match=r"weights.*valid keys"):
        LoVTConfig.from_dict({"weights": {"global_image_to_text": 0.75}})
    with pytest.raises(ValueError, match="pooling_heads"):
        LoVTHead(LoVTConfig(pooling_heads=5), DIMS)


def test_head_learns_on_a_fixed_batch():
    # a few optimiser steps on one batch must lower the local loss (the head is trainable end to end)
    torch.manual_seed(8)
    head = LoVTHead(small_config(), DIMS).train()
    regions, tokens, sentence_ids = make_batch(8)
    optimizer = torch.optim.Adam(head.parameters(), lr=1e-2)
    losses = []
    for _ in range(30):
        loss = lovt_loss(head.align(regions, grid_positions(H, W), tokens, sentence_ids))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < 0.8 * losses[0]


def test_bfloat16_autocast_keeps_losses_in_float32():
    torch.manual_seed(9)
    head = LoVTHead(small_config(), DIMS).train()
    regions, tokens, sentence_ids = make_batch(9)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = head.align(regions, grid_positions(H, W), tokens.bfloat16(), sentence_ids)
    assert all(value.dtype == torch.float32 and torch.isfinite(value) for value in out.losses.values())
    lovt_loss(out).backward()
