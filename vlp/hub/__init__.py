"""Sharing models on the Hugging Face Hub: model cards generated from a checkpoint (`card`) and `push` (`vlp push`,
`recipes/pretrain.py --push-to-hub`)."""
from .card import EvaluationMismatchError, load_evaluation, model_card, model_fingerprint
from .push import HubPushError, model_dir_of, prepare_card, push

__all__ = ["push", "prepare_card", "model_dir_of", "HubPushError", "model_card", "load_evaluation", "model_fingerprint",
           "EvaluationMismatchError"]
