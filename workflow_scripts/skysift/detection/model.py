"""
The detector: torchvision Mask R-CNN on fused radio cutouts.

The backbone is chosen by name: ``resnet50`` (with 256 FPN channels) for production GPU runs,
``resnet18``/``resnet34`` with a narrow FPN and light heads for CPU runs. Cutouts are not
resized (``min_size = max_size =`` cutout side: torchvision would otherwise scale 256 px
cutouts to 800 px). Anchors start at 8 px, the size of a compact source's 3-sigma box at a
15" beam and 2"/px, and reach aspect ratios of 1:4 (doubles). Nothing is downloaded: initial weights are none (train from scratch) or a
local file read with ``torch.load(..., weights_only=True)``.

The box head keeps, per detection, the softmax probabilities of every class, and keeps one
detection per proposal (its most probable class), so each source gets one class.
"""

from __future__ import annotations

import logging
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet
from torchvision.models.detection import MaskRCNN
from torchvision.models.detection.anchor_utils import AnchorGenerator
from torchvision.models.detection.backbone_utils import BackboneWithFPN
from torchvision.models.detection.faster_rcnn import FastRCNNPredictor, TwoMLPHead
from torchvision.models.detection.mask_rcnn import MaskRCNNHeads, MaskRCNNPredictor
from torchvision.models.detection.roi_heads import RoIHeads
from torchvision.ops import MultiScaleRoIAlign, boxes as box_ops
from torchvision.ops.misc import FrozenBatchNorm2d

__all__ = ["ModelSettings", "BACKBONES", "build_model", "load_initial_weights", "parameter_groups"]

log = logging.getLogger(__name__)

# channels of layer1..layer4 of each backbone; resnet10 is resnet18 with one block per stage
BACKBONES = {
    "resnet10": (64, 128, 256, 512),
    "resnet18": (64, 128, 256, 512),
    "resnet34": (64, 128, 256, 512),
    "resnet50": (256, 512, 1024, 2048),
    "resnet101": (256, 512, 1024, 2048),
}
# image statistics of the ImageNet-trained torchvision backbones (the fused images lie in [0, 1])
IMAGE_MEAN = (0.485, 0.456, 0.406)
IMAGE_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True)
class ModelSettings:
    """
    Architecture of the detector (stored in every checkpoint and model file).

    Attributes
    ----------
    backbone : str
        One of `BACKBONES` (``resnet10``: resnet18 with one block per stage, for CPUs).
    fpn_channels : int
        FPN width; the box head has ``4 * fpn_channels`` features and the mask head
        ``fpn_channels`` channels (torchvision's defaults at 256).
    size : int
        Cutout side in pixels (``min_size = max_size``: no resizing).
    num_classes : int
        Foreground classes (background excluded).
    anchor_sizes : tuple of int
        Anchor side (pixels) on each of the 5 FPN levels (strides 4 to 64).
    aspect_ratios : tuple of float
        Anchor height/width ratios, the same on every level (down to 1/4 and up to 4: the box of
        a double radio source along a pixel axis is up to four times longer than it is wide).
    trainable_layers : int
        Backbone stages trained, counted from the top (5: all, 0: none), as in torchvision.
    min_score : float
        Detections scoring below this are dropped at inference.
    nms_iou : float
        IoU of the class-agnostic non-maximum suppression within a cutout.
    detections_per_image : int
    frozen_batchnorm : bool
        FrozenBatchNorm2d in the backbone (when starting from trained weights), else BatchNorm2d.
    rpn_post_nms_top_n_test : int
        Proposals kept per cutout at inference (twice as many before the RPN's NMS).
    box_batch_size_per_image : int
        Proposals sampled per cutout to train the box head.
    """

    backbone: str = "resnet18"
    fpn_channels: int = 64
    size: int = 256
    num_classes: int = 6
    anchor_sizes: tuple = (8, 16, 32, 64, 128)
    aspect_ratios: tuple = (0.25, 0.5, 1.0, 2.0, 4.0)
    trainable_layers: int = 5
    min_score: float = 0.05
    nms_iou: float = 0.5
    detections_per_image: int = 50
    frozen_batchnorm: bool = False
    rpn_post_nms_top_n_test: int = 300
    box_batch_size_per_image: int = 128

    def __post_init__(self):
        if self.backbone not in BACKBONES:
            raise ValueError(f"backbone must be one of {sorted(BACKBONES)}, got {self.backbone!r}")
        if len(self.anchor_sizes) != 5:
            raise ValueError(f"anchor_sizes needs one size per FPN level (5), got {self.anchor_sizes!r}")
        if not 0 <= self.trainable_layers <= 5:
            raise ValueError(f"trainable_layers must lie in [0, 5], got {self.trainable_layers!r}")
        if self.num_classes < 1:
            raise ValueError(f"num_classes must be positive, got {self.num_classes!r}")

    def to_dict(self):
        """Plain types only (``torch.load(weights_only=True)`` reads them back)."""
        d = asdict(self)
        d["anchor_sizes"], d["aspect_ratios"] = list(self.anchor_sizes), list(self.aspect_ratios)
        return d

    @classmethod
    def from_dict(cls, d):
        d = dict(d)
        d["anchor_sizes"], d["aspect_ratios"] = tuple(d["anchor_sizes"]), tuple(d["aspect_ratios"])
        return cls(**d)


class RoIHeadsWithProbs(RoIHeads):
    """RoIHeads keeping each detection's class probabilities; one class per proposal."""

    def postprocess_detections(self, class_logits, box_regression, proposals, image_shapes):
        boxes_per_image = [len(p) for p in proposals]
        pred_boxes = self.box_coder.decode(box_regression, proposals)  # (n, classes, 4)
        pred_scores = F.softmax(class_logits, -1)
        self._probs = []
        all_boxes, all_scores, all_labels = [], [], []
        for boxes, scores, shape in zip(pred_boxes.split(boxes_per_image, 0),
                                        pred_scores.split(boxes_per_image, 0), image_shapes):
            boxes = box_ops.clip_boxes_to_image(boxes, shape)
            fg = scores[:, 1:]
            best, label = fg.max(dim=1)
            label = label + 1
            boxes = boxes[torch.arange(len(boxes), device=boxes.device), label]
            keep = torch.where(best > self.score_thresh)[0]
            keep = keep[box_ops.remove_small_boxes(boxes[keep], min_size=1e-2)]
            keep = keep[box_ops.nms(boxes[keep], best[keep], self.nms_thresh)][: self.detections_per_img]
            all_boxes.append(boxes[keep])
            all_scores.append(best[keep])
            all_labels.append(label[keep])
            self._probs.append(fg[keep])
        return all_boxes, all_scores, all_labels

    def forward(self, features, proposals, image_shapes, targets=None):
        result, losses = super().forward(features, proposals, image_shapes, targets)
        if not self.training:
            for r, p in zip(result, self._probs):
                r["probs"] = p
        return result, losses


def _backbone(settings):
    """ResNet body + FPN with ``settings.fpn_channels`` channels and frozen low stages."""
    norm = FrozenBatchNorm2d if settings.frozen_batchnorm else nn.BatchNorm2d
    if settings.backbone == "resnet10":
        body = resnet.ResNet(resnet.BasicBlock, [1, 1, 1, 1], norm_layer=norm)
    else:
        body = getattr(resnet, settings.backbone)(weights=None, norm_layer=norm)
    layers_to_train = ["layer4", "layer3", "layer2", "layer1", "conv1"][: settings.trainable_layers]
    if settings.trainable_layers == 5:
        layers_to_train.append("bn1")
    for name, parameter in body.named_parameters():
        if not any(name.startswith(layer) for layer in layers_to_train):
            parameter.requires_grad_(False)
    return_layers = {f"layer{k}": str(k - 1) for k in (1, 2, 3, 4)}
    return BackboneWithFPN(body, return_layers, list(BACKBONES[settings.backbone]), settings.fpn_channels)


def build_model(settings):
    """
    A Mask R-CNN for ``settings.num_classes`` foreground classes.

    Parameters
    ----------
    settings : ModelSettings

    Returns
    -------
    torchvision.models.detection.MaskRCNN
        Input: a list of ``(3, size, size)`` float tensors in [0, 1]; in eval mode each output
        dict also holds ``probs`` ``(n, num_classes)``.
    """
    backbone = _backbone(settings)
    c = settings.fpn_channels
    sizes = tuple((int(s),) for s in settings.anchor_sizes)
    anchors = AnchorGenerator(sizes, (tuple(float(a) for a in settings.aspect_ratios),) * len(sizes))
    levels = ["0", "1", "2", "3"]
    k = settings.num_classes + 1
    model = MaskRCNN(
        backbone,
        num_classes=None,
        min_size=settings.size,
        max_size=settings.size,
        image_mean=list(IMAGE_MEAN),
        image_std=list(IMAGE_STD),
        rpn_anchor_generator=anchors,
        rpn_post_nms_top_n_test=settings.rpn_post_nms_top_n_test,
        rpn_pre_nms_top_n_test=2 * settings.rpn_post_nms_top_n_test,
        rpn_pre_nms_top_n_train=1000,  # torchvision: 2000 for 800-1333 px images; a cutout is 256 px
        rpn_post_nms_top_n_train=1000,
        box_roi_pool=MultiScaleRoIAlign(levels, 7, 2),
        box_head=TwoMLPHead(c * 49, 4 * c),
        box_predictor=FastRCNNPredictor(4 * c, k),
        box_score_thresh=settings.min_score,
        box_nms_thresh=settings.nms_iou,
        box_detections_per_img=settings.detections_per_image,
        box_batch_size_per_image=settings.box_batch_size_per_image,
        mask_roi_pool=MultiScaleRoIAlign(levels, 14, 2),
        mask_head=MaskRCNNHeads(c, (c, c, c, c), 1),
        mask_predictor=MaskRCNNPredictor(c, c, k),
    )
    old = model.roi_heads
    heads = RoIHeadsWithProbs(
        old.box_roi_pool, old.box_head, old.box_predictor,
        0.5, 0.5, settings.box_batch_size_per_image, 0.25, None,  # torchvision's defaults
        settings.min_score, settings.nms_iou, settings.detections_per_image,
        mask_roi_pool=old.mask_roi_pool, mask_head=old.mask_head, mask_predictor=old.mask_predictor,
    )
    model.roi_heads = heads
    return model


def load_initial_weights(model, path):
    """
    Load a local weights file into the detector or its backbone (never a download).

    Parameters
    ----------
    model : MaskRCNN
    path : str
        A state dict read with ``torch.load(path, weights_only=True)``: a skysift model file
        (``{"model": state_dict, ...}``), a detector state dict, or a classification backbone
        state dict (e.g. torchvision's ImageNet ResNet saved locally); keys that do not fit
        (the classifier, other heads) are skipped and counted in the log.

    Returns
    -------
    int
        Number of tensors loaded.
    """
    state = torch.load(path, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and isinstance(state.get("model"), dict):
        state = state["model"]
    if not isinstance(state, dict) or not state:
        raise ValueError(f"{path}: not a state dict")
    target = model.state_dict()
    if not any(k in target for k in state):
        state = {f"backbone.body.{k}": v for k, v in state.items()}
    usable = {k: v for k, v in state.items() if k in target and target[k].shape == v.shape}
    if not usable:
        raise ValueError(f"{path}: no tensor fits the {type(model).__name__} (wrong backbone?)")
    model.load_state_dict(usable, strict=False)
    log.info("%s: loaded %d of %d tensors (%d skipped)", path, len(usable), len(target), len(state) - len(usable))
    return len(usable)


def parameter_groups(model, lr, low_layer_factor):
    """
    Differential learning rates (Farias et al. 2020): the lower the layer, the smaller its rate.

    Parameters
    ----------
    model : MaskRCNN
    lr : float
        Rate of the top layers (layer4, FPN, RPN and heads).
    low_layer_factor : float
        layer2 and layer3 train at ``lr * f``, the stem and layer1 at ``lr * f**2``.

    Returns
    -------
    list of dict
        Optimizer parameter groups (frozen parameters left out), each with ``lr``.
    """
    groups = {0: [], 1: [], 2: []}
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        body = name.removeprefix("module.").startswith("backbone.body.")
        stage = name.split("backbone.body.", 1)[1].split(".", 1)[0] if body else ""
        depth = 2 if stage in ("conv1", "bn1", "layer1") else 1 if stage in ("layer2", "layer3") else 0
        groups[depth].append(p)
    return [{"params": ps, "lr": lr * low_layer_factor**d, "initial_lr": lr * low_layer_factor**d}
            for d, ps in groups.items() if ps]
