from __future__ import annotations

from pathlib import Path

import pytest
import yaml


@pytest.fixture(scope="module")
def demo_config(tmp_path_factory) -> Path:
    """A YAML config: the tiny model on 48 demo phantoms (8 held out), batches of 8, no dataloader workers."""
    root = tmp_path_factory.mktemp("recipe")
    config = {
        "model": {"preset": "tiny"},
        "data": {"demo_train": 48, "demo_test": 8, "demo_dir": str(root / "demo"), "num_workers": 0},
        "train": {"batch_size": 8, "lr": 1e-3, "warmup_steps": 1, "max_steps": 4, "log_every": 1,
                  "save_every": 2, "seed": 0},
    }
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
