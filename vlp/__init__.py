"""vlp: vision-language pretraining for chest X-ray image-report pairs.

Importing vlp registers its config, model and processors with transformers' Auto classes, so a saved
checkpoint loads with `AutoModel.from_pretrained(dir)` without `trust_remote_code`.
"""
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from .configuration import ContrastiveKind, HeadInput, ImageTowerConfig, LossConfig, TextTowerConfig, VLPConfig
from .factory import available_presets, create_model_and_processor, create_processor
from .modeling import FeatureCache, HeadInputs, HeadOutput, TowerDims, VLPHead, VLPModel, VLPOutput
from .processing import PixelRangeWarning, VLPImageProcessor, VLPProcessor
from .registry import register_head, registered_heads
from .zeroshot import ZeroShotClassifier

__version__ = "0.1.0"

AutoConfig.register("vlp", VLPConfig, exist_ok=True)
AutoModel.register(VLPConfig, VLPModel, exist_ok=True)
AutoImageProcessor.register(VLPConfig, image_processor_classes={"pil": VLPImageProcessor, "torchvision": VLPImageProcessor}, exist_ok=True)
AutoProcessor.register(VLPConfig, VLPProcessor, exist_ok=True)

__all__ = [
    "VLPConfig", "ImageTowerConfig", "TextTowerConfig", "LossConfig", "ContrastiveKind",
    "VLPModel", "VLPOutput", "FeatureCache", "VLPProcessor", "VLPImageProcessor", "PixelRangeWarning",
    "create_model_and_processor", "create_processor", "available_presets", "ZeroShotClassifier",
    "register_head", "registered_heads", "VLPHead", "HeadInput", "HeadInputs", "HeadOutput", "TowerDims",
]
