"""Sharing a trained model on the Hugging Face Hub: model, processor, card and training record in one commit.

`push(run_dir, repo_id)` is what `vlp push RUN_DIR REPO_ID` and the recipe's `--push-to-hub` call. It talks to the Hub
through `huggingface_hub` (so `HF_ENDPOINT`, `HF_TOKEN` and `hf auth login` apply) and only when asked: nothing in vlp
reaches the network otherwise.
"""
from __future__ import annotations

import json
import shutil
import tempfile
from pathlib import Path

from .card import load_evaluation, model_card

__all__ = ["push", "prepare_card", "model_dir_of", "HubPushError"]

# files of a saved model and processor that are shared (anything else in the folder stays local)
SHARED_SUFFIXES = (".json", ".safetensors", ".txt", ".model")
OTHER_LIBRARIES = ("pytorch_model.bin", "tf_model.h5", "flax_model.msgpack", "model.onnx", "open_clip_config.json")


class HubPushError(RuntimeError):
    """A push that could not be made; the message says what to do, and the local files are untouched."""


def model_dir_of(run_dir: str | Path) -> Path:
    """The saved model of a run (`RUN_DIR/final`), or `run_dir` itself when it is a saved model."""
    run_dir = Path(run_dir)
    for candidate in (run_dir / "final", run_dir):
        config = candidate / "config.json"
        if config.is_file() and (candidate / "model.safetensors").is_file():
            model_type = json.loads(config.read_text()).get("model_type")
            if model_type != "vlp":
                raise HubPushError(f"{candidate} holds a {model_type!r} model, not a vlp one")
            return candidate
    raise HubPushError(f"no saved model in {run_dir}: expected {run_dir / 'final'} (written when recipes/pretrain.py "
                       "finishes) or a folder with config.json and model.safetensors; run the recipe to its end, or "
                       "push the folder of a saved model")


def _check_existing(api, repo_id: str, revision: str | None) -> None:
    """A repo that exists must hold a vlp model (or nothing yet): never mix our files into another library's."""
    from huggingface_hub.errors import RepositoryNotFoundError, RevisionNotFoundError

    try:
        files = set(api.list_repo_files(repo_id, revision=revision))
    except (RepositoryNotFoundError, RevisionNotFoundError):
        return
    if "config.json" in files:
        import huggingface_hub

        config = json.loads(Path(huggingface_hub.hf_hub_download(repo_id, "config.json", revision=revision,
                                                                 token=api.token)).read_text())
        if config.get("model_type") != "vlp":
            raise HubPushError(f"{repo_id} already holds a {config.get('model_type')!r} model (config.json of another "
                               "library): push to a new repo id, or empty that repo first")
    elif files & set(OTHER_LIBRARIES):
        raise HubPushError(f"{repo_id} already holds another library's files ({sorted(files & set(OTHER_LIBRARIES))}):"
                           " push to a new repo id")


def prepare_card(run_dir: str | Path, repo_id: str, evaluation: str | Path | None = None,
                 card_text: str | None = None, license: str = "other",
                 datasets: list[str] | None = None) -> tuple[Path, dict | None, str]:
    """(the model folder, the checked evaluation record or None, the card's Markdown) of a push of `run_dir`."""
    model_dir = model_dir_of(run_dir)
    record = load_evaluation(evaluation, model_dir) if evaluation else None
    training_path = model_dir / "training_config.json"
    training = json.loads(training_path.read_text()) if training_path.is_file() else None
    card = model_card(model_dir, repo_id, evaluation=record, training=training, license=license, datasets=datasets,
                      extra_text=card_text)
    return model_dir, record, card


def push(run_dir: str | Path, repo_id: str, private: bool = False, revision: str | None = None,
         evaluation: str | Path | None = None, card_text: str | None = None, license: str = "other",
         datasets: list[str] | None = None, token: str | None = None, commit_message: str | None = None) -> str:
    """Push the saved model of `run_dir` to `repo_id` in one commit; returns the commit's URL.

    The commit holds the model (`config.json`, `model.safetensors`), the processor's files, the run's
    `training_config.json`, the model card `README.md` and, with `evaluation`, the evaluation record (checked to be of
    these weights). `revision` is a branch (created when missing). Raises `HubPushError` with what to do.
    """
    from huggingface_hub import HfApi, get_token
    from huggingface_hub.errors import HfHubHTTPError

    model_dir, record, card = prepare_card(run_dir, repo_id, evaluation, card_text, license, datasets)
    token = token or get_token()
    if not token:
        raise HubPushError("no Hugging Face token: log in with `hf auth login` (or set HF_TOKEN) with a token that may "
                           "write to " + repo_id)
    api = HfApi(token=token)
    retry = f"the model is safe in {model_dir}; push it again with `vlp push {run_dir} {repo_id}`"
    try:
        _check_existing(api, repo_id, revision)
        api.create_repo(repo_id, private=private, exist_ok=True)
        if revision and revision != "main":
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        with tempfile.TemporaryDirectory() as staging:
            staging = Path(staging)
            for path in sorted(model_dir.iterdir()):
                if path.is_file() and path.suffix in SHARED_SUFFIXES and path.name != "trainer_state.json":
                    shutil.copy2(path, staging / path.name)
            (staging / "README.md").write_text(card)
            if record is not None:
                (staging / "evaluation.json").write_text(json.dumps(record, indent=2))
            info = api.upload_folder(folder_path=str(staging), repo_id=repo_id, revision=revision,
                                     commit_message=commit_message or f"vlp model from {model_dir}")
    except HubPushError:
        raise
    except HfHubHTTPError as err:
        status = getattr(err.response, "status_code", None)
        hint = " (is the token allowed to write there?)" if status in (401, 403) else ""
        raise HubPushError(f"the Hub refused the push of {repo_id}: {str(err).splitlines()[0]}{hint}; {retry}") from err
    except OSError as err:  # no connection, DNS, timeouts
        raise HubPushError(f"could not reach the Hub to push {repo_id} ({type(err).__name__}: {err}); {retry}") from err
    return info.commit_url if hasattr(info, "commit_url") else str(info)
