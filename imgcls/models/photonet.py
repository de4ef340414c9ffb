"""PhotoNet: a ResNet-style net for photos seen at 96-224 px, trained from scratch on a CPU.

CIFAR nets keep full resolution through their first stage, which at 224 px costs 49x what it costs
at 32 px; ImageNet nets spend most of their compute on 1000-class capacity that a small data set
cannot use. PhotoNet sits between: a two-conv stem that halves the side (He et al. 2019, "Bag of
Tricks": a deep stem instead of one 7x7), then `len(depths)` stages of basic residual blocks, each
stage halving the side again with a stride-2 block whose shortcut averages before its 1x1
projection (ResNet-D), and a global-pooled linear head. Zero-initialised last batch norm in each
block ("Bag of Tricks") lets a from-scratch run start as a shallower net.

At 112 px with the defaults: 1.53 M parameters, 83 M multiply-adds per image (torch's FlopCounterMode);
the side is 1/32 of the input after the last stage (4x4 at 112 px, rounded up). Measured against the
other models: docs/models.md.
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.registry import register_model


def conv_bn(cin: int, cout: int, stride: int = 1, act: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False), nn.BatchNorm2d(cout)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if act else nn.Sequential(*layers)


class BasicBlock(nn.Module):
    """Two 3x3 convs with a residual shortcut; stride 2 halves the side (shortcut: 2x2 average, then 1x1 conv)."""

    def __init__(self, cin: int, cout: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn(cin, cout, stride)
        self.conv2 = conv_bn(cout, cout, act=False)
        nn.init.zeros_(self.conv2[1].weight)  # the block starts as the identity
        self.shortcut = nn.Identity() if stride == 1 and cin == cout else nn.Sequential(
            nn.AvgPool2d(stride, ceil_mode=True, count_include_pad=False) if stride > 1 else nn.Identity(),
            nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout))
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv2(self.conv1(x)) + self.shortcut(x))


class PhotoNet(nn.Module):
    def __init__(self, *, num_classes: int, in_chans: int, stem_width: int, widths: list[int], depths: list[int],
                 dropout: float):
        super().__init__()
        if len(widths) != len(depths) or not widths:
            raise ValueError(f"photonet needs one depth per width, got widths={widths} depths={depths}")
        self.stem = nn.Sequential(conv_bn(in_chans, stem_width // 2, stride=2), conv_bn(stem_width // 2, stem_width))
        stages, cin = [], stem_width
        for w, d in zip(widths, depths, strict=True):
            stages.append(nn.Sequential(BasicBlock(cin, w, stride=2), *[BasicBlock(w, w) for _ in range(d - 1)]))
            cin = w
        self.stages = nn.Sequential(*stages)
        self.num_features = cin
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(cin, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.stages(self.stem(x))  # (B, C, H, W) -> (B, widths[-1], H / 2^(1+len), W / 2^(1+len))

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (B, widths[-1])
        return x if pre_logits else self.head(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def photonet(
    *,
    num_classes: int,
    in_chans: int = 3,
    stem_width: int = 32,  # channels after the stem (its first conv has half); the stem halves the side
    widths: tuple[int, ...] = (32, 64, 128, 256),  # channels of each stage; each stage halves the side
    depths: tuple[int, ...] = (1, 1, 2, 1),  # residual blocks per stage (more: deeper, slower)
    dropout: float = 0.2,  # before the head: small photo sets overfit
) -> PhotoNet:
    """A from-scratch net for photos at 96-224 px (a deep stem, residual stages); fast enough to train on a CPU."""
    return PhotoNet(num_classes=num_classes, in_chans=in_chans, stem_width=stem_width, widths=list(widths),
                    depths=list(depths), dropout=dropout)
