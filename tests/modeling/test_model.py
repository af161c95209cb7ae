"""VLPModel: shapes, save/load through the Auto classes, tower errors, feature caching."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from transformers import AutoConfig, AutoModel, AutoProcessor

import vlp
from vlp import FeatureCache, VLPConfig, create_model_and_processor
from vlp.modeling.towers import TowerUnavailableError

REPORTS = ["Heart size is normal. No pneumothorax.", "Cardiomegaly.", "Small right pleural effusion.",
           "The lungs are clear. No acute disease."]


def _images(n=4, seed=0, shape=(160, 128)):
    rng = np.random.default_rng(seed)
    return [(rng.random(shape) * 255).astype(np.uint8) for _ in range(n)]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model_and_processor("tiny")


def test_forward_shapes_and_named_losses(tiny):
    model, processor = tiny
    batch = processor(text=REPORTS, images=_images(), return_tensors="pt", padding=True)
    out = model(**batch, return_loss=True)
    dim = model.config.projection_dim
    assert out.image_embeds.shape == (4, dim) and out.text_embeds.shape == (4, dim)
    torch.testing.assert_close(out.image_embeds.norm(dim=-1), torch.ones(4))
    assert out.logits_per_image.shape == (4, 4)
    torch.testing.assert_close(out.logits_per_image, out.logits_per_text.T)
    assert set(out.losses) == {"global_image_to_text", "global_text_to_image"}
    expected = 0.5 * out.losses["global_image_to_text"] + 0.5 * out.losses["global_text_to_image"]
    torch.testing.assert_close(out.loss, expected)
    assert out.region_grid == (8, 8)  # 128 px, resnet10t at output stride 16
    out.loss.backward()
    assert model.image_projection.weight.grad is not None and model.text_projection.weight.grad is not None


def test_get_features_equal_forward_embeddings(tiny):
    model, processor = tiny
    model.eval()
    batch = processor(text=REPORTS, images=_images(), return_tensors="pt", padding=True)
    with torch.no_grad():
        out = model(**batch)
        img = model.get_image_features(pixel_values=batch["pixel_values"])
        txt = model.get_text_features(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"])
    torch.testing.assert_close(img, out.image_embeds)
    torch.testing.assert_close(txt, out.text_embeds)


def test_resnet_tower_gives_feature_map_cells_as_regions():
    model, processor = create_model_and_processor("tiny", image_tower={"model_name": "resnet18", "image_size": 64,
                                                                       "model_kwargs": {}})
    batch = processor(text=REPORTS[:2], images=_images(2), return_tensors="pt", padding=True)
    features = model.image_tower(batch["pixel_values"])
    assert features.grid == (2, 2)  # stride 32
    assert features.regions.shape == (2, 4, model.image_tower.num_features)
    out = model(**batch, return_loss=True)
    assert torch.isfinite(out.loss)


def test_save_and_load_with_auto_classes_gives_equal_outputs(tiny, tmp_path):
    model, processor = tiny
    model.eval()
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    config = AutoConfig.from_pretrained(tmp_path)
    assert isinstance(config, VLPConfig)
    loaded = AutoModel.from_pretrained(tmp_path).eval()
    loaded_processor = AutoProcessor.from_pretrained(tmp_path)
    assert isinstance(loaded, vlp.VLPModel) and isinstance(loaded_processor, vlp.VLPProcessor)
    images = _images(seed=3)
    a = processor(text=REPORTS, images=images, return_tensors="pt", padding=True)
    b = loaded_processor(text=REPORTS, images=images, return_tensors="pt", padding=True)
    for key in a:
        torch.testing.assert_close(a[key], b[key])
    with torch.no_grad():
        torch.testing.assert_close(model(**a).logits_per_image, loaded(**b).logits_per_image)


def test_unavailable_hub_text_model_fails_clearly_without_network():
    with pytest.raises(TowerUnavailableError, match="local directory"):
        create_model_and_processor("tiny", text_tower={"model_name": "no-such-org/no-such-model",
                                                       "model_config": None, "tokenizer": None})


def test_unknown_config_keys_are_named():
    with pytest.raises(ValueError, match="projection_dimm"):
        VLPConfig(projection_dimm=3)
    with pytest.raises(ValueError, match=r"image_sise.*valid keys"):
        create_model_and_processor("tiny", image_tower={"image_sise": 64})
    with pytest.raises(ValueError, match="registered heads are: lovt, radiomics"):
        VLPConfig(heads=["lovtt"])
    with pytest.raises(ValueError, match="unknown preset"):
        create_model_and_processor("no-such-preset")


def test_feature_cache_gives_the_full_batch_gradient(tiny):
    """Two micro-batches whose losses see each other's cached embeddings give the gradient of one big batch."""
    model, processor = tiny
    model.eval()  # no dropout: the cached and recomputed embeddings are identical
    batch = processor(text=REPORTS, images=_images(seed=5), return_tensors="pt", padding=True)
    params = [p for p in model.parameters() if p.requires_grad]

    model.zero_grad()
    model(**batch, return_loss=True).loss.backward()
    full = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]

    with torch.no_grad():
        cache_img = model.get_image_features(batch["pixel_values"])
        cache_txt = model.get_text_features(batch["input_ids"], batch["attention_mask"])
    model.zero_grad()
    for start in (0, 2):
        part = {k: v[start:start + 2] for k, v in batch.items()}
        out = model(**part, return_loss=True, feature_cache=FeatureCache(cache_img, cache_txt, start, num_chunks=2))
        out.loss.backward()
    accumulated = [p.grad if p.grad is not None else torch.zeros_like(p) for p in params]
    for a, b in zip(full, accumulated):
        torch.testing.assert_close(a, b, rtol=1e-3, atol=1e-5)  # float32 sums in another order


def test_gradient_checkpointing_keeps_the_loss(tiny):
    model, processor = tiny
    model.eval()
    batch = processor(text=REPORTS, images=_images(seed=7), return_tensors="pt", padding=True)
    with torch.no_grad():
        plain = model(**batch, return_loss=True).loss
    model.gradient_checkpointing_enable()
    try:
        loss = model(**batch, return_loss=True).loss
        loss.backward()
    finally:
        model.gradient_checkpointing_disable()
    torch.testing.assert_close(loss.detach(), plain)


def test_siglip_option_trains_a_bias():
    model, processor = create_model_and_processor("tiny", loss={"contrastive": "siglip"})
    batch = processor(text=REPORTS, images=_images(), return_tensors="pt", padding=True)
    out = model(**batch, return_loss=True)
    assert set(out.losses) == {"global_sigmoid"}
    out.loss.backward()
    assert model.logit_bias.grad is not None


@pytest.mark.parametrize("heads", [[], ["lovt"], ["lovt", "radiomics"]])
def test_every_parameter_learns_from_the_loss(heads):
    """No parameter idles (DistributedDataParallel would stop on it): with LoVT on, its attention pooling gives
    the global embeddings (LoVT's `global_from_local`), so the global loss trains it."""
    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny", heads=heads, lovt={"proj_dim": 32, "proj_hidden_dim": 64},
                                                  radiomics={"label_names": ["Cardiomegaly", "Effusion"]})
    batch = processor(text=REPORTS, images=_images(), return_tensors="pt", padding=True,
                      return_sentence_ids=True, return_raw_images="radiomics" in heads)
    labels = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [float("nan"), 0.0]])
    if heads:
        with torch.no_grad():
            model.eval()  # no dropout: the two paths must agree exactly
            out = model(**batch)
            pooled = model.lovt.pool_regions(model.image_tower(batch["pixel_values"]).regions)
            torch.testing.assert_close(out.image_embeds, torch.nn.functional.normalize(model.image_projection(pooled)))
            torch.testing.assert_close(model.get_text_features(batch["input_ids"], batch["attention_mask"],
                                                               batch["sentence_ids"]), out.text_embeds)
            model.train()
    out = model(**batch, labels=labels, return_loss=True)
    out.loss.backward()
    idle = [name for name, p in model.named_parameters() if p.requires_grad and p.grad is None]
    assert idle == []
