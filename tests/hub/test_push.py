"""Sharing end to end against a local server that speaks the Hub's HTTP API (tests/hub_server.py): `vlp push`, loading
by repo id in a fresh process with its own cache (another machine), revisions, private repos, the recipe's
`--push-to-hub`, failing fast offline, and the bad inputs that must be clear errors."""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import torch
import yaml

from vlp import create_model_and_processor
from vlp.hub import model_fingerprint

REPO = Path(__file__).resolve().parents[2]
VLP = Path(sys.executable).parent / "vlp"
REPORTS = ["Heart size is normal. No pneumothorax.", "Cardiomegaly.", "Small right pleural effusion."]

LOAD_AND_RUN = """
import sys, numpy as np, torch
import vlp
from transformers import AutoModel, AutoProcessor
repo, revision, out = sys.argv[1], (sys.argv[2] or None), sys.argv[3]
model = AutoModel.from_pretrained(repo, revision=revision).eval()
processor = AutoProcessor.from_pretrained(repo, revision=revision)
rng = np.random.default_rng(0)
images = [(rng.random((140, 120)) * 255).astype(np.uint8) for _ in range(3)]
batch = processor(text={reports!r}, images=images, return_tensors="pt", padding=True)
with torch.no_grad():
    o = model(**batch)
torch.save({{"logits": o.logits_per_image, "heads": list(model.head_names),
            "sentence_ids": "sentence_ids" in batch}}, out)
""".format(reports=REPORTS)


def _run(args, env, timeout=300) -> subprocess.CompletedProcess:
    return subprocess.run(args, env=env, cwd=REPO, capture_output=True, text=True, timeout=timeout)


def _local_logits(model_dir) -> torch.Tensor:
    from transformers import AutoModel, AutoProcessor

    model = AutoModel.from_pretrained(model_dir).eval()
    processor = AutoProcessor.from_pretrained(model_dir)
    rng = np.random.default_rng(0)
    images = [(rng.random((140, 120)) * 255).astype(np.uint8) for _ in range(3)]
    with torch.no_grad():
        return model(**processor(text=REPORTS, images=images, return_tensors="pt", padding=True)).logits_per_image


def _saved_run(root: Path, seed: int, **overrides) -> Path:
    """A run folder as the recipe leaves it: final/ with the model, processor and training record."""
    torch.manual_seed(seed)
    model, processor = create_model_and_processor("tiny", **overrides)
    final = root / "final"
    model.save_pretrained(final)
    processor.save_pretrained(final)
    (final / "training_config.json").write_text(json.dumps({"config": {"data": {"train": None}, "train": {},
                                                                       "model": {"preset": "tiny"}},
                                                            "steps": 0, "epochs": 0, "processes": 1}))
    return root


def _load(hub, tmp_path, repo, revision="", token=True) -> dict:
    out = tmp_path / f"loaded_{len(list(tmp_path.glob('loaded_*')))}.pt"
    env = hub.env(tmp_path / f"cache_{out.stem}", token=hub_token() if token else None)
    result = _run([sys.executable, "-c", LOAD_AND_RUN, repo, revision, str(out)], env)
    assert result.returncode == 0, result.stderr[-3000:]
    return torch.load(out)


def hub_token():
    from hub_server import TOKEN

    return TOKEN


def test_push_then_load_on_another_machine_gives_the_same_outputs(hub, tmp_path):
    run = _saved_run(tmp_path / "run", 0, heads={"lovt": {"proj_dim": 16, "proj_hidden_dim": 32}})
    record = {"model_sha256": model_fingerprint(run / "final"), "task": "zero-shot-image-classification",
              "mode": "pos_neg", "dataset": {"name": "demo", "rows": 8}, "metrics": {"auroc": {"mass": 0.7},
                                                                                     "mean_auroc": 0.7}}
    (tmp_path / "eval.json").write_text(json.dumps(record))
    result = _run([str(VLP), "push", str(run), "tester/cxr-lovt", "--eval", str(tmp_path / "eval.json")],
                  hub.env(tmp_path / "pusher"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert "pushed" in result.stdout and "tester/cxr-lovt/commit/" in result.stdout
    repo = hub.state.repos["tester/cxr-lovt"]
    (commit,) = [c for c in repo.commits.values() if c.parent]  # one commit holds everything
    assert {"config.json", "model.safetensors", "README.md", "training_config.json", "evaluation.json",
            "processor_config.json", "tokenizer.json"} <= set(commit.files)
    assert commit.files["model.safetensors"].lfs  # through the LFS batch API
    card = commit.files["README.md"].data.decode()
    assert yaml.safe_load(card.split("---\n")[1])["model-index"][0]["results"][0]["metrics"][0]["value"] == 0.7
    loaded = _load(hub, tmp_path, "tester/cxr-lovt")
    assert loaded["heads"] == ["lovt"] and loaded["sentence_ids"]  # the processor knows what LoVT needs
    torch.testing.assert_close(loaded["logits"], _local_logits(run / "final"))


def test_revisions_branches_and_pinned_commits(hub, tmp_path):
    first = _saved_run(tmp_path / "first", 1)
    second = _saved_run(tmp_path / "second", 2)
    env = hub.env(tmp_path / "pusher")
    for run, flags in ((first, []), (second, []), (first, ["--revision", "experiment"])):
        result = _run([str(VLP), "push", str(run), "tester/revisions", *flags], env)
        assert result.returncode == 0, result.stderr[-3000:]
    repo = hub.state.repos["tester/revisions"]
    main_history = []
    oid = repo.refs["main"]
    while repo.commits[oid].parent:
        main_history.append(oid)
        oid = repo.commits[oid].parent
    assert len(main_history) == 2 and "experiment" in repo.refs
    latest, pinned, branch = (_load(hub, tmp_path, "tester/revisions", rev)
                              for rev in ("", main_history[-1], "experiment"))
    torch.testing.assert_close(latest["logits"], _local_logits(second / "final"))
    torch.testing.assert_close(pinned["logits"], _local_logits(first / "final"))  # the first commit on main
    torch.testing.assert_close(branch["logits"], _local_logits(first / "final"))


def test_a_private_repo_needs_the_token(hub, tmp_path):
    run = _saved_run(tmp_path / "run", 3)
    result = _run([str(VLP), "push", str(run), "tester/private-cxr", "--private"], hub.env(tmp_path / "pusher"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert hub.state.repos["tester/private-cxr"].private
    _load(hub, tmp_path, "tester/private-cxr")  # with the token
    out = tmp_path / "nope.pt"
    anonymous = _run([sys.executable, "-c", LOAD_AND_RUN, "tester/private-cxr", "", str(out)],
                     hub.env(tmp_path / "anon", token=None))
    assert anonymous.returncode != 0 and not out.exists()
    assert "tester/private-cxr" in anonymous.stderr


def test_the_recipe_pushes_its_final_model(hub, tmp_path):
    config = {"model": {"preset": "tiny"},
              "data": {"demo_train": 24, "demo_test": 4, "demo_dir": str(tmp_path / "demo"), "num_workers": 0},
              "train": {"batch_size": 8, "max_steps": 2, "warmup_steps": 1, "log_every": 1, "save_every": 100}}
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    accelerate = Path(sys.executable).parent / "accelerate"
    command = [str(accelerate), "launch", "--num_processes", "1", "--num_machines", "1", "--mixed_precision", "no",
               "--dynamo_backend", "no", str(REPO / "recipes" / "pretrain.py"), "--config", str(path),
               "--output-dir", str(tmp_path / "run")]
    result = _run([*command, "--push-to-hub", "tester/recipe-run"], hub.env(tmp_path / "pusher"), timeout=600)
    assert result.returncode == 0, result.stderr[-3000:]
    files = hub.state.repos["tester/recipe-run"].resolve("main").files
    card = files["README.md"].data.decode()
    assert "Steps: 2" in card and "synthetic demo phantoms" in card
    assert json.loads(files["training_config.json"].data)["steps"] == 2
    # no token: the training and the local model survive, the push fails with how to retry
    failed = _run([*command, "--output-dir", str(tmp_path / "run2"), "--push-to-hub", "tester/recipe-run2"],
                  hub.env(tmp_path / "pusher2", token=None), timeout=600)
    assert failed.returncode == 1 and (tmp_path / "run2" / "final" / "model.safetensors").is_file()
    assert "no Hugging Face token" in failed.stdout + failed.stderr
    assert f"push it with `vlp push {tmp_path / 'run2'} tester/recipe-run2`" in failed.stdout + failed.stderr


def test_a_hundred_megabyte_checkpoint_goes_through_lfs(hub, tmp_path):
    run = _saved_run(tmp_path / "big", 4, text_tower={"model_config": {
        "model_type": "bert", "hidden_size": 512, "num_hidden_layers": 6, "num_attention_heads": 8,
        "intermediate_size": 2048, "max_position_embeddings": 256}})
    size = (run / "final" / "model.safetensors").stat().st_size
    assert size > 100e6
    result = _run([str(VLP), "push", str(run), "tester/big-cxr"], hub.env(tmp_path / "pusher"))
    assert result.returncode == 0, result.stderr[-3000:]
    assert any(len(data) == size for data in hub.state.lfs.values())
    assert ("POST", "/tester/big-cxr.git/info/lfs/objects/batch") in hub.state.requests
    torch.testing.assert_close(_load(hub, tmp_path, "tester/big-cxr")["logits"], _local_logits(run / "final"))


LOAD_BY_INIT = """
import sys
from vlp import create_model_and_processor
try:
    create_model_and_processor(init=sys.argv[1])
except OSError as err:
    print(err)
    sys.exit(3)
"""


def test_offline_or_without_network_an_uncached_repo_fails_at_once(hub, tmp_path):
    offline = {**hub.env(tmp_path / "empty"), "HF_HUB_OFFLINE": "1"}
    result = _run([sys.executable, "-c", LOAD_BY_INIT, "tester/not-cached"], offline, timeout=120)
    assert result.returncode == 3 and "init='tester/not-cached'" in result.stdout
    assert "local cache" in result.stdout
    closed = {**hub.env(tmp_path / "empty2"), "HF_ENDPOINT": "http://127.0.0.1:9"}  # nothing listens on port 9
    result = _run([sys.executable, "-c", LOAD_BY_INIT, "tester/anything"], closed, timeout=120)
    assert result.returncode == 3 and "could not be downloaded" in result.stdout


def test_bad_inputs_are_clear_errors(hub, tmp_path):
    run = _saved_run(tmp_path / "run", 5)
    no_token = _run([str(VLP), "push", str(run), "tester/x"], hub.env(tmp_path / "a", token=None))
    assert no_token.returncode == 1 and "no Hugging Face token: log in with `hf auth login`" in no_token.stderr
    empty = tmp_path / "empty_run"
    empty.mkdir()
    no_final = _run([str(VLP), "push", str(empty), "tester/x"], hub.env(tmp_path / "b"))
    assert no_final.returncode == 1 and f"no saved model in {empty}" in no_final.stderr
    mismatch = tmp_path / "other_eval.json"
    mismatch.write_text(json.dumps({"model_sha256": "0" * 64, "task": "zero-shot-image-classification",
                                    "dataset": {"name": "x"}, "metrics": {}}))
    wrong_eval = _run([str(VLP), "push", str(run), "tester/x", "--eval", str(mismatch)], hub.env(tmp_path / "c"))
    assert wrong_eval.returncode == 1 and "made on other weights" in wrong_eval.stderr
    # a repo that holds another library's model
    other = textwrap.dedent("""
        import json, os, tempfile
        from huggingface_hub import HfApi
        api = HfApi()
        api.create_repo("tester/a-bert")
        d = tempfile.mkdtemp()
        json.dump({"model_type": "bert"}, open(os.path.join(d, "config.json"), "w"))
        api.upload_folder(folder_path=d, repo_id="tester/a-bert")
    """)
    assert _run([sys.executable, "-c", other], hub.env(tmp_path / "d")).returncode == 0
    clash = _run([str(VLP), "push", str(run), "tester/a-bert"], hub.env(tmp_path / "e"))
    assert clash.returncode == 1 and "already holds a 'bert' model" in clash.stderr
    assert len(hub.state.repos["tester/a-bert"].commits) == 2  # nothing was pushed over it
