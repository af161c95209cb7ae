"""Phrase grounding of the tiny model trained with the global loss only vs with the LoVT head (issue 4).

Two arms, trained by the real recipe (``accelerate launch recipes/pretrain.py``) on the same built-in demo data,
steps, batch, learning rate and seeds; they differ only in ``--heads``:
  - ``global``: the global image-report InfoNCE (LoVT's weights, image->text 0.75, text->image 0.25);
  - ``lovt``:   the same + the LoVT head (Mueller et al., ECCV 2022) with its four local terms (0.375 each),
    ``recipes/configs/lovt-tiny.yaml``'s model section.
Each final checkpoint grounds every (image, sentence) pair with ``vlp.grounding.similarity_map`` and is scored
against the boxes (``vlp.evaluation.localization``): pointing game (the map's maximum inside a box of the
sentence) and IoU of the min-max normalised map thresholded at 0.3 / 0.5 / 0.7 with the union of the boxes, on
  (a) the held-out ``test`` split of the demo data: each box carries the report sentence that describes it;
  (b) the NIH ChestX-ray14 expert boxes in ``../shared/data/nih_bbox``: one sentence per (image, finding) built
      from the finding's name (``NIH_PHRASES``), all boxes of that finding in the image as the target.
For the LoVT arm two more maps are scored (``grid_similarities``): ``attended``, fixed before any result was
seen, the cosine of each region with the sentence as the head's cross-attention hands it to the regions (value,
output projection and norm), the similarity the region loss actually trains (``similarity_map`` compares regions
with the raw projected sentence, which no LoVT term compares directly); and ``attention``, the head's own
sentence->region attention, added after ``attended`` failed, chosen on training-split boxes, never the test ones.
Data-only references: a centre Gaussian map, the mean box mask of the finding (demo: the training split's
boxes; NIH: the other images' boxes, leave-one-image-out), and chance (a random pixel: the box's area share).

    .venv/bin/python bench/lovt_localization.py                   # documented CPU run: 50 steps x 3 seeds, ~12 min
    .venv/bin/python bench/lovt_localization.py --steps 200 --seeds 0 --block long \
        --work-dir runs/bench_lovt_localization_200                # the longer single-seed CPU run, ~11 min
    .venv/bin/python bench/lovt_localization.py --steps 400 --seeds 0 1 2 3 4 --demo-train 5000   # on a GPU

Prints the tables and writes them into docs/benchmarks/lovt_localization.md (``--out``) between the markers
``<!-- results:main:start -->`` and ``<!-- results:main:end -->`` (``--block main``), keeping the text around them.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlp import VLPModel, VLPProcessor  # noqa: E402
from vlp.evaluation.localization import boxes_to_mask, heatmap_iou, pointing_game  # noqa: E402
from vlp.grounding import grid_to_image, similarity_map  # noqa: E402
from vlp.losses.local import grid_positions  # noqa: E402
from vlp.processing import to_unit_float  # noqa: E402
from vlp.training.config import DataSection  # noqa: E402
from vlp.training.data import demo_manifest  # noqa: E402

ARMS = ("global", "lovt")
MAP_THRESHOLDS = (0.3, 0.5, 0.7)
SMOOTH_SIGMA = 0.5  # similarity_map's default smoothing, in grid cells
# One plain report sentence per NIH box finding, worded as a radiologist would state the finding. NIH's
# "Infiltrate" is said as an airspace opacity and "Pneumonia" with its radiographic sign, consolidation.
NIH_PHRASES = {
    "Atelectasis": "There is atelectasis.",
    "Cardiomegaly": "There is cardiomegaly.",
    "Effusion": "There is a pleural effusion.",
    "Infiltrate": "There is an airspace opacity.",
    "Mass": "There is a mass.",
    "Nodule": "There is a nodule.",
    "Pneumonia": "There is consolidation consistent with pneumonia.",
    "Pneumothorax": "There is a pneumothorax.",
}


@dataclass
class Pair:
    """One grounding case: an image, a sentence, and the boxes (x, y, w, h in image pixels) it describes."""

    image: np.ndarray  # (H, W) float [0, 1]
    text: str
    boxes: list[tuple[float, float, float, float]]
    finding: str


# ------------------------------------------------------------------------------------------------------- data
def load_gray(path: Path) -> np.ndarray:
    return to_unit_float(np.asarray(Image.open(path).convert("L")))


def demo_train_boxes(manifest: Path) -> list[tuple[str, list]]:
    """(finding, boxes) of every box of the demo's training split, grouped by sentence as in `demo_pairs`."""
    cases = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        by_sentence: dict[str, list] = defaultdict(list)
        for box in row["boxes"] if row["split"] == "train" else []:
            by_sentence[box["sentence"]].append(box)
        cases += [(b[0]["finding"], [(x["x"], x["y"], x["w"], x["h"]) for x in b]) for b in by_sentence.values()]
    return cases


def demo_pairs(manifest: Path, split: str) -> list[Pair]:
    """(image, sentence) pairs of the demo split; boxes sharing a sentence (bilateral effusion) are one target."""
    pairs = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        if row["split"] != split or not row["boxes"]:
            continue
        image = load_gray(manifest.parent / row["image"])
        by_sentence: dict[str, list[dict]] = defaultdict(list)
        for box in row["boxes"]:
            by_sentence[box["sentence"]].append(box)
        for sentence, boxes in by_sentence.items():
            pairs.append(Pair(image, sentence, [(b["x"], b["y"], b["w"], b["h"]) for b in boxes],
                              boxes[0]["finding"]))
    return pairs


def nih_pairs(nih_dir: Path, limit: int = 0) -> list[Pair]:
    """(image, finding sentence) pairs of the NIH box images; the target is every box of the finding."""
    manifest = nih_dir / "manifest.jsonl"
    if not manifest.is_file():
        raise FileNotFoundError(f"{manifest} not found: pass --nih-dir (the shared data's nih_bbox folder) "
                                "or --no-nih")
    pairs = []
    for line in manifest.read_text().splitlines():
        row = json.loads(line)
        image = load_gray(nih_dir / row["image_path"])
        by_finding: dict[str, list[dict]] = defaultdict(list)
        for box in row["boxes"]:
            by_finding[box["finding"]].append(box)
        for finding, boxes in sorted(by_finding.items()):
            if finding not in NIH_PHRASES:
                raise KeyError(f"{manifest}: box finding {finding!r} has no sentence in NIH_PHRASES")
            pairs.append(Pair(image, NIH_PHRASES[finding],
                              [(b["x_resized"], b["y_resized"], b["w_resized"], b["h_resized"]) for b in boxes],
                              finding))
        if limit and len(pairs) >= limit:
            break
    return pairs


# ---------------------------------------------------------------------------------------------------- training
def write_config(work: Path, args) -> Path:
    """The run's YAML: lovt-tiny.yaml's model section (heads chosen on the command line), the demo data, short run."""
    model = yaml.safe_load((REPO / "recipes/configs/lovt-tiny.yaml").read_text())["model"]
    config = {
        "model": model,
        "data": {"demo_train": args.demo_train, "demo_test": args.demo_test, "demo_dir": args.demo_dir,
                 "num_workers": args.num_workers},
        "train": {"warmup_steps": args.warmup_steps, "log_every": min(10, args.steps),
                  "save_every": args.steps + 1},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def train(arm: str, seed: int, config: Path, work: Path, args) -> tuple[Path, float, bool]:
    """Run the recipe for one arm and seed in its own process.

    Returns the final checkpoint, the training wall time and whether an earlier invocation's run was reused.
    """
    out = work / f"{arm}_seed{seed}"
    final = out / "final"
    timing = out / "train_seconds.json"
    if args.reuse and (final / "config.json").is_file():
        return final, json.loads(timing.read_text())["seconds"] if timing.is_file() else float("nan"), True
    launcher = Path(sys.executable).parent / "accelerate"
    command = [str(launcher), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", str(REPO / "recipes/pretrain.py"), "--config", str(config),
               "--heads", "lovt" if arm == "lovt" else "", "--output-dir", str(out),
               "--max-steps", str(args.steps), "--seed", str(seed), "--batch-size", str(args.batch_size),
               "--lr", str(args.lr)]
    start = time.perf_counter()
    log = out.with_suffix(".log")
    out.mkdir(parents=True, exist_ok=True)
    with log.open("w") as handle:
        done = subprocess.run(command, cwd=REPO, stdout=handle, stderr=subprocess.STDOUT)
    if done.returncode != 0:
        raise RuntimeError(f"training {arm} seed {seed} failed (exit {done.returncode}); see {log}")
    seconds = time.perf_counter() - start
    timing.write_text(json.dumps({"seconds": seconds, "steps": args.steps}))
    return final, seconds, False


# ------------------------------------------------------------------------------------------------------ maps
@torch.no_grad()
def grid_similarities(model: VLPModel, processor: VLPProcessor, pairs: list[Pair],
                      batch_size: int = 32) -> dict[str, list[torch.Tensor]]:
    """Per pair, the (h, w) region-sentence similarities that `similarity_map` computes, batched.

    ``similarity_map`` runs the towers once per (image, text); here a batch of pairs goes through them at once
    (eval mode: no sample sees another), with the same formulas as ``vlp.grounding.region_similarities``:
      - ``similarity_map``: without LoVT, cos(image projection of each region, global text embedding); with
        LoVT, cos(projected region, normalised mean of the normalised projected sentences);
      - ``attended`` (LoVT only): cos(projected region, the sentences attended onto it). With one sentence
        every region attends to it with probability 1, so this is the sentence through the head's shared value
        and output projections and its norm: the candidate that ``local_region_to_attended`` pulls each region
        towards;
      - ``attention`` (LoVT only): the head's sentence->region attention (softmax over the regions of the shared
        key scores), averaged over the text's sentences: the map LoVT's cross-attention itself draws.
    `check_against_similarity_map` asserts that the first kind equals `similarity_map`.
    """
    model.eval()
    device = next(model.parameters()).device
    lovt = model.config.has_head("lovt")
    out: dict[str, list[torch.Tensor]] = defaultdict(list)
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        batch = processor(text=[p.text for p in chunk], images=[p.image for p in chunk], return_tensors="pt",
                          padding=True, return_sentence_ids=lovt).to(device)
        features = model.image_tower(batch["pixel_values"])
        h, w = features.grid
        text = model.encode_texts(batch["input_ids"], batch["attention_mask"])
        text_embeds = text.embeds
        if lovt:
            sentence_ids = batch["sentence_ids"].masked_fill(batch["attention_mask"] == 0, -1)
            local = model.lovt.align(features.regions, grid_positions(h, w, device), text.features.tokens,
                                     sentence_ids, return_loss=False)
            regions = F.normalize(local.region_embeds, dim=-1)  # (B, R, D)
            sentences = F.normalize(local.sentence_embeds, dim=-1) * local.sentence_mask.unsqueeze(-1)
            query = F.normalize(sentences.sum(1) / local.sentence_mask.sum(1, keepdim=True), dim=-1)
            real = local.sentence_mask.unsqueeze(-1).to(regions.dtype)  # (B, S, 1)
            sims = {"similarity_map": torch.einsum("brd,bd->br", regions, query),
                    "attended": F.cosine_similarity(local.region_embeds, local.region_attended_embeds, dim=-1),
                    "attention": (local.sentence_to_region_attention * real).sum(1) / real.sum(1)}
        else:
            regions = F.normalize(model.image_projection(features.regions), dim=-1)
            sims = {"similarity_map": torch.einsum("brd,bd->br", regions, text_embeds)}
        for kind, values in sims.items():
            out[kind] += list(values.view(-1, h, w).float().cpu())
    return out


def check_against_similarity_map(model, processor, pairs: list[Pair], grids: list[torch.Tensor]) -> None:
    """The batched maps must equal the library's `vlp.grounding.similarity_map`, pair by pair."""
    for pair, grid in zip(pairs, grids):
        geometry = processor.image_processor.geometry(*pair.image.shape)
        np.testing.assert_allclose(grid_to_image(grid, geometry, SMOOTH_SIGMA),
                                   similarity_map(model, processor, pair.image, pair.text, SMOOTH_SIGMA),
                                   rtol=0, atol=1e-4, err_msg=f"batched map differs for {pair.text!r}")


def centre_gaussian(shape: tuple[int, int], sigma: float = 0.25) -> np.ndarray:
    """A Gaussian at the image centre, standard deviation `sigma` of each side."""
    ys = (np.arange(shape[0]) + 0.5) / shape[0] - 0.5
    xs = (np.arange(shape[1]) + 0.5) / shape[1] - 0.5
    return np.exp(-(ys[:, None] ** 2 + xs[None, :] ** 2) / (2 * sigma ** 2))


def finding_priors(cases: list[tuple[str, list]], shape: tuple[int, int]) -> dict[str, np.ndarray]:
    """Per finding, the sum of the box masks of the given (finding, boxes) cases: a map of where it tends to be."""
    sums: dict[str, np.ndarray] = {}
    for finding, boxes in cases:
        sums[finding] = sums.get(finding, 0) + boxes_to_mask(boxes, *shape).astype(np.float64)
    return sums


# ------------------------------------------------------------------------------------------------------ scoring
def score(heatmap: np.ndarray, pair: Pair) -> dict[str, float]:
    out = {"pointing": float(pointing_game(heatmap, pair.boxes))}
    for t, value in heatmap_iou(heatmap, pair.boxes, MAP_THRESHOLDS).items():
        out[f"iou@{t:g}"] = value
    return out


def summarise(per_pair: list[dict[str, float]], findings: list[str]) -> dict[str, dict[str, float]]:
    """Mean of every metric over all pairs ('all') and per finding."""
    groups: dict[str, list[dict[str, float]]] = defaultdict(list)
    for finding, values in zip(findings, per_pair):
        groups["all"].append(values)
        groups[finding].append(values)
    return {g: {k: float(np.mean([v[k] for v in rows])) for k in rows[0]} for g, rows in groups.items()}


def evaluate_model(final: Path, sets: dict[str, list[Pair]], check: int = 3) -> dict:
    """Scores of every map kind on every set; the first `check` pairs of each are checked against the library."""
    device = "cuda" if torch.cuda.is_available() else "cpu"
    model = VLPModel.from_pretrained(final).to(device).eval()
    processor = VLPProcessor.from_pretrained(final)
    results = {}
    for name, pairs in sets.items():
        grids = grid_similarities(model, processor, pairs)
        check_against_similarity_map(model, processor, pairs[:check], grids["similarity_map"][:check])
        results[name] = {}
        for kind, values in grids.items():
            scores = [score(grid_to_image(grid, processor.image_processor.geometry(*p.image.shape), SMOOTH_SIGMA), p)
                      for p, grid in zip(pairs, values)]
            results[name][kind] = summarise(scores, [p.finding for p in pairs])
    return results


def evaluate_baselines(sets: dict[str, list[Pair]], demo_train: list[tuple[str, list]]) -> dict:
    results = {}
    for name, pairs in sets.items():
        findings = [p.finding for p in pairs]
        rows = {"centre Gaussian": [score(centre_gaussian(p.image.shape), p) for p in pairs]}
        shape = pairs[0].image.shape
        if name == "demo" and demo_train:
            priors = finding_priors(demo_train, shape)
            rows["finding prior (train boxes)"] = [score(priors.get(p.finding, np.zeros(shape)), p) for p in pairs]
        elif name == "nih":
            priors = finding_priors([(p.finding, p.boxes) for p in pairs], shape)
            rows["finding prior (other images' boxes)"] = [
                score(priors[p.finding] - boxes_to_mask(p.boxes, *shape), p) for p in pairs]
        chance = []  # a random pixel hits with the boxes' area share; the whole image as the map has that IoU
        for pair in pairs:
            share = float(boxes_to_mask(pair.boxes, *pair.image.shape).mean())
            chance.append({"pointing": share} | {f"iou@{t:g}": share for t in MAP_THRESHOLDS})
        results[name] = {k: summarise(v, findings) for k, v in rows.items()}
        results[name]["chance (random pixel; whole image)"] = summarise(chance, findings)
    return results


# ------------------------------------------------------------------------------------------------------ report
def mean_std(values: list[float]) -> str:
    values = [v for v in values if v == v]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.3f}"
    return f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}"


def tables(runs: dict, baselines: dict, counts: dict[str, dict[str, int]], seeds: list[int]) -> str:
    metrics = ["pointing"] + [f"iou@{t:g}" for t in MAP_THRESHOLDS]
    header = "| map | " + " | ".join(["pointing game"] + [f"IoU (map ≥ {t:g})" for t in MAP_THRESHOLDS]) + " |"
    rule = "|---|" + "---|" * len(metrics)
    lines = []
    rows_of = [("global", "similarity_map", "global loss only: `similarity_map`"),
               ("lovt", "similarity_map", "LoVT head: `similarity_map`"),
               ("lovt", "attended", "LoVT head: region vs attended sentence"),
               ("lovt", "attention", "LoVT head: sentence→region attention")]
    for name in counts:
        title = {"demo": "Demo data, held-out split", "nih": "NIH ChestX-ray14 expert boxes"}[name]
        lines += [f"### {title}", "", f"Mean ± sample std over seeds {seeds}.", "", header, rule]
        for arm, kind, label in rows_of:
            if arm not in runs:
                continue
            cells = [mean_std([runs[arm][s][name][kind]["all"].get(m, float("nan")) for s in seeds]) for m in metrics]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        if "global" in runs and "lovt" in runs:  # same seed = same tower init and data order: paired
            for kind, label in (("similarity_map", "`similarity_map`"), ("attended", "attended"),
                                ("attention", "attention")):
                cells = [mean_std([runs["lovt"][s][name][kind]["all"][m] - runs["global"][s][name]["similarity_map"]
                                   ["all"][m] for s in seeds]) for m in metrics]
                lines.append(f"| difference LoVT ({label}) − global, paired by seed | " + " | ".join(cells) + " |")
        for label, summary in baselines[name].items():
            cells = [f"{summary['all'][m]:.3f}" if m in summary["all"] else "–" for m in metrics]
            lines.append(f"| *{label}* | " + " | ".join(cells) + " |")
        findings = sorted(counts[name])
        lines += ["", f"Pointing game per finding, {title} (pairs in brackets):", "",
                  "| map | " + " | ".join(f"{f} ({counts[name][f]})" for f in findings) + " |",
                  "|---|" + "---|" * len(findings)]
        for arm, kind, label in rows_of:
            if arm not in runs:
                continue
            cells = [mean_std([runs[arm][s][name][kind][f]["pointing"] for s in seeds]) for f in findings]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        for label, summary in baselines[name].items():
            lines.append(f"| *{label}* | " + " | ".join(f"{summary[f]['pointing']:.3f}" for f in findings) + " |")
        lines.append("")
    return "\n".join(lines)


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def write_doc(path: Path, block: str, name: str = "main") -> None:
    """Replace the results block `name` of `path` (markers ``<!-- results:NAME:start/end -->``), keeping the text
    around it; a block not yet in the file is appended."""
    start, end = f"<!-- results:{name}:start -->", f"<!-- results:{name}:end -->"
    text = path.read_text() if path.is_file() else "# LoVT phrase grounding\n"
    if start not in text or end not in text:
        text = text.rstrip() + f"\n\n{start}\n{end}\n"
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"{head}{start}\n{block.strip()}\n{end}{tail}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--steps", type=int, default=50, help="optimizer steps per run")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    p.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS))
    p.add_argument("--demo-train", type=int, default=2000, help="demo studies generated for training")
    p.add_argument("--demo-test", type=int, default=400, help="demo studies generated for the held-out split")
    p.add_argument("--demo-dir", help="where the demo data lives (default: the recipe's cache, or WORK/demo "
                                      "when the sizes differ from the recipe's defaults)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--lr", type=float, default=5e-4)
    p.add_argument("--warmup-steps", type=int, help="default: 10%% of --steps")
    p.add_argument("--num-workers", type=int, default=2)
    p.add_argument("--nih-dir", type=Path, default=REPO.parent / "shared/data/nih_bbox")
    p.add_argument("--no-nih", action="store_true", help="evaluate on the demo data only")
    p.add_argument("--max-pairs", type=int, default=0, help="cap each evaluation set (0: all; for smoke runs)")
    p.add_argument("--work-dir", type=Path, default=REPO / "runs/bench_lovt_localization")
    p.add_argument("--reuse", action="store_true", help="skip training where WORK/ARM_seedN/final exists")
    p.add_argument("--out", type=Path, default=REPO / "docs/benchmarks/lovt_localization.md")
    p.add_argument("--block", default="main", help="which results block of --out to replace")
    args = p.parse_args(argv)
    args.warmup_steps = args.warmup_steps if args.warmup_steps is not None else max(1, args.steps // 10)
    defaults = DataSection()
    if args.demo_dir is None and (args.demo_train, args.demo_test) != (defaults.demo_train, defaults.demo_test):
        args.demo_dir = str(args.work_dir / "demo")
    torch.set_grad_enabled(False)

    started = time.perf_counter()
    loads = [("start", load_average())]
    args.work_dir.mkdir(parents=True, exist_ok=True)
    config = write_config(args.work_dir, args)
    manifest = demo_manifest(DataSection(demo_train=args.demo_train, demo_test=args.demo_test,
                                         demo_dir=args.demo_dir))
    sets = {"demo": demo_pairs(manifest, "test")}
    if not args.no_nih:
        sets["nih"] = nih_pairs(args.nih_dir)
    if args.max_pairs:
        sets = {k: v[:args.max_pairs] for k, v in sets.items()}
    demo_train_pairs = demo_train_boxes(manifest)
    print(f"pairs: " + ", ".join(f"{k} {len(v)}" for k, v in sets.items()), flush=True)

    train_times: dict[str, list[float]] = defaultdict(list)
    reused = 0.0  # training seconds recorded by an earlier invocation (--reuse)
    eval_times: list[float] = []
    runs: dict[str, dict[int, dict]] = defaultdict(dict)
    for seed in args.seeds:
        for arm in args.arms:
            final, seconds, was_reused = train(arm, seed, config, args.work_dir, args)
            train_times[arm].append(seconds)
            reused += seconds if was_reused and seconds == seconds else 0.0
            start = time.perf_counter()
            runs[arm][seed] = evaluate_model(final, sets)
            eval_times.append(time.perf_counter() - start)
            loads.append((f"after {arm} seed {seed}", load_average()))
            print(f"{arm} seed {seed}: trained in {seconds:.0f} s, evaluated in {eval_times[-1]:.0f} s; "
                  f"pointing game " + ", ".join(f"{k} {v['similarity_map']['all']['pointing']:.3f}"
                                                for k, v in runs[arm][seed].items()), flush=True)
    baselines = evaluate_baselines(sets, demo_train_pairs)
    counts = {name: {f: sum(p.finding == f for p in pairs) for f in sorted({p.finding for p in pairs})}
              for name, pairs in sets.items()}
    wall = time.perf_counter() - started
    (args.work_dir / "results.json").write_text(json.dumps({"runs": runs, "baselines": baselines}, indent=1))
    body = tables(runs, baselines, counts, args.seeds)
    command = "cd /work/main && .venv/bin/python bench/lovt_localization.py " + " ".join(argv or sys.argv[1:])
    n_train = sum(1 for line in manifest.read_text().splitlines() if json.loads(line)["split"] == "train")
    per_step = {arm: [t / args.steps for t in ts if t == t] for arm, ts in train_times.items()}
    info = [
        f"Command: `{command.strip()}`", "",
        f"- Machine: {platform.machine()}, {os.cpu_count()} CPU cores, no GPU, {platform.platform()}; "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads); the cores are shared with other jobs.",
        "- Load average (1, 5, 15 min) during the run: " + "; ".join(f"{w}: {l}" for w, l in loads) + ".",
        f"- Data: demo `{manifest}` ({n_train} training studies; held-out split: {len(sets['demo'])} "
        f"(image, sentence) pairs)" + (f"; NIH `{args.nih_dir}`: {len(sets['nih'])} (image, finding) pairs"
                                       if "nih" in sets else "") + ".",
        f"- Training: tiny preset, {args.steps} steps of batch {args.batch_size}, lr {args.lr}, warmup "
        f"{args.warmup_steps}, seeds {args.seeds}, one process per run "
        f"(`accelerate launch recipes/pretrain.py --heads ...`).",
        "- Wall time: " + "; ".join(
            f"{arm} training {np.nansum(ts):.0f} s ({mean_std(per_step[arm])} s/step incl. start-up)"
            for arm, ts in train_times.items()) + f"; evaluation {sum(eval_times):.0f} s; total {wall:.0f} s "
        f"({wall / 60:.1f} min)" + (f", plus {reused:.0f} s of training done by an earlier invocation and reused "
                                    f"(`--reuse`)" if reused else "") + ".",
        "",
    ]
    block = "\n".join(info) + "\n" + body
    print(block)
    write_doc(args.out, block, args.block)
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
