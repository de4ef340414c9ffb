"""Test-time augmentation: shapes, and equality with the plain output for invariant models."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from imgcls.tta import tta_and_plain_logits, tta_logits


class MeanPoolNet(nn.Module):
    """Logits from per-channel means: exactly invariant to mirroring (not to reflect-padded shifts)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(3, 4)

    def forward(self, x):
        return self.fc(x.mean((2, 3)))


class LeftEdgeNet(nn.Module):
    """Looks at the left column only: mirroring changes its output."""

    def forward(self, x):
        return x[:, :, :, 0].mean(2)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_tta_shape(level):
    assert tta_logits(MeanPoolNet(), torch.randn(5, 3, 8, 8), level).shape == (5, 4)


def test_flip_invariant_model_is_unchanged_by_mirror_tta():
    net, x = MeanPoolNet(), torch.randn(6, 3, 8, 8)
    assert torch.allclose(tta_logits(net, x, 1), net(x), atol=1e-6)


def test_mirror_tta_averages_both_views():
    net, x = LeftEdgeNet(), torch.randn(2, 3, 8, 8)
    expected = 0.5 * (x[:, :, :, 0].mean(2) + x[:, :, :, -1].mean(2))
    assert torch.allclose(tta_logits(net, x, 1), expected)
    assert not torch.allclose(tta_logits(net, x, 1), net(x))


def test_unknown_level_raises():
    with pytest.raises(ValueError):
        tta_logits(MeanPoolNet(), torch.randn(1, 3, 8, 8), 3)


@pytest.mark.parametrize("level", [0, 1, 2])
def test_plain_logits_come_with_the_tta_ones(level):
    net, x = LeftEdgeNet(), torch.randn(3, 3, 8, 8)
    tta, plain = tta_and_plain_logits(net, x, level)
    assert torch.equal(plain, net(x))
    assert torch.equal(tta, tta_logits(net, x, level))
    assert torch.equal(tta, plain) == (level == 0)
