"""The model a run starts from (`vlp.training.model`): preset or saved model, heads chosen over the saved ones, and a
hub id served from the local Hugging Face cache (no network)."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import pytest
import torch

from vlp import create_model_and_processor
from vlp.training.config import ModelSection
from vlp.training.model import build_run_model, loading_summary, run_model_values


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny", heads={"lovt": {"proj_dim": 16, "proj_hidden_dim": 32}})
    out = tmp_path_factory.mktemp("saved") / "model"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def test_the_saved_models_config_is_the_base_and_named_heads_keep_their_settings(saved):
    values = run_model_values(ModelSection(init_from=str(saved), config={"heads": ["lovt", "radiomics"]}))
    assert values["heads"]["lovt"]["proj_dim"] == 16 and values["heads"]["radiomics"] == {}
    assert values["text_tower"]["model_config"]["hidden_size"] == 96  # the saved architecture, not a preset's
    model, processor, report = build_run_model(ModelSection(init_from=str(saved)), run_model_values(
        ModelSection(init_from=str(saved), config={"heads": {"radiomics": {"label_names": ["a"]}}})), None)
    assert model.head_names == ("radiomics",) and processor.return_raw_images and not processor.return_sentence_ids
    assert report["dropped"] and all(k.startswith("lovt.") for k in report["dropped"])
    assert all(k.startswith("radiomics.") for k in report["new"])
    assert "dropped: lovt.*" in loading_summary(report)


def test_a_hub_id_loads_from_the_local_cache_without_network(saved, tmp_path):
    """The layout huggingface_hub keeps: models--ORG--NAME/snapshots/REVISION/... and refs/main."""
    repo = tmp_path / "hub" / "models--vlp-test--tiny-lovt"
    snapshot = repo / "snapshots" / "0123456789abcdef"
    shutil.copytree(saved, snapshot)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0123456789abcdef")
    code = ("from vlp.training.config import ModelSection\n"
            "from vlp.training.model import build_run_model, loading_summary, run_model_values\n"
            "m = ModelSection(init_from='vlp-test/tiny-lovt')\n"
            "model, processor, report = build_run_model(m, run_model_values(m), None)\n"
            "print(model.head_names, loading_summary(report))\n")
    env = {**os.environ, "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"}
    result = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "('lovt',)" in result.stdout and "new: none" in result.stdout
    missing = subprocess.run([sys.executable, "-c", code.replace("tiny-lovt", "no-such-model")], env=env,
                             capture_output=True, text=True, timeout=300)
    assert missing.returncode != 0 and "--init-from 'vlp-test/no-such-model'" in missing.stderr
    assert json.loads((snapshot / "config.json").read_text())["model_type"] == "vlp"
