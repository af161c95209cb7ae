"""Running the recipe as a user runs it (`accelerate launch recipes/pretrain.py ...`) and reading what it logged."""
from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RECIPE = REPO / "recipes" / "pretrain.py"
ACCELERATE = Path(sys.executable).parent / "accelerate"


def recipe_module():
    spec = importlib.util.spec_from_file_location("pretrain_recipe", RECIPE)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def command(config: Path, output_dir: Path, *flags: str, processes: int = 1, mixed_precision: str = "no") -> list[str]:
    cmd = [str(ACCELERATE), "launch", "--num_processes", str(processes), "--num_machines", "1",
           "--mixed_precision", mixed_precision, "--dynamo_backend", "no"]
    if processes > 1:
        cmd.append("--multi_gpu")
    return [*cmd, str(RECIPE), "--config", str(config), "--output-dir", str(output_dir), *flags]


def env() -> dict:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}


def launch(config: Path, output_dir: Path, *flags: str, processes: int = 1,
           mixed_precision: str = "no") -> subprocess.CompletedProcess:
    result = subprocess.run(command(config, output_dir, *flags, processes=processes, mixed_precision=mixed_precision),
                            env=env(), cwd=REPO, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, f"recipe failed:\n{result.stdout[-3000:]}\n{result.stderr[-5000:]}"
    return result


def scalars(output_dir: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar the run logged to TensorBoard: tag -> [(step, value), ...]."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    values: dict[str, list[tuple[int, float]]] = {}
    for events in sorted((output_dir / "logs").rglob("events.out.tfevents.*")):
        acc = EventAccumulator(str(events))
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            values.setdefault(tag, []).extend((e.step, e.value) for e in acc.Scalars(tag))
    return values


def kill_and_resume(config: Path, work: Path, *flags: str) -> tuple[dict, dict]:
    """Run the recipe whole; run it again, kill it right after its first checkpoint (step 2) and `--resume` it.
    Returns the two final state dicts (uninterrupted, resumed)."""
    import signal
    import time

    from safetensors.torch import load_file

    launch(config, work / "whole", *flags)
    out = work / "killed"
    proc = subprocess.Popen(command(config, out, *flags), env=env(), cwd=REPO, start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 300
    try:
        while not (out / "checkpoints" / "step_0000002").is_dir():
            assert proc.poll() is None, "the run ended before its first checkpoint"
            assert time.monotonic() < deadline, "no checkpoint after 300 s"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (out / "final").exists(), "the run finished before it was killed; the test proves nothing"
    result = launch(config, out, *flags, "--resume")
    assert "resumed from" in result.stdout + result.stderr
    return load_file(work / "whole" / "final" / "model.safetensors"), load_file(out / "final" / "model.safetensors")
