"""Data: manifests, image loading, report text, dataset adapters and the built-in demo phantoms.

    from vlp.data import extract_sections, split_sentences, ManifestDataset, ColumnConfig
"""
from .dataset import BadSampleError, ColumnConfig, ManifestDataset, ManifestIterableDataset, SkipLog, UncertainPolicy
from .images import BadImageError, SkipReason, load_image, load_raw_image
from .manifest import read_manifest, write_manifest
from .reports import clean_report, extract_sections, report_text, split_sections
from .sentences import shuffle_sentences, split_sentences
from .splits import patient_kfold, patient_split

__all__ = [
    "BadImageError", "BadSampleError", "ColumnConfig", "ManifestDataset", "ManifestIterableDataset", "SkipLog",
    "SkipReason", "UncertainPolicy", "clean_report", "extract_sections", "load_image", "load_raw_image",
    "patient_kfold", "patient_split", "read_manifest", "report_text", "shuffle_sentences", "split_sections",
    "split_sentences", "write_manifest",
]
