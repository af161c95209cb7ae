from .heads import HeadInput, HeadInputs, HeadOutput, TowerDims, VLPHead
from .model import VLPModel, VLPPreTrainedModel
from .outputs import FeatureCache, ImageEncoding, TextEncoding, VLPOutput

__all__ = ["VLPModel", "VLPPreTrainedModel", "VLPOutput", "FeatureCache", "ImageEncoding", "TextEncoding",
           "HeadInput", "HeadInputs", "HeadOutput", "TowerDims", "VLPHead"]
