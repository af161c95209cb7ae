r"""How many intra-op threads a CPU training process should use: the tiny model's training step (the demo's: batch 32,
128 px, the global loss, AdamW) timed with 1, 2, ... threads per process, on an idle machine and under load.

Scenarios, each measured with every thread count in `--threads`:
  - ``idle``:      one training process alone;
  - ``loaded``:    one training process while another process runs the same step on one thread (a second job);
  - ``two_procs``: two training processes at once, each with the thread count (what `--num_processes 2` on one
                   machine does, without the gradient exchange).
Each cell is the median step time (and its quartiles) of the measured process(es) over `--steps` steps after
`--warmup` steps. The table goes to docs/benchmarks/cpu_threads.md; the recipe's default (`train.cpu_threads: null`)
is chosen from it (docs/quickstart.md says which and why).

    .venv/bin/python bench/cpu_threads.py                     # ~3 min on 2 cores
"""
from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def _step_times(threads: int, steps: int, warmup: int, seed: int, stop=None) -> list[float]:
    """Seconds per training step of the tiny model; with `stop` (an Event) it runs until the event is set."""
    import numpy as np
    import torch

    from vlp import create_model_and_processor

    torch.set_num_threads(threads)
    torch.manual_seed(seed)
    model, processor = create_model_and_processor("tiny")
    rng = np.random.default_rng(seed)
    images = [(rng.random((160, 140)) * 255).astype(np.uint8) for _ in range(32)]
    texts = ["Heart size is normal. No pleural effusion.", "Mild cardiomegaly. Small left effusion."] * 16
    batch = processor(text=texts, images=images, return_tensors="pt", padding=True)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    times = []
    i = 0
    while True:
        start = time.perf_counter()
        loss = model(**batch, return_loss=True).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        elapsed = time.perf_counter() - start
        i += 1
        if i > warmup:
            times.append(elapsed)
        if stop is not None:
            if stop.is_set():
                return times
        elif len(times) >= steps:
            return times


def _worker(threads, steps, warmup, seed, queue, stop):
    queue.put(_step_times(threads, steps, warmup, seed, stop))


def measure(scenario: str, threads: int, steps: int, warmup: int) -> list[float]:
    ctx = mp.get_context("spawn")
    queue, background_queue, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    background = []
    if scenario == "loaded":  # a second job on one thread, running until the measured process is done
        background.append(ctx.Process(target=_worker, args=(1, 0, 0, 1, background_queue, stop)))
    measured = [ctx.Process(target=_worker, args=(threads, steps, warmup, 0, queue, None))]
    if scenario == "two_procs":
        measured.append(ctx.Process(target=_worker, args=(threads, steps, warmup, 1, queue, None)))
    for p in background:
        p.start()
    if background:
        time.sleep(8)  # let the load start (model built, steps running)
    for p in measured:
        p.start()
    results = [queue.get() for _ in measured]
    for p in measured:
        p.join()
    stop.set()
    for p in background:
        background_queue.get(timeout=120)  # its step times (unused); a child exits only once its queue is drained
        p.join(timeout=120)
        if p.is_alive():
            p.terminate()
    return [t for r in results for t in r]


def quartiles(values: list[float]) -> tuple[float, float, float]:
    q = statistics.quantiles(values, n=4)
    return q[0], statistics.median(values), q[2]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", default="1,2", help="thread counts to compare (comma-separated)")
    parser.add_argument("--scenarios", default="idle,loaded,two_procs")
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "cpu_threads.md")
    args = parser.parse_args(argv)
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    threads = [int(t) for t in args.threads.split(",")]
    rows = {}
    for scenario in args.scenarios.split(","):
        for t in threads:
            times = measure(scenario, t, args.steps, args.warmup)
            rows[(scenario, t)] = quartiles(times)
            print(f"{scenario:10s} threads={t}: median {rows[(scenario, t)][1]:.3f} s/step", flush=True)
    import psutil
    import torch

    lines = ["# CPU threads per training process", "",
             "Produced by `bench/cpu_threads.py` (command below): the tiny model's training step (batch 32, 128 px, "
             "global loss, AdamW), seconds per step, median [quartiles] over "
             f"{args.steps} steps after {args.warmup} warm-up steps, per measured process.", "",
             f"- Machine: {platform.processor() or platform.machine()}, {psutil.cpu_count(logical=False)} physical / "
             f"{os.cpu_count()} logical cores, torch {torch.__version__}, Python {platform.python_version()}",
             f"- Command: `.venv/bin/python bench/cpu_threads.py {' '.join(argv if argv is not None else sys.argv[1:])}`",
             "- Scenarios: `idle` one process alone; `loaded` one process while a second job runs the same step on "
             "one thread; `two_procs` two training processes at once, each with the thread count.", "",
             "| scenario | " + " | ".join(f"{t} thread{'s' if t > 1 else ''}" for t in threads) + " | fastest |",
             "|---|" + "---|" * (len(threads) + 1)]
    for scenario in args.scenarios.split(","):
        cells = [f"{rows[(scenario, t)][1]:.3f} [{rows[(scenario, t)][0]:.3f}, {rows[(scenario, t)][2]:.3f}]"
                 for t in threads]
        best = min(threads, key=lambda t: rows[(scenario, t)][1])
        lines.append(f"| {scenario} | " + " | ".join(cells) + f" | {best} |")
    lines += ["", "The recipe's default (`train.cpu_threads: null`) follows the fastest column: the physical cores that "
              "are not busy when the run starts (measured over half a second), shared among the processes on the "
              "machine (`cpu_threads_per_process` in `recipes/pretrain.py`). A load that starts later is not seen; "
              "set `--cpu-threads` when the machine is shared."]
    args.out.write_text("\n".join(lines) + "\n")
    print(json.dumps({f"{s}/{t}": v[1] for (s, t), v in rows.items()}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
