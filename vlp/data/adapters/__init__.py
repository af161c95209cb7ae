"""Adapters: each turns one public chest X-ray release, in its own file layout, into a manifest (JSON Lines with
the columns `image`, `text`, `labels`, `boxes`, `patient_id` and dataset-specific extras).

`vlp prepare <dataset> --root R --out manifest.jsonl` runs them from the command line (`adapters.cli`).
"""
from __future__ import annotations

from .chexpert import CHEXPERT_LABELS, prepare_chexpert
from .covid import prepare_covid
from .iu_xray import prepare_iu_xray, read_iu_reports
from .mimic_cxr import MIMIC_LABELS, prepare_mimic_cxr
from .nih import NIH_LABELS, prepare_nih

ADAPTERS = {
    "mimic-cxr": prepare_mimic_cxr,
    "iu-xray": prepare_iu_xray,
    "chexpert": prepare_chexpert,
    "nih": prepare_nih,
    "covid": prepare_covid,
}
"""Dataset name (as on the command line) -> `prepare_<name>(root, out, ...) -> Path`."""

__all__ = [
    "ADAPTERS", "CHEXPERT_LABELS", "MIMIC_LABELS", "NIH_LABELS", "prepare_chexpert", "prepare_covid",
    "prepare_iu_xray", "prepare_mimic_cxr", "prepare_nih", "read_iu_reports",
]
