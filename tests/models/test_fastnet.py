"""The fast CIFAR net's tricks: patch whitening whitens, frozen parts stay frozen, options switch them off."""

from __future__ import annotations

import torch

from imgcls.models import create_model


def correlated_images(n: int = 256, size: int = 16) -> torch.Tensor:
    """Smooth, channel-correlated images: their 2x2 patches have a far-from-identity covariance."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(n, 1, size // 4, size // 4, generator=g)
    x = torch.nn.functional.interpolate(base, size=size, mode="bilinear", align_corners=False)
    noise = [torch.randn(n, 1, size, size, generator=g) for _ in range(2)]
    return torch.cat([x, 0.8 * x + 0.2 * noise[0], 0.5 * noise[1] - 0.6 * x], 1)


def patches(x: torch.Tensor, k: int = 2) -> torch.Tensor:
    return x.unfold(2, k, 1).unfold(3, k, 1).permute(0, 2, 3, 1, 4, 5).reshape(-1, x.shape[1] * k * k)


def test_whitening_layer_whitens_training_patches():
    x = correlated_images()
    before = torch.cov(patches(x).T)
    assert (before - torch.eye(12)).abs().max() > 0.5  # the raw patches are far from white
    net = create_model("fastnet", num_classes=10, widths=[8, 16, 16])
    net.init_from_data(x, eps=1e-6)
    with torch.no_grad():
        out = torch.nn.functional.conv2d(x, net.whiten.weight)  # (N, 24, H-1, W-1), no bias
    half = out[:, :12].permute(0, 2, 3, 1).reshape(-1, 12)  # the eigenvector filters (the rest are negatives)
    cov = half.T @ half / len(half)
    assert torch.allclose(cov, torch.eye(12), atol=0.05), cov
    assert torch.equal(net.whiten.weight[12:], -net.whiten.weight[:12])


def test_frozen_parts_get_no_gradient_and_can_be_switched_off():
    net = create_model("fastnet", num_classes=10, widths=[8, 16, 16])
    assert not net.whiten.weight.requires_grad
    assert all(not m.weight.requires_grad for m in net.modules() if isinstance(m, torch.nn.BatchNorm2d))
    plain = create_model("fastnet", num_classes=10, widths=[8, 16, 16], whiten=False, frozen_scale=False, dirac=False)
    assert plain.whiten.weight.requires_grad
    assert all(m.weight.requires_grad for m in plain.modules() if isinstance(m, torch.nn.BatchNorm2d))
    w = net.blocks[1].conv1.weight  # dirac init: the first in_channels filters are identities
    assert torch.equal(w[:8, :, 1, 1], torch.eye(8)) and w[:8, :, 0].abs().sum() == 0


def test_lower_resolution_input_works():
    net = create_model("fastnet", num_classes=10, widths=[8, 16, 16])
    assert net(torch.randn(2, 3, 24, 24)).shape == (2, 10)
