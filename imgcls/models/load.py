"""Rebuild a trained model from its model file: the architecture from the registry, weights and metadata from `modelfile`."""

from __future__ import annotations

import os

import torch
from torch import nn

from imgcls.modelfile import load_weights, read_meta
from imgcls.models.registry import create_model


def load_model(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> nn.Module:
    """Rebuild a model from its file; returns it in eval mode with its `ModelMeta` as `.meta`."""
    meta = read_meta(path)
    model = create_model(meta.arch, **meta.arch_args)
    load_weights(model, path, arch=meta.arch)
    model.meta = meta
    return model.to(device).eval()
