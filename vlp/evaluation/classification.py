"""Multi-label classification metrics."""
from __future__ import annotations

import math

import numpy as np
from sklearn.metrics import roc_auc_score


def per_label_auroc(scores, targets, label_names: list[str]) -> dict[str, float]:
    """AUROC of each label's scores against its 0/1 targets; NaN targets (unknown) are left out, and a label
    whose known targets are all one class gets NaN (AUROC is undefined there)."""
    scores, targets = np.asarray(scores, dtype=np.float64), np.asarray(targets, dtype=np.float64)
    if scores.shape != targets.shape or scores.ndim != 2 or scores.shape[1] != len(label_names):
        raise ValueError(f"scores {scores.shape} and targets {targets.shape} must both be (N, {len(label_names)})")
    out = {}
    for j, name in enumerate(label_names):
        known = ~np.isnan(targets[:, j])
        y = targets[known, j]
        out[name] = float(roc_auc_score(y, scores[known, j])) if len(np.unique(y)) == 2 else math.nan
    return out


def format_table(rows: dict[str, float], header: tuple[str, str] = ("finding", "AUROC")) -> str:
    """A markdown table of name -> value, with the macro average of the defined values last."""
    defined = [v for v in rows.values() if not math.isnan(v)]
    lines = [f"| {header[0]} | {header[1]} |", "|---|---|"]
    lines += [f"| {k} | {v:.3f} |" for k, v in rows.items()]
    if defined:
        lines.append(f"| **mean** | **{sum(defined) / len(defined):.3f}** |")
    return "\n".join(lines)
