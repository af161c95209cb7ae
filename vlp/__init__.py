"""vlp: vision-language pretraining for chest X-ray image-report pairs.

Importing vlp registers its config, model and processors with transformers' Auto classes, so a saved
checkpoint loads with `AutoModel.from_pretrained(dir)` without `trust_remote_code`.
"""
from transformers import AutoConfig, AutoImageProcessor, AutoModel, AutoProcessor

from .configuration import ContrastiveKind, Head, ImageTowerConfig, LossConfig, TextTowerConfig, VLPConfig
from .factory import available_presets, create_model_and_processor, create_processor
from .modeling import FeatureCache, VLPModel, VLPOutput
from .processing import PixelRangeWarning, VLPImageProcessor, VLPProcessor
from .zeroshot import ZeroShotClassifier

__version__ = "0.1.0"

AutoConfig.register("vlp", VLPConfig, exist_ok=True)
AutoModel.register(VLPConfig, VLPModel, exist_ok=True)
AutoImageProcessor.register(VLPConfig, image_processor_classes={"pil": VLPImageProcessor, "torchvision": VLPImageProcessor}, exist_ok=True)
AutoProcessor.register(VLPConfig, VLPProcessor, exist_ok=True)

__all__ = [
    "VLPConfig", "ImageTowerConfig", "TextTowerConfig", "LossConfig", "Head", "ContrastiveKind",
    "VLPModel", "VLPOutput", "FeatureCache", "VLPProcessor", "VLPImageProcessor", "PixelRangeWarning",
    "create_model_and_processor", "create_processor", "available_presets", "ZeroShotClassifier",
]
