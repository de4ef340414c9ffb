"""The classic convolutional nets, adapted to small inputs (MNIST 28x28, CIFAR 32x32) and any larger size.

- `lenet5`: LeCun et al. 1998, two 5x5 convolutions and three dense layers (ReLU and max pooling
  instead of the original scaled tanh and subsampling; an adaptive pool before the dense part so
  any input size works).
- `alexnet_small`: Krizhevsky et al. 2012 scaled to small images as in the cuda-convnet CIFAR
  variants: five convolutions (5x5, 5x5, then three 3x3), three max pools, two dropout dense layers;
  BatchNorm in place of local response normalization unless `norm=False`.
- `vgg`: Simonyan & Zisserman 2014 configurations A/B/D/E (depth 11/13/16/19) with BatchNorm, the
  CIFAR form: global pooling and one linear head instead of the three 4096-wide dense layers.
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.registry import register_model


class _Classic(nn.Module):
    """features -> (pool) -> dense layers (pre-logits) -> head; the split timm uses."""

    def __init__(self, features: nn.Module, pool: nn.Module, dense: nn.Module, num_features: int, num_classes: int):
        super().__init__()
        self.features, self.pool, self.dense = features, pool, dense
        self.num_features = num_features
        self.head = nn.Linear(num_features, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, h, w)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.dense(self.pool(x).flatten(1))  # (B, num_features)
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def lenet5(*, num_classes: int = 10, in_chans: int = 1, dropout: float = 0.0) -> _Classic:
    """LeNet-5 (61 k parameters at 10 classes): conv5(6)-pool-conv5(16)-pool-120-84-head."""
    features = nn.Sequential(
        nn.Conv2d(in_chans, 6, 5, padding=2), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 28 -> 14
        nn.Conv2d(6, 16, 5), nn.ReLU(inplace=True), nn.MaxPool2d(2),  # 14 -> 10 -> 5
    )
    dense = nn.Sequential(nn.Linear(16 * 5 * 5, 120), nn.ReLU(inplace=True), nn.Dropout(dropout),
                          nn.Linear(120, 84), nn.ReLU(inplace=True), nn.Dropout(dropout))
    return _Classic(features, nn.AdaptiveMaxPool2d(5), dense, 84, num_classes)


def _conv(cin: int, cout: int, k: int, norm: bool) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, padding=k // 2, bias=not norm)]
    if norm:
        layers.append(nn.BatchNorm2d(cout))
    return layers + [nn.ReLU(inplace=True)]


@register_model
def alexnet_small(*, num_classes: int = 10, in_chans: int = 3, width: int = 64, hidden: list[int] = (1024, 512),
                  dropout: float = 0.5, norm: bool = True) -> _Classic:
    """AlexNet for small images (4.0 M parameters at width 64): 5 convs, 3 max pools, 2 dense layers."""
    w = width
    features = nn.Sequential(
        *_conv(in_chans, w, 5, norm), nn.MaxPool2d(3, 2, ceil_mode=True),  # 32 -> 16
        *_conv(w, 3 * w, 5, norm), nn.MaxPool2d(3, 2, ceil_mode=True),  # -> 8
        *_conv(3 * w, 6 * w, 3, norm), *_conv(6 * w, 4 * w, 3, norm), *_conv(4 * w, 4 * w, 3, norm),
        nn.MaxPool2d(3, 2, ceil_mode=True),  # -> 4
    )
    dense: list[nn.Module] = []
    cin = 4 * w * 2 * 2
    for h in hidden:
        dense += [nn.Dropout(dropout), nn.Linear(cin, h), nn.ReLU(inplace=True)]
        cin = h
    return _Classic(features, nn.AdaptiveAvgPool2d(2), nn.Sequential(*dense), cin, num_classes)


VGG_CONFIGS = {  # channels at width 64; "M" = 2x2 max pool
    11: [64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    13: [64, 64, "M", 128, 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"],
    16: [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M"],
    19: [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M", 512, 512, 512, 512, "M"],
}


@register_model
def vgg(*, num_classes: int = 10, in_chans: int = 3, depth: int = 11, width: int = 64, norm: bool = True,
        dropout: float = 0.0) -> _Classic:
    """VGG-11/13/16/19 with BatchNorm, CIFAR form (9.2 M parameters at depth 11, width 64)."""
    if depth not in VGG_CONFIGS:
        raise ImgclsError(f"vgg depth={depth} is not one of {sorted(VGG_CONFIGS)}")
    layers: list[nn.Module] = []
    cin = in_chans
    for v in VGG_CONFIGS[depth]:
        if v == "M":
            layers.append(nn.MaxPool2d(2, ceil_mode=True))  # ceil: 28 -> 14 -> 7 -> 4 -> 2 -> 1, no empty maps
        else:
            cout = max(1, v * width // 64)
            layers += _conv(cin, cout, 3, norm)
            cin = cout
    return _Classic(nn.Sequential(*layers), nn.AdaptiveAvgPool2d(1), nn.Dropout(dropout), cin, num_classes)
