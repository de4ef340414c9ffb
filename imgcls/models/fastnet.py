"""The fast CIFAR net: a small VGG-like net in the family of D. Page's "How to train your ResNet",
tysam-code's hlb-CIFAR10 and K. Jordan's airbench ("94% on CIFAR-10 in 3.29 seconds", arXiv 2404.00498).

Input (B, C, 32, 32) -> frozen 2x2 patch-whitening conv (its filters are the eigenvectors of the
training patches' covariance, and their negatives) -> GELU -> three blocks of
[conv3x3, maxpool2, BN, GELU, conv3x3, BN, GELU] -> global max pool -> linear head.
Each trick is an option of the builder so that an ablation can switch it off.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imgcls.models.registry import register_model


class FrozenScaleBN(nn.BatchNorm2d):
    """BatchNorm whose scale stays 1 (only the shift learns): fewer parameters, no loss in accuracy."""

    def __init__(self, num_features: int, *, momentum: float, eps: float, frozen_scale: bool):
        super().__init__(num_features, eps=eps, momentum=momentum)
        self.weight.requires_grad = not frozen_scale


class ConvBlock(nn.Module):
    def __init__(self, cin: int, cout: int, *, bn_momentum: float, bn_eps: float, frozen_scale: bool, dirac: bool):
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, padding=1, bias=False)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = FrozenScaleBN(cout, momentum=bn_momentum, eps=bn_eps, frozen_scale=frozen_scale)
        self.conv2 = nn.Conv2d(cout, cout, 3, padding=1, bias=False)
        self.norm2 = FrozenScaleBN(cout, momentum=bn_momentum, eps=bn_eps, frozen_scale=frozen_scale)
        self.act = nn.GELU()
        if dirac:  # identity init of the first in-channels filters: each block starts close to a pass-through
            for conv in (self.conv1, self.conv2):
                nn.init.dirac_(conv.weight.data[: conv.in_channels])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))  # (B, cout, H/2, W/2)
        return self.act(self.norm2(self.conv2(x)))


class FastNet(nn.Module):
    def __init__(self, *, num_classes: int, in_chans: int, widths: list[int], whiten: bool, whiten_kernel: int,
                 bn_momentum: float, bn_eps: float, frozen_scale: bool, dirac: bool):
        super().__init__()
        k = whiten_kernel
        width0 = 2 * in_chans * k * k  # each eigenvector of the patch covariance and its negative
        self.whiten = nn.Conv2d(in_chans, width0, k, padding=0, bias=True)
        self.whiten.weight.requires_grad = not whiten  # computed from data, then frozen
        self.whiten_enabled = whiten
        blocks, cin = [], width0
        for w in widths:
            blocks.append(ConvBlock(cin, w, bn_momentum=bn_momentum, bn_eps=bn_eps, frozen_scale=frozen_scale,
                                    dirac=dirac))
            cin = w
        self.blocks = nn.Sequential(*blocks)
        self.act = nn.GELU()
        self.num_features = cin
        self.head = nn.Linear(cin, num_classes, bias=False)
        with torch.no_grad():
            self.head.weight /= self.head.weight.std()  # unit-variance head; the forward divides by width

    @torch.no_grad()
    def init_from_data(self, images: torch.Tensor, eps: float = 5e-4) -> None:
        """Set the whitening filters from normalized training images (N, C, H, W); a few thousand suffice."""
        if not self.whiten_enabled:
            return
        c, (h, w) = images.shape[1], self.whiten.weight.shape[2:]
        patches = images.float().unfold(2, h, 1).unfold(3, w, 1)  # (N, C, H', W', h, w)
        patches = patches.permute(0, 2, 3, 1, 4, 5).reshape(-1, c * h * w)  # (N*H'*W', C*h*w)
        cov = patches.T @ patches / len(patches)
        eigenvalues, eigenvectors = torch.linalg.eigh(cov)
        filters = eigenvectors.T.reshape(-1, c, h, w) / torch.sqrt(eigenvalues.view(-1, 1, 1, 1) + eps)
        self.whiten.weight.copy_(torch.cat([filters, -filters]).to(self.whiten.weight))

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(x))  # (B, 2*C*k*k, H-k+1, W-k+1)
        return self.blocks(x)  # (B, widths[-1], ~H/8, ~W/8)

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        x = F.adaptive_max_pool2d(x, 1).flatten(1)  # (B, widths[-1])
        # Dividing the logits by the width keeps their scale independent of it (airbench's head scaling).
        return x if pre_logits else self.head(x) / x.shape[1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


@register_model
def fastnet(
    *,
    num_classes: int = 10,
    in_chans: int = 3,
    widths: list[int] = (64, 256, 256),  # channels of the three blocks; compute grows with their squares
    whiten: bool = True,  # first layer = frozen patch whitening from data; False = an ordinary learned conv
    whiten_kernel: int = 2,  # patch side of the whitening conv
    bn_momentum: float = 0.4,  # PyTorch convention: weight of the new batch in the running statistics
    bn_eps: float = 1e-12,
    frozen_scale: bool = True,  # BN scale fixed at 1, only the shift is learned
    dirac: bool = True,  # identity-initialize the convs
) -> FastNet:
    """Fast CIFAR-10 net (about 2 M parameters); see experiment=cifar10_fast."""
    return FastNet(num_classes=num_classes, in_chans=in_chans, widths=list(widths), whiten=whiten,
                   whiten_kernel=whiten_kernel, bn_momentum=bn_momentum, bn_eps=bn_eps, frozen_scale=frozen_scale,
                   dirac=dirac)
