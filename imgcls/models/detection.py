"""Object detectors (the detect task, imgcls.tasks.detect) from torchvision's builders on an FPN backbone:
Faster R-CNN (two-stage: region proposals, then a classifier and box regressor per region; Ren et al. 2015)
and FCOS (one-stage and anchor-free: a class and a box per feature-map location; Tian et al. 2019) and
RetinaNet (one-stage with anchors and the focal loss; Lin et al. 2017).

The backbone is a torchvision MobileNetV2/V3 or ResNet, or any timm model that gives stage features
(`backbone=tu-NAME`), with a feature pyramid over its stride-8/16/32 stages. `model.pretrained=FILE`
loads an ImageNet classifier's weights into the backbone: a torchvision MobileNetV2 file fits
`backbone=mobilenet_v2` key for key (the trunk is `backbone.body.features`, as in the classifier). The
backbone's batch norms are frozen (FrozenBatchNorm2d, as torchvision does when fine-tuning detectors):
detection batches are a few images, too few for batch statistics.

Every detector here is a `Detector`: images in (a list of (3, H, W) tensors in [0, 1], any sizes; the
network resizes them so that the shorter side is `min_size` (data.image_size unless given), the longer at
most `max_size`), and in
training with targets (`{"boxes": (N, 4) xyxy pixels, "labels": (N,) classes from 0}`) a dict of losses;
in evaluation a list of `{"boxes", "scores", "labels"}` per image in the input's pixels, classes from 0.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence

import torch
from torch import nn
from torchvision.ops import FeaturePyramidNetwork, FrozenBatchNorm2d
from torchvision.ops.feature_pyramid_network import LastLevelMaxPool, LastLevelP6P7

from imgcls.errors import ImgclsError
from imgcls.models.registry import register_model

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
TORCHVISION_BACKBONES = ("mobilenet_v2", "mobilenet_v3_large", "mobilenet_v3_small", "resnet18", "resnet34", "resnet50")


def detector(fn):
    fn.task = "detect"
    return register_model(fn)


class Trunk(nn.Module):
    """A classifier's feature layers giving the outputs of chosen stages (stride 8, 16, 32) as an OrderedDict.

    `weights_prefix`: what the classifier's weights file keys miss of this trunk's keys (a MobileNet's file
    names `features.0...`, as here; a ResNet's `conv1`, `layer1...`, here under `features.`)."""

    def __init__(self, features: nn.Module, taps: dict[str, str], channels: list[int], weights_prefix: str = ""):
        super().__init__()
        self.features, self.taps, self.channels, self.weights_prefix = features, taps, channels, weights_prefix

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        out = OrderedDict()
        for name, layer in self.features.named_children():
            x = layer(x)
            if name in self.taps:
                out[self.taps[name]] = x
                if len(out) == len(self.taps):
                    break
        return out


class TimmTrunk(nn.Module):
    weights_prefix = "net."  # a timm weights file's keys are those of the features-only model under `net`

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net
        self.channels = list(net.feature_info.channels())

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return OrderedDict((str(i), f) for i, f in enumerate(self.net(x)))


class BackboneFPN(nn.Module):
    """Trunk (`body`) + feature pyramid (`fpn`): maps of `out_channels` at strides 8, 16, 32 and one or two more
    (128 channels by default, half of torchvision's 256: the pyramid and the heads over it cost a quarter on a CPU)."""

    def __init__(self, body: nn.Module, extra: str, out_channels: int = 256):
        super().__init__()
        self.body = body
        blocks = LastLevelP6P7(out_channels, out_channels) if extra == "p6p7" else LastLevelMaxPool()
        self.fpn = FeaturePyramidNetwork(body.channels, out_channels, extra_blocks=blocks)
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        return self.fpn(self.body(x))


def _freeze_stages(features: nn.Module, trainable: int) -> None:
    """Freeze all but the last `trainable` of the trunk's top-level blocks (-1: train them all)."""
    blocks = list(features.children())
    if trainable < 0:
        return
    for b in blocks[: max(0, len(blocks) - trainable)]:
        for p in b.parameters():
            p.requires_grad_(False)


def make_trunk(name: str, in_chans: int, trainable_layers: int) -> nn.Module:
    """The stride-8/16/32 stages of a torchvision classifier (batch norms frozen), or of a timm model (tu-NAME)."""
    if in_chans != 3:
        raise ImgclsError(f"detectors take RGB images (in_chans=3), not {in_chans} channels")
    if name.startswith("tu-"):
        import timm

        try:
            net = timm.create_model(name[3:], pretrained=False, features_only=True, out_indices=(2, 3, 4))
        except Exception as e:  # noqa: BLE001 - timm raises RuntimeError or KeyError for unknown names
            raise ImgclsError(f"timm backbone {name[3:]!r}: {e}") from None
        from timm.layers import freeze_batch_norm_2d

        net = freeze_batch_norm_2d(net)  # batch norms frozen, as for the torchvision backbones
        if trainable_layers >= 0:  # the stem and early stages frozen, as _freeze_stages does
            blocks = list(net.children())
            for b in blocks[: max(0, len(blocks) - trainable_layers)]:
                for p in b.parameters():
                    p.requires_grad_(False)
        return TimmTrunk(net)
    import torchvision.models as tvm

    if name not in TORCHVISION_BACKBONES:
        raise ImgclsError(f"unknown detection backbone {name!r}; one of {', '.join(TORCHVISION_BACKBONES)} or "
                          f"tu-<a timm model>")
    net = getattr(tvm, name)(weights=None, norm_layer=FrozenBatchNorm2d)
    if name.startswith("mobilenet"):
        feats = net.features
        # the last block of each stride: the stage outputs at strides 8, 16, 32
        strided = [i for i, b in enumerate(feats) if getattr(b, "_is_cn", False)]
        ends = [s - 1 for s in strided[2:]] + [len(feats) - 1]  # before the stride-16 and stride-32 blocks, and the end
        taps = {str(i): str(k) for k, i in enumerate(ends[-3:])}
        channels = [_out_channels(feats[i]) for i in ends[-3:]]
        _freeze_stages(feats, trainable_layers)
        return Trunk(feats, taps, channels)
    feats = nn.Sequential(OrderedDict((k, getattr(net, k)) for k in
                                      ("conv1", "bn1", "relu", "maxpool", "layer1", "layer2", "layer3", "layer4")))
    ch = [_out_channels(getattr(net, f"layer{i}")) for i in (2, 3, 4)]
    _freeze_stages(feats, trainable_layers)
    return Trunk(feats, {"layer2": "0", "layer3": "1", "layer4": "2"}, ch, weights_prefix="features.")


def _out_channels(block: nn.Module) -> int:
    if hasattr(block, "out_channels"):
        return int(block.out_channels)
    convs = [m for m in block.modules() if isinstance(m, nn.Conv2d)]
    return int(convs[-1].out_channels)


class Detector(nn.Module):
    """A torchvision detector with classes from 0 (Faster R-CNN reserves 0 for the background: shifted by one)."""

    head_name = "roi_heads"  # what is not backbone (for discriminative lrs): set per kind below

    def __init__(self, net: nn.Module, num_classes: int, background: bool):
        super().__init__()
        self.net = net
        self.num_classes = num_classes
        self.offset = 1 if background else 0
        # where an ImageNet classifier's weights go (imgcls.models.pretrained.align_keys): the trunk's keys
        self.weights_prefix = "net.backbone.body." + net.backbone.body.weights_prefix

    @property
    def backbone(self) -> nn.Module:
        return self.net.backbone

    def forward(self, images: Sequence[torch.Tensor], targets: Sequence[dict] | None = None):
        if isinstance(images, torch.Tensor) and images.ndim == 4:
            images = list(images)
        if targets is not None:
            targets = [{"boxes": t["boxes"], "labels": t["labels"] + self.offset} for t in targets]
        out = self.net(list(images), targets)
        if self.training:
            return out
        return [{"boxes": o["boxes"], "scores": o["scores"], "labels": o["labels"] - self.offset} for o in out]


def _common(img_size, min_size, max_size) -> dict:
    """The network's resize: the shorter side to min_size (default: data.image_size), the longer at most max_size
    (default 5/3 of it, COCO's 800/1333)."""
    side = int(min_size or (min(img_size) if isinstance(img_size, (list, tuple)) else img_size))
    return {"min_size": side, "max_size": int(max_size or round(side * 5 / 3)), "image_mean": IMAGENET_MEAN,
            "image_std": IMAGENET_STD}


def _anchors(anchor_sizes, aspect_ratios, levels: int):
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    sizes = [tuple(s) if isinstance(s, (list, tuple)) else (int(s),) for s in anchor_sizes]
    if len(sizes) != levels:
        raise ImgclsError(f"anchor_sizes has {len(sizes)} entries; this detector has {levels} feature maps (one per map)")
    if len({len(s) for s in sizes}) != 1:
        raise ImgclsError(f"anchor_sizes: every feature map needs the same number of sizes, got {anchor_sizes}")
    return AnchorGenerator(tuple(sizes), (tuple(float(r) for r in aspect_ratios),) * levels)


@detector
def fasterrcnn(*, num_classes: int, in_chans: int = 3, backbone: str = "mobilenet_v2", trainable_layers: int = 12, fpn_channels: int = 128,
               img_size: int | list[int] = 416, min_size: int | None = None, max_size: int | None = None,
               anchor_sizes: list = (32, 64, 128, 256), aspect_ratios: list = (0.5, 1.0, 2.0),
               score_thresh: float = 0.05, nms_thresh: float = 0.5, detections_per_img: int = 100,
               rpn_pre_nms_top_n_test: int = 500, rpn_post_nms_top_n_test: int = 300,
               box_batch_size_per_image: int = 128) -> nn.Module:
    """Faster R-CNN with an FPN: a region proposal network over every level, then RoIAlign and two FC layers.

    anchor_sizes: one anchor side in pixels (or a list of them) per feature map (strides 8, 16, 32, 64);
    aspect_ratios: height/width of the anchors; score_thresh and nms_thresh: which detections are kept;
    trainable_layers: how many of the backbone's last blocks train (-1: all; the stem and first blocks
    are generic edges and stay as they were learned on ImageNet); box_batch_size_per_image: proposals per
    image that train the second stage (torchvision's 512 costs 4x on a CPU, where RoIAlign's backward is slow)."""
    from torchvision.models.detection import FasterRCNN

    bb = BackboneFPN(make_trunk(backbone, in_chans, trainable_layers), "pool", fpn_channels)
    net = FasterRCNN(bb, num_classes=num_classes + 1, rpn_anchor_generator=_anchors(anchor_sizes, aspect_ratios, 4),
                     box_score_thresh=score_thresh, box_nms_thresh=nms_thresh, box_detections_per_img=detections_per_img,
                     rpn_pre_nms_top_n_test=rpn_pre_nms_top_n_test, rpn_post_nms_top_n_test=rpn_post_nms_top_n_test,
                     box_batch_size_per_image=box_batch_size_per_image,
                     **_common(img_size, min_size, max_size))
    d = Detector(net, num_classes, background=True)
    d.head_name = "net.roi_heads"
    return d


@detector
def fcos(*, num_classes: int, in_chans: int = 3, backbone: str = "mobilenet_v2", trainable_layers: int = 12, fpn_channels: int = 128,
         img_size: int | list[int] = 416, min_size: int | None = None, max_size: int | None = None,
         score_thresh: float = 0.05, nms_thresh: float = 0.6,
         detections_per_img: int = 100, center_sampling_radius: float = 1.5) -> nn.Module:
    """FCOS: one stage, no anchors; each location of the five feature maps (strides 8-128) predicts a class,
    its distances to the box's four sides and a centre-ness that down-weights far-off locations."""
    from torchvision.models.detection import FCOS
    from torchvision.models.detection.anchor_utils import AnchorGenerator

    if fpn_channels % 32:
        raise ImgclsError(f"fcos: fpn_channels={fpn_channels} must be a multiple of 32 (its head's group norms have 32 groups)")

    bb = BackboneFPN(make_trunk(backbone, in_chans, trainable_layers), "p6p7", fpn_channels)
    anchors = AnchorGenerator(((8,), (16,), (32,), (64,), (128,)), ((1.0,),) * 5)  # one point per location
    net = FCOS(bb, num_classes=num_classes, anchor_generator=anchors, score_thresh=score_thresh, nms_thresh=nms_thresh,
               detections_per_img=detections_per_img, center_sampling_radius=center_sampling_radius,
               **_common(img_size, min_size, max_size))
    d = Detector(net, num_classes, background=False)
    d.head_name = "net.head"
    return d


@detector
def retinanet(*, num_classes: int, in_chans: int = 3, backbone: str = "mobilenet_v2", trainable_layers: int = 12, fpn_channels: int = 128,
              img_size: int | list[int] = 416, min_size: int | None = None, max_size: int | None = None,
              anchor_sizes: list = ((32, 40, 50), (64, 80, 101), (128, 161, 203), (256, 322, 406), (512, 645, 812)),
              aspect_ratios: list = (0.5, 1.0, 2.0), score_thresh: float = 0.05, nms_thresh: float = 0.5,
              detections_per_img: int = 100) -> nn.Module:
    """RetinaNet: one stage with anchors (3 sizes x 3 ratios per location of five maps) and the focal loss."""
    from torchvision.models.detection import RetinaNet

    bb = BackboneFPN(make_trunk(backbone, in_chans, trainable_layers), "p6p7", fpn_channels)
    net = RetinaNet(bb, num_classes=num_classes, anchor_generator=_anchors(anchor_sizes, aspect_ratios, 5),
                    score_thresh=score_thresh, nms_thresh=nms_thresh, detections_per_img=detections_per_img,
                    **_common(img_size, min_size, max_size))
    d = Detector(net, num_classes, background=False)
    d.head_name = "net.head"
    return d
