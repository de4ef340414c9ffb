"""A small convolutional net: three conv-BN-ReLU blocks and a global-pooled linear head.

Works at any input size (global average pooling), so the same net serves MNIST and CIFAR-10.
"""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.registry import register_model


def conv_bn(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class SimpleCNN(nn.Module):
    def __init__(self, *, num_classes: int, in_chans: int, width: int, dropout: float):
        super().__init__()
        w = width
        self.features = nn.Sequential(
            conv_bn(in_chans, w),
            conv_bn(w, 2 * w),
            nn.MaxPool2d(2),  # H/2
            conv_bn(2 * w, 4 * w),
            nn.MaxPool2d(2),  # H/4
            conv_bn(4 * w, 4 * w),
        )
        self.num_features = 4 * w
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.drop = nn.Dropout(dropout)
        self.head = nn.Linear(4 * w, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, 4w, H/4, W/4)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = self.pool(x).flatten(1)  # (B, 4w)
        return x if pre_logits else self.head(self.drop(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def simple_cnn(
    *,
    num_classes: int,
    in_chans: int = 3,
    width: int = 32,  # channels of the first conv; later blocks use 2x and 4x
    dropout: float = 0.0,  # before the head
) -> SimpleCNN:
    """Small CNN, a good first convolutional baseline."""
    return SimpleCNN(num_classes=num_classes, in_chans=in_chans, width=width, dropout=dropout)
