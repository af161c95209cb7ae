"""Speed of the radiomics engine: regions/s of the torch backend and of PyRadiomics on the same real regions.

Regions: every expert box of ../shared/data/nih_bbox (NIH ChestX-ray14, 256 px PNGs, raw 8-bit values) as a mask,
the full 2D feature set (102 features), PyRadiomics' default settings. For each batch size the torch backend runs
over all regions for at least ``--min-seconds`` in all (best of the passes, after a warm-up pass); PyRadiomics (the
``pyradiomics`` backend, cache off) runs over the first ``--pyradiomics-regions`` of the same regions (it
computes one region at a time, so its rate does not depend on the batch size). The ratio is torch / PyRadiomics.
The machine's speed drifts (its cores are shared), so the measurement runs in ``--rounds`` rounds, each timing
PyRadiomics once and then the torch backend at every batch size; each side keeps its best round, so both sides are
measured under the same conditions and by the same rule. Then ``--pairs`` paired measurements: PyRadiomics on a block
of regions and the torch backend for about as long, back to back, the ratio taken within each pair (the drift
cancels); the median, quartiles and pooled ratio are reported.

    .venv/bin/python bench/radiomics_speed.py                        # the documented CPU run (~2-3 min)
    .venv/bin/python bench/radiomics_speed.py --device cuda --batch-sizes 1 32 128 512 702

Prints a markdown table and writes it, with the machine, data, command and load, to
docs/benchmarks/radiomics_speed.md (``--out``). ``--per-class`` adds where the time goes: CPU ms per 128 regions of
the batch validation, the packing and each feature class, at a given batch size. The torch backend's CPU path
uses compiled numba kernels when numba is installed (``--no-kernels``: the numpy/torch path).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from vlp.radiomics import RadiomicsExtractor, box_mask  # noqa: E402

DEFAULT_DATA = Path(os.environ.get("VLP_SHARED_DATA", REPO.parent / "shared" / "data")) / "nih_bbox"


def load_regions(root: Path, limit: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Raw images (N, 256, 256) uint8 and box masks (N, 256, 256) bool: one region per expert box."""
    if not (root / "manifest.jsonl").is_file():
        sys.exit(f"radiomics_speed: {root}/manifest.jsonl not found; pass --data (the nih_bbox folder)")
    images, masks = [], []
    with open(root / "manifest.jsonl", encoding="utf-8") as f:
        for line in f:
            row = json.loads(line)
            image = np.asarray(Image.open(root / row["image_path"]))
            for b in row["boxes"]:
                images.append(image)
                masks.append(box_mask(b["x_resized"], b["y_resized"], b["w_resized"], b["h_resized"], *image.shape))
            if limit is not None and len(images) >= limit:
                break
    return np.stack(images)[:limit], np.stack(masks)[:limit]


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


def torch_rate(images: torch.Tensor, masks: torch.Tensor, batch_size: int, min_seconds: float,
               threads: int) -> tuple[float, float]:
    """(regions per second, regions per CPU-second) of the torch backend over all regions in batches: the best
    pass after a warm-up pass."""
    ext = RadiomicsExtractor("torch", num_threads=threads)
    n = images.shape[0]

    def one_pass() -> tuple[float, float]:
        _sync(images.device)
        wall, cpu = _clock()
        for i in range(0, n, batch_size):
            ext(images[i : i + batch_size], masks[i : i + batch_size])
        _sync(images.device)
        wall2, cpu2 = _clock()
        return wall2 - wall, cpu2 - cpu

    one_pass()
    best_wall, best_cpu, spent = float("inf"), float("inf"), 0.0
    while spent < min_seconds or best_wall == float("inf"):
        wall, cpu = one_pass()
        best_wall, best_cpu, spent = min(best_wall, wall), min(best_cpu, cpu), spent + wall
    return n / best_wall, n / best_cpu


def per_class_ms(images: torch.Tensor, masks: torch.Tensor, batch_size: int, repeats: int = 2) -> dict[str, float]:
    """CPU ms per 128 regions of each stage of the torch backend (validation, packing, every feature class), over
    all regions in batches of `batch_size`: the best of `repeats` passes after a warm-up pass."""
    from vlp.radiomics import torch_backend
    from vlp.radiomics.torch_backend.discretisation import prepare_canvas

    ext = RadiomicsExtractor("torch")
    n = images.shape[0]
    best: dict[str, float] = {}
    for rep in range(repeats + 1):
        spent: dict[str, float] = {}
        for i in range(0, n, batch_size):
            img, msk = images[i : i + batch_size], masks[i : i + batch_size]
            t = time.process_time()
            boxes = ext.check(img, msk)
            spent["validation"] = spent.get("validation", 0.0) + time.process_time() - t
            t = time.process_time()
            canvas = prepare_canvas(img, msk, boxes)
            spent["packing"] = spent.get("packing", 0.0) + time.process_time() - t
            for name in torch_backend.FEATURE_CLASSES:
                t = time.process_time()
                torch_backend.compute_canvas(canvas, (name,))
                spent[name] = spent.get(name, 0.0) + time.process_time() - t
        if rep > 0:
            best = {k: min(best.get(k, float("inf")), v * 1000 * 128 / n) for k, v in spent.items()}
    return best


def pyradiomics_rate(images: np.ndarray, masks: np.ndarray, workers: int) -> tuple[float, float]:
    """(regions per second, regions per CPU-second of this process) of PyRadiomics, one pass, cache off."""
    ext = RadiomicsExtractor("pyradiomics", cache_size=0, num_workers=workers)
    ext(images[:2], masks[:2])  # import and configure PyRadiomics outside the timing
    wall, cpu = _clock()
    ext(images, masks)
    wall2, cpu2 = _clock()
    ext.close()
    return len(images) / (wall2 - wall), len(images) / (cpu2 - cpu)


def paired_ratios(images_np: np.ndarray, masks_np: np.ndarray, images: torch.Tensor, masks: torch.Tensor,
                  batch_size: int, pairs: int, block: int, threads: int, workers: int,
                  seed: int = 0) -> dict[str, np.ndarray]:
    """Torch / PyRadiomics rates measured in `pairs` interleaved pairs, each side under the same conditions.

    Each pair times PyRadiomics on a block of `block` regions (consecutive blocks of one random order of all
    regions, so the pairs together cover them about once) and the torch backend on passes over all regions in
    batches of `batch_size` for about as long; the order within a pair alternates. Each side first runs an untimed
    warm-up call (two regions; one batch), so both are timed in their steady state. Every rate is a plain mean over
    its window (no best-of). Returns per-pair arrays: "torch" and "pyradiomics" regions/s, the same per CPU-s
    ("torch_cpu", "pyradiomics_cpu"), and each window's regions and seconds ("torch_n", "torch_s",
    "pyradiomics_n", "pyradiomics_s")."""
    ref = RadiomicsExtractor("pyradiomics", cache_size=0, num_workers=workers)
    ext = RadiomicsExtractor("torch", num_threads=threads)
    n = len(images_np)
    order = np.random.default_rng(seed).permutation(n)
    ref(images_np[:2], masks_np[:2])
    out: dict[str, list[float]] = {f"{side}{key}": [] for side in ("torch", "pyradiomics")
                                   for key in ("", "_cpu", "_n", "_s")}

    def torch_side(seconds: float) -> None:
        ext(images[:batch_size], masks[:batch_size])  # warm-up (caches, allocator) after the other side ran
        _sync(images.device)
        wall, cpu = _clock()
        done = 0
        while True:
            for i in range(0, n, batch_size):
                ext(images[i : i + batch_size], masks[i : i + batch_size])
            done += n
            _sync(images.device)
            wall2, cpu2 = _clock()
            if wall2 - wall >= seconds:
                break
        out["torch"].append(done / (wall2 - wall))
        out["torch_cpu"].append(done / (cpu2 - cpu))
        out["torch_n"].append(done)
        out["torch_s"].append(wall2 - wall)

    def ref_side(k: int) -> float:
        idx = order[np.arange(k * block, (k + 1) * block) % n]
        ref(images_np[idx[:2]], masks_np[idx[:2]])  # warm-up, as for the torch side
        wall, cpu = _clock()
        ref(images_np[idx], masks_np[idx])
        wall2, cpu2 = _clock()
        out["pyradiomics"].append(block / (wall2 - wall))
        out["pyradiomics_cpu"].append(block / (cpu2 - cpu))
        out["pyradiomics_n"].append(block)
        out["pyradiomics_s"].append(wall2 - wall)
        return wall2 - wall

    torch_side(0.0)  # warm-up
    for key in out:
        out[key].clear()
    last = 1.0
    for k in range(pairs):
        if k % 2 == 0:
            last = ref_side(k)
            torch_side(last)
        else:
            torch_side(last)
            last = ref_side(k)
    ref.close()
    return {key: np.array(v) for key, v in out.items()}


def machine() -> str:
    cpu = platform.processor() or "unknown CPU"
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{cpu}, {os.cpu_count()} logical cores, {platform.system()} {platform.release()}"


def numba_version() -> str:
    try:
        import numba
    except ImportError:
        return "not installed"
    return numba.__version__


def load_average() -> str:
    try:
        return " / ".join(f"{x:.2f}" for x in os.getloadavg()) + " (1 / 5 / 15 min)"
    except OSError:
        return "unavailable"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--data", type=Path, default=DEFAULT_DATA, help="the nih_bbox folder")
    p.add_argument("--limit", type=int, default=None, help="use only the first N regions")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 8, 32, 128, 512])
    p.add_argument("--device", default="cpu", help="device of the torch backend (cpu, cuda, cuda:1, ...)")
    p.add_argument("--threads", type=int, default=1,
                   help="torch backend's CPU threads (its num_threads; default 1: one core, as PyRadiomics)")
    p.add_argument("--min-seconds", type=float, default=3.0,
                   help="time spent per torch batch size, split over the rounds")
    p.add_argument("--pyradiomics-regions", type=int, default=200, help="regions PyRadiomics is timed on")
    p.add_argument("--pyradiomics-workers", type=int, default=0, help="processes for PyRadiomics (0: serial)")
    p.add_argument("--rounds", type=int, default=3,
                   help="rounds of (PyRadiomics once, torch at every batch size); each side keeps its best")
    p.add_argument("--pairs", type=int, default=20,
                   help="interleaved (PyRadiomics block, torch passes) pairs for the paired ratio (0: skip)")
    p.add_argument("--pair-block", type=int, default=35, help="regions PyRadiomics computes per pair")
    p.add_argument("--pair-batch-size", type=int, default=512, help="torch batch size in the pairs")
    p.add_argument("--per-class", type=int, default=None, metavar="BATCH_SIZE",
                   help="also time each stage (CPU ms per 128 regions) at this batch size, in every round")
    p.add_argument("--no-kernels", action="store_true", help="torch backend without the compiled numba kernels")
    p.add_argument("--out", type=Path, default=REPO / "docs" / "benchmarks" / "radiomics_speed.md")
    args = p.parse_args(argv)

    from vlp.radiomics.torch_backend import kernels

    if args.no_kernels:
        kernels.ENABLED = False
    torch.set_num_threads(args.threads)

    device = torch.device(args.device)
    load_before = load_average()
    images_np, masks_np = load_regions(args.data, args.limit)
    n = len(images_np)
    pixels = masks_np.sum(axis=(1, 2))
    print(f"{n} regions, {pixels.mean():.0f} pixels on average (min {pixels.min()}, max {pixels.max()})", flush=True)

    n_ref = min(args.pyradiomics_regions, n)
    images = torch.from_numpy(images_np).to(device)
    masks = torch.from_numpy(masks_np).to(device)
    ref_rounds: list[tuple[float, float]] = []
    best = {bs: (0.0, 0.0) for bs in args.batch_sizes}
    stages: dict[str, float] = {}
    for r in range(args.rounds):
        t0 = time.perf_counter()
        ref_rounds.append(pyradiomics_rate(images_np[:n_ref], masks_np[:n_ref], args.pyradiomics_workers))
        print(f"round {r + 1}: pyradiomics {ref_rounds[-1][0]:.1f} regions/s, {ref_rounds[-1][1]:.1f} per CPU-s, "
              f"on {n_ref} regions ({time.perf_counter() - t0:.1f} s)", flush=True)
        for bs in args.batch_sizes:
            rate, cpu = torch_rate(images, masks, bs, args.min_seconds / args.rounds, args.threads)
            best[bs] = (max(best[bs][0], rate), max(best[bs][1], cpu))
            print(f"round {r + 1}: torch batch {bs}: {rate:.0f} regions/s, {cpu:.0f} per CPU-s", flush=True)
        if args.per_class:
            stages = {k: min(stages.get(k, float("inf")), v)
                      for k, v in per_class_ms(images, masks, args.per_class).items()}
    ref_rate = max(rate for rate, _ in ref_rounds)
    ref_cpu = max(cpu for _, cpu in ref_rounds)
    rows = [(bs, rate, cpu) for bs, (rate, cpu) in best.items()]
    for bs, rate, cpu in rows:
        print(f"best: torch batch {bs}: {rate:.0f} regions/s ({rate / ref_rate:.0f}x), {cpu:.0f} per CPU-s "
              f"({cpu / ref_cpu:.0f}x)", flush=True)

    paired = None
    if args.pairs:
        paired = paired_ratios(images_np, masks_np, images, masks, args.pair_batch_size, args.pairs, args.pair_block,
                               args.threads, args.pyradiomics_workers)
        wall_r = paired["torch"] / paired["pyradiomics"]
        cpu_r = paired["torch_cpu"] / paired["pyradiomics_cpu"]
        pooled = (paired["torch_n"].sum() / paired["torch_s"].sum()) / (
            paired["pyradiomics_n"].sum() / paired["pyradiomics_s"].sum())
        pooled_cpu = (paired["torch_n"].sum() / (paired["torch_n"] / paired["torch_cpu"]).sum()) / (
            paired["pyradiomics_n"].sum() / (paired["pyradiomics_n"] / paired["pyradiomics_cpu"]).sum())
        print(f"paired ({args.pairs} pairs, torch batch {args.pair_batch_size}): median ratio {np.median(wall_r):.0f}x "
              f"(quartiles {np.quantile(wall_r, 0.25):.0f}-{np.quantile(wall_r, 0.75):.0f}x), per CPU-s "
              f"{np.median(cpu_r):.0f}x ({np.quantile(cpu_r, 0.25):.0f}-{np.quantile(cpu_r, 0.75):.0f}x); "
              f"pooled {pooled:.0f}x, per CPU-s {pooled_cpu:.0f}x", flush=True)

    if stages:
        print("CPU ms per 128 regions: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items())
              + f"; total {sum(stages.values()):.1f}", flush=True)

    given = argv if argv is not None else sys.argv[1:]
    command = ("python bench/radiomics_speed.py " + shlex.join(given)).rstrip()
    table = ["| batch size | torch (regions/s) | PyRadiomics (regions/s) | ratio | torch (regions/CPU-s) | "
             "PyRadiomics (regions/CPU-s) | ratio per CPU-s |", "|---:|---:|---:|---:|---:|---:|---:|"]
    table += [f"| {bs} | {rate:,.0f} | {ref_rate:.1f} | {rate / ref_rate:,.0f}x | {cpu:,.0f} | {ref_cpu:.1f} | "
              f"{cpu / ref_cpu:,.0f}x |" for bs, rate, cpu in rows]
    if device.type == "cuda":
        device_text = torch.cuda.get_device_name(device)
    else:
        device_text = f"CPU, {args.threads} torch thread(s), " + (
            "compiled numba kernels" if kernels.active() and device.type == "cpu" else "numpy/torch path (no kernels)")
    import radiomics

    text = "\n".join([
        "# Radiomics engine speed: torch backend vs PyRadiomics",
        "",
        "Written by `bench/radiomics_speed.py`; see [../radiomics_engine.md](../radiomics_engine.md).",
        "",
        f"- Command: `{command}`",
        f"- Machine: {machine()}; torch backend on {device_text}; PyRadiomics serial"
        + (f" ({args.pyradiomics_workers} processes)" if args.pyradiomics_workers > 1 else " (one process)"),
        f"- Versions: torch {torch.__version__}, PyRadiomics {radiomics.__version__}, numpy {np.__version__}, "
        f"numba {numba_version()}",
        f"- Load average before / after: {load_before} / {load_average()} (the cores are shared with other jobs,"
        " so rates are noisy)",
        f"- Data: {n} regions, every expert box of `../shared/data/nih_bbox` (NIH ChestX-ray14, 256 px 8-bit PNGs) "
        f"as a mask; {pixels.mean():.0f} pixels per region on average (min {pixels.min()}, max {pixels.max()}).",
        "- Features: the full 2D set (102: firstorder, shape2D, glcm, glrlm, glszm, gldm, ngtdm), PyRadiomics' "
        "defaults (bin width 25).",
        f"- {args.rounds} rounds, each timing PyRadiomics once on the first {n_ref} regions (one at a time: its rate "
        f"does not depend on the batch size), then the torch backend on all {n} regions in batches of each size "
        f"(best pass of at least {args.min_seconds / args.rounds:g} s after a warm-up pass); each side's best round "
        "is reported, so both are measured under the same conditions and by the same rule. PyRadiomics per round: "
        + ", ".join(f"{rate:.1f}" for rate, _ in ref_rounds) + " regions/s, "
        + ", ".join(f"{cpu:.1f}" for _, cpu in ref_rounds) + " per CPU-s.",
        "- regions/s is wall-clock time; regions/CPU-s divides by the CPU time of this process (all its threads; "
        "PyRadiomics worker processes are not counted), which depends less on what else runs on the machine.",
        "",
        *table,
        "",
    ])
    if paired is not None:
        text += "\n".join([
            "",
            f"Paired measurement ({args.pairs} pairs, torch batch size {args.pair_batch_size}): each pair times "
            f"PyRadiomics on {args.pair_block} regions (consecutive blocks of one random order of all regions) and "
            "the torch backend on passes over all regions for about as long, back to back (the order alternating), "
            "each after an untimed warm-up call (steady state, as in a long extraction) and each rate a plain mean "
            "over its window; the ratio of each pair is taken under the same conditions, so the machine's drift "
            "between pairs cancels.",
            "",
            "| | median | quartiles | pooled |",
            "|---|---:|---:|---:|",
            f"| ratio, wall-clock | {np.median(wall_r):.0f}x | {np.quantile(wall_r, 0.25):.0f}-"
            f"{np.quantile(wall_r, 0.75):.0f}x | {pooled:.0f}x |",
            f"| ratio, per CPU-second | {np.median(cpu_r):.0f}x | {np.quantile(cpu_r, 0.25):.0f}-"
            f"{np.quantile(cpu_r, 0.75):.0f}x | {pooled_cpu:.0f}x |",
            f"| torch (regions/s) | {np.median(paired['torch']):,.0f} | {np.quantile(paired['torch'], 0.25):,.0f}-"
            f"{np.quantile(paired['torch'], 0.75):,.0f} | |",
            f"| PyRadiomics (regions/s) | {np.median(paired['pyradiomics']):.1f} | "
            f"{np.quantile(paired['pyradiomics'], 0.25):.1f}-{np.quantile(paired['pyradiomics'], 0.75):.1f} | |",
            "",
            "(pooled: all the pairs' regions over all their seconds, per side.)",
            "",
        ])
    if stages:
        text += "\n".join([
            "",
            f"Where the time goes at batch size {args.per_class} (CPU ms per 128 regions; each stage's best of 2 "
            "passes per round, over the rounds; the stages are timed one by one, so their sum is a little above a "
            "pass):",
            "",
            "| " + " | ".join(stages) + " | total |",
            "|" + "---:|" * (len(stages) + 1),
            "| " + " | ".join(f"{v:.1f}" for v in stages.values()) + f" | {sum(stages.values()):.1f} |",
            "",
        ])
    print("\n" + "\n".join(table))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(text, encoding="utf-8")
    print(f"\nwrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
