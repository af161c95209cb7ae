"""The model's heads: the protocol they share (`base`) and the built-in heads, registered by name on import."""
from .base import HeadInput, HeadInputs, HeadOutput, TowerDims, VLPHead
from .lovt import LoVTHead
from .radiomics import RadiomicsHead

__all__ = ["HeadInput", "HeadInputs", "HeadOutput", "TowerDims", "VLPHead", "LoVTHead", "RadiomicsHead"]
