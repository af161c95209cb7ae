r"""Does the dataloader keep up with training when LoVT's augmentation is on? Measured on the demo phantoms with the
tiny model and the LoVT head, as the recipe runs them (batch 32, 128 px, PNG files read and decoded per sample).

Three measurements, each in one process of this script:
  - ``loader``: batches per second of the recipe's DataLoader + collator alone (no model), with `--workers` workers,
    augmentation `lovt` and `none`;
  - ``step``: training steps per second of the tiny model with the LoVT head on one fixed batch (no loading);
  - ``loop``: the two together, the recipe's loop (load, step) for `--steps` steps, augmentation `lovt` and `none`,
    with the default 2 workers: if the loader keeps up, both run at the step's rate.
The table goes to docs/benchmarks/augmentation.md.

    .venv/bin/python bench/augmentation_throughput.py          # ~4 min on 2 cores
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[1]
LOVT = {"lovt": {"proj_dim": 64, "proj_hidden_dim": 256}}  # recipes/configs/lovt-tiny.yaml's head


def build(args, augmentation: str | None, workers: int, demo_dir: Path):
    from vlp import create_model_and_processor
    from vlp.augmentation import Augmenter, load_augmentation
    from vlp.training.collate import VLPCollator
    from vlp.training.config import DataSection
    from vlp.training.data import build_train_dataset

    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny", heads=LOVT)
    data = DataSection(demo_train=args.rows, demo_test=8, demo_dir=str(demo_dir))
    dataset = build_train_dataset(data)
    config = load_augmentation(augmentation)
    augmenter = Augmenter(config, processor.image_processor, seed=0) if config else None
    collator = VLPCollator(processor, inputs=frozenset(model.batch_inputs()), augmenter=augmenter)
    loader = DataLoader(dataset, batch_size=32, shuffle=True, drop_last=True, num_workers=workers,
                        collate_fn=collator, persistent_workers=False, generator=torch.Generator().manual_seed(0))
    return model, loader


def time_loader(args, augmentation, workers, demo_dir) -> float:
    _, loader = build(args, augmentation, workers, demo_dir)
    it = iter(loader)
    next(it)  # workers started, first batch made
    start = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    return args.batches / (time.perf_counter() - start)


def _inputs(batch):
    keys = ("pixel_values", "input_ids", "attention_mask", "sentence_ids", "labels")
    return {k: batch[k] for k in keys if k in batch}


def time_step(args, demo_dir) -> float:
    model, loader = build(args, "lovt", 0, demo_dir)
    batch = _inputs(next(iter(loader)))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    for i in range(args.steps + 3):
        start = time.perf_counter()
        loss = model(**batch, return_loss=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if i >= 3:
            times.append(time.perf_counter() - start)
    return 1 / statistics.median(times)


def time_loop(args, augmentation, demo_dir) -> float:
    model, loader = build(args, augmentation, 2, demo_dir)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    it = iter(loader)
    steps = 0
    start = None
    while steps < args.steps + 3:
        try:
            batch = next(it)
        except StopIteration:
            it = iter(loader)
            continue
        if steps == 3:
            start = time.perf_counter()
        loss = model(**_inputs(batch), return_loss=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        steps += 1
    return args.steps / (time.perf_counter() - start)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=512, help="demo training rows")
    parser.add_argument("--workers", default="0,1,2")
    parser.add_argument("--batches", type=int, default=12)
    parser.add_argument("--steps", type=int, default=15)
    parser.add_argument("--threads", type=int, default=None, help="intra-op threads (default: the recipe's choice)")
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "augmentation.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    sys.path.insert(0, str(REPO / "recipes"))
    from pretrain import cpu_threads_per_process

    threads = args.threads or cpu_threads_per_process(1)
    torch.set_num_threads(threads)
    with tempfile.TemporaryDirectory() as tmp:
        demo_dir = Path(tmp) / "demo"
        build(args, None, 0, demo_dir)  # generate the phantoms once
        loader_rates = {(aug, w): time_loader(args, aug, w, demo_dir)
                        for aug in ("lovt", None) for w in (int(x) for x in args.workers.split(","))}
        for key, rate in loader_rates.items():
            print(f"loader {key}: {rate:.2f} batches/s", flush=True)
        step_rate = time_step(args, demo_dir)
        print(f"step: {step_rate:.2f} steps/s", flush=True)
        loop_rates = {aug: time_loop(args, aug, demo_dir) for aug in ("lovt", None)}
        print(f"loop: {loop_rates}", flush=True)
    import psutil

    lines = ["# Augmentation: does the loader keep up?", "",
             "Produced by `bench/augmentation_throughput.py` (command below). The demo phantoms "
             f"({args.rows} training studies, PNG files read and decoded per sample), the tiny model with the LoVT "
             "head (`recipes/configs/lovt-tiny.yaml`'s), batch 32 at 128 px; the `lovt` augmentation preset "
             "(random resized crop, affine, brightness/contrast, Gaussian blur, sentence swaps) against none.", "",
             f"- Machine: {platform.processor() or platform.machine()}, {psutil.cpu_count(logical=False)} physical "
             f"cores, {threads} intra-op thread(s) for the model, torch {torch.__version__}",
             f"- Command: `.venv/bin/python bench/augmentation_throughput.py "
             f"{' '.join(argv if argv is not None else sys.argv[1:])}`", "",
             "## The loader alone (batches of 32 per second)", "",
             "| workers | `lovt` | none |", "|---|---|---|"]
    for w in (int(x) for x in args.workers.split(",")):
        lines.append(f"| {w} | {loader_rates[('lovt', w)]:.2f} | {loader_rates[(None, w)]:.2f} |")
    lines += ["", "## Training", "",
              f"- the step alone, on one fixed batch: **{step_rate:.2f} steps/s** (median of {args.steps})",
              f"- the loop with 2 workers (the recipe's default), `lovt`: **{loop_rates['lovt']:.2f} steps/s**; "
              f"no augmentation: **{loop_rates[None]:.2f} steps/s**", "",
              "The loader keeps up when one worker makes batches faster than the step consumes them and the loop "
              "with augmentation runs at the rate of the loop without it."]
    args.out.write_text("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
