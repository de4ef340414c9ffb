"""Multi-layer perceptron: the dense baseline (MNIST's classic first model)."""

from __future__ import annotations

import torch
from torch import nn

from imgcls.models.registry import register_model


class MLP(nn.Module):
    """Flatten -> [Linear, ReLU, Dropout] x len(hidden) -> Linear head."""

    def __init__(self, *, num_classes: int, in_features: int, hidden: list[int], dropout: float):
        super().__init__()
        layers: list[nn.Module] = [nn.Flatten()]
        width = in_features
        for h in hidden:
            layers += [nn.Linear(width, h), nn.ReLU(inplace=True), nn.Dropout(dropout)]
            width = h
        self.features = nn.Sequential(*layers)
        self.num_features = width
        self.head = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.features(x)  # (B, C, H, W) -> (B, num_features)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def mlp(
    *,
    num_classes: int,
    in_chans: int = 1,
    img_size: int | list[int] = 28,  # input side (or [H, W]) in pixels; the first layer has in_chans*H*W inputs
    hidden: list[int] = (512, 256),  # widths of the hidden layers
    dropout: float = 0.1,  # after each hidden layer; 0 to disable
) -> MLP:
    """Dense network on flattened pixels."""
    h, w = (img_size, img_size) if isinstance(img_size, int) else img_size
    return MLP(num_classes=num_classes, in_features=in_chans * h * w, hidden=list(hidden), dropout=dropout)
