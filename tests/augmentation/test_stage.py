"""The augmentation stage: seeded per sample, epoch and view; targets move with each view; presets and settings
are checked; LoVT's sentence swaps."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest
import torch

from vlp.augmentation import AugmentationConfig, Augmenter, TextAugmentationConfig, augment_report, load_augmentation
from vlp.augmentation.text import _geometric
from vlp.processing import VLPImageProcessor

REPORT = "Heart size is normal. No effusion. Small nodule in the left lung. Lines and tubes unchanged."


def _item(index=3, shape=(180, 150), seed=0):
    rng = np.random.default_rng(seed)
    image = (rng.random(shape) * 0.2).astype(np.float32)
    image[40:70, 30:80] = 1.0  # a bright lesion, marked by a box, a mask and a heatmap
    mask = np.zeros(shape, dtype=bool)
    mask[40:70, 30:80] = True
    return {"index": index, "image": image, "text": REPORT, "boxes": [{"label": "Nodule", "x": 30.0, "y": 40.0,
                                                                     "w": 50.0, "h": 30.0}],
            "masks": mask, "heatmaps": image.copy()}


@pytest.fixture(scope="module")
def lovt():
    return Augmenter(load_augmentation("lovt"), VLPImageProcessor(image_size=96), seed=7)


def test_a_view_depends_on_seed_epoch_index_and_nothing_else(lovt):
    a, b = lovt(_item(), epoch=2), lovt(_item(), epoch=2)
    assert torch.equal(a["image"], b["image"]) and a["text"] == b["text"] and a["boxes"] == b["boxes"]
    for other in (lovt(_item(), epoch=3), lovt(_item(index=4), epoch=2),
                  Augmenter(lovt.config, lovt.image_processor, seed=8)(_item(), epoch=2)):
        assert not torch.equal(other["image"], a["image"])
    # the working size is the processor's resize: longer side 96, aspect kept
    assert tuple(a["image"].shape) == (96, 80) and 0 <= a["image"].min() and a["image"].max() <= 1


def test_targets_stay_on_the_lesion_through_every_view(lovt):
    """Geometric transforms only (intensity ones would change the image but not the targets): the box, the mask and
    the heatmap mark the bright lesion in each of many views."""
    geometric = AugmentationConfig(transforms=[t for t in load_augmentation("lovt").transforms
                                               if t["name"] in ("random_resized_crop", "random_affine")] +
                                   [{"name": "horizontal_flip", "p": 0.5}])
    stage = Augmenter(geometric, VLPImageProcessor(image_size=180), seed=0)  # no resize: the warp interpolates once
    for epoch in range(12):
        view = stage(_item(), epoch)
        image, mask, heat = view["image"], view["masks"], view["heatmaps"]
        assert mask.dtype == torch.bool and mask.shape == image.shape == heat.shape
        torch.testing.assert_close(heat, image)  # warped with the same samples
        bright = image > 0.6
        if bright.sum() < 20:  # the crop left the lesion out: its box is empty or a sliver
            box = view["boxes"][0]
            assert box["w"] * box["h"] < 40
            continue
        assert (mask == bright).float().mean() > 0.97
        box = view["boxes"][0]
        rows, cols = (bright.nonzero().double() + 0.5).unbind(-1)
        # every bright pixel lies in the box, and the box is tight around them (a zoomed edge or a rotated corner
        # blurs over a few pixels, so its bright part ends a little inside the box)
        x0, x1, y0, y1 = box["x"], box["x"] + box["w"], box["y"], box["y"] + box["h"]
        assert x0 - 1 <= cols.min() <= x0 + 4.5 and x1 - 4.5 <= cols.max() <= x1 + 1
        assert y0 - 1 <= rows.min() <= y0 + 4.5 and y1 - 4.5 <= rows.max() <= y1 + 1


def test_several_views_differ_and_each_has_its_targets():
    config = load_augmentation("lovt")
    config.views = 3
    stage = Augmenter(config, VLPImageProcessor(image_size=64), seed=0)
    out = stage(_item(), epoch=0)
    assert len(out["views"]) == 2 and len(out["view_targets"]) == 2
    images = [out["image"], *out["views"]]
    assert all(not torch.equal(images[i], images[j]) for i in range(3) for j in range(i + 1, 3))
    assert all("boxes" in targets and "masks" in targets for targets in out["view_targets"])


def test_none_and_settings_are_checked():
    assert load_augmentation(None) is None and load_augmentation("none") is None
    with pytest.raises(ValueError, match="unknown augmentation 'lvot'.*lovt"):
        load_augmentation("lvot")
    with pytest.raises(ValueError, match="unknown transform 'random_crop'.*random_resized_crop"):
        AugmentationConfig(transforms=[{"name": "random_crop"}])
    with pytest.raises(ValueError, match=r"scael.*valid keys"):
        AugmentationConfig(transforms=[{"name": "random_resized_crop", "scael": [0.5, 1.0]}])
    with pytest.raises(ValueError, match="scale"):
        AugmentationConfig(transforms=[{"name": "random_resized_crop", "scale": [0.9, 0.5]}])
    with pytest.raises(ValueError, match="sentence_shuffling"):
        TextAugmentationConfig(sentence_shuffling="permute")
    # the preset is LoVT's published augmentation, without the horizontal flip
    names = [t["name"] for t in load_augmentation("lovt").transforms]
    assert names == ["random_resized_crop", "random_affine", "color_jitter", "gaussian_blur"]


def test_random_swaps_keep_the_sentences_and_follow_lovts_geometric_count():
    config = TextAugmentationConfig(sentence_shuffling="random_swaps", swap_prob=0.6)
    sentences = REPORT.split(". ")
    changed = 0
    for seed in range(200):
        out = augment_report(REPORT, config, torch.Generator().manual_seed(seed))
        assert sorted(s.rstrip(".") for s in out.split(". ")) == sorted(s.rstrip(".") for s in sentences)
        changed += out != REPORT
    assert 0.3 < changed / 200 < 0.8  # P(no swap) = 0.4, and a swap of a sentence with itself changes nothing
    counts = Counter(_geometric(0.6, torch.Generator().manual_seed(s)) for s in range(4000))
    for k in range(4):  # P(k) = 0.4 * 0.6^k, torch's Geometric(probs=0.4)
        expected = math.exp(torch.distributions.Geometric(probs=torch.tensor(0.4)).log_prob(torch.tensor(float(k))))
        assert abs(counts[k] / 4000 - expected) < 0.03, k


def test_sentence_sampling():
    one = TextAugmentationConfig(sentence_sampling="random_sentence")
    assert all(augment_report(REPORT, one, torch.Generator().manual_seed(s)).count(".") == 1 for s in range(20))
    crop = TextAugmentationConfig(sentence_sampling="random_crop", crop_range=(0.5, 0.5))
    out = augment_report(REPORT, crop, torch.Generator().manual_seed(0))
    assert out.count(".") == 2 and out in REPORT  # two consecutive sentences of four


def test_views_reach_the_processor_in_range_without_a_warning(lovt):
    import warnings

    processor = VLPImageProcessor(image_size=96)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a PixelRangeWarning would mean the processor rescaled the view
        for epoch in range(20):
            view = lovt(_item(), epoch)["image"]
            assert 0 <= view.min() and view.max() <= 1
            processor(images=[view])
