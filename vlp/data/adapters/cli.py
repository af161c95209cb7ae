"""`vlp prepare <dataset> --root R --out manifest.jsonl`: the adapters on the command line.

`vlp/cli.py` wires it in with `add_arguments(subparsers.add_parser("prepare", ...))` and calls `run(args)`.
"""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..dataset import UncertainPolicy
from . import ADAPTERS

__all__ = ["add_arguments", "run", "main"]

_HELP = {
    "mimic-cxr": "MIMIC-CXR-JPG 2.0.0 + mimic-cxr-reports.zip",
    "iu-xray": "IU X-ray / Open-i (NLMCXR_reports.tgz + PNGs)",
    "chexpert": "CheXpert v1.0(-small) train.csv / valid.csv",
    "nih": "NIH ChestX-ray14 (Data_Entry_2017*.csv, BBox_List_2017.csv, PNGs)",
    "covid": "COVID-19 image data collection (metadata.csv, images/)",
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--root", required=True, type=Path, help="the release folder, as downloaded")
    p.add_argument("--out", required=True, type=Path, help="manifest to write (.jsonl)")


def _keep_missing(p: argparse.ArgumentParser) -> None:
    p.add_argument("--keep-missing", action="store_true", help="write rows whose image file is not on disk")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add one sub-command per dataset to `parser` (the `prepare` command)."""
    sub = parser.add_subparsers(dest="dataset", required=True, metavar="DATASET")
    policies = [p.value for p in UncertainPolicy]

    p = sub.add_parser("mimic-cxr", help=_HELP["mimic-cxr"])
    _common(p)
    p.add_argument("--reports", type=Path, help="mimic-cxr-reports.zip or the folder it was extracted to")
    p.add_argument("--labels", choices=["chexpert", "negbio", "none"], default="chexpert")
    p.add_argument("--uncertain", choices=policies, default="keep", help="what -1 (uncertain) labels become")
    p.add_argument("--views", nargs="+", help="keep only these ViewPosition values, e.g. PA AP")
    p.add_argument("--split", choices=["train", "validate", "test"], help="keep one official split")
    _keep_missing(p)

    p = sub.add_parser("iu-xray", help=_HELP["iu-xray"])
    _common(p)
    p.add_argument("--reports", type=Path, help="NLMCXR_reports.tgz or the ecgen-radiology/ folder")
    p.add_argument("--images", type=Path, help="folder holding the PNGs (default: --root)")
    _keep_missing(p)

    p = sub.add_parser("chexpert", help=_HELP["chexpert"])
    _common(p)
    p.add_argument("--uncertain", choices=policies, default="keep", help="what -1 (uncertain) labels become")
    p.add_argument("--csvs", nargs="+", default=["train.csv", "valid.csv"])
    p.add_argument("--frontal-only", action="store_true")
    _keep_missing(p)

    p = sub.add_parser("nih", help=_HELP["nih"])
    _common(p)
    p.add_argument("--entries", type=Path, help="Data_Entry_2017*.csv(.gz) (default: found in --root)")
    p.add_argument("--bbox", type=Path, help="BBox_List_2017.csv (default: found in --root)")
    p.add_argument("--images", type=Path, help="folder holding the PNGs (default: --root)")
    _keep_missing(p)

    p = sub.add_parser("covid", help=_HELP["covid"])
    _common(p)
    p.add_argument("--metadata", type=Path, help="metadata.csv (default: ROOT/metadata.csv)")
    p.add_argument("--lung-boxes", type=Path, help="COCO lung box JSON (default: ROOT/annotations/...)")
    p.add_argument("--all-modalities", action="store_true", help="keep CT rows too")
    p.add_argument("--views", nargs="+", help="keep only these views, e.g. PA AP")


def run(args: argparse.Namespace) -> Path:
    """Run the adapter named by `args.dataset`; prints and returns the manifest path."""
    name = args.dataset
    kwargs: dict = {}
    if name == "mimic-cxr":
        kwargs = dict(reports=args.reports, labels=args.labels, uncertain=args.uncertain, views=args.views,
                      split=args.split, keep_missing=args.keep_missing)
    elif name == "iu-xray":
        kwargs = dict(reports=args.reports, images=args.images, keep_missing=args.keep_missing)
    elif name == "chexpert":
        kwargs = dict(uncertain=args.uncertain, csvs=tuple(args.csvs), frontal_only=args.frontal_only,
                      keep_missing=args.keep_missing)
    elif name == "nih":
        kwargs = dict(entries=args.entries, bbox=args.bbox, images=args.images, keep_missing=args.keep_missing)
    elif name == "covid":
        kwargs = dict(metadata=args.metadata, lung_boxes=args.lung_boxes,
                      modality=None if args.all_modalities else "X-ray", views=args.views)
    else:  # argparse's choices make this unreachable
        raise ValueError(f"unknown dataset {name!r}; choose one of {sorted(ADAPTERS)}")
    out = ADAPTERS[name](args.root, args.out, **kwargs)
    with open(out, encoding="utf-8") as f:
        n = sum(1 for _ in f)
    print(f"wrote {n} rows to {out}")
    return out


def main(argv: list[str] | None = None) -> Path:
    """Stand-alone entry point: `python -m vlp.data.adapters.cli <dataset> --root R --out M`."""
    parser = argparse.ArgumentParser(prog="vlp prepare", description="Turn a public CXR release into a manifest.")
    add_arguments(parser)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    main()
