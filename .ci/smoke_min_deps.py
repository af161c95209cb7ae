"""vlp on the lowest releases setup.cfg declares (run by .ci/min_deps.sh in .venv-min): build a model with a head,
train a step, save, load with a head added and bit-identically, zero-shot, and the recipe under accelerate."""
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import accelerate
import datasets
import numpy as np
import timm
import torch
import transformers
import yaml

import vlp
from vlp import VLPModel, ZeroShotClassifier, create_model_and_processor

print(f"transformers {transformers.__version__}, accelerate {accelerate.__version__}, datasets {datasets.__version__}, "
      f"timm {timm.__version__}, torch {torch.__version__}")
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
    added = VLPModel.from_pretrained(d, heads=["lovt"])
    assert all(torch.isfinite(p).all() for p in added.parameters())
    assert added.lovt.region_projection.fc1.weight.std() > 0
    same = VLPModel.from_pretrained(d)
    assert all(torch.equal(a, b) for a, b in zip(base.state_dict().values(), same.state_dict().values()))
    probs = ZeroShotClassifier(same, transformers.AutoProcessor.from_pretrained(d), ["cardiomegaly", "effusion"])(images)
    assert probs.shape == (4, 2)

with tempfile.TemporaryDirectory() as d:  # the recipe, launched as a user launches it, on a few demo phantoms
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
print("vlp works on these releases")
