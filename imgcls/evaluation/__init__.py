"""Evaluation: metrics from predictions, their JSON/CSV files, plots, and `evaluate` of a model file."""

from imgcls.evaluation.metrics import compute_metrics, read_metrics, write_metrics, write_per_class_csv
from imgcls.evaluation.plots import plot_confusion_matrix, plot_learning_curves
from imgcls.evaluation.run import evaluate, evaluate_model

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
