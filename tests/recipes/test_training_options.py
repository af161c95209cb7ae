"""The recipe's training options, run as a user runs them: fine-tuning from a checkpoint with a new head, freezing,
parameter groups, the launcher's mixed precision, validation with a best checkpoint, augmentation that a resumed run
reproduces, LoVT's published configuration, and the zero-shot recipe on a manifest without splits."""
from __future__ import annotations

import json
import math

import pytest
import torch
import yaml
from recipe_runs import REPO, kill_and_resume, launch
from recipe_runs import scalars as read_scalars
from safetensors.torch import load_file


@pytest.fixture(scope="module")
def base_model(tmp_path_factory):
    """A saved tiny model without heads: the checkpoint a fine-tuning run starts from."""
    from vlp import create_model_and_processor

    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny")
    out = tmp_path_factory.mktemp("base") / "final"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


@pytest.mark.parametrize("processes", [1, 2])
def test_fine_tuning_from_a_checkpoint_with_a_new_head_and_a_locked_text_tower(demo_config, base_model, tmp_path,
                                                                               processes):
    out = tmp_path / "finetune"
    result = launch(demo_config, out, "--init-from", str(base_model), "--heads", "lovt", "--lock-text",
                    "--max-steps", "2", "--batch-size", "4", processes=processes)
    log = result.stdout + result.stderr
    base = load_file(base_model / "model.safetensors")
    final = load_file(out / "final" / "model.safetensors")
    new = sorted(k for k in final if k not in base)
    assert new and all(k.startswith("lovt.") for k in new)
    assert f"initialised from {base_model}: {len(base)} tensors loaded; {len(new)} new: lovt.* ({len(new)}); " \
           "0 dropped: none" in log
    logged = read_scalars(out)
    assert any(tag.startswith("train/lovt/") for tag in logged)
    # the schedule counts optimizer steps whatever the number of processes: after one warm-up step, the full rate
    assert [(step, round(lr, 8)) for step, lr in logged["train/lr"]] == [(1, 1e-3), (2, 0.0)]
    for key, value in base.items():  # the locked text tower is the checkpoint's; the image side trained
        if key.startswith("text_tower."):
            assert torch.equal(final[key], value), key
    assert not torch.equal(final["image_projection.weight"], base["image_projection.weight"])
    assert (out / "final" / "preprocessor_config.json").is_file() or (out / "final" / "processor_config.json").is_file()


def test_resuming_a_killed_fine_tune(demo_config, base_model, tmp_path):
    whole, resumed = kill_and_resume(demo_config, tmp_path, "--init-from", str(base_model), "--heads", "lovt",
                                     "--max-steps", "4", "--batch-size", "4")
    assert whole.keys() == resumed.keys()
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)


def test_an_augmented_run_resumes_to_the_same_weights(demo_config, tmp_path):
    """The LoVT augmentation, seeded per sample and epoch: 10 steps of 6 batches per epoch cross an epoch boundary."""
    whole, resumed = kill_and_resume(demo_config, tmp_path, "--max-steps", "10", "--augmentation", "lovt")
    for key in whole:
        torch.testing.assert_close(resumed[key], whole[key], rtol=1e-4, atol=1e-6, msg=key)
    launch(demo_config, tmp_path / "plain", "--max-steps", "10")
    unaugmented = load_file(tmp_path / "plain" / "final" / "model.safetensors")
    assert not torch.equal(unaugmented["image_projection.weight"], whole["image_projection.weight"])


def test_parameter_groups_train_at_their_rates(demo_config, tmp_path):
    config = yaml.safe_load(demo_config.read_text())
    config["model"]["config"] = {"heads": {"lovt": {"proj_dim": 16, "proj_hidden_dim": 32}}}
    config["train"].update({"lr": 1e-3, "param_groups": [{"name": "heads", "patterns": ["lovt.*"], "lr": 1e-2},
                                                         {"name": "text", "patterns": ["text_tower.*"], "lr": 1e-4}]})
    path = tmp_path / "groups.yaml"
    path.write_text(yaml.safe_dump(config))
    out = tmp_path / "groups"
    launch(path, out, "--max-steps", "3")
    logged = read_scalars(out)
    for step, (_, base), (_, heads), (_, text) in zip(range(1, 4), logged["train/lr"], logged["train/lr/heads"],
                                                      logged["train/lr/text"]):
        factor = 0.5 * (1 + math.cos(math.pi * (step - 1) / (3 - 1)))  # cosine over the 2 steps after the warm-up
        assert base == pytest.approx(1e-3 * factor) and heads == pytest.approx(1e-2 * factor)
        assert text == pytest.approx(1e-4 * factor)


@pytest.mark.parametrize("launcher, flag, expected", [("bf16", (), "bf16"), ("bf16", ("--mixed-precision", "no"), "no"),
                                                      ("no", (), "no")])
def test_the_launchers_mixed_precision_stands_unless_the_run_sets_one(demo_config, tmp_path, launcher, flag,
                                                                      expected):
    result = launch(demo_config, tmp_path / "mp", "--max-steps", "1", *flag, mixed_precision=launcher)
    assert f"mixed precision: {expected}" in result.stdout + result.stderr
    assert all(math.isfinite(v) for _, v in read_scalars(tmp_path / "mp")["train/loss"])


def test_validation_logs_retrieval_and_zero_shot_and_keeps_the_best(demo_config, tmp_path):
    from transformers import AutoModel

    import vlp  # noqa: F401

    out = tmp_path / "val"
    result = launch(demo_config, out, "--val-split", "test", "--eval-every", "2", "--max-steps", "4")
    logged = read_scalars(out)
    for tag in ("val/image_to_text_R@1", "val/text_to_image_R@5", "val/mean_recall", "val/mean_auroc",
                "val/auroc/cardiomegaly"):
        assert [step for step, _ in logged[tag]] == [2, 4], tag
    assert logged["val/rows"][0][1] == 8  # the demo's held-out studies
    recalls = dict(logged["val/mean_recall"])
    best = json.loads((out / "best" / "trainer_state.json").read_text())
    assert best["metric"] == "val/mean_recall" and best["value"] == pytest.approx(max(recalls.values()), rel=1e-5)
    assert best["step"] == max(recalls, key=recalls.get)
    assert "new best val/mean_recall" in result.stdout + result.stderr
    AutoModel.from_pretrained(out / "best")
    with pytest.raises(AssertionError, match="best_metric"):
        launch(demo_config, tmp_path / "typo", "--val-split", "test", "--max-steps", "1", "--best-metric", "val/mAP")


def test_lovts_published_configuration(demo_config, tmp_path):
    """recipes/configs/lovt.yaml says what LoVT's paper and code say; run on the tiny towers it trains."""
    from vlp import VLPConfig
    from vlp.augmentation import load_augmentation
    from vlp.training.config import PretrainConfig
    from vlp.training.model import run_model_values

    config = PretrainConfig.from_yaml(REPO / "recipes" / "configs" / "lovt.yaml")
    model = VLPConfig(**run_model_values(config.model))
    assert model.image_tower.model_name == "resnet50" and model.text_tower.model_name.endswith("Bio_ClinicalBERT")
    assert math.exp(model.loss.logit_scale_init) == pytest.approx(10.0) and not model.loss.learn_logit_scale
    assert (model.projection.kind, model.projection.hidden_dim, model.projection_dim) == ("mlp", 2048, 512)
    weights = model.loss_weights()
    assert (weights["global_image_to_text"], weights["global_text_to_image"]) == (0.75, 0.25)
    assert all(weights[f"lovt/{t}"] == 0.375 for t in ("local_region_to_attended", "local_attended_to_sentence"))
    train = config.train
    assert (train.lr, train.weight_decay, train.batch_size, train.grad_accum) == (1e-4, 1e-6, 32, 16)
    assert train.freeze.text_layers == 6 and not train.cache_negatives
    assert (config.data.split_column, config.data.split, config.data.val_split) == ("split", "train", "validate")
    assert load_augmentation(config.data.augmentation) == load_augmentation("lovt")
    # the same recipe on the tiny towers (2 text layers), a few demo phantoms and short steps
    out = tmp_path / "lovt"
    demo = yaml.safe_load(demo_config.read_text())["data"]
    config = yaml.safe_load((REPO / "recipes" / "configs" / "lovt.yaml").read_text())
    config["data"].update({k: demo[k] for k in ("demo_train", "demo_test", "demo_dir")}, num_workers=0,
                          val_split="test")  # the demo data's held-out split
    (tmp_path / "demo.yaml").write_text(yaml.safe_dump(config))
    launch(tmp_path / "demo.yaml", out, "--preset", "tiny", "--freeze-text-layers", "1", "--batch-size", "4",
           "--grad-accum", "2", "--max-steps", "2")
    assert (out / "final" / "model.safetensors").is_file() and (out / "best").is_dir()


def test_zero_shot_recipe_on_a_manifest_without_splits(base_model, tmp_path, capsys):
    import importlib.util

    from vlp.data.demo import FINDINGS, generate_demo_dataset

    manifest = generate_demo_dataset(tmp_path / "demo", n_train=6, n_test=6, seed=1)
    rows = [json.loads(line) for line in manifest.read_text().splitlines()]
    no_split = tmp_path / "nosplit.jsonl"
    no_split.write_text("".join(json.dumps({k: v for k, v in r.items() if k != "split"}) + "\n" for r in rows))
    spec = importlib.util.spec_from_file_location("evaluate_zeroshot", REPO / "recipes" / "evaluate_zeroshot.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    (tmp_path / "nosplit.jsonl").rename(tmp_path / "demo" / "nosplit.jsonl")  # image paths are relative to it
    assert module.main(["--model", str(base_model), "--data", str(tmp_path / "demo" / "nosplit.jsonl"),
                        "--label-names", ",".join(FINDINGS)]) == 0
    captured = capsys.readouterr()
    assert "has no 'split' column: evaluating every row" in captured.err
    assert "on 12 images (all rows)" in captured.out
