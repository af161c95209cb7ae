"""The pretraining recipe run as a user runs it: `accelerate launch recipes/pretrain.py` on small demo data."""
from __future__ import annotations

import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from recipe_runs import REPO, command, env, kill_and_resume, launch, recipe_module
from recipe_runs import scalars as read_scalars
from safetensors.torch import load_file


def test_end_to_end_on_tiny_saves_a_model_that_loads(demo_config, tmp_path):
    from transformers import AutoModel, AutoProcessor

    import vlp  # noqa: F401  (registers the Auto classes)

    out = tmp_path / "run"
    result = launch(demo_config, out)
    # accelerate launch sets OMP_NUM_THREADS=1; on the CPU the recipe chooses from the cores that are free
    cores = recipe_module().cpu_threads_per_process(1, sample_seconds=0)
    assert any(f"CPU training: {n} threads per process" in result.stdout + result.stderr for n in range(1, cores + 1))
    model = AutoModel.from_pretrained(out / "final")
    processor = AutoProcessor.from_pretrained(out / "final")
    assert type(model).__name__ == "VLPModel"
    scalars = read_scalars(out)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3, 4]
    assert {"train/global_image_to_text", "train/global_text_to_image", "train/lr"} <= set(scalars)
    assert all(torch.isfinite(torch.tensor(v)) for _, v in scalars["train/loss"])
    assert sorted(p.name for p in (out / "checkpoints").iterdir()) == ["step_0000002"]  # none at the last step

    torch.manual_seed(0)
    batch = processor(text=["No pneumothorax.", "Mild cardiomegaly."],
                      images=[torch.rand(100, 140).numpy(), torch.rand(90, 90).numpy()],
                      return_tensors="pt", padding=True)
    with torch.no_grad():
        output = model(**batch, return_loss=True)
    assert torch.isfinite(output.loss)
    fresh = vlp.create_model_and_processor("tiny")[0]
    trained = load_file(out / "final" / "model.safetensors")
    assert any(not torch.equal(trained[k], v) for k, v in fresh.state_dict().items() if k in trained)


def test_logged_values_are_means_over_each_window(demo_config, tmp_path):
    """With --log-every 3 and 4 steps the logs hold the mean of steps 1-3 and then step 4 alone (a shorter last
    window is not divided by 3); the values match a run that logs every step (same seed, deterministic)."""
    launch(demo_config, tmp_path / "every", "--log-every", "1")
    launch(demo_config, tmp_path / "windows", "--log-every", "3")
    every, windows = read_scalars(tmp_path / "every"), read_scalars(tmp_path / "windows")
    for tag in ("train/loss", "train/global_image_to_text"):
        per_step = [value for _, value in every[tag]]
        assert [step for step, _ in windows[tag]] == [3, 4]
        assert windows[tag][0][1] == pytest.approx(sum(per_step[:3]) / 3, rel=1e-5)
        assert windows[tag][1][1] == pytest.approx(per_step[3], rel=1e-5)


def test_a_killed_run_resumes_to_the_same_weights(demo_config, tmp_path):
    """Kill the run right after its first checkpoint, `--resume`, and land on the uninterrupted run's weights."""
    whole, resumed = kill_and_resume(demo_config, tmp_path, "--max-steps", "10")
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)


def test_two_processes_train_both_heads_over_gloo(demo_config, tmp_path):
    """`--multi_gpu --num_processes 2` on CPU: a real gloo group, with the LoVT and radiomics heads on."""
    out = tmp_path / "ddp"
    result = launch(demo_config, out, "--heads", "lovt,radiomics", "--max-steps", "2", "--batch-size", "4",
                     processes=2)
    assert "x 2 processes" in result.stdout + result.stderr
    scalars = read_scalars(out)
    assert any(tag.startswith("train/lovt/local_") for tag in scalars), sorted(scalars)
    assert any(tag.startswith("train/radiomics/") for tag in scalars), sorted(scalars)
    assert (out / "final" / "model.safetensors").is_file()


def test_image_only_radiomics_training_on_two_processes(demo_config, tmp_path):
    """No reports (`--text-column none`): the radiomics head trains alone; the idle text tower must not stop DDP."""
    out = tmp_path / "image_only"
    launch(demo_config, out, "--text-column", "none", "--heads", "radiomics", "--max-steps", "2",
            "--batch-size", "4", processes=2)
    scalars = read_scalars(out)
    assert not any(tag.startswith("train/global_") for tag in scalars), sorted(scalars)
    assert {"train/radiomics/classification", "train/radiomics/contrastive"} <= set(scalars), sorted(scalars)
    # the share of all-zero Grad-CAM maps (images whose radiomics come from no region) is logged beside them
    assert [step for step, _ in scalars["train/radiomics/empty_cams"]] == [1, 2]
    assert all(0.0 <= value <= 1.0 for _, value in scalars["train/radiomics/empty_cams"])


def test_bad_config_key_names_the_key(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  learning_rate: 0.1\n")
    with pytest.raises(ValueError, match=r"learning_rate.*train"):
        recipe_module().parse_args(["--config", str(bad)])


def _spin(seconds: float) -> None:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        pass


def test_cpu_threads_default_shares_the_free_cores_among_local_processes():
    import multiprocessing
    import os

    import psutil

    recipe = recipe_module()
    cores = min(psutil.cpu_count(logical=False) or os.cpu_count(), len(os.sched_getaffinity(0)))
    assert recipe.cpu_threads_per_process(1, sample_seconds=0) == cores
    assert recipe.cpu_threads_per_process(2, sample_seconds=0) == max(1, cores // 2)
    assert recipe.cpu_threads_per_process(10_000) == 1
    # a core kept busy by another process is not counted (docs/benchmarks/cpu_threads.md: 2 threads then run slower)
    busy = multiprocessing.get_context("spawn").Process(target=_spin, args=(4.0,))
    busy.start()
    try:
        time.sleep(1.0)
        assert recipe.cpu_threads_per_process(1, sample_seconds=1.0) <= max(1, cores - 1)
    finally:
        busy.join()
    assert recipe.parse_args(["--cpu-threads", "3"])[0].train.cpu_threads == 3
    assert recipe.parse_args([])[0].train.cpu_threads is None


def test_heads_flag_keeps_the_settings_the_config_gives(tmp_path):
    path = tmp_path / "heads.yaml"
    path.write_text(yaml.safe_dump({"model": {"config": {"heads": {"lovt": {"proj_dim": 64}}}}}))
    recipe = recipe_module()
    assert recipe.parse_args(["--config", str(path), "--heads", "lovt,radiomics"])[0].model.config["heads"] == {
        "lovt": {"proj_dim": 64}, "radiomics": None}
    assert recipe.parse_args(["--config", str(path), "--heads", ""])[0].model.config["heads"] == {}


def test_text_column_none_means_images_only():
    config, _ = recipe_module().parse_args(["--text-column", "none", "--heads", "radiomics"])
    assert config.data.text_column is None and config.model.config["heads"] == {"radiomics": None}
    assert recipe_module().parse_args(["--text-column", "report"])[0].data.text_column == "report"


def test_radiomics_head_takes_its_findings_from_the_data():
    from vlp.training.data import model_config_for_data

    values = model_config_for_data({"heads": ["radiomics"]}, ["Cardiomegaly", "Effusion"])
    assert values["heads"]["radiomics"]["label_names"] == ["Cardiomegaly", "Effusion"]
    assert model_config_for_data({"heads": ["lovt"]}, ["A"]) == {"heads": {"lovt": {}}}
    with pytest.raises(ValueError, match="differ from the data"):
        model_config_for_data({"heads": ["radiomics"], "radiomics": {"label_names": ["B"]}}, ["A"])
    with pytest.raises(ValueError, match="labels-column"):
        model_config_for_data({"heads": {"radiomics": None}}, None)


def _covid_manifest_with_bad_rows(shared_data: Path, tmp_path: Path) -> Path:
    """24 real COVID-19 collection rows (X-rays with clinical notes), then a missing file and an empty report."""
    import json

    source = shared_data / "covid_cxr_text" / "manifest.jsonl"
    if not source.is_file():
        pytest.skip(f"{source} not found")
    rows = [json.loads(line) for line in source.read_text().splitlines()]
    rows = [r for r in rows if (r.get("clinical_notes") or "").strip()][:24]
    for row in rows:
        row["image_path"] = str((source.parent / row["image_path"]).resolve())
    rows.append({**rows[0], "image_path": str(tmp_path / "gone.png")})
    rows.append({**rows[1], "clinical_notes": "   "})
    manifest = tmp_path / "covid.jsonl"
    manifest.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return manifest


def test_trains_on_real_images_and_counts_the_bad_rows(demo_config, shared_data, tmp_path):
    manifest = _covid_manifest_with_bad_rows(shared_data, tmp_path)
    flags = ("--train-data", str(manifest), "--image-column", "image_path", "--text-column", "clinical_notes",
             "--max-steps", "3", "--batch-size", "8")
    result = launch(demo_config, tmp_path / "covid", *flags)
    log = result.stdout + result.stderr
    assert "on 26 rows" in log
    assert "gone.png" in log and "skipped row 24" in log and "skipped row 25" in log
    assert "2 rows skipped" in log  # the epoch's count
    assert (tmp_path / "covid" / "final" / "model.safetensors").is_file()

    strict = subprocess.run(command(demo_config, tmp_path / "strict", *flags, "--strict"), env=env(), cwd=REPO,
                            capture_output=True, text=True, timeout=600)
    assert strict.returncode != 0
    assert "BadSampleError" in strict.stderr and "gone.png" in strict.stderr and "row 24" in strict.stderr


def test_streams_a_manifest_on_two_processes(demo_config, tmp_path):
    """`--streaming`: each process reads its share of the rows; both stop together at the epoch's end."""
    from vlp.data.demo import generate_demo_dataset

    data = yaml.safe_load(demo_config.read_text())["data"]
    manifest = generate_demo_dataset(data["demo_dir"], n_train=data["demo_train"], n_test=data["demo_test"], seed=0)
    result = launch(demo_config, tmp_path / "stream", "--train-data", str(manifest), "--streaming",
                     "--max-steps", "8", "--batch-size", "4", processes=2)
    log = result.stdout + result.stderr
    assert "on streamed rows" in log and "x 2 processes" in log
    # 56 rows (48 train + 8 test, no split filter) dealt to 2 processes: 28 each, 7 batches of 4 per epoch
    assert "epoch 0 done" in log
    assert [step for step, _ in read_scalars(tmp_path / "stream")["train/loss"]] == list(range(1, 9))


IMAGES_ONLY = ("--text-column", "none", "--heads", "radiomics", "--labels-column", "labels")
ADAPTER_RUNS = {  # adapter: (release fixture from tests/release_layouts.py, recipe flags)
    "mimic-cxr": ("mimic_root", ()),
    "iu-xray": ("iu_root", ()),
    "covid": ("covid_release", ()),  # 79 X-rays without clinical notes: skipped and counted
    "chexpert": ("chexpert_root", IMAGES_ONLY),  # no reports: the radiomics head on the labels
    "nih": ("nih_release", IMAGES_ONLY),
}


@pytest.mark.parametrize("adapter", list(ADAPTER_RUNS))
def test_trains_on_each_adapters_output(adapter, demo_config, tmp_path, request):
    """`vlp prepare <set>` on the set's release folder, then the recipe on the manifest it wrote."""
    from vlp.data.adapters import cli

    fixture, flags = ADAPTER_RUNS[adapter]
    root = request.getfixturevalue(fixture)
    root = root[0] if isinstance(root, tuple) else root  # NIH and COVID fixtures also return reference rows
    manifest = cli.main([adapter, "--root", str(root), "--out", str(tmp_path / f"{adapter}.jsonl")])
    out = tmp_path / "run"
    launch(demo_config, out, "--train-data", str(manifest), "--max-steps", "2", "--batch-size", "2", *flags)
    scalars = read_scalars(out)
    losses = scalars["train/loss"]
    assert [step for step, _ in losses] == [1, 2] and all(torch.isfinite(torch.tensor(v)) for _, v in losses)
    terms = {"train/radiomics/classification"} if flags else {"train/global_image_to_text"}
    assert terms <= set(scalars), sorted(scalars)
    assert (out / "final" / "model.safetensors").is_file()


PLUGIN = REPO / "tests" / "modeling" / "plugin_head.py"


@pytest.mark.parametrize("processes", [1, 2])
def test_a_head_from_a_users_file_trains_logs_saves_and_reloads(demo_config, tmp_path, processes):
    """`--plugin FILE` imports a head registered with @register_head outside vlp; the recipe needs no change."""
    from transformers import AutoModel

    from vlp.registry import load_plugins

    out = tmp_path / "plugin"
    launch(demo_config, out, "--plugin", str(PLUGIN), "--heads", "region_match", "--max-steps", "2",
            "--batch-size", "4", processes=processes)
    scalars = read_scalars(out)
    for tag in ("train/region_match/image_to_text", "train/region_match/text_to_image",
                "train/region_match/positive_cosine", "train/global_image_to_text"):
        assert [step for step, _ in scalars[tag]] == [1, 2], tag
    load_plugins([str(PLUGIN)])
    model = AutoModel.from_pretrained(out / "final")
    assert model.head_names == ("region_match",)
    saved = load_file(out / "final" / "model.safetensors")
    assert {k for k in saved if k.startswith("region_match.")} == {f"region_match.{n}" for n, _ in
                                                                   model.region_match.named_parameters()}
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, saved[name]), name


DDP_IDLE_CONFIGS = {  # configurations whose idle parameters stopped DistributedDataParallel
    "radiomics_contrastive_0": {"heads": {"radiomics": {}}, "loss": {"weights": {"radiomics/contrastive": 0.0}}},
    "lovt_tower_pooling": {"heads": {"lovt": {"proj_dim": 32, "proj_hidden_dim": 64, "global_from_pooling": False}}},
    "roberta_text_tower": {"text_tower": {"model_config": {
        "model_type": "roberta", "hidden_size": 48, "num_hidden_layers": 1, "num_attention_heads": 2,
        "intermediate_size": 64, "max_position_embeddings": 160, "pad_token_id": 0}}},
    "convnext_with_lovt": {"image_tower": {"model_name": "convnext_atto", "image_size": 64},
                           "heads": {"lovt": {"proj_dim": 32, "proj_hidden_dim": 64}}},
}


@pytest.mark.parametrize("case", list(DDP_IDLE_CONFIGS))
def test_idle_parameters_do_not_stop_two_processes(demo_config, tmp_path, case):
    config = yaml.safe_load(demo_config.read_text())
    config["model"]["config"] = DDP_IDLE_CONFIGS[case]
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / case
    result = launch(path, out, "--max-steps", "3", "--batch-size", "4", processes=2)
    scalars = read_scalars(out)
    assert [step for step, _ in scalars["train/loss"]] == [1, 2, 3]
    if case != "roberta_text_tower":  # declared idle and frozen, so DDP does not wait for them
        assert "idle in this configuration and not trained" in result.stdout + result.stderr
    assert (out / "final" / "model.safetensors").is_file()
