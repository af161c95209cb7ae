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

from dataclasses import dataclass, field
from typing import Any, Literal

import torch
import torch.nn.functional as F
from torch import nn

from vlp.configuration import HeadInput, SubConfig
from vlp.gradcam import boxes_to_masks, cam_boxes, empty_maps, grad_cam, upsample_cams
from vlp.losses.ntxent import NEGATIVES, nt_xent_loss
from vlp.registry import register_head

from .base import HeadInputs, HeadOutput, TowerDims, VLPHead

__all__ = ["EMPTY_CAM", "LOSS_NAMES", "NIH_FINDINGS", "RadiomicsEncoder", "RadiomicsHead", "RadiomicsHeadConfig",
           "RadiomicsOutput", "explain_targets", "masked_bce"]

LOSS_NAMES = (
    "classification",  # BCE of the multi-label classifier on the known label entries
    "contrastive",  # NT-Xent between image embeddings and radiomics embeddings
)

# The 14 ChestX-ray14 findings, spelt as NIH's image labels (Wang et al., CVPR 2017).
NIH_FINDINGS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

ALL_2D_FEATURE_CLASSES = ("firstorder", "shape2D", "glcm", "glrlm", "glszm", "gldm", "ngtdm")
EMPTY_CAM = ("image", "skip")  # what an all-zero Grad-CAM map gives (RadiomicsHeadConfig.empty_cam)


@dataclass
class RadiomicsHeadConfig(SubConfig):
    """Settings of the radiomics head (stored as `VLPConfig.heads["radiomics"]`).

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

    The loss weights live in `VLPConfig.loss.weights` as ``radiomics/classification`` and
    ``radiomics/contrastive`` (default 1 each); a contrastive weight of 0 switches the radiomics extraction off
    during training.
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

    def reset_parameters(self) -> None:
        """Unfitted statistics (mean 0, variance 1, no batch seen): the next training batch sets them."""
        nn.init.zeros_(self.running_mean)
        nn.init.ones_(self.running_var)
        nn.init.zeros_(self.num_batches)

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


@dataclass
class RadiomicsOutput(HeadOutput):
    """What the radiomics head returns; ``logs["empty_cams"]`` is the share of all-zero Grad-CAM maps."""

    class_logits: torch.Tensor | None = None  # (B, L) multi-label logits
    cams: torch.Tensor | None = None  # (B, h, w) Grad-CAM maps on the region grid, in [0, 1]
    empty_cams: torch.Tensor | None = None  # (B,) bool: the map is all zero (marks no region)
    radiomics_embeds: torch.Tensor | None = None  # (B, D) L2-normalised (when raw images are given)


@register_head
class RadiomicsHead(VLPHead):
    """Classifier + Grad-CAM + radiomics encoder (see the module docstring).

    Built from a `RadiomicsHeadConfig` and the towers' sizes: the classifier reads `TowerDims.region_dim`
    channels, the radiomics encoder maps into the shared `embed_dim` space.
    """

    name = "radiomics"
    summary = ("radiomics as a third modality: a finding classifier whose Grad-CAM box gives radiomic features that "
               "are contrasted with the image embedding (the feedback loop)")
    citation = ("Han, Chen, Tewfik, Glicksberg, Ding, Peng, Wang. Knowledge-Augmented Contrastive Learning for "
                "Abnormality Classification and Localization in Chest X-rays with Radiomics using a Feedback Loop. "
                "WACV 2022. arXiv:2104.04968")
    config_class = RadiomicsHeadConfig
    loss_names = LOSS_NAMES
    legacy_loss_names = {"radiomics_classification": "classification", "radiomics_contrastive": "contrastive"}
    output_class = RadiomicsOutput

    def __init__(self, config: RadiomicsHeadConfig, dims: TowerDims, weights=None):
        super().__init__(config, dims, weights)
        from vlp.radiomics import RadiomicsExtractor  # the engine is only needed when the head is on

        self.classifier = nn.Linear(dims.region_dim, len(config.label_names))
        self.extractor = RadiomicsExtractor(config.backend, feature_classes=tuple(config.feature_classes),
                                            bin_width=config.bin_width)
        self.encoder = RadiomicsEncoder(self.extractor.num_features, config.encoder_hidden_dim, dims.embed_dim,
                                        config.encoder_dropout)

    # ------------------------------------------------------------------------------------------- protocol
    @classmethod
    def required_inputs(cls, config, weights):
        needs = {HeadInput.IMAGES}
        if weights.get("contrastive", 1.0) != 0.0:
            needs.add(HeadInput.RAW_IMAGES)
        return frozenset(needs)

    @classmethod
    def adapt_to_data(cls, values: dict[str, Any], label_names: list[str] | None) -> dict[str, Any]:
        """The classifier's findings are the data's label columns unless the settings name them; settings that
        name other findings than the data has are an error (the outputs must line up with the label columns)."""
        values = dict(values or {})
        if label_names is None:
            if "label_names" not in values:
                raise ValueError("the radiomics head needs labels: set data.labels_column (--labels-column) to the "
                                 "manifest's labels, or name the findings in the head's label_names")
            return values
        if "label_names" in values and list(values["label_names"]) != list(label_names):
            raise ValueError(f"the radiomics head's label_names {list(values['label_names'])} differ from the data's "
                             f"label columns {list(label_names)}; remove them from the config to use the data's")
        values["label_names"] = list(label_names)
        return values

    @property
    def contrastive_on(self) -> bool:
        return self.loss_weights["contrastive"] != 0.0

    def idle_parameters(self) -> set[str]:
        """Without the contrastive term nothing trains the radiomics encoder."""
        return set() if self.contrastive_on else {f"encoder.{n}" for n, _ in self.encoder.named_parameters()}

    @property
    def uses_image_embeds(self) -> bool:
        return self.contrastive_on

    # ------------------------------------------------------------------------------------ the computation
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

    def forward(self, inputs: HeadInputs) -> RadiomicsOutput:
        """Class logits, Grad-CAM maps, the radiomics embeddings of the maps' boxes (when raw images are given)
        and, with `return_loss`, the unweighted terms `LOSS_NAMES`."""
        cfg = self.config
        features, labels, raw_images = inputs.image.features, inputs.labels, inputs.raw_images
        regions, grid = features.regions, tuple(features.grid)
        logits = self.classify(regions)
        if labels is not None:
            labels = labels.to(logits.device)
            if labels.shape != logits.shape:
                raise ValueError(f"labels have shape {tuple(labels.shape)} but the radiomics head predicts "
                                 f"{len(cfg.label_names)} findings for {logits.shape[0]} images "
                                 f"(label_names = {cfg.label_names}); use NaN for unknown entries")
        out = RadiomicsOutput(class_logits=logits)
        targets = explain_targets(logits, labels, cfg.explain)
        out.cams = self.explain(regions, grid, targets)
        out.empty_cams = empty_maps(out.cams)
        out.logs = {"empty_cams": out.empty_cams.float().mean().detach()}
        # the pairs that enter the NT-Xent (and fit the standardiser): all, or those whose map marks a region
        paired = ~out.empty_cams if cfg.empty_cam == "skip" else torch.ones_like(out.empty_cams)
        if raw_images is not None and (self.contrastive_on or not inputs.return_loss):
            if raw_images.dim() == 4 and raw_images.shape[1] == 1:
                raw_images = raw_images[:, 0]
            if raw_images.dim() != 3 or raw_images.shape[0] != logits.shape[0]:
                raise ValueError(f"raw_images must be (B, H, W) with B = {logits.shape[0]}, got "
                                 f"{tuple(raw_images.shape)}")
            boxes = self.region_boxes(out.cams, tuple(raw_images.shape[-2:]))
            radiomics = self.radiomic_features(raw_images, boxes)
            out.radiomics_embeds = self.encoder(radiomics.to(logits.device), fit_rows=paired)
        if inputs.return_loss:
            out.losses = {"classification": masked_bce(logits, labels) if labels is not None else logits.sum() * 0.0}
            if self.contrastive_on:
                out.losses["contrastive"] = nt_xent_loss(
                    inputs.image.embeds[paired], out.radiomics_embeds[paired], cfg.temperature, cfg.negatives,
                    gather=True, with_grad=cfg.gather_with_grad)
        return out


def _check_raw_images(raw_images: torch.Tensor) -> None:
    """Raw images must be the processor's unnormalised [0, 1] images (radiomics bins depend on the scale)."""
    if not torch.isfinite(raw_images).all():
        raise ValueError("raw_images contain NaN or infinite values")
    low, high = float(raw_images.min()), float(raw_images.max())
    if low < -1e-3 or high > 1.0 + 1e-3:
        raise ValueError(f"raw_images must be the unnormalised [0, 1] images from the processor "
                         f"(return_raw_images=True), got values in [{low:.3g}, {high:.3g}]; normalised "
                         "pixel_values or 0..255 images would change the radiomics gray-level bins")

