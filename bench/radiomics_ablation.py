r"""Ablation of the radiomics feedback loop (Han et al., WACV 2022) on the NIH ChestX-ray14 box images.

Arms (``--arms``), trained image-only on the same data, folds, steps and seeds:
  - ``baseline``:  the radiomics head's multi-label classifier alone (BCE);
  - ``radiomics``: the same + the NT-Xent loss between each image's embedding and the radiomics embedding of its
    own Grad-CAM region (the feedback loop), weight 1 (the head's default); an all-zero map gives the whole
    image's radiomics (``empty_cam="image"``, the default);
  - ``radiomics_skip``: as ``radiomics``, but images whose map is all zero are left out of the NT-Xent
    (``empty_cam="skip"``).
Evaluated on held-out patients (patient-level k-fold cross-validation):
  - per-finding AUROC of the classifier for the 8 box findings;
  - Grad-CAM localisation accuracy T(IoU): for every (image, boxed finding) the Grad-CAM of that finding's class
    is thresholded (the head's cam_threshold) and the box of its largest region is compared with the union of
    the expert boxes of that finding; T(t) is the fraction of cases with IoU >= t (Li et al., CVPR 2018; Han
    et al. 2022), t = 0.1 .. 0.7. A data-only reference, the mean training-fold box of the finding ("prior box"),
    is reported beside it.

Every image of this set has at least one boxed finding, so AUROC separates one finding from the others among
abnormal images (there are no normal images here).

    .venv/bin/python bench/radiomics_ablation.py      # resnet10t (output stride 16, an 8x8 Grad-CAM grid) at
                                                      # 128 px, 4 epochs, 3 folds, 1 seed, the three arms (~11 min
                                                      # on 2 idle cores; docs/benchmarks adds --seeds 0 1 2, ~32 min)
    .venv/bin/python bench/radiomics_ablation.py --device cuda --threads 8 --model resnet50 --output-stride 0 \
        --image-size 256 --epochs 40 --folds 5 --seeds 0 1 2      # a real run on a GPU (8x8 grid at 256 px)
    .venv/bin/python bench/radiomics_ablation.py --epochs 1 --folds 2 --max-folds 1 --image-size 64 \
        --out /tmp/smoke.md                                       # an end-to-end check in seconds

``--output-stride 0`` keeps the tower's own stride (use it for ViTs); ``--label-fraction 0.5`` hides the labels of
half of the training images (the semi-supervised setting of the paper).

Prints the tables and writes them to docs/benchmarks/radiomics_ablation.md (``--out``).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlp import VLPConfig, VLPModel  # noqa: E402
from vlp.evaluation.classification import per_label_auroc  # noqa: E402
from vlp.evaluation.localization import (DEFAULT_IOU_THRESHOLDS, boxes_to_mask, box_to_mask, iou,  # noqa: E402
                                         localization_accuracy)
from vlp.gradcam import cam_boxes, empty_maps, upsample_cams  # noqa: E402

# NIH spells the box finding "Infiltrate" and the image label "Infiltration"
BOX_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltrate", "Mass", "Nodule", "Pneumonia", "Pneumothorax")
LABEL_OF_BOX = {f: ("Infiltration" if f == "Infiltrate" else f) for f in BOX_FINDINGS}
LABELS = [LABEL_OF_BOX[f] for f in BOX_FINDINGS]
ARMS = ("baseline", "radiomics", "radiomics_skip")  # the first is the reference of every difference
TEXT_TOWER = {"model_name": None, "model_config": {"hidden_size": 32, "num_hidden_layers": 1,
                                                   "num_attention_heads": 2, "intermediate_size": 64,
                                                   "vocab_size": 64}}  # unused: image-only training


@dataclass
class Data:
    images: torch.Tensor  # (N, 256, 256) float [0, 1]
    labels: torch.Tensor  # (N, 8) 0/1
    patients: list
    boxes: list  # per image: list of (finding, (x, y, w, h)) in 256 px coordinates
    size: int


def load_data(folder: Path) -> Data:
    manifest = folder / "manifest.jsonl"
    if not manifest.is_file():
        raise SystemExit(f"{manifest} not found: give --data, the folder with manifest.jsonl and images/")
    rows = [json.loads(line) for line in manifest.read_text().splitlines() if line.strip()]
    images, labels, patients, boxes = [], [], [], []
    for k, row in enumerate(rows):
        path = folder / row["image_path"]
        if not path.is_file():
            raise SystemExit(f"{manifest} row {k}: image {path} does not exist")
        image = np.asarray(Image.open(path).convert("L"), dtype=np.float32) / 255.0
        images.append(torch.from_numpy(image))
        found = set(row["nih_finding_labels"])
        labels.append([float(name in found) for name in LABELS])
        patients.append(row["patient_id"])
        boxes.append([(b["finding"], (b["x_resized"], b["y_resized"], b["w_resized"], b["h_resized"]))
                      for b in row["boxes"] if b["finding"] in BOX_FINDINGS])
    stacked = torch.stack(images)
    return Data(stacked, torch.tensor(labels), patients, boxes, stacked.shape[-1])


def build_model(arm: str, args) -> VLPModel:
    config = VLPConfig(
        image_tower={"model_name": args.model, "image_size": args.image_size, "in_chans": 1,
                     "model_kwargs": {"output_stride": args.output_stride} if args.output_stride else {}},
        text_tower=TEXT_TOWER, projection_dim=128,
        heads={"radiomics": {"label_names": LABELS, "cam_threshold": args.cam_threshold, "encoder_hidden_dim": 256,
                             "empty_cam": "skip" if arm == "radiomics_skip" else "image"}},
        loss={"weights": {"radiomics/classification": 1.0,
                          "radiomics/contrastive": 0.0 if arm == "baseline" else args.radiomics_weight}},
    )
    return VLPModel(config)


def model_inputs(images: torch.Tensor, size: int, device) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 256, 256) [0, 1] -> normalised pixel_values (B, 1, S, S) and raw_images (B, S, S) in [0, 1]."""
    images = images.to(device)
    if images.shape[-1] != size:
        images = F.interpolate(images[:, None], size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False)[:, 0].clamp(0, 1)
    return ((images - 0.5) / 0.25)[:, None], images


def warmup_cosine(total: int, warmup_fraction: float = 0.1):
    """LR factor per step: linear warm-up over the first 10% of the steps (at least one), then cosine to 0.
    (OneCycleLR divides by zero when the warm-up rounds to no step, as in a tiny smoke run.)"""
    warmup = max(1, round(total * warmup_fraction))

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total - warmup)
        return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
    return factor


def train(model: VLPModel, data: Data, train_idx: list[int], arm: str, seed: int, args, device) -> dict:
    g = torch.Generator().manual_seed(seed)
    labels = data.labels.clone()
    if args.label_fraction < 1.0:  # semi-supervised: hide the labels of a seeded share of the training images
        hidden = torch.randperm(len(train_idx), generator=g)[: round(len(train_idx) * (1 - args.label_fraction))]
        labels[torch.tensor(train_idx)[hidden]] = float("nan")
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=1e-4)
    steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
    total = steps_per_epoch * args.epochs
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, warmup_cosine(total))
    idx = torch.tensor(train_idx)
    log = {"loss": [], "empty_cams": [], "seconds": 0.0}
    start = time.perf_counter()
    for _ in range(args.epochs):
        order = idx[torch.randperm(len(idx), generator=g)]
        for b in range(0, len(order), args.batch_size):
            rows = order[b:b + args.batch_size]
            if len(rows) < 2:
                continue
            pixel_values, raw = model_inputs(data.images[rows], args.image_size, device)
            out = model(pixel_values=pixel_values, raw_images=None if arm == "baseline" else raw,
                        labels=labels[rows].to(device), return_loss=True)
            optimizer.zero_grad(set_to_none=True)
            out.loss.backward()
            optimizer.step()
            schedule.step()
            log["loss"].append({k: float(v.detach()) for k, v in out.losses.items()})
            log["empty_cams"].append(float(out.empty_cams.float().mean()))
    log["seconds"] = time.perf_counter() - start
    return log


@torch.no_grad()
def evaluate(model: VLPModel, data: Data, val_idx: list[int], train_idx: list[int], args, device) -> dict:
    model.eval()
    head = model.radiomics
    scores, ious, empty_cases, box_areas, whole_ious = [], [], [], [], []
    per_finding_iou: dict[str, list[float]] = {f: [] for f in BOX_FINDINGS}
    prior_ious: dict[str, list[float]] = {f: [] for f in BOX_FINDINGS}
    prior = _prior_boxes(data, train_idx)
    size = data.size
    for b in range(0, len(val_idx), args.batch_size):
        rows = val_idx[b:b + args.batch_size]
        pixel_values, _ = model_inputs(data.images[rows], args.image_size, device)
        features = model.image_tower(pixel_values)
        scores.append(torch.sigmoid(head.classify(features.regions)).cpu())
        # one Grad-CAM per (image, boxed finding), of that finding's class
        cases = [(i, finding) for i, r in enumerate(rows) for finding in sorted({f for f, _ in data.boxes[r]})]
        if not cases:
            continue
        which = torch.tensor([i for i, _ in cases], device=device)
        targets = torch.tensor([LABELS.index(LABEL_OF_BOX[f]) for _, f in cases], device=device)
        cams = head.explain(features.regions[which], features.grid, targets)
        boxes = cam_boxes(upsample_cams(cams, (size, size)), head.config.cam_threshold, head.config.min_box_size)
        # an all-zero map (every cell's class evidence <= 0) marks no region: a miss (IoU 0) here, not the
        # whole-image box the head falls back to in training (that box would score IoU ~0.1 on large findings)
        empty = empty_maps(cams).tolist()
        for (i, finding), box, is_empty in zip(cases, boxes, empty):
            truth = boxes_to_mask([bx for f, bx in data.boxes[rows[i]] if f == finding], size, size)
            value = 0.0 if is_empty else iou(box_to_mask(box, size, size), truth)
            ious.append(value)
            empty_cases.append(is_empty)
            box_areas.append(0.0 if is_empty else box[2] * box[3] / size ** 2)
            per_finding_iou[finding].append(value)
            prior_ious[finding].append(iou(box_to_mask(prior[finding], size, size), truth))
            whole_ious.append(iou(np.ones((size, size), dtype=bool), truth))
    auroc = per_label_auroc(torch.cat(scores).numpy(), data.labels[val_idx].numpy(), LABELS)
    return {
        "auroc": {f: auroc[LABEL_OF_BOX[f]] for f in BOX_FINDINGS},
        "t_iou": localization_accuracy(ious, DEFAULT_IOU_THRESHOLDS),
        "t_iou_by_finding": {f: localization_accuracy(v, DEFAULT_IOU_THRESHOLDS) for f, v in per_finding_iou.items()
                             if v},
        "prior_t_iou": localization_accuracy([v for vs in prior_ious.values() for v in vs], DEFAULT_IOU_THRESHOLDS),
        "whole_t_iou": localization_accuracy(whole_ious, DEFAULT_IOU_THRESHOLDS),
        "empty_map_fraction": float(np.mean(empty_cases)),
        "mean_box_area": float(np.mean([a for a, e in zip(box_areas, empty_cases) if not e] or [math.nan])),
        "cases": len(ious),
    }


def _prior_boxes(data: Data, train_idx: list[int]) -> dict[str, tuple]:
    """The mean training-fold box of each finding (a data-only localisation reference)."""
    out = {}
    for finding in BOX_FINDINGS:
        found = [bx for r in train_idx for f, bx in data.boxes[r] if f == finding]
        out[finding] = tuple(float(v) for v in np.mean(found, axis=0)) if found else (0.0, 0.0, data.size, data.size)
    return out


def _folds(data: Data, k: int, seed: int):
    try:
        from vlp.data.splits import patient_kfold
    except ImportError:  # pragma: no cover - the splits module is part of vlp
        patient_kfold = None
    if patient_kfold is not None:
        return patient_kfold(data.patients, k=k, seed=seed)
    raise SystemExit("vlp.data.splits.patient_kfold is missing")


# ----------------------------------------------------------------------------------------------- report
def _mean_std(values) -> str:
    values = [v for v in values if not (isinstance(v, float) and math.isnan(v))]
    if not values:
        return "n/a"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def report(results: list[dict], args, data: Data, seconds: float, command: str) -> str:
    arms = list(args.arms)  # in ARMS order, the baseline first
    runs = {arm: [r for r in results if r["arm"] == arm] for arm in arms}
    base, others = arms[0], arms[1:]  # every difference is an arm minus the first (the baseline)
    n_runs = len(runs[base])

    def row(name: str, value) -> str:
        """A table row: each arm's mean ± std of `value(run)`, then each other arm's paired difference."""
        per_arm = {arm: [value(r) for r in runs[arm]] for arm in arms}
        cells = [_mean_std(per_arm[arm]) for arm in arms]
        cells += [_mean_std([b - a for a, b in zip(per_arm[base], per_arm[arm])]) for arm in others]
        return f"| {name} | " + " | ".join(cells) + " |"

    def header(first: str, extra: tuple[str, ...] = ()) -> list[str]:
        names = [first, *arms, *(f"{arm} - {base}" for arm in others), *extra]
        return ["| " + " | ".join(names) + " |", "|" + "---|" * len(names)]

    lines = ["# Radiomics feedback loop: ablation on the NIH ChestX-ray14 box images", "",
             "Produced by `bench/radiomics_ablation.py` (method: Han et al., WACV 2022; head: "
             "[docs/radiomics.md](../radiomics.md)).", "",
             "## Setup", "",
             f"- command: `{command}`",
             f"- machine: {platform.platform()}, {torch.get_num_threads()} torch threads, device `{args.device}`"
             f"{' (' + torch.cuda.get_device_name() + ')' if args.device.startswith('cuda') else ''}, "
             f"torch {torch.__version__}; total wall time {seconds / 60:.1f} min; load average (1 min) "
             f"{args.load_before:.1f} at the start, {os.getloadavg()[0]:.1f} at the end (shared machine)",
             f"- data: `{args.data}`: {len(data.patients)} images (256 x 256 PNG), "
             f"{len(set(data.patients))} patients, {sum(len(b) for b in data.boxes)} expert boxes of 8 findings; "
             "image labels: NIH's text-mined labels of the same images",
             f"- model: `{args.model}`{f' (output stride {args.output_stride})' if args.output_stride else ''}, "
             f"random init, 1 channel, {args.image_size} px input, {args.grid[0]}x{args.grid[1]} Grad-CAM grid, "
             "image-only training (no reports); classifier on the mean of the last feature map's cells; AdamW lr "
             f"{args.lr} (10% linear warm-up, cosine decay), batch {args.batch_size}, {args.epochs} epochs per fold; "
             f"labels on {args.label_fraction:.0%} of the training images",
             f"- arms: `baseline` the classifier alone (BCE); `radiomics` + NT-Xent (temperature 0.05, weight "
             f"{args.radiomics_weight}) with the radiomics embedding of the current Grad-CAM box ({args.num_features} "
             "PyRadiomics 2D features, torch engine, 0..255 gray levels, bin width 25; an all-zero map gives the "
             "whole image, `empty_cam=\"image\"`); `radiomics_skip` the same, images with an all-zero map left out "
             f"of the NT-Xent (`empty_cam=\"skip\"`); Grad-CAM threshold {args.cam_threshold}",
             f"- evaluation: patient-level {args.folds}-fold cross-validation"
             f"{f' (first {args.max_folds} folds only)' if args.max_folds else ''} x seeds {list(args.seeds)} = "
             f"{n_runs} runs per arm; mean ± std over runs; the same folds, seeds, initial weights and batch order "
             "in every arm; a difference is paired by run", ""]

    def mean_auroc(r):
        vals = [v for v in r["auroc"].values() if not math.isnan(v)]
        return float(np.mean(vals)) if vals else math.nan

    lines += ["## Classification: AUROC per finding (held-out patients)", "", *header("finding")]
    for f in BOX_FINDINGS:
        lines.append(row(LABEL_OF_BOX[f], lambda r, f=f: r["auroc"][f]))
    lines.append(row("**mean**", mean_auroc))
    lines += ["", "## Localisation accuracy T(IoU) of the Grad-CAM box (all boxed findings)", "",
              "An all-zero Grad-CAM map (no cell with positive evidence for the class) counts as a miss (IoU 0). "
              "References that use no model: the finding's mean training-fold box (prior box) and the whole image.",
              "", *header("IoU threshold", ("prior box", "whole image"))]
    for t in DEFAULT_IOU_THRESHOLDS:
        prior = _mean_std([r["prior_t_iou"][t] for r in runs[base]])
        whole = _mean_std([r["whole_t_iou"][t] for r in runs[base]])
        lines.append(row(f"{t:.1f}", lambda r, t=t: r["t_iou"][t])[:-1] + f"| {prior} | {whole} |")
    blanks = " |" * 2
    lines.append(row("all-zero maps (share of cases)", lambda r: r["empty_map_fraction"]) + blanks)
    lines.append(row("mean Grad-CAM box area (share of the image)", lambda r: r["mean_box_area"]) + blanks)
    lines += ["", "## T(0.1) and T(0.3) per finding", "",
              "| finding | cases/run | " + " | ".join(f"{arm} T({t})" for t in (0.1, 0.3) for arm in arms) + " |",
              "|" + "---|" * (2 + 2 * len(arms))]
    for f in BOX_FINDINGS:
        cells = [_mean_std([r["t_iou_by_finding"][f][t] for r in runs[arm] if f in r["t_iou_by_finding"]])
                 for t in (0.1, 0.3) for arm in arms]
        n_cases = np.mean([r["cases_by_finding"].get(f, 0) for r in runs[base]])
        lines.append(f"| {LABEL_OF_BOX[f]} | {n_cases:.0f} | " + " | ".join(cells) + " |")
    lines += ["", "## Every run", "",
              "| fold | seed | arm | train s | final BCE | final NT-Xent | all-zero maps, last epoch | mean AUROC | "
              "T(0.1) | T(0.3) | T(0.5) |",
              "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(results, key=lambda r: (r["fold"], r["seed"], arms.index(r["arm"]))):
        nt = r["final_losses"].get("radiomics/contrastive")
        lines.append(f"| {r['fold']} | {r['seed']} | {r['arm']} | {r['train_seconds']:.0f} | "
                     f"{r['final_losses']['radiomics/classification']:.3f} | {'-' if nt is None else f'{nt:.3f}'} | "
                     f"{r['train_empty_cams']:.2f} | {mean_auroc(r):.3f} | {r['t_iou'][0.1]:.3f} | "
                     f"{r['t_iou'][0.3]:.3f} | {r['t_iou'][0.5]:.3f} |")
    base_s = np.mean([r["train_seconds"] for r in runs[base]])
    cost = ", ".join(f"{arm} {np.mean([r['train_seconds'] for r in runs[arm]]):.0f} s "
                     f"({np.mean([r['train_seconds'] for r in runs[arm]]) / base_s:.2f}x)" for arm in others)
    lines += ["", "## Cost", "",
              f"Training time per run: {base} {base_s:.0f} s, {cost} (Grad-CAM, box and radiomic features of every "
              "image at every step).", ""]
    return "\n".join(lines)


def _kept_reading(path: Path) -> str:
    """The hand-written part of an existing report (from its ``## Reading`` heading on), kept on a re-run."""
    if not path.is_file():
        return ""
    old = path.read_text()
    at = old.find("\n## Reading")
    return "" if at < 0 else "\n" + old[at:].lstrip("\n")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", type=Path, default=REPO.parent / "shared" / "data" / "nih_bbox")
    parser.add_argument("--model", default="resnet10t")
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--output-stride", type=int, default=16,
                        help="timm output_stride of the CNN (16: a finer Grad-CAM grid, as the tiny preset)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--folds", type=int, default=3)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--label-fraction", type=float, default=1.0)
    parser.add_argument("--radiomics-weight", type=float, default=1.0)
    parser.add_argument("--cam-threshold", type=float, default=0.5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--max-folds", type=int, default=None, help="run only the first N folds (quick check)")
    parser.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS),
                        help="the arms to train (baseline always: the differences are taken against it)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "radiomics_ablation.md")
    args = parser.parse_args(argv)
    args.arms = [arm for arm in ARMS if arm in args.arms or arm == ARMS[0]]
    command = " ".join([".venv/bin/python bench/radiomics_ablation.py", *(argv if argv is not None else sys.argv[1:])])
    args.load_before = os.getloadavg()[0]
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    start = time.perf_counter()
    data = load_data(args.data)
    folds = _folds(data, args.folds, seed=0)[: args.max_folds]
    print(f"{len(data.patients)} images, {len(set(data.patients))} patients, {len(folds)} folds, seeds {args.seeds}",
          flush=True)
    results = []
    for fold, (train_idx, val_idx) in enumerate(folds):
        for seed in args.seeds:
            for arm in args.arms:
                torch.manual_seed(seed)  # the same initial weights in both arms
                model = build_model(arm, args).to(device)
                args.num_features = model.radiomics.extractor.num_features
                args.grid = model.image_tower(torch.zeros(1, 1, args.image_size, args.image_size, device=device)).grid
                log = train(model, data, train_idx, arm, seed, args, device)
                metrics = evaluate(model, data, val_idx, train_idx, args, device)
                metrics["cases_by_finding"] = {f: sum(1 for r in val_idx for g in {b for b, _ in data.boxes[r]}
                                                      if g == f) for f in BOX_FINDINGS}
                last = log["loss"][-5:]
                steps_per_epoch = math.ceil(len(train_idx) / args.batch_size)
                final = {k: float(np.mean([d[k] for d in last])) for k in last[-1]}
                results.append({"arm": arm, "fold": fold, "seed": seed, "train_seconds": log["seconds"],
                                "final_losses": final,
                                "train_empty_cams": float(np.mean(log["empty_cams"][-steps_per_epoch:])), **metrics})
                mean_auc = np.nanmean(list(metrics["auroc"].values()))
                print(f"fold {fold} seed {seed} {arm:9s}: {log['seconds']:.0f} s, final losses "
                      f"{ {k: round(v, 3) for k, v in final.items()} }, mean AUROC {mean_auc:.3f}, "
                      f"T(0.1) {metrics['t_iou'][0.1]:.3f}, T(0.3) {metrics['t_iou'][0.3]:.3f}", flush=True)
    text = report(results, args, data, time.perf_counter() - start, command)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    reading = _kept_reading(args.out)
    args.out.write_text(text + reading)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
