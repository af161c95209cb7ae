"""Radiomics head: radiomics as the third modality, with the Grad-CAM feedback loop of Han et al. (WACV 2022,
"Knowledge-Augmented Contrastive Learning for Abnormality Classification and Localization in Chest X-rays with
Radiomics using a Feedback Loop").

One training step, for every image of the batch (labelled or not):

1. a multi-label classifier scores the findings from the image tower's features; it is trained with binary
   cross-entropy on the label entries that are known (NaN marks an unknown entry: semi-supervised);
2. Grad-CAM of the classifier on the tower's last feature map (`vlp.gradcam`) explains one class per image: its
   labelled positive class (the highest-scoring one if several), else the top predicted class;
3. the normalised map, upsampled to the model input, is thresholded; the box of its largest connected region
   is the region of interest (an all-zero map marks none: the whole image, or with ``empty_cam="skip"`` the
   image is left out of step 6);
4. radiomic features (`vlp.radiomics`, PyRadiomics' 2D feature set) of the *original* image inside that box,
   gradient-free, from the unnormalised [0, 1] model-input image scaled to 0..255 gray levels (so that
   PyRadiomics' default bin width 25 gives about 10 gray-level bins, as on an 8-bit X-ray);
5. a radiomics encoder (signed log, running standardisation, MLP) projects them into the shared embedding space;
6. NT-Xent (`vlp.losses.ntxent`, temperature 0.05 as the authors) pulls each image's embedding towards its own
   radiomics embedding, the other images' embeddings of both kinds being the negatives (SimCLR's form),
   gathered across processes.

The map is recomputed by the current model at every step, so better features give better maps, which give
better radiomics, which give better features: the feedback loop.

The classifier pools the regions itself (their mean, which is what a CNN's global average pooling does), so
its Grad-CAM is defined for any tower: a timm ViT pools with its CLS token, which does not depend on the final
patch tokens, and the Grad-CAM of a classifier on that pooled feature would be zero everywhere.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlp.gradcam import boxes_to_masks, cam_boxes, empty_maps, grad_cam, upsample_cams
from vlp.losses.ntxent import NEGATIVES, nt_xent_loss

__all__ = ["EMPTY_CAM", "LOSS_NAMES", "NIH_FINDINGS", "RadiomicsEncoder", "RadiomicsHead", "RadiomicsHeadConfig",
           "explain_targets", "masked_bce"]

LOSS_NAMES = (
    "radiomics_classification",  # BCE of the multi-label classifier on the known label entries
    "radiomics_contrastive",  # NT-Xent between image embeddings and radiomics embeddings
)

# The 14 ChestX-ray14 findings, spelt as NIH's image labels (Wang et al., CVPR 2017).
NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

ALL_2D_FEATURE_CLASSES = ("firstorder", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
EMPTY_CAM = ("image", "skip")  # what an all-zero Grad-CAM map gives (RadiomicsHeadConfig.empty_cam)


@dataclass
class RadiomicsHeadConfig:
    """Settings of the radiomics head (stored as `VLPConfig.radiomics`).

    label_names: the classifier's findings, in the column order of the `labels` tensor.
    explain: which class Grad-CAM explains: ``"label_or_top"`` the labelled positive class (the highest-scoring
        one if several), else the top predicted class; ``"top"`` always the top predicted class.
    cam_threshold: threshold on the min-max normalised, upsampled Grad-CAM map.
    min_box_size: a smaller box side is widened to this many pixels (radiomics needs a 2D region).
    empty_cam: an image whose Grad-CAM map is all zero (no cell with positive evidence for the class) marks no
        region. ``"image"``: its radiomics come from the whole image; ``"skip"``: it is left out of the NT-Xent
        (and of the radiomics standardiser's running statistics). Either way its ``radiomics_embeds`` row is
        the whole image's.
    backend, feature_classes, bin_width: the radiomics engine (`vlp.radiomics.RadiomicsExtractor`); the default
        is PyRadiomics' 2D set with its default bin width 25.
    gray_levels: the [0, 1] raw images are multiplied by this before extraction (255: 8-bit gray levels).
    encoder_hidden_dim, encoder_dropout: the radiomics encoder MLP.
    temperature, negatives: NT-Xent (0.05 as Han et al.; ``"all"`` SimCLR's negatives, ``"cross"`` the other
        modality only).
    gather_with_grad: negatives from every process with gradients through the gather (as the global loss).
    weights: default weight of each named term (`LOSS_NAMES`); `VLPConfig.loss.weights` overrides them. A
        contrastive weight of 0 switches the radiomics extraction off during training.
    """

    label_names: list[str] = field(default_factory=lambda: list(NIH_FINDINGS))
    explain: Literal["label_or_top", "top"] = "label_or_top"
    cam_threshold: float = 0.5
    min_box_size: int = 8
    empty_cam: Literal["image", "skip"] = "image"
    backend: Literal["torch", "pyradiomics"] = "torch"
    feature_classes: list[str] = field(default_factory=lambda: list(ALL_2D_FEATURE_CLASSES))
    bin_width: float = 25.0
    gray_levels: float = 255.0
    encoder_hidden_dim: int = 512
    encoder_dropout: float = 0.0
    temperature: float = 0.05
    negatives: Literal["all", "cross"] = "all"
    gather_with_grad: bool = True
    weights: dict[str, float] = field(default_factory=lambda: {name: 1.0 for name in LOSS_NAMES})

    def __post_init__(self):
        self.label_names = [str(n) for n in self.label_names]
        self.feature_classes = [str(c) for c in self.feature_classes]
        if not self.label_names:
            raise ValueError("RadiomicsHeadConfig.label_names is empty; name the findings the classifier predicts")
        if len(set(self.label_names)) != len(self.label_names):
            raise ValueError(f"RadiomicsHeadConfig.label_names repeats a name: {self.label_names}")
        if self.explain not in ("label_or_top", "top"):
            raise ValueError(f"RadiomicsHeadConfig.explain must be 'label_or_top' or 'top', got {self.explain!r}")
        if not 0.0 < self.cam_threshold <= 1.0:
            raise ValueError(f"RadiomicsHeadConfig.cam_threshold must be in (0, 1], got {self.cam_threshold}")
        if self.empty_cam not in EMPTY_CAM:
            raise ValueError(f"RadiomicsHeadConfig.empty_cam must be one of {EMPTY_CAM}, got {self.empty_cam!r}")
        if self.min_box_size < 2:
            raise ValueError(f"RadiomicsHeadConfig.min_box_size must be >= 2, got {self.min_box_size}")
        if self.backend not in ("torch", "pyradiomics"):
            raise ValueError(f"RadiomicsHeadConfig.backend must be 'torch' or 'pyradiomics', got {self.backend!r}")
        if not self.gray_levels > 0 or not self.bin_width > 0:
            raise ValueError("RadiomicsHeadConfig.gray_levels and bin_width must be > 0, got "
                             f"{self.gray_levels} and {self.bin_width}")
        if not self.temperature > 0:
            raise ValueError(f"RadiomicsHeadConfig.temperature must be > 0, got {self.temperature}")
        if self.negatives not in NEGATIVES:
            raise ValueError(f"RadiomicsHeadConfig.negatives must be one of {NEGATIVES}, got {self.negatives!r}")
        unknown = sorted(set(self.weights) - set(LOSS_NAMES))
        if unknown:
            raise ValueError(f"unknown loss name(s) {unknown} in RadiomicsHeadConfig.weights; the radiomics head's "
                             f"terms are: {', '.join(LOSS_NAMES)}")
        self.weights = {name: float(self.weights.get(name, 1.0)) for name in LOSS_NAMES}

    @classmethod
    def from_dict(cls, values: dict[str, Any] | None) -> "RadiomicsHeadConfig":
        """Build from a plain dict (as stored in the model's config.json); unknown keys are an error."""
        if values is None:
            return cls()
        if isinstance(values, cls):
            return values
        if not isinstance(values, dict):
            raise TypeError(f"the radiomics config must be a mapping, got {type(values).__name__}")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - names)
        if unknown:
            raise ValueError(f"unknown key(s) {unknown} in the radiomics config; valid keys are: "
                             f"{', '.join(sorted(names))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-serialisable plain dict that `from_dict` reads back."""
        values = dataclasses.asdict(self)
        values["label_names"] = list(self.label_names)
        values["feature_classes"] = list(self.feature_classes)
        values["weights"] = dict(self.weights)
        return values


def masked_bce(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Binary cross-entropy averaged over the entries of ``labels`` that are not NaN.

    With no known entry the result is ``0 * logits.sum()``: zero, yet the classifier stays in the graph (so a
    data-parallel run sees the same parameters used at every step).
    """
    if logits.shape != labels.shape:
        raise ValueError(f"labels {tuple(labels.shape)} and class logits {tuple(logits.shape)} differ in shape")
    known = ~torch.isnan(labels)
    if not bool(known.any()):
        return logits.sum() * 0.0
    return F.binary_cross_entropy_with_logits(logits[known], labels[known].to(logits.dtype))


def explain_targets(logits: torch.Tensor, labels: torch.Tensor | None, explain: str = "label_or_top") -> torch.Tensor:
    """The class to explain per image ``(B,)``: with ``"label_or_top"`` the labelled positive class (``label >
    0.5``; the highest-scoring one if several), else the top predicted class."""
    logits = logits.detach()
    top = logits.argmax(dim=1)
    if explain == "top" or labels is None:
        return top
    positive = torch.nan_to_num(labels.detach(), nan=0.0) > 0.5
    best_positive = logits.masked_fill(~positive, float("-inf")).argmax(dim=1)
    return torch.where(positive.any(dim=1), best_positive, top)


class FeatureStandardizer(nn.Module):
    """Standardises features with running mean and variance, updated from every training batch.

    Running statistics are used in training too (unlike BatchNorm), so a batch of one image works and the
    scale of a feature does not depend on what else is in the batch. The first batch sets the statistics; later
    ones move them with `momentum` (a cumulative mean over the first 1 / momentum batches). `fit_rows` (B,) bool
    picks the rows that update them (a batch with none leaves them as they are).
    """

    def __init__(self, num_features: int, momentum: float = 0.01, eps: float = 1e-5):
        super().__init__()
        self.momentum, self.eps = momentum, eps
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features))
        self.register_buffer("num_batches", torch.zeros((), dtype=torch.long))

    def forward(self, x: torch.Tensor, fit_rows: torch.Tensor | None = None) -> torch.Tensor:
        fit = x if fit_rows is None else x[fit_rows]
        if self.training and fit.shape[0] > 0:
            with torch.no_grad():
                n = int(self.num_batches)
                rate = max(1.0 / (n + 1), self.momentum)
                mean = fit.mean(0)
                var = fit.var(0, unbiased=False)
                self.running_mean.lerp_(mean.to(self.running_mean.dtype), rate)
                self.running_var.lerp_(var.to(self.running_var.dtype), rate)
                self.num_batches += 1
        return (x - self.running_mean) / torch.sqrt(self.running_var + self.eps)


class RadiomicsEncoder(nn.Module):
    """Raw radiomic features ``(B, F)`` -> L2-normalised embeddings ``(B, D)``.

    Radiomic features span many orders of magnitude (Energy ~1e8, ratios ~1e-3); they are compressed with a
    signed ``log1p`` and standardised with running statistics before a two-layer MLP (Linear, LayerNorm, ReLU,
    Linear). Han et al. use an MLP radiomics encoder; the input normalisation is our choice.
    """

    def __init__(self, num_features: int, hidden_dim: int, embed_dim: int, dropout: float = 0.0):
        super().__init__()
        self.standardize = FeatureStandardizer(num_features)
        self.mlp = nn.Sequential(nn.Linear(num_features, hidden_dim), nn.LayerNorm(hidden_dim), nn.ReLU(),
                                 nn.Dropout(dropout), nn.Linear(hidden_dim, embed_dim))

    def forward(self, features: torch.Tensor, fit_rows: torch.Tensor | None = None) -> torch.Tensor:
        """fit_rows: (B,) bool, the rows that update the standardiser's statistics in training (default all)."""
        x = torch.sign(features) * torch.log1p(features.abs())
        x = self.standardize(x.to(self.mlp[0].weight.dtype), fit_rows)
        return F.normalize(self.mlp(x), dim=-1)


class RadiomicsHead(nn.Module):
    """Classifier + Grad-CAM + radiomics encoder; `forward` fills a `VLPOutput` in place (see module docstring)."""

    def __init__(self, config: RadiomicsHeadConfig | dict | None, image_dim: int, embed_dim: int):
        super().__init__()
        from vlp.radiomics import RadiomicsExtractor  # the engine is only needed when the head is on

        self.config = config if isinstance(config, RadiomicsHeadConfig) else RadiomicsHeadConfig.from_dict(config)
        cfg = self.config
        self.classifier = nn.Linear(image_dim, len(cfg.label_names))
        self.extractor = RadiomicsExtractor(cfg.backend, feature_classes=tuple(cfg.feature_classes),
                                            bin_width=cfg.bin_width)
        self.encoder = RadiomicsEncoder(self.extractor.num_features, cfg.encoder_hidden_dim, embed_dim,
                                        cfg.encoder_dropout)

    @property
    def feature_names(self) -> list[str]:
        return list(self.extractor.feature_names)

    def classify(self, regions: torch.Tensor) -> torch.Tensor:
        """Class logits ``(B, L)`` from regions ``(B, R, C)``: mean over regions, then a linear layer."""
        return self.classifier(regions.mean(dim=1))

    def explain(self, regions: torch.Tensor, grid: tuple[int, int], targets: torch.Tensor) -> torch.Tensor:
        """Grad-CAM maps ``(B, h, w)`` in [0, 1] of class ``targets`` on the region grid."""
        return grad_cam(regions, grid, self.classify, targets)

    @torch.no_grad()
    def region_boxes(self, cams: torch.Tensor, size: tuple[int, int]) -> list[tuple[float, float, float, float]]:
        """``(x, y, w, h)`` pixel boxes on an image of `size` (H, W): the largest region of each upsampled map."""
        maps = upsample_cams(cams, size)
        return cam_boxes(maps, self.config.cam_threshold, self.config.min_box_size)

    @torch.no_grad()
    def radiomic_features(self, raw_images: torch.Tensor, boxes) -> torch.Tensor:
        """Raw radiomic features ``(B, F)`` of ``raw_images`` (B, H, W) in [0, 1] inside `boxes`, gradient-free.

        Non-finite values (a feature undefined on a flat region) become 0.
        """
        _check_raw_images(raw_images)
        height, width = raw_images.shape[-2:]
        masks = boxes_to_masks(boxes, height, width, device=raw_images.device)
        images = raw_images.detach().to(torch.float64) * self.config.gray_levels
        features = self.extractor(images, masks)
        return torch.nan_to_num(features, nan=0.0, posinf=0.0, neginf=0.0)

    def forward(self, out, image_features, pixel_values: torch.Tensor | None, raw_images: torch.Tensor | None,
                labels: torch.Tensor | None, return_loss: bool) -> None:
        """Fill ``out.class_logits``, ``out.cams``, ``out.empty_cams``, ``out.radiomics_embeds`` (when
        `raw_images` are given) and, with `return_loss`, the unweighted terms `LOSS_NAMES` of ``out.losses``."""
        cfg = self.config
        regions, grid = image_features.regions, tuple(image_features.grid)
        logits = self.classify(regions)
        if labels is not None:
            labels = labels.to(logits.device)
            if labels.shape != logits.shape:
                raise ValueError(f"labels have shape {tuple(labels.shape)} but the radiomics head predicts "
                                 f"{len(cfg.label_names)} findings for {logits.shape[0]} images "
                                 f"(radiomics.label_names = {cfg.label_names}); use NaN for unknown entries")
        out.class_logits = logits
        targets = explain_targets(logits, labels, cfg.explain)
        out.cams = self.explain(regions, grid, targets)
        out.empty_cams = empty_maps(out.cams)
        # the pairs that enter the NT-Xent (and fit the standardiser): all, or those whose map marks a region
        paired = ~out.empty_cams if cfg.empty_cam == "skip" else torch.ones_like(out.empty_cams)
        contrastive_on = cfg.weights["radiomics_contrastive"] != 0.0
        if return_loss and contrastive_on and raw_images is None:
            raise ValueError("the radiomics head needs raw_images (B, H, W), the unnormalised [0, 1] model-input "
                             "images, to compute radiomic features: call the processor with "
                             "return_raw_images=True and pass raw_images to the model, or set "
                             "radiomics.weights.radiomics_contrastive = 0")
        if raw_images is not None and (contrastive_on or not return_loss):
            if raw_images.dim() == 4 and raw_images.shape[1] == 1:
                raw_images = raw_images[:, 0]
            if raw_images.dim() != 3 or raw_images.shape[0] != logits.shape[0]:
                raise ValueError(f"raw_images must be (B, H, W) with B = {logits.shape[0]}, got "
                                 f"{tuple(raw_images.shape)}")
            boxes = self.region_boxes(out.cams, tuple(raw_images.shape[-2:]))
            features = self.radiomic_features(raw_images, boxes)
            out.radiomics_embeds = self.encoder(features.to(logits.device), fit_rows=paired)
        if return_loss:
            out.losses["radiomics_classification"] = masked_bce(logits, labels) if labels is not None \
                else logits.sum() * 0.0
            if contrastive_on:
                if out.image_embeds is None:
                    raise ValueError("the radiomics contrastive loss needs out.image_embeds")
                out.losses["radiomics_contrastive"] = nt_xent_loss(
                    out.image_embeds[paired], out.radiomics_embeds[paired], cfg.temperature, cfg.negatives,
                    gather=True, with_grad=cfg.gather_with_grad)


def _check_raw_images(raw_images: torch.Tensor) -> None:
    """Raw images must be the processor's unnormalised [0, 1] images (radiomics bins depend on the scale)."""
    if not torch.isfinite(raw_images).all():
        raise ValueError("raw_images contain NaN or infinite values")
    low, high = float(raw_images.min()), float(raw_images.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"raw_images must be the unnormalised [0, 1] images from the processor "
                         f"(return_raw_images=True), got values in [{low:.3g}, {high:.3g}]; normalised "
                         "pixel_values or 0..255 images would change the radiomics gray-level bins")

