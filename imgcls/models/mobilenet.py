"""Lightweight nets built from depthwise-separable convolutions, with a width multiplier.

- `mobilenet_v1`: Howard et al. 2017: a 3x3 conv, then 13 blocks of [3x3 depthwise, 1x1 pointwise].
- `mobilenet_v2`: Sandler et al. 2018: inverted residual blocks (1x1 expand by t, 3x3 depthwise,
  linear 1x1 project; identity shortcut when shapes match) and a final 1x1 conv to 1280 channels.

Both follow the usual CIFAR adaptation: the ImageNet nets downsample 32x before pooling, which would
leave a 32x32 image at 1x1, so `small_input=True` (the default) removes the stride of the stem (and,
in v2, of the second stage): 32x32 inputs end at 4x4 (v1: 2x2), as in the well-known CIFAR ports.
`width` (alpha in the papers) scales every layer's channels, rounded to multiples of 8 as in the
reference implementations; alpha < 1 trades accuracy for parameters and FLOPs roughly as alpha^2.
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.registry import register_model


def make_divisible(v: float, divisor: int = 8) -> int:
    """Round channels to a multiple of `divisor`, never more than 10% below `v` (the reference rule)."""
    new = max(divisor, int(v + divisor / 2) // divisor * divisor)
    return new + divisor if new < 0.9 * v else new


def conv_bn_act(cin: int, cout: int, k: int = 3, stride: int = 1, groups: int = 1, act: bool = True) -> nn.Sequential:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False), nn.BatchNorm2d(cout)]
    if act:
        layers.append(nn.ReLU6(inplace=True))
    return nn.Sequential(*layers)


class _MobileNet(nn.Module):
    def __init__(self, stem: nn.Module, blocks: nn.Module, num_features: int, num_classes: int, dropout: float):
        super().__init__()
        self.stem, self.blocks = stem, blocks
        self.num_features = num_features
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(num_features, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(self.stem(x))  # (B, num_features, h, w)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = x.mean((2, 3))
        return x if pre_logits else self.head(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


V1_BLOCKS = [(64, 1), (128, 2), (128, 1), (256, 2), (256, 1), (512, 2)] + [(512, 1)] * 5 + [(1024, 2), (1024, 1)]


@register_model
def mobilenet_v1(*, num_classes: int = 10, in_chans: int = 3, width: float = 1.0, small_input: bool = True,
                 dropout: float = 0.0) -> _MobileNet:
    """MobileNet v1 (3.2 M parameters at width 1.0, 0.22 M at 0.25)."""
    c = make_divisible(32 * width)
    stem = conv_bn_act(in_chans, c, 3, 1 if small_input else 2)
    blocks = []
    for cout, stride in V1_BLOCKS:
        cout = make_divisible(cout * width)
        blocks.append(nn.Sequential(conv_bn_act(c, c, 3, stride, groups=c), conv_bn_act(c, cout, 1)))
        c = cout
    return _MobileNet(stem, nn.Sequential(*blocks), c, num_classes, dropout)


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expand: int):
        super().__init__()
        hidden = cin * expand
        layers = [conv_bn_act(cin, hidden, 1)] if expand != 1 else []
        layers += [conv_bn_act(hidden, hidden, 3, stride, groups=hidden), conv_bn_act(hidden, cout, 1, act=False)]
        self.conv = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv(x) if self.residual else self.conv(x)


V2_STAGES = [(1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1), (6, 160, 3, 2), (6, 320, 1, 1)]


@register_model
def mobilenet_v2(*, num_classes: int = 10, in_chans: int = 3, width: float = 1.0, small_input: bool = True,
                 last_channels: int = 1280, dropout: float = 0.0) -> _MobileNet:
    """MobileNet v2 (2.2 M parameters at width 1.0; 0.16 M at width 0.25 with last_channels=320)."""
    c = make_divisible(32 * width)
    stem = conv_bn_act(in_chans, c, 3, 1 if small_input else 2)
    blocks: list[nn.Module] = []
    for i, (t, cout, n, s) in enumerate(V2_STAGES):
        cout = make_divisible(cout * width)
        if small_input and i == 1:
            s = 1  # CIFAR adaptation: keep 32x32 inputs at 4x4 before pooling
        for j in range(n):
            blocks.append(InvertedResidual(c, cout, s if j == 0 else 1, t))
            c = cout
    last = make_divisible(last_channels * max(1.0, width))  # the paper keeps the last layer wide for alpha < 1
    blocks.append(conv_bn_act(c, last, 1))
    return _MobileNet(stem, nn.Sequential(*blocks), last, num_classes, dropout)
