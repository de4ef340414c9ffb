"""Evaluation: metrics from predictions, their JSON/CSV files, plots, and `evaluate` of a model file.

`evaluate` and `evaluate_model` load on first use (PEP 562): `imgcls.evaluation.run` sets up data and
models (imgcls.setup), and the tasks (imgcls.tasks), which use this package's metrics and plots, must
be importable without it.
"""

from __future__ import annotations

import importlib
from typing import Any

from imgcls.evaluation.metrics import compute_metrics, read_metrics, write_metrics, write_per_class_csv
from imgcls.evaluation.plots import plot_confusion_matrix, plot_learning_curves

_LAZY = {"evaluate": "imgcls.evaluation.run", "evaluate_model": "imgcls.evaluation.run"}

__all__ = [
    "compute_metrics",
    "evaluate",
    "evaluate_model",
    "plot_confusion_matrix",
    "plot_learning_curves",
    "read_metrics",
    "write_metrics",
    "write_per_class_csv",
]


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'imgcls.evaluation' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value
    return value
