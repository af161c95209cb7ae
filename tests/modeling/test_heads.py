"""The head protocol: a head defined outside `vlp`, loading a saved model with heads added (real initial values,
not uninitialised memory), vlp 0.1 checkpoints, idle parameters, and the errors that replace silent failures."""
from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from plugin_head import RegionMatchHead
from safetensors.torch import load_file
from transformers import AutoModel, AutoProcessor

import vlp
from vlp import VLPConfig, VLPModel, ZeroShotClassifier, create_model_and_processor, register_head
from vlp.modeling.heads.lovt import LoVTHead

REPORTS = ["Heart size is normal. No pneumothorax.", "Cardiomegaly.", "Small right pleural effusion.",
           "The lungs are clear. No acute disease."]
SMALL_LOVT = {"proj_dim": 32, "proj_hidden_dim": 64}
NAN = float("nan")


def _images(n=4, seed=0, shape=(140, 120)):
    rng = np.random.default_rng(seed)
    return [(rng.random(shape) * 255).astype(np.uint8) for _ in range(n)]


def _batch(processor, **kwargs):
    return processor(text=REPORTS, images=_images(), return_tensors="pt", padding=True, **kwargs)


# ------------------------------------------------------------------------------ a head from outside vlp
def test_a_head_defined_outside_vlp_trains_saves_and_reloads(tmp_path):
    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny", heads={"region_match": {"hidden_dim": 16}})
    assert isinstance(model.region_match, RegionMatchHead) and model.config.heads["region_match"].hidden_dim == 16
    out = model(**_batch(processor), return_loss=True)
    assert {"region_match/image_to_text", "region_match/text_to_image"} <= set(out.losses)
    weights = model.config.loss_weights()
    assert weights["region_match/image_to_text"] == 0.25 and weights["global_image_to_text"] == 0.5
    torch.testing.assert_close(out.loss, sum(weights[k] * v for k, v in out.losses.items()))
    assert set(out.logs) == {"region_match/positive_cosine"} and "region_match" in out.heads
    out.loss.backward()
    assert all(p.grad is not None for p in model.region_match.parameters())

    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "config.json").read_text())["heads"] == {"region_match": {"hidden_dim": 16,
                                                                                            "temperature": 0.1}}
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    batch = _batch(AutoProcessor.from_pretrained(tmp_path))
    with torch.no_grad():
        torch.testing.assert_close(loaded(**batch).logits_per_image, model(**batch).logits_per_image)


def test_zero_shot_uses_the_score_a_head_supplies():
    torch.manual_seed(1)
    model, processor = create_model_and_processor("tiny", heads=["region_match"])
    model.eval()
    assert model.score_modes() == ("global", "region_mean")
    labels = ["cardiomegaly", "effusion"]
    templates = (["{}.", "There is {}."], ["No {}."])
    probs = ZeroShotClassifier(model, processor, labels, templates=templates, score_from="region_mean")(_images())
    # by hand: the head's region embedding against every prompt's global embedding, templates averaged as logits
    with torch.no_grad():
        pixels = processor(images=_images(), return_tensors="pt")["pixel_values"]
        regions = model.image_tower(pixels).regions
        z = F.normalize(model.region_match.projection(regions).mean(1), dim=-1)

        def logits(prompts):
            tokens = processor(text=prompts, return_tensors="pt", padding=True)
            return model.scale() * z @ model.get_text_features(tokens["input_ids"], tokens["attention_mask"]).T

        pos = logits([t.format(label) for label in labels for t in templates[0]]).view(4, 2, 2).mean(-1)
        neg = logits([f"No {label}." for label in labels])
    torch.testing.assert_close(probs, torch.sigmoid(pos - neg), rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="offers: global, region_mean"):
        ZeroShotClassifier(model, processor, labels, score_from="itm")


# ------------------------------------------------------------------------------------------ loading
def _close_in_distribution(loaded: torch.Tensor, fresh: torch.Tensor, name: str) -> None:
    """Finite, and as a fresh init: constants exactly, random tensors with the same mean and spread (too few
    values to compare a spread: random, not zero, no larger than an init's scale)."""
    loaded, fresh = loaded.double(), fresh.double()
    assert torch.isfinite(loaded).all(), name
    if fresh.numel() < 2 or fresh.std() == 0:
        assert torch.equal(loaded, fresh), name
        return
    if fresh.numel() < 64:
        assert 0 < loaded.abs().max() <= 1 and loaded.std() > 0, (name, loaded)
        return
    assert abs(loaded.std() / fresh.std() - 1) < 0.15, (name, loaded.std(), fresh.std())
    assert abs(loaded.mean() - fresh.mean()) < 0.2 * fresh.std() + 1e-6, (name, loaded.mean(), fresh.mean())


def test_a_saved_model_loaded_with_new_heads_initialises_them_like_a_fresh_model(tmp_path):
    torch.manual_seed(2)
    base, _ = create_model_and_processor("tiny")
    base.save_pretrained(tmp_path)
    heads = {"lovt": SMALL_LOVT, "radiomics": {"label_names": ["a", "b"], "encoder_hidden_dim": 64},
             "region_match": {"hidden_dim": 256}}
    loaded = VLPModel.from_pretrained(tmp_path, heads=heads)
    fresh, processor = create_model_and_processor("tiny", heads=heads)
    saved = load_file(tmp_path / "model.safetensors")
    state, fresh_state = loaded.state_dict(), fresh.state_dict()
    assert set(state) == set(fresh_state)
    for name, tensor in state.items():
        if name in saved:  # what the checkpoint holds is loaded as it was saved
            assert torch.equal(tensor, saved[name]), name
        else:
            assert name.split(".")[0] in heads, name
            _close_in_distribution(tensor, fresh_state[name], name)
    # and it trains: one step to a finite loss that moves the new heads
    batch = _batch(processor)
    labels = torch.tensor([[1.0, 0.0], [NAN, 1.0], [0.0, 0.0], [1.0, NAN]])
    optimizer = torch.optim.AdamW(loaded.parameters(), lr=1e-3)
    before = loaded.lovt.cross_attention.key.weight.detach().clone()
    out = loaded(**batch, labels=labels, return_loss=True)
    assert torch.isfinite(out.loss) and {"lovt/local_region_to_attended", "radiomics/contrastive"} <= set(out.losses)
    out.loss.backward()
    optimizer.step()
    assert not torch.equal(before, loaded.lovt.cross_attention.key.weight)
    assert all(torch.isfinite(p).all() for p in loaded.parameters())


def test_a_checkpoint_with_every_key_loads_bit_identical(tmp_path):
    torch.manual_seed(3)
    model, processor = create_model_and_processor("tiny", heads={"lovt": SMALL_LOVT, "radiomics": {"label_names": ["a"]}})
    model.train()
    model(**_batch(processor), labels=torch.tensor([[1.0], [0.0], [NAN], [1.0]]), return_loss=True)  # moves buffers
    model.save_pretrained(tmp_path)
    loaded = VLPModel.from_pretrained(tmp_path)
    state = loaded.state_dict()
    for name, tensor in model.state_dict().items():
        assert torch.equal(state[name], tensor), name
    for (name, a), (_, b) in zip(model.named_buffers(), loaded.named_buffers()):  # non-persistent ones too
        assert torch.equal(a, b), name
    # a head left out at load time is dropped with its loss weights
    without = VLPModel.from_pretrained(tmp_path, heads=["radiomics"])
    assert without.head_names == ("radiomics",) and not hasattr(without, "lovt")
    assert torch.equal(without.radiomics.classifier.weight, model.radiomics.classifier.weight)


def test_vlp_01_checkpoints_load(tmp_path):
    """vlp 0.1 wrote `heads` as a list, each head's settings (with its loss weights) as a top-level key."""
    torch.manual_seed(4)
    model, processor = create_model_and_processor(
        "tiny", heads={"lovt": SMALL_LOVT}, loss={"weights": {"global_image_to_text": 0.75}})
    model.eval().save_pretrained(tmp_path)
    config = json.loads((tmp_path / "config.json").read_text())
    config["heads"] = ["lovt"]
    config["lovt"] = {**SMALL_LOVT, "weights": {"local_region_to_attended": 0.5}}
    config["radiomics"] = None
    config["loss"]["weights"] = {"global_image_to_text": 0.75, "global_text_to_image": 0.25}
    (tmp_path / "config.json").write_text(json.dumps(config))
    old = VLPModel.from_pretrained(tmp_path).eval()
    assert old.config.heads["lovt"].proj_dim == 32
    weights = old.config.loss_weights()
    assert (weights["global_image_to_text"], weights["global_text_to_image"]) == (0.75, 0.25)
    assert (weights["lovt/local_region_to_attended"], weights["lovt/local_attended_to_region"]) == (0.5, 0.375)
    batch = _batch(processor)
    with torch.no_grad():
        torch.testing.assert_close(old(**batch).region_embeds, model(**batch).region_embeds)


# --------------------------------------------------------------------------------- idle parameters
IDLE_CASES = {
    # nothing trains the radiomics encoder without its contrastive term
    "radiomics_contrastive_0": dict(heads={"radiomics": {"label_names": ["a", "b"]}},
                                    loss={"weights": {"radiomics/contrastive": 0.0}}),
    # without global_from_pooling the attention pooling only weights the local terms, detached
    "lovt_tower_pooling": dict(heads={"lovt": {**SMALL_LOVT, "global_from_pooling": False,
                                               "element_weighting": "uniform"}}),
    # a RoBERTa text tower: built without the pooler the tower never reads
    "roberta": dict(text_tower={"model_config": {"model_type": "roberta", "hidden_size": 48, "num_hidden_layers": 1,
                                                 "num_attention_heads": 2, "intermediate_size": 64,
                                                 "max_position_embeddings": 160, "pad_token_id": 0}}),
    # a ConvNeXt under LoVT: LoVT pools the regions, so the tower's own head norm is idle
    "convnext_lovt": dict(image_tower={"model_name": "convnext_atto", "image_size": 64}, heads={"lovt": SMALL_LOVT}),
}


@pytest.mark.parametrize("case", list(IDLE_CASES))
def test_idle_parameters_are_exactly_those_the_loss_leaves_without_gradient(case):
    torch.manual_seed(5)
    model, processor = create_model_and_processor("tiny", **IDLE_CASES[case])
    labels = torch.tensor([[1.0, 0.0], [NAN, 1.0], [0.0, 0.0], [1.0, NAN]])
    batch = _batch(processor)
    out = model(**batch, labels=labels if model.config.has_head("radiomics") else None, return_loss=True)
    out.loss.backward()
    without_gradient = sorted(n for n, p in model.named_parameters() if p.requires_grad and p.grad is None)
    assert model.idle_parameters() == without_gradient
    if case == "convnext_lovt":  # timm's ConvNeXt pools through head.norm
        assert without_gradient == ["image_tower.model.head.norm.bias", "image_tower.model.head.norm.weight"]
    if case == "roberta":
        assert without_gradient == [] and not any("pooler" in n for n, _ in model.named_parameters())


# ------------------------------------------------------------------------------- no silent failures
def test_missing_head_inputs_are_an_error_that_says_how_to_get_them():
    model, processor = create_model_and_processor("tiny", heads={"lovt": SMALL_LOVT})
    batch = _batch(processor, return_sentence_ids=False)
    with pytest.raises(ValueError, match=r"'lovt' head needs.*sentence_ids: call the processor with "
                                         r"return_sentence_ids=True"):
        model(**batch, return_loss=True)
    with torch.no_grad():  # outside training the head simply does not run
        assert "lovt" not in model(**batch).heads
    images_only = processor(images=_images(), return_tensors="pt")
    with pytest.raises(ValueError, match="input_ids: give reports"):
        model(**images_only, return_loss=True)


def test_the_processor_of_a_model_returns_what_its_heads_need(tmp_path):
    """The README's two lines (`processor(...)`, `model(**batch, return_loss=True)`) train LoVT with its local loss,
    with the processor as created and as saved and loaded."""
    model, processor = create_model_and_processor("tiny", heads={"lovt": SMALL_LOVT, "radiomics": {"label_names": ["a"]}})
    processor.save_pretrained(tmp_path)
    for proc in (processor, AutoProcessor.from_pretrained(tmp_path)):
        assert proc.return_sentence_ids and proc.return_raw_images
        batch = _batch(proc)
        assert {"sentence_ids", "raw_images"} <= set(batch)
        out = model(**batch, return_loss=True)
        assert "lovt/local_region_to_attended" in out.losses and "radiomics/contrastive" in out.losses
    plain = create_model_and_processor("tiny")[1]
    assert not plain.return_sentence_ids and "sentence_ids" not in _batch(plain)


def test_unknown_arguments_and_settings_are_errors():
    model, processor = create_model_and_processor("tiny")
    with pytest.raises(TypeError, match="pixel_valeus"):
        model(pixel_valeus=torch.zeros(1, 3, 128, 128))
    with pytest.raises(TypeError, match="return_sentence_id"):
        processor(text=["a"], return_sentence_id=True)
    with pytest.raises(ValueError, match=r"proj_dimm.*heads.lovt.*valid keys"):
        VLPConfig(heads={"lovt": {"proj_dimm": 3}})
    with pytest.raises(ValueError, match="unknown head 'lovtt'"):
        VLPModel.from_pretrained("unused", heads=["lovtt"], config=VLPConfig())
    # a partial weight table changes only what it names (the other global term keeps 0.5)
    config = VLPConfig(loss={"weights": {"global_image_to_text": 0.75}})
    assert config.loss_weights() == {"global_image_to_text": 0.75, "global_text_to_image": 0.5}
    with pytest.raises(ValueError, match=r"unknown loss term.*global_image_to_txt"):
        VLPConfig(loss={"weights": {"global_image_to_txt": 0.75}})


def test_registering_heads_checks_the_protocol():
    @dataclass
    class Settings:
        size: int = 1

    with pytest.raises(ValueError, match="identifier"):
        register_head(type("Bad", (vlp.VLPHead,), {"name": "bad-name", "config_class": Settings}))
    with pytest.raises(TypeError, match="dataclass"):
        register_head(type("Bad", (vlp.VLPHead,), {"name": "bad", "config_class": dict}))
    with pytest.raises(ValueError, match="already registered"):
        register_head(type("Other", (vlp.VLPHead,), {"name": "lovt", "config_class": Settings}))


def test_at_most_one_head_replaces_the_global_pooling():
    @register_head
    class SecondLoVT(LoVTHead):  # another head with LoVT's attention pooling
        name = "second_lovt"

    with pytest.raises(ValueError, match=r"each replace the global pooling"):
        create_model_and_processor("tiny", heads={"lovt": SMALL_LOVT, "second_lovt": SMALL_LOVT})
