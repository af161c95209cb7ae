"""Smoke test of vlp on the declared minimum of transformers: build, forward, train a step, save, load with a head
added, zero-shot."""
import sys
import tempfile

import numpy as np
import torch
import transformers

import vlp
from vlp import VLPModel, ZeroShotClassifier, create_model_and_processor

print(f"transformers {transformers.__version__} from {transformers.__file__}")
torch.manual_seed(0)
model, processor = create_model_and_processor("tiny", heads={"lovt": {"proj_dim": 32, "proj_hidden_dim": 64}})
rng = np.random.default_rng(0)
images = [(rng.random((120, 100)) * 255).astype(np.uint8) for _ in range(4)]
batch = processor(text=["No effusion.", "Cardiomegaly. Small effusion.", "Clear lungs.", "Left mass."],
                  images=images, return_tensors="pt", padding=True)
out = model(**batch, return_loss=True)
out.loss.backward()
assert torch.isfinite(out.loss) and "lovt/local_region_to_attended" in out.losses
with tempfile.TemporaryDirectory() as d:
    base, _ = create_model_and_processor("tiny")
    base.save_pretrained(d)
    processor.save_pretrained(d)
    loaded = VLPModel.from_pretrained(d, heads=["lovt"])
    assert all(torch.isfinite(p).all() for p in loaded.parameters())
    assert loaded.lovt.region_projection.fc1.weight.std() > 0
    same = VLPModel.from_pretrained(d)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), same.state_dict().values()))
    proc = transformers.AutoProcessor.from_pretrained(d)
    probs = ZeroShotClassifier(same, proc, ["cardiomegaly", "effusion"])(images)
    assert probs.shape == (4, 2)
print("ok")

# the recipe, launched as a user launches it, for two steps on a few demo phantoms
import os
import subprocess
from pathlib import Path

import yaml

with tempfile.TemporaryDirectory() as d:
    config = Path(d) / "config.yaml"
    config.write_text(yaml.safe_dump({
        "model": {"preset": "tiny", "config": {"heads": ["lovt"]}},
        "data": {"demo_train": 16, "demo_test": 4, "demo_dir": f"{d}/demo", "num_workers": 0},
        "train": {"batch_size": 4, "max_steps": 2, "warmup_steps": 1, "log_every": 1, "save_every": 100}}))
    recipe = Path(vlp.__file__).resolve().parents[1] / "recipes" / "pretrain.py"
    run = subprocess.run([sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "1",
                          "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no", str(recipe),
                          "--config", str(config), "--output-dir", f"{d}/run"],
                         capture_output=True, text=True, env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert run.returncode == 0, run.stderr[-3000:]
    assert (Path(d) / "run" / "final" / "model.safetensors").is_file()
import accelerate, datasets, timm  # noqa: E402
print(f"recipe ok with accelerate {accelerate.__version__}, datasets {datasets.__version__}, timm {timm.__version__}")
