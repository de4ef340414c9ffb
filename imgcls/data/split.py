"""Seeded stratified splits of a labelled set (train/val, train/test): a leaf that sources and `prepare` share."""

from __future__ import annotations

import warnings

import numpy as np
import torch


def stratified_split(labels: torch.Tensor, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices (train, val) with each class split in the same proportion, reproducible from `seed`."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    y = labels.numpy()
    try:
        tr, va = train_test_split(idx, test_size=fraction, stratify=y, random_state=seed)
    except ValueError:  # a class with a single image, or fewer held-out images than classes
        warnings.warn("some class has too few images for sklearn's stratified split; splitting each class on its own "
                      "(a class with one image stays in train)", stacklevel=2)
        rng = np.random.default_rng(seed)
        tr, va = [], []
        for c in np.unique(y):
            members = rng.permutation(idx[y == c])
            k = min(len(members) - 1, int(round(fraction * len(members))))
            va += members[:k].tolist()
            tr += members[k:].tolist()
        tr, va = np.array(tr, dtype=int), np.array(va, dtype=int)
    return np.sort(tr), np.sort(va)
