"""Patient-level splits: all images of one patient land in the same split (or fold).

Image-level random splits leak: a patient's follow-up images are near-duplicates, so a model seen on one of them
scores too well on the other. Both functions shuffle *patients* with a seeded generator and fill the splits in
that order until each holds its share of *rows*, so the row fractions come out close to the requested ones even
when patients have very different numbers of images.

Rows whose patient id is missing (None, NaN, "") are treated as patients of their own.
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

__all__ = ["patient_ids_of", "patient_split", "patient_kfold"]


def patient_ids_of(dataset_or_ids: Any, patient_column: str | None = None) -> list:
    """Per-row patient ids from a list of ids, a `ManifestDataset` (its `ColumnConfig.patient_id`) or a
    `datasets.Dataset` / pandas DataFrame / dict of columns with `patient_column`."""
    if hasattr(dataset_or_ids, "patient_ids") and patient_column is None:
        return list(dataset_or_ids.patient_ids())
    if patient_column is not None:
        if hasattr(dataset_or_ids, "data") and hasattr(dataset_or_ids.data, "column_names"):
            dataset_or_ids = dataset_or_ids.data  # a ManifestDataset: its datasets.Dataset
        try:
            return list(dataset_or_ids[patient_column])
        except (KeyError, TypeError, ValueError) as e:
            raise ValueError(f"patient column {patient_column!r} not found") from e
    if isinstance(dataset_or_ids, (str, bytes, Mapping)) or not hasattr(dataset_or_ids, "__iter__"):
        raise TypeError("pass a list of patient ids, a ManifestDataset with ColumnConfig.patient_id, or a dataset "
                        "together with patient_column=")
    return list(dataset_or_ids)


def _groups(ids: list) -> list[list[int]]:
    """Row indices grouped by patient, in first-appearance order; missing ids are singleton groups."""
    groups: dict[Any, list[int]] = {}
    singles: list[list[int]] = []
    for i, pid in enumerate(ids):
        missing = pid is None or (isinstance(pid, float) and math.isnan(pid)) or (isinstance(pid, str) and not pid.strip())
        if missing:
            singles.append([i])
        else:
            groups.setdefault(pid if not isinstance(pid, np.generic) else pid.item(), []).append(i)
    return list(groups.values()) + singles


def patient_split(dataset_or_ids: Any, fractions: Mapping[str, float] | None = None, test_size: float | None = None,
                  seed: int = 0, patient_column: str | None = None) -> dict[str, list[int]]:
    """Row indices per split, no patient in two splits.

    Either `fractions` (e.g. `{"train": 0.8, "val": 0.1, "test": 0.1}`, normalised to sum 1) or `test_size`
    (gives `{"train": 1 - test_size, "test": test_size}`); the default is `test_size=0.2`. Patients are shuffled
    with `seed` and assigned in that order to the first split whose row count is below its target; the last split
    takes the rest. Indices within each split are sorted.
    """
    if fractions is not None and test_size is not None:
        raise ValueError("give either fractions or test_size, not both")
    if fractions is None:
        test_size = 0.2 if test_size is None else test_size
        if not 0.0 < test_size < 1.0:
            raise ValueError(f"test_size must be in (0, 1), got {test_size}")
        fractions = {"train": 1.0 - test_size, "test": test_size}
    if not fractions or any(f < 0 for f in fractions.values()) or sum(fractions.values()) <= 0:
        raise ValueError(f"fractions must be non-negative with a positive sum, got {dict(fractions)}")
    total = float(sum(fractions.values()))
    names = list(fractions)
    ids = patient_ids_of(dataset_or_ids, patient_column)
    groups = _groups(ids)
    order = np.random.default_rng(seed).permutation(len(groups))
    n_rows = len(ids)
    targets = [fractions[name] / total * n_rows for name in names]
    splits: dict[str, list[int]] = {name: [] for name in names}
    cumulative = np.cumsum(targets)
    filled = 0
    for g in order:
        rows = groups[g]
        # the first split whose cumulative target is not reached yet by the rows placed so far
        k = next((j for j, c in enumerate(cumulative) if filled + len(rows) / 2 < c), len(names) - 1)
        splits[names[k]].extend(rows)
        filled += len(rows)
    return {name: sorted(rows) for name, rows in splits.items()}


def patient_kfold(dataset_or_ids: Any, k: int = 5, seed: int = 0,
                  patient_column: str | None = None) -> list[tuple[list[int], list[int]]]:
    """`k` (train indices, validation indices) pairs; every row is in exactly one validation fold and no patient is
    in two folds. Patients are shuffled with `seed`, then each goes to the fold with the fewest rows so far (ties to
    the lowest fold number), which balances fold sizes in rows."""
    if k < 2:
        raise ValueError(f"k must be at least 2, got {k}")
    ids = patient_ids_of(dataset_or_ids, patient_column)
    groups = _groups(ids)
    if len(groups) < k:
        raise ValueError(f"{len(groups)} patients cannot fill {k} folds")
    order = np.random.default_rng(seed).permutation(len(groups))
    folds: list[list[int]] = [[] for _ in range(k)]
    for g in order:
        smallest = min(range(k), key=lambda j: len(folds[j]))
        folds[smallest].extend(groups[g])
    everything = set(range(len(ids)))
    return [(sorted(everything - set(fold)), sorted(fold)) for fold in folds]
