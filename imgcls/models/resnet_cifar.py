"""CIFAR ResNets of He et al. 2016 ("Deep Residual Learning", section 4.2): 6n+2 layers.

Three stages of n BasicBlocks at 16/32/64 channels; downsampling blocks use the parameter-free
option-A shortcut (stride-2 subsample and zero-pad the channels). Attribute names follow
Y. Idelbayev's reference implementation, so its published weights load key for key.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.models.registry import register_model


class ShortcutA(nn.Module):
    """Option-A shortcut: x[:, :, ::2, ::2] zero-padded from cin to cout channels."""

    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.pad = (cout - cin) // 2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = ShortcutA(cin, cout) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class ResNetCifar(nn.Module):
    head_name = "linear"  # the classifier's attribute (the reference implementation's name, kept for its weights)

    def __init__(self, *, depth: int, num_classes: int, in_chans: int, width: int):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        widths = [width, 2 * width, 4 * width]
        self.conv1 = nn.Conv2d(in_chans, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        cin = width
        for i, w in enumerate(widths):
            blocks = [BasicBlock(cin if j == 0 else w, w, 2 if (i > 0 and j == 0) else 1) for j in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = w
        self.num_features = widths[-1]
        self.linear = nn.Linear(widths[-1], num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        return self.layer3(self.layer2(self.layer1(x)))  # (B, 4w, H/4, W/4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_avg_pool2d(x, 1).flatten(1)
        return x if pre_logits else self.linear(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _resnet_cifar(depth: int, num_classes: int, in_chans: int, width: int) -> ResNetCifar:
    return ResNetCifar(depth=depth, num_classes=num_classes, in_chans=in_chans, width=width)


@register_model
def resnet_cifar20(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> ResNetCifar:
    """ResNet-20 (0.27 M parameters); published 91.73% on CIFAR-10."""
    return _resnet_cifar(20, num_classes, in_chans, width)


@register_model
def resnet_cifar32(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> ResNetCifar:
    """ResNet-32 (0.46 M parameters); published 92.63% on CIFAR-10."""
    return _resnet_cifar(32, num_classes, in_chans, width)


@register_model
def resnet_cifar44(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> ResNetCifar:
    """ResNet-44 (0.66 M parameters); published 93.10% on CIFAR-10."""
    return _resnet_cifar(44, num_classes, in_chans, width)


@register_model
def resnet_cifar56(*, num_classes: int = 10, in_chans: int = 3, width: int = 16) -> ResNetCifar:
    """ResNet-56 (0.85 M parameters); published 93.39% on CIFAR-10."""
    return _resnet_cifar(56, num_classes, in_chans, width)
