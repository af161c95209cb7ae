from .model import VLPModel, VLPPreTrainedModel
from .outputs import FeatureCache, VLPOutput

__all__ = ["VLPModel", "VLPPreTrainedModel", "VLPOutput", "FeatureCache"]
