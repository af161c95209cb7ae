"""Freezing and parameter groups (`vlp.training.optim`), on the tiny model."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlp import create_model_and_processor
from vlp.training.config import FreezeSection, ParamGroupSection
from vlp.training.optim import freeze, parameter_groups


@pytest.fixture
def tiny():
    torch.manual_seed(0)
    return create_model_and_processor("tiny", heads={"lovt": {"proj_dim": 16, "proj_hidden_dim": 32}})


def test_text_layers_freeze_the_embeddings_and_the_first_layers(tiny):
    model, _ = tiny
    frozen = freeze(model, FreezeSection(text_layers=1))
    names = {n for n, _ in model.named_parameters()}
    expected = {n for n in names if n.startswith(("text_tower.model.embeddings.", "text_tower.model.encoder.layer.0."))}
    assert set(frozen) == expected and expected
    assert all(not p.requires_grad for n, p in model.named_parameters() if n in expected)
    assert all(p.requires_grad for n, p in model.named_parameters() if n not in expected)
    with pytest.raises(ValueError, match="has 2 layers"):
        freeze(model, FreezeSection(text_layers=3))


def test_towers_norms_and_patterns(tiny):
    model, _ = tiny
    frozen = set(freeze(model, FreezeSection(image_tower=True, norms=True, patterns=["lovt.cross_attention.*"])))
    names = [n for n, _ in model.named_parameters()]
    assert {n for n in names if n.startswith("image_tower.")} <= frozen
    assert {n for n in names if n.startswith("lovt.cross_attention.")} <= frozen
    assert "text_tower.model.encoder.layer.0.attention.output.LayerNorm.weight" in frozen
    assert "lovt.region_projection.norm.norm.weight" in frozen  # the head's BatchNorm
    assert "text_tower.model.encoder.layer.0.attention.self.query.weight" not in frozen
    with pytest.raises(ValueError, match="matches no parameter"):
        freeze(model, FreezeSection(patterns=["image_towr.*"]))


def test_frozen_parameters_do_not_change_while_the_rest_train(tiny):
    model, processor = tiny
    freeze(model, FreezeSection(text_tower=True))
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    optimizer = torch.optim.AdamW(parameter_groups(model, 1e-2, 0.1))
    rng = np.random.default_rng(0)
    batch = processor(text=["No effusion. Normal heart.", "Cardiomegaly."] * 2,
                      images=[(rng.random((80, 80)) * 255).astype(np.uint8) for _ in range(4)], return_tensors="pt")
    for _ in range(2):
        optimizer.zero_grad()
        model(**batch, return_loss=True).loss.backward()
        optimizer.step()
    for name, param in model.named_parameters():
        if name.startswith("text_tower."):
            assert torch.equal(param, before[name]), name
    assert not torch.equal(model.image_projection.weight, before["image_projection.weight"])
    assert not torch.equal(model.lovt.cross_attention.key.weight, before["lovt.cross_attention.key.weight"])


def test_parameter_groups_get_their_rates_and_no_decay_on_biases_norms_and_the_scale(tiny):
    model, _ = tiny
    groups = parameter_groups(model, lr=1e-4, weight_decay=0.01, groups=[
        ParamGroupSection(name="heads", patterns=["lovt.*"], lr=1e-3),
        ParamGroupSection(name="text", patterns=["text_tower.*"], lr=2e-5, weight_decay=0.05)])
    by_name = {g["name"]: g for g in groups}
    assert set(by_name) == {"default", "default/no_decay", "heads", "heads/no_decay", "text", "text/no_decay"}
    assert (by_name["heads"]["lr"], by_name["heads"]["weight_decay"]) == (1e-3, 0.01)
    assert (by_name["text"]["lr"], by_name["text"]["weight_decay"]) == (2e-5, 0.05)
    assert by_name["text/no_decay"]["weight_decay"] == 0.0 and by_name["text/no_decay"]["lr"] == 2e-5
    assert (by_name["default"]["lr"], by_name["default"]["weight_decay"]) == (1e-4, 0.01)
    where = {id(p): g["name"] for g in groups for p in g["params"]}
    named = dict(model.named_parameters())
    assert where[id(named["logit_scale"])] == "default/no_decay"
    assert where[id(named["lovt.region_projection.fc1.bias"])] == "heads/no_decay"
    assert where[id(named["lovt.region_projection.fc1.weight"])] == "heads"
    assert where[id(named["text_tower.model.embeddings.word_embeddings.weight"])] == "text"
    assert len(where) == sum(p.requires_grad for p in model.parameters())  # every trainable parameter, once
    # the scheduler scales each group's own rate
    optimizer = torch.optim.AdamW(groups)
    from transformers import get_cosine_schedule_with_warmup

    scheduler = get_cosine_schedule_with_warmup(optimizer, 2, 10)
    optimizer.step()
    scheduler.step()
    rates = {g["name"]: g["lr"] for g in optimizer.param_groups}
    assert rates["heads"] == pytest.approx(0.5e-3) and rates["text"] == pytest.approx(1e-5)
    with pytest.raises(ValueError, match="match no trainable parameter"):
        parameter_groups(model, 1e-4, 0.0, [ParamGroupSection(name="typo", patterns=["lvot.*"])])
