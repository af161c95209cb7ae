"""Image-report retrieval metrics, as functions of a similarity matrix."""
from __future__ import annotations

import numpy as np

__all__ = ["recall_at_k", "retrieval_recalls"]


def recall_at_k(similarity, k: int) -> float:
    """Share of queries (rows) whose paired item (the same index) ranks among the `k` most similar columns.
    Ties count against the query (the paired item must beat every item above it)."""
    sim = np.asarray(similarity, dtype=np.float64)
    if sim.ndim != 2 or sim.shape[0] != sim.shape[1]:
        raise ValueError(f"recall_at_k needs a square (N, N) similarity of paired items, got {sim.shape}")
    paired = np.diag(sim)
    rank = (sim >= paired[:, None]).sum(axis=1)  # 1 when the pair is strictly the most similar
    return float((rank <= k).mean())


def retrieval_recalls(image_embeds, text_embeds, ks=(1, 5, 10)) -> dict[str, float]:
    """Image->text and text->image recall@k of paired embeddings (row i of each belongs together), and their mean."""
    img, txt = np.asarray(image_embeds, dtype=np.float64), np.asarray(text_embeds, dtype=np.float64)
    sim = img @ txt.T
    out = {}
    for k in ks:
        out[f"image_to_text_R@{k}"] = recall_at_k(sim, k)
        out[f"text_to_image_R@{k}"] = recall_at_k(sim.T, k)
    out["mean_recall"] = float(np.mean(list(out.values())))
    return out
