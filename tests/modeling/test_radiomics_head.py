"""The radiomics head: config, masked BCE, which class is explained, the Grad-CAM -> box -> radiomics path on a
non-square image, and the head inside `VLPModel` (ResNet and the tiny ViT preset, with and without reports)."""
from __future__ import annotations

import math

import pytest
import torch

from vlp import VLPConfig, VLPModel
from vlp.losses.ntxent import nt_xent_loss
from vlp.modeling.heads.base import HeadInputs, TowerDims
from vlp.modeling.heads.radiomics import (LOSS_NAMES, RadiomicsHead, RadiomicsHeadConfig, explain_targets,
                                          masked_bce)
from vlp.modeling.outputs import ImageEncoding
from vlp.modeling.towers import ImageFeatures
from vlp.radiomics import RadiomicsExtractor

NAN = float("nan")
TERMS = {f"radiomics/{name}" for name in LOSS_NAMES}  # the head's terms as the model names them


def _head(settings: dict, image_dim: int, embed_dim: int, weights=None) -> RadiomicsHead:
    return RadiomicsHead(RadiomicsHeadConfig.from_dict(settings), TowerDims(image_dim, 8, embed_dim), weights)


def _inputs(regions, grid, image_embeds, raw, labels, return_loss):
    features = ImageFeatures(pooled=regions.mean(1), regions=regions, grid=grid)
    return HeadInputs(image=ImageEncoding(image_embeds, features), raw_images=raw, labels=labels,
                      return_loss=return_loss)
SMALL_TEXT = {"model_name": None, "model_config": {"hidden_size": 32, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "intermediate_size": 64,
                                                   "vocab_size": 50}}


# ------------------------------------------------------------------------------------------------ config
def test_config_round_trip_defaults_and_unknown_keys():
    cfg = RadiomicsHeadConfig.from_dict({"label_names": ["Mass", "Nodule"], "cam_threshold": 0.4})
    assert cfg.temperature == 0.05  # Han et al.
    assert RadiomicsHeadConfig.from_dict(cfg.to_dict()) == cfg
    with pytest.raises(ValueError, match=r"cam_treshold"):
        RadiomicsHeadConfig.from_dict({"cam_treshold": 0.5})
    with pytest.raises(ValueError, match="radiomics/contrast"):
        VLPConfig(heads=["radiomics"], loss={"weights": {"radiomics/contrast": 1.0}})
    with pytest.raises(ValueError, match="explain"):
        RadiomicsHeadConfig(explain="bottom")
    with pytest.raises(ValueError, match="unknown radiomics feature classes"):
        _head({"feature_classes": ["glcm", "wavelet"]}, image_dim=8, embed_dim=4)


def test_weights_default_to_one_and_vlp_01_names_still_load():
    """vlp 0.1 kept the head's weights in its own settings, as radiomics_classification/_contrastive."""
    config = VLPConfig(heads=["radiomics"], radiomics={"label_names": ["a"],
                                                       "weights": {"radiomics_contrastive": 0.5}})
    assert config.head_loss_weights("radiomics") == {"classification": 1.0, "contrastive": 0.5}
    config = VLPConfig(heads=["radiomics"], loss={"weights": {"radiomics_classification": 2.0}})
    assert config.head_loss_weights("radiomics") == {"classification": 2.0, "contrastive": 1.0}


# ----------------------------------------------------------------------------------------- BCE, targets
def test_bce_uses_only_the_known_entries():
    logits = torch.tensor([[2.0, -1.0, 0.5], [0.3, 4.0, -2.0]], requires_grad=True)
    labels = torch.tensor([[1.0, NAN, 0.0], [NAN, NAN, 1.0]])
    loss = masked_bce(logits, labels)

    def bce(z, y):  # written out: -[y log s(z) + (1 - y) log(1 - s(z))]
        s = 1 / (1 + math.exp(-z))
        return -(y * math.log(s) + (1 - y) * math.log(1 - s))

    expected = (bce(2.0, 1) + bce(0.5, 0) + bce(-2.0, 1)) / 3
    assert loss.item() == pytest.approx(expected, rel=1e-6)
    loss.backward()
    assert logits.grad[0, 1] == 0 and logits.grad[1, 0] == 0 and logits.grad[1, 1] == 0
    assert logits.grad[0, 0] != 0
    # an unlabelled batch: zero, still connected to the classifier
    empty = masked_bce(logits, torch.full((2, 3), NAN))
    assert empty.item() == 0 and empty.requires_grad


def test_explained_class_is_the_labelled_positive_else_the_top_prediction():
    logits = torch.tensor([[0.1, 3.0, 0.2, 0.0], [0.1, 3.0, 0.2, 0.5], [0.0, 0.3, 2.0, 0.1], [1.0, 0.0, 0.0, 0.0]])
    labels = torch.tensor([[1.0, 0.0, NAN, 0.0],  # one positive: class 0 although class 1 scores higher
                           [0.0, NAN, 1.0, 1.0],  # two positives: the higher-scoring one, class 3
                           [NAN, NAN, NAN, NAN],  # unlabelled: top prediction, class 2
                           [0.0, 0.0, 0.0, 0.0]])  # labelled negative everywhere: top prediction, class 0
    assert explain_targets(logits, labels).tolist() == [0, 3, 2, 0]
    assert explain_targets(logits, labels, "top").tolist() == [1, 1, 2, 0]
    assert explain_targets(logits, None).tolist() == [1, 1, 2, 0]


# ------------------------------------------------------------------- map -> box -> radiomics geometry
def test_cam_peak_selects_the_right_pixels_of_the_original_image_for_radiomics():
    """A hand-made 3 x 5 grid of regions on a 48 x 80 (non-square) image whose class-0 Grad-CAM peaks at
    cell (2, 1): the head's box is that cell's 16 x 16 pixel block (rows 32..47, columns 16..31), and its
    radiomics embedding is the encoder applied to PyRadiomics-style features of exactly that block of the
    original image (scaled to 0..255)."""
    torch.manual_seed(0)
    head = _head({"label_names": ["a", "b"], "min_box_size": 4}, image_dim=2, embed_dim=8).eval()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 1.0]]))
        head.classifier.bias.zero_()
    regions = torch.zeros(1, 15, 2)
    regions[0, 2 * 5 + 1, 0] = 5.0  # channel 0 (class "a") fires at cell (2, 1)
    regions[0, 7, 1] = 1.0  # channel 1 fires elsewhere, and class "a" is labelled positive
    raw = torch.rand(1, 48, 80)
    image_embeds = torch.nn.functional.normalize(torch.randn(1, 8), dim=-1)
    out = head(_inputs(regions, (3, 5), image_embeds, raw, torch.tensor([[1.0, 0.0]]), return_loss=False))
    assert out.cams.shape == (1, 3, 5) and out.cams[0, 2, 1] == 1 and out.cams.sum() == 1
    (box,) = head.region_boxes(out.cams, (48, 80))
    assert box == (16.0, 32.0, 16.0, 16.0)
    mask = torch.zeros(1, 48, 80, dtype=torch.bool)
    mask[0, 32:48, 16:32] = True
    features = RadiomicsExtractor("torch")(raw.double() * 255, mask)
    torch.testing.assert_close(out.radiomics_embeds, head.encoder(features), rtol=1e-5, atol=1e-6)


def _empty_map_case(empty_cam, all_empty=False):
    """Three images on a 2 x 2 grid, class "a" labelled positive in all: its evidence (channel 0 through the
    identity classifier) is positive at one cell of images 0 and 2, negative everywhere in image 1, whose
    Grad-CAM map is therefore all zero (with `all_empty`, negative everywhere in every image)."""
    torch.manual_seed(0)
    head = _head({"label_names": ["a", "b"], "min_box_size": 4, "empty_cam": empty_cam, "temperature": 0.5},
                 image_dim=2, embed_dim=8).train()
    with torch.no_grad():
        head.classifier.weight.copy_(torch.eye(2))
        head.classifier.bias.zero_()
    regions = torch.zeros(3, 4, 2)
    regions[0, 0, 0] = regions[2, 3, 0] = 2.0
    regions[1, :, 0] = -1.0
    if all_empty:
        regions[..., 0] = -1.0
    raw = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(1))
    image_embeds = torch.nn.functional.normalize(torch.randn(3, 8), dim=-1).requires_grad_(True)
    out = head(_inputs(regions, (2, 2), image_embeds, raw, torch.tensor([[1.0, 0.0]] * 3), return_loss=True))
    return head, out, raw, image_embeds


def test_all_zero_maps_use_the_whole_image_or_are_left_out_of_the_contrastive_loss():
    boxes = [(0.0, 0.0, 16.0, 16.0), (0.0, 0.0, 32.0, 32.0), (16.0, 16.0, 16.0, 16.0)]  # cell, whole image, cell
    for empty_cam, paired in (("image", [0, 1, 2]), ("skip", [0, 2])):
        head, out, raw, image_embeds = _empty_map_case(empty_cam)
        assert out.empty_cams.tolist() == [False, True, False]
        assert head.region_boxes(out.cams, (32, 32)) == boxes
        # every row's embedding is that of its box (the whole image for the empty map)
        features = head.radiomic_features(raw, boxes)
        signed_log = torch.sign(features) * torch.log1p(features.abs())
        # the first training batch sets the standardiser's statistics: from the paired rows only
        torch.testing.assert_close(head.encoder.standardize.running_mean, signed_log[paired].float().mean(0))
        head.eval()
        torch.testing.assert_close(out.radiomics_embeds, head.encoder(features), rtol=1e-5, atol=1e-6)
        expected = nt_xent_loss(image_embeds[paired], out.radiomics_embeds[paired], 0.5, gather=False)
        assert out.losses["contrastive"].item() == pytest.approx(expected.item(), rel=1e-6)
    # "skip" with every map empty: no pair, a zero loss that still reaches the encoder (data-parallel runs)
    head, out, _, _ = _empty_map_case("skip", all_empty=True)
    assert out.empty_cams.all() and out.losses["contrastive"].item() == 0.0
    standardize = head.encoder.standardize
    assert int(standardize.num_batches) == 0 and standardize.running_mean.abs().sum() == 0  # no row fitted it
    out.losses["contrastive"].backward()
    assert head.encoder.mlp[0].weight.grad is not None
    with pytest.raises(ValueError, match="empty_cam"):
        RadiomicsHeadConfig(empty_cam="drop")


def test_raw_images_must_be_unit_range():
    head = _head({"label_names": ["a"]}, image_dim=4, embed_dim=4)
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        head.radiomic_features(torch.rand(1, 16, 16) * 255, [(0.0, 0.0, 8.0, 8.0)])


# -------------------------------------------------------------------------------- inside VLPModel (ResNet)
def _resnet_model(weights=None, **radiomics):
    cfg = VLPConfig(image_tower={"model_name": "resnet18", "image_size": 64, "in_chans": 1}, text_tower=SMALL_TEXT,
                    projection_dim=16, loss={"weights": weights or {}},
                    heads={"radiomics": {"label_names": ["a", "b", "c"], "encoder_hidden_dim": 32, **radiomics}})
    torch.manual_seed(0)
    return VLPModel(cfg)


def _batch(n=4, h=64, w=96):
    g = torch.Generator().manual_seed(3)
    raw = torch.rand(n, h, w, generator=g)
    labels = torch.tensor([[1.0, 0.0, NAN], [NAN, NAN, NAN], [0.0, 0.0, 1.0], [NAN, 1.0, 0.0]])[:n]
    return {"pixel_values": ((raw - 0.5) / 0.25)[:, None], "raw_images": raw, "labels": labels}


def test_end_to_end_loss_gradients_and_gradient_free_extraction():
    model = _resnet_model()
    batch = _batch()
    batch["raw_images"].requires_grad_(True)  # extraction must not build a graph to the raw image
    out = model(**batch, return_loss=True)
    # Grad-CAM inside forward accumulated nothing
    assert all(p.grad is None for p in model.parameters())
    assert set(out.losses) == TERMS
    assert all(torch.isfinite(v) for v in out.losses.values()) and torch.isfinite(out.loss)
    assert out.class_logits.shape == (4, 3) and out.cams.shape == (4, 2, 3)  # 64 x 96 input, stride 32
    assert out.cams.min() >= 0 and out.cams.max() <= 1 and not out.cams.requires_grad
    assert out.radiomics_embeds.shape == (4, 16)
    out.loss.backward()
    head = model.radiomics
    for name, p in [("classifier", head.classifier.weight), ("encoder", head.encoder.mlp[0].weight),
                    ("encoder out", head.encoder.mlp[-1].weight), ("tower", model.image_tower.model.conv1.weight),
                    ("projection", model.image_projection.weight)]:
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    assert batch["raw_images"].grad is None
    # the named terms are weighted with the head's defaults
    assert out.loss.item() == pytest.approx(sum(v.item() for v in out.losses.values()), rel=1e-6)


def test_contrastive_term_trains_the_tower_without_labels():
    model = _resnet_model()
    batch = _batch()
    del batch["labels"]
    out = model(**batch, return_loss=True)
    assert out.losses["radiomics/classification"].item() == 0
    out.loss.backward()
    assert model.image_tower.model.conv1.weight.grad.abs().sum() > 0
    assert model.radiomics.encoder.mlp[0].weight.grad.abs().sum() > 0


def test_eval_under_no_grad_and_errors():
    model = _resnet_model().eval()
    batch = _batch()
    with torch.no_grad():
        out = model(pixel_values=batch["pixel_values"], raw_images=batch["raw_images"])
    assert out.cams.shape == (4, 2, 3) and out.radiomics_embeds.shape == (4, 16) and out.losses == {}
    assert out.class_logits.grad_fn is None
    with torch.no_grad():  # images only, no raw images: logits and maps, no radiomics
        out = model(pixel_values=batch["pixel_values"])
    assert out.cams is not None and out.radiomics_embeds is None
    model.train()
    with pytest.raises(ValueError, match="return_raw_images=True"):
        model(pixel_values=batch["pixel_values"], labels=batch["labels"], return_loss=True)
    with pytest.raises(ValueError, match="label_names"):
        model(**{**batch, "labels": torch.zeros(4, 5)}, return_loss=True)


def test_contrastive_weight_zero_skips_radiomics_in_training():
    model = _resnet_model(weights={"radiomics/contrastive": 0.0})
    batch = _batch()
    out = model(pixel_values=batch["pixel_values"], labels=batch["labels"], return_loss=True)
    assert set(out.losses) == {"radiomics/classification"} and out.radiomics_embeds is None
    # nothing trains the radiomics encoder then, and on images alone nothing trains the projection either
    encoder = {f"radiomics.encoder.{n}" for n, _ in model.radiomics.encoder.named_parameters()}
    assert set(model.idle_parameters()) == encoder
    image_only = set(model.idle_parameters(with_text=False))
    assert encoder | {"image_projection.weight", "text_projection.weight", "logit_scale"} <= image_only
    assert not any(name.startswith(("image_tower.", "radiomics.classifier.")) for name in image_only)


def test_save_and_load_keep_the_head(tmp_path):
    model = _resnet_model(cam_threshold=0.4).eval()
    batch = _batch()
    model.train()
    model(**batch, return_loss=True)  # updates the feature standardiser's running statistics
    model.eval()
    model.save_pretrained(tmp_path)
    loaded = VLPModel.from_pretrained(tmp_path).eval()
    assert loaded.radiomics.config == model.radiomics.config
    with torch.no_grad():
        a = model(pixel_values=batch["pixel_values"], raw_images=batch["raw_images"])
        b = loaded(pixel_values=batch["pixel_values"], raw_images=batch["raw_images"])
    torch.testing.assert_close(a.radiomics_embeds, b.radiomics_embeds)
    torch.testing.assert_close(a.cams, b.cams)


# --------------------------------------------------------------------------- the tiny ViT preset, reports
TINY_VIT = {"model_name": "vit_tiny_patch16_224", "image_size": 64,
            "model_kwargs": {"embed_dim": 96, "depth": 2, "num_heads": 3}}


@pytest.fixture(scope="module", params=["resnet", "vit"])
def tiny(request):
    """The tiny preset (a ResNet) and a tiny ViT: Grad-CAM must see the patch grid, not the CLS token."""
    from vlp import create_model_and_processor

    torch.manual_seed(0)
    overrides = {"image_tower": TINY_VIT} if request.param == "vit" else {}
    return create_model_and_processor("tiny", heads=["radiomics"], **overrides,
                                      radiomics={"label_names": ["Mass", "Nodule"], "encoder_hidden_dim": 32})


def _first_weight(model):
    return next(p for p in model.image_tower.model.parameters() if p.dim() == 4)


def _images(n=3, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [(torch.rand(90 + 10 * i, 120, generator=g) * 255).to(torch.uint8).numpy() for i in range(n)]


def test_image_only_batch(tiny):
    model, processor = tiny
    batch = processor(images=_images(), return_tensors="pt", return_raw_images=True)
    out = model(pixel_values=batch["pixel_values"], raw_images=batch["raw_images"],
                labels=torch.tensor([[1.0, NAN], [NAN, NAN], [0.0, 1.0]]), return_loss=True)
    assert out.image_embeds is not None and out.text_embeds is None
    assert set(out.losses) == TERMS and torch.isfinite(out.loss)
    assert out.cams.shape == (3, *out.region_grid) and (out.cams.amax(dim=(1, 2)) > 0).all()  # not CLS-blind
    out.loss.backward()
    assert _first_weight(model).grad.abs().sum() > 0  # the stem learns from the radiomics terms
    model.zero_grad(set_to_none=True)


def test_with_reports_adds_the_radiomics_terms_to_the_global_ones(tiny):
    model, processor = tiny
    batch = processor(text=["Small nodule in the right upper lobe.", "No acute findings.", "Left mass."],
                      images=_images(seed=1), return_tensors="pt", return_raw_images=True)
    out = model(**batch, labels=torch.tensor([[0.0, 1.0], [0.0, 0.0], [1.0, NAN]]), return_loss=True)
    assert {"global_image_to_text", "global_text_to_image", *TERMS} <= set(out.losses)
    assert torch.isfinite(out.loss)
    out.loss.backward()
    assert model.radiomics.classifier.weight.grad.abs().sum() > 0
    assert model.text_projection.weight.grad.abs().sum() > 0
    model.zero_grad(set_to_none=True)
