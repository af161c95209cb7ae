"""Model cards generated from a saved checkpoint: what the model is (towers, heads and their papers), how it was trained
(`training_config.json`, written by the recipe), what it measured (an evaluation record, checked to belong to this
model), how to use it, and what it must not be used for.

An evaluation record is the JSON that `recipes/evaluate_zeroshot.py --json FILE` writes::

    {"model_sha256": "<sha256 of model.safetensors>", "task": "zero-shot-image-classification",
     "mode": "pos_neg", "dataset": {"name": ..., "manifest": ..., "rows": N, "split": ...},
     "metrics": {"auroc": {"<finding>": 0.86, ...}, "mean_auroc": 0.82}}
"""
from __future__ import annotations

import hashlib
import json
import math
from pathlib import Path
from typing import Any

__all__ = ["model_fingerprint", "load_evaluation", "model_card", "EvaluationMismatchError"]

TAGS = ["vlp", "chest-x-ray", "vision-language", "medical-imaging", "zero-shot-image-classification"]
GLOBAL_CITATIONS = {  # the global image-text objective
    "infonce": "Radford et al. Learning Transferable Visual Models From Natural Language Supervision (CLIP). ICML 2021",
    "siglip": "Zhai, Mustafa, Kolesnikov, Beyer. Sigmoid Loss for Language Image Pre-Training (SigLIP). ICCV 2023",
}


class EvaluationMismatchError(ValueError):
    """An evaluation record describes another model than the one being shared."""


def model_fingerprint(model_dir: str | Path) -> str:
    """sha256 of the checkpoint's `model.safetensors`: names the exact weights an evaluation was made on."""
    path = Path(model_dir) / "model.safetensors"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: not a saved vlp model (save_pretrained writes it)")
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def load_evaluation(path: str | Path, model_dir: str | Path) -> dict[str, Any]:
    """The evaluation record at `path`, checked: the keys a card needs, and made on the weights in `model_dir`."""
    path = Path(path)
    try:
        record = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"evaluation file {path}: {err}") from None
    missing = [k for k in ("model_sha256", "task", "dataset", "metrics") if k not in record]
    if missing:
        raise ValueError(f"evaluation file {path} lacks {missing}; write it with "
                         "`recipes/evaluate_zeroshot.py --model DIR --json FILE`")
    expected = model_fingerprint(model_dir)
    if record["model_sha256"] != expected:
        raise EvaluationMismatchError(
            f"evaluation file {path} was made on other weights (model.safetensors sha256 {record['model_sha256'][:12]}…) "
            f"than {model_dir} ({expected[:12]}…): evaluate this model again, or leave --eval out")
    return record


def _heads(config) -> list[tuple[str, str, str]]:
    from ..registry import head_class

    out = []
    for name in config.heads:
        cls = head_class(name)
        out.append((name, getattr(cls, "summary", "") or "a head of its own", getattr(cls, "citation", "")))
    return out


def _training_section(training: dict | None) -> list[str]:
    if not training:
        return ["No training record came with the checkpoint (`training_config.json`, written by "
                "`recipes/pretrain.py`)."]
    run = training.get("config", {})
    data, train, model = run.get("data", {}), run.get("train", {}), run.get("model", {})
    source = data.get("train") or "the built-in synthetic demo phantoms (`vlp demo-data`)"
    lines = [f"- Data: {source}" + (f", {training['train_rows']} rows" if training.get("train_rows") else "")
             + (f" (image column `{data.get('image_column')}`, report column `{data.get('text_column')}`)"
                if data.get("train") else ""),
             f"- Started from: {model.get('init_from') or 'preset `' + str(model.get('preset')) + '`'}",
             f"- Steps: {training.get('steps')} ({training.get('epochs')} full epochs), global batch "
             f"{training.get('global_batch')} ({train.get('batch_size')} per process x {train.get('grad_accum')} "
             f"accumulated x {training.get('processes')} process{'' if training.get('processes') == 1 else 'es'}), "
             "mixed precision "
             f"`{training.get('mixed_precision')}`",
             f"- Optimiser: AdamW, lr {train.get('lr')}, weight decay {train.get('weight_decay')}, cosine schedule with "
             f"{train.get('warmup_steps')} warm-up steps; seed {train.get('seed')}",
             f"- Augmentation: {data.get('augmentation') or 'none'}"]
    frozen = {k: v for k, v in (train.get("freeze") or {}).items() if v}
    if frozen:
        lines.append(f"- Frozen: {json.dumps(frozen)}")
    if training.get("best"):
        best = training["best"]
        lines.append(f"- Best validation {best.get('metric')}: {best.get('value'):.4f} at step {best.get('step')}")
    versions = training.get("versions") or {}
    if versions:
        lines.append("- Software: " + ", ".join(f"{k} {v}" for k, v in versions.items()))
    return lines


def _evaluation_section(evaluation: dict | None) -> list[str]:
    if not evaluation:
        return ["Not evaluated for this card. Evaluate with `recipes/evaluate_zeroshot.py --model DIR --json FILE` "
                "and push with `vlp push ... --eval FILE`."]
    dataset = evaluation["dataset"]
    metrics = evaluation["metrics"]
    lines = [f"Zero-shot classification ({evaluation.get('mode', 'pos_neg')} prompts) on {dataset.get('name')}: "
             f"{dataset.get('rows')} images" + (f", split `{dataset['split']}`" if dataset.get("split") else "")
             + (f" of `{dataset['manifest']}`" if dataset.get("manifest") else "") + ".", "",
             "| finding | AUROC |", "|---|---|"]
    lines += [f"| {name} | {value:.3f} |" for name, value in metrics.get("auroc", {}).items()
              if value is not None and not math.isnan(value)]
    if metrics.get("mean_auroc") is not None:
        lines.append(f"| **mean** | **{metrics['mean_auroc']:.3f}** |")
    return lines


def model_card(model_dir: str | Path, repo_id: str, evaluation: dict | None = None, training: dict | None = None,
               license: str = "other", datasets: list[str] | None = None, extra_text: str | None = None) -> str:
    """The README.md of a shared checkpoint: Hub front matter (YAML) and the sections described in the module."""
    from huggingface_hub import EvalResult, ModelCardData

    from ..configuration import VLPConfig

    config = VLPConfig.from_pretrained(str(model_dir))
    heads = _heads(config)
    results = []
    if evaluation:
        name = evaluation["dataset"].get("name") or "evaluation set"
        for finding, value in evaluation["metrics"].get("auroc", {}).items():
            if value is not None and not math.isnan(value):
                results.append(EvalResult(task_type=evaluation["task"], dataset_type=name, dataset_name=name,
                                          metric_type="roc_auc", metric_value=round(float(value), 4),
                                          metric_name=f"AUROC {finding}"))
    data = ModelCardData(library_name="vlp", pipeline_tag="zero-shot-image-classification", license=license,
                         tags=TAGS + [f"vlp-{name}" for name, _, _ in heads], datasets=datasets or None,
                         model_name=repo_id, eval_results=results or None)
    image, text = config.image_tower, config.text_tower
    text_name = f"`{text.model_name}`" if text.model_name else (
        f"a {text.model_config.get('num_hidden_layers')}-layer {text.model_config.get('model_type', 'bert').upper()} "
        f"of width {text.model_config.get('hidden_size')}, trained from random initial values")
    lines = ["---", data.to_yaml(), "---", "", f"# {repo_id}", "",
             "A chest X-ray vision-language model trained with vlp on image-report pairs: it "
             "embeds X-rays and report text in one space, classifies findings zero-shot from text prompts and maps "
             "where in the image a sentence is grounded. **Not for clinical use.**", "",
             "## Model", "",
             f"- Image tower: `{image.model_name}` (timm) at {image.image_size} px"
             + (" from pretrained weights" if image.pretrained else ""),
             f"- Text tower: {text_name} (Hugging Face), {text.max_length} tokens, {text.pooling} pooling",
             f"- Shared embedding: {config.projection_dim} dimensions, {config.projection.kind} projections; global "
             f"loss `{config.loss.contrastive.value}`"]
    if heads:
        lines.append("- Heads:")
        lines += [f"  - `{name}`: {summary}" + (f" ({citation})" if citation else "") for name, summary, citation in heads]
    lines += ["", "## Training", "", *_training_section(training), "", "## Evaluation", "",
              *_evaluation_section(evaluation), "",
              "## How to use", "", "Install vlp (from its repository: `bash install.sh`), then:", "", "```python", "import vlp  # registers the model with transformers' Auto classes",
              "from transformers import AutoModel, AutoProcessor", "from vlp import ZeroShotClassifier", "",
              f'model = AutoModel.from_pretrained("{repo_id}").eval()',
              f'processor = AutoProcessor.from_pretrained("{repo_id}")',
              'probs = ZeroShotClassifier(model, processor, labels=["cardiomegaly", "pleural effusion"])(images)'
              "  # (N, 2)",
              "```", "", "## Intended use", "",
              "Research on chest X-ray representation learning: zero-shot and few-shot classification, retrieval and "
              "phrase grounding experiments, and as a starting point for fine-tuning (`recipes/pretrain.py "
              f"--init-from {repo_id}`).", "",
              "## Out-of-scope use", "",
              "Not for clinical use: not a medical device, not validated on patients, not for diagnosis, triage or "
              "any decision about a person's care. Zero-shot scores are similarities, not calibrated probabilities "
              "of disease.", "",
              "## Limitations and biases", "",
              "- The model knows only what its training images and reports show: their hospitals, scanners, views and "
              "patient populations (age, sex, ethnicity); expect it to do worse on others.",
              "- Labels mined from report text (CheXpert-style labellers) are noisy, and so are the evaluation "
              "numbers that use them; reports omit findings and mention negated ones.",
              "- Grounding maps show where the model's similarity is high, which is not necessarily where the finding "
              "is."]
    if training and not (training.get("config", {}).get("data", {}).get("train")):
        lines.append("- This checkpoint was trained on synthetic phantoms only: it shows the pipeline works, and "
                     "knows nothing of real X-rays.")
    if extra_text:
        lines += ["", extra_text.strip()]
    lines += ["", "## Citation", "", "Cite the methods this model uses:", f"- {GLOBAL_CITATIONS[config.loss.contrastive.value]}"]
    lines += [f"- {citation}" for _, _, citation in heads if citation]
    return "\n".join(lines) + "\n"
