"""Calibration: expected calibration error, reliability diagrams, temperature scaling (Guo et al. 2017).

A model is calibrated when, among the predictions it makes with confidence ~p, a share ~p is right.
ECE measures the gap (confidence-weighted over equal-width bins); temperature scaling divides the
logits by one scalar T fitted on held-out data by minimising the NLL, which changes confidences but
never the predicted class. `Predictor` applies the T stored in a model file's metadata.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib.figure import Figure

from imgcls.errors import ImgclsError


def reliability_bins(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> dict[str, list]:
    """Per equal-width confidence bin: count, mean confidence and accuracy of the top-1 predictions."""
    conf, pred = probs.float().max(1)
    correct = (pred == labels).float()
    edges = torch.linspace(0, 1, n_bins + 1)
    idx = torch.bucketize(conf, edges[1:-1])  # bin i holds (edges[i], edges[i+1]], as Guo et al.
    count = torch.bincount(idx, minlength=n_bins).float()
    conf_sum = torch.zeros(n_bins).index_add_(0, idx, conf)
    acc_sum = torch.zeros(n_bins).index_add_(0, idx, correct)
    nz = count.clamp(min=1)
    return {"edges": edges.tolist(), "count": count.long().tolist(), "confidence": (conf_sum / nz).tolist(),
            "accuracy": (acc_sum / nz).tolist()}


def expected_calibration_error(probs: torch.Tensor, labels: torch.Tensor, n_bins: int = 15) -> float:
    """ECE = sum over bins of (share of samples) x |accuracy - mean confidence|; 0 is perfectly calibrated."""
    if len(labels) == 0:
        raise ImgclsError("cannot compute a calibration error on zero samples")
    b = reliability_bins(probs, labels, n_bins)
    n = float(sum(b["count"]))
    return float(sum(c / n * abs(a - p) for c, a, p in zip(b["count"], b["accuracy"], b["confidence"])))


MIN_SAMPLES = 20  # fewer held-out samples than this: no temperature is fitted (T = 1)
T_RANGE = (0.05, 20.0)


def fit_temperature(logits: torch.Tensor, labels: torch.Tensor, max_iter: int = 100) -> float:
    """The T minimising the NLL of softmax(logits / T) on (logits, labels), by L-BFGS on log T.

    Never fails a run: too few samples or non-finite logits give T = 1 (with a warning); T is
    clamped to [0.05, 20].
    """
    logits, labels = logits.detach().float(), labels.detach()
    log_t = torch.zeros((), requires_grad=True)
    opt = torch.optim.LBFGS([log_t], lr=0.1, max_iter=max_iter, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = F.cross_entropy(logits / log_t.exp(), labels)
        loss.backward()
        return loss

    if len(labels) < MIN_SAMPLES or not torch.isfinite(logits).all():
        warnings.warn(f"temperature scaling skipped ({len(labels)} samples, finite logits: "
                      f"{bool(torch.isfinite(logits).all())}): T = 1", stacklevel=2)
        return 1.0
    opt.step(closure)
    t = float(log_t.detach().exp())
    if not np.isfinite(t):
        warnings.warn("temperature scaling did not converge: T = 1", stacklevel=2)
        return 1.0
    return min(max(t, T_RANGE[0]), T_RANGE[1])  # a tiny or perfectly separated set would drive T to 0


def calibration_report(logits: torch.Tensor, labels: torch.Tensor, temperature: float | None = None,
                       n_bins: int = 15) -> dict:
    """ECE and NLL as they are and after temperature scaling (with `temperature`, or one fitted here)."""
    fitted = temperature is None
    t = fit_temperature(logits, labels) if fitted else float(temperature)
    raw, scaled = logits.float().softmax(1), (logits.float() / t).softmax(1)
    return {"n_bins": n_bins, "temperature": t, "temperature_fitted_here": fitted,
            "ece": expected_calibration_error(raw, labels, n_bins),
            "ece_scaled": expected_calibration_error(scaled, labels, n_bins),
            "nll": float(F.cross_entropy(logits.float(), labels)), "nll_scaled": float(F.cross_entropy(logits.float() / t, labels)),
            "bins": reliability_bins(raw, labels, n_bins), "bins_scaled": reliability_bins(scaled, labels, n_bins)}


def plot_reliability(report: dict, path: str | Path, title: str = "Reliability") -> Path:
    """Reliability diagram: accuracy per confidence bin against the diagonal, before and after scaling."""
    fig = Figure(figsize=(9, 4.2))
    for k, (key, name) in enumerate((("bins", f"as trained: ECE {report['ece']:.3f}"),
                                     ("bins_scaled", f"T = {report['temperature']:.2f}: ECE {report['ece_scaled']:.3f}"))):
        ax = fig.add_subplot(1, 2, k + 1)
        b = report[key]
        edges = np.array(b["edges"])
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        acc = np.where(np.array(b["count"]) > 0, b["accuracy"], 0)
        ax.bar(centers, acc, width=width * 0.95, color="#4c72b0", label="accuracy")
        conf = np.where(np.array(b["count"]) > 0, b["confidence"], 0)
        # the gap between accuracy and confidence, hatched on top (above the bar: over-confident; inside: under-)
        ax.bar(centers, np.abs(conf - acc), bottom=np.minimum(conf, acc), width=width * 0.95, facecolor="none",
               edgecolor="#c44e52", hatch="///", lw=0.8, label="gap to confidence")
        ax.plot([0, 1], [0, 1], "k--", lw=1)
        ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence", ylabel="accuracy", title=name)
        ax.legend(loc="upper left", fontsize=8)
    fig.suptitle(title)
    from imgcls.evaluation.plots import save_figure

    return save_figure(fig, path)
