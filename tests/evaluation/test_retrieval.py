"""Retrieval recall@k against hand-worked cases."""
from __future__ import annotations

import numpy as np
import pytest

from vlp.evaluation.retrieval import recall_at_k, retrieval_recalls


def test_recall_at_k_by_hand():
    sim = np.array([[0.9, 0.1, 0.2],   # query 0: its pair ranks 1st
                    [0.8, 0.5, 0.7],   # query 1: 3rd
                    [0.3, 0.6, 0.6]])  # query 2: tied with column 1, counted as 2nd
    assert recall_at_k(sim, 1) == pytest.approx(1 / 3)
    assert recall_at_k(sim, 2) == pytest.approx(2 / 3)
    assert recall_at_k(sim, 3) == 1.0
    assert recall_at_k(sim.T, 1) == pytest.approx(1 / 3)  # text->image: column 0 best for query 0 only
    with pytest.raises(ValueError, match="square"):
        recall_at_k(np.zeros((2, 3)), 1)


def test_retrieval_recalls_of_identical_embeddings_are_perfect():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(20, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    out = retrieval_recalls(x, x)
    assert out["image_to_text_R@1"] == out["text_to_image_R@1"] == out["mean_recall"] == 1.0
    shuffled = retrieval_recalls(x, x[::-1])
    assert shuffled["image_to_text_R@1"] == 0.0 and shuffled["mean_recall"] < 1.0
