"""Model cards (`vlp.hub.card`): Hub front matter that parses, sections from the checkpoint and its training record,
and evaluation records that must belong to the weights."""
from __future__ import annotations

import json

import pytest
import torch
import yaml

from vlp import create_model_and_processor
from vlp.hub import EvaluationMismatchError, load_evaluation, model_card, model_fingerprint

FINDINGS = {"cardiomegaly": 0.86, "pleural effusion": 0.75}


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    model, processor = create_model_and_processor("tiny", heads={"lovt": {"proj_dim": 16, "proj_hidden_dim": 32}})
    out = tmp_path_factory.mktemp("card") / "final"
    model.save_pretrained(out)
    processor.save_pretrained(out)
    return out


def _record(model_dir, sha=None):
    return {"model_sha256": sha or model_fingerprint(model_dir), "task": "zero-shot-image-classification",
            "mode": "pos_neg", "dataset": {"name": "NIH boxes", "rows": 629, "split": None},
            "metrics": {"auroc": FINDINGS, "mean_auroc": 0.805}}


def _front_matter(card: str) -> dict:
    assert card.startswith("---\n")
    return yaml.safe_load(card.split("---\n")[1])


def test_front_matter_and_sections(saved, tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(_record(saved)))
    training = {"config": {"data": {"train": "data/covid.jsonl", "image_column": "image_path",
                                    "text_column": "clinical_notes", "augmentation": "lovt"},
                           "train": {"batch_size": 32, "grad_accum": 2, "lr": 1e-4, "weight_decay": 1e-6,
                                     "warmup_steps": 50, "seed": 0, "freeze": {"text_layers": 6}},
                           "model": {"preset": "tiny", "init_from": None}},
                "steps": 200, "epochs": 3, "processes": 2, "mixed_precision": "bf16", "global_batch": 128,
                "train_rows": 356, "best": None, "versions": {"vlp": "0.1.0"}}
    card = model_card(saved, "my-lab/cxr", evaluation=load_evaluation(path, saved), training=training,
                      license="apache-2.0", datasets=["my-lab/covid-notes"], extra_text="Trained for a course.")
    meta = _front_matter(card)
    assert meta["library_name"] == "vlp" and meta["pipeline_tag"] == "zero-shot-image-classification"
    assert {"chest-x-ray", "vision-language", "vlp-lovt"} <= set(meta["tags"])
    assert meta["license"] == "apache-2.0" and meta["datasets"] == ["my-lab/covid-notes"]
    (index,) = meta["model-index"]
    metrics = {m["name"]: m["value"] for result in index["results"] for m in result["metrics"]}
    assert metrics == {f"AUROC {k}": v for k, v in FINDINGS.items()}  # the evaluation file's numbers
    assert all(r["task"]["type"] == "zero-shot-image-classification" and r["dataset"]["name"] == "NIH boxes"
               for r in index["results"])
    for text in ("Image tower: `resnet10t`", "`lovt`: LoVT's local alignment", "ECCV 2022", "CLIP). ICML 2021",
                 "global batch 128 (32 per process x 2 accumulated x 2 processes), mixed precision `bf16`",
                 "data/covid.jsonl, 356 rows", "| cardiomegaly | 0.860 |", "| **mean** | **0.805** |",
                 'AutoModel.from_pretrained("my-lab/cxr")', "Not for clinical use", "## Limitations and biases",
                 "Trained for a course.", "Frozen: {\"text_layers\": 6}"):
        assert text in card, text
    # the huggingface_hub parser reads the same card
    from huggingface_hub import ModelCard

    parsed = ModelCard(card)
    assert parsed.data.library_name == "vlp" and len(parsed.data.eval_results) == 2


def test_a_card_without_evaluation_or_record_says_so(saved):
    card = model_card(saved, "my-lab/cxr")
    assert "model-index" not in _front_matter(card) and "Not evaluated for this card" in card
    assert "No training record came with the checkpoint" in card


def test_an_evaluation_of_other_weights_is_refused(saved, tmp_path):
    path = tmp_path / "eval.json"
    path.write_text(json.dumps(_record(saved, sha="0" * 64)))
    with pytest.raises(EvaluationMismatchError, match="made on other weights"):
        load_evaluation(path, saved)
    path.write_text(json.dumps({"metrics": {}}))
    with pytest.raises(ValueError, match=r"lacks \['model_sha256', 'task', 'dataset'\]"):
        load_evaluation(path, saved)


def test_vlp_card_prints_what_a_push_would_write_without_the_network(saved, capsys):
    from vlp.cli import main

    assert main(["card", str(saved), "my-lab/cxr", "--license", "mit"]) == 0
    card = capsys.readouterr().out
    assert _front_matter(card)["license"] == "mit" and card.count("# my-lab/cxr") == 1
    assert main(["card", str(saved.parent / "nothing"), "my-lab/cxr"]) == 1
    assert "no saved model in" in capsys.readouterr().err
