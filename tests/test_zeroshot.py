"""ZeroShotClassifier: output shape and both scoring rules against their formulas."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from vlp import ZeroShotClassifier, create_model_and_processor

LABELS = ["cardiomegaly", "pleural effusion", "pneumothorax"]


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny")
    return model.eval(), processor


def _images(n=5):
    rng = np.random.default_rng(0)
    return [(rng.random((96, 80)) * 255).astype(np.uint8) for _ in range(n)]


def _embed(model, processor, prompts):
    batch = processor(text=prompts, return_tensors="pt", padding=True)
    with torch.no_grad():
        return model.get_text_features(batch["input_ids"], batch["attention_mask"])


def test_pos_neg_is_the_two_prompt_softmax(tiny):
    model, processor = tiny
    clf = ZeroShotClassifier(model, processor, LABELS, mode="pos_neg", templates=(["{}."], ["No {}."]))
    images = _images()
    probs = clf(images)
    assert probs.shape == (5, 3) and ((probs > 0) & (probs < 1)).all()
    img = clf.image_embeddings(images)
    pos = _embed(model, processor, [f"{label}." for label in LABELS])
    neg = _embed(model, processor, [f"No {label}." for label in LABELS])
    s = model.scale().detach()
    expected = torch.exp(s * img @ pos.T) / (torch.exp(s * img @ pos.T) + torch.exp(s * img @ neg.T))
    torch.testing.assert_close(probs, expected, rtol=1e-4, atol=1e-5)


def test_softmax_averages_templates_and_sums_to_one(tiny):
    model, processor = tiny
    templates = ["{}.", "There is {}."]
    clf = ZeroShotClassifier(model, processor, LABELS, mode="softmax", templates=templates)
    probs = clf(_images())
    torch.testing.assert_close(probs.sum(-1), torch.ones(5))
    per_class = torch.stack([_embed(model, processor, [t.format(label) for t in templates]).mean(0)
                             for label in LABELS])
    per_class = torch.nn.functional.normalize(per_class, dim=-1)
    img = clf.image_embeddings(_images())
    torch.testing.assert_close(probs, (model.scale().detach() * img @ per_class.T).softmax(-1), rtol=1e-4, atol=1e-5)


def test_bad_mode_is_refused(tiny):
    with pytest.raises(ValueError, match="mode"):
        ZeroShotClassifier(*tiny, LABELS, mode="sigmoid")
