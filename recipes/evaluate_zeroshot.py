"""Zero-shot classification of findings with a trained checkpoint: per-finding AUROC on held-out images.

    python recipes/evaluate_zeroshot.py --model runs/pretrain/final          # the demo data's held-out split
    python recipes/evaluate_zeroshot.py --model DIR --data manifest.jsonl --labels-column labels \
        --label-names Cardiomegaly,Effusion --split-column split --split test
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModel, AutoProcessor

import vlp  # noqa: F401  (registers the Auto classes)
from vlp import ZeroShotClassifier
from vlp.evaluation.classification import format_table, per_label_auroc
from vlp.data.manifest import read_manifest
from vlp.training.config import DataSection
from vlp.training.data import build_dataset, demo_manifest


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a saved checkpoint folder (e.g. runs/pretrain/final)")
    p.add_argument("--data", help="manifest; default: the built-in demo data's test split")
    p.add_argument("--image-column", default="image")
    p.add_argument("--labels-column", default="labels")
    p.add_argument("--label-names", help="comma-separated finding names (also the prompts' label text)")
    p.add_argument("--split-column", default="split", help="evaluate the rows of --split only (a manifest without "
                                                           "this column is evaluated whole)")
    p.add_argument("--split", default="test")
    p.add_argument("--mode", choices=["pos_neg", "softmax"], default="pos_neg")
    p.add_argument("--out", help="also write the table (markdown) to this file")
    p.add_argument("--json", help="also write the evaluation record (for a model card: vlp push --eval) to this file")
    p.add_argument("--dataset-name", help="the evaluation data's name in the record (default: the manifest's)")
    args = p.parse_args(argv)

    model = AutoModel.from_pretrained(args.model).eval()
    processor = AutoProcessor.from_pretrained(args.model)
    data = DataSection(text_column=None, image_column=args.image_column)
    if args.data:
        manifest = Path(args.data)
        label_names = args.label_names.split(",") if args.label_names else None
        if not label_names:
            p.error("--label-names is required with --data")
    else:
        from vlp.data.demo import FINDINGS
        manifest, label_names = demo_manifest(data), list(FINDINGS)
    split_column, split = args.split_column, args.split
    if split_column and split_column not in read_manifest(manifest).column_names:
        print(f"{manifest} has no {split_column!r} column: evaluating every row", file=sys.stderr)
        split_column = split = None
    dataset = build_dataset(manifest, data, split_column=split_column, split=split,
                            labels_column=args.labels_column, label_names=label_names)
    images, targets, skipped = [], [], 0
    for i in range(len(dataset)):
        item = dataset[i]
        if "skip" in item:
            skipped += 1
            print(f"skipped row {item['index']} ({item['path']}): {item['skip']}", file=sys.stderr)
            continue
        images.append(item["image"])
        targets.append(item["labels"])
    classifier = ZeroShotClassifier(model, processor, labels=label_names, mode=args.mode)
    with torch.no_grad():
        scores = classifier(images).numpy()
    aurocs = per_label_auroc(scores, np.stack(targets), label_names)
    table = format_table(aurocs)
    rows = f"the {split!r} rows" if split_column else "all rows"
    print(f"zero-shot ({args.mode}) on {len(images)} images ({rows}) of {manifest} "
          f"({skipped} rows skipped), model {args.model}:\n{table}")
    if args.out:
        Path(args.out).write_text(table + "\n")
    if args.json:
        import json
        import math

        from vlp.hub.card import model_fingerprint

        defined = [v for v in aurocs.values() if not math.isnan(v)]
        record = {"model_sha256": model_fingerprint(args.model), "task": "zero-shot-image-classification",
                  "mode": args.mode,
                  "dataset": {"name": args.dataset_name or ("vlp demo phantoms" if not args.data else manifest.stem),
                              "manifest": str(manifest), "rows": len(images), "split": split},
                  "metrics": {"auroc": {k: (None if math.isnan(v) else v) for k, v in aurocs.items()},
                              "mean_auroc": sum(defined) / len(defined) if defined else None}}
        Path(args.json).write_text(json.dumps(record, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
