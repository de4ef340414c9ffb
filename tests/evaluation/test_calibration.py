"""Calibration (ECE, temperature scaling, reliability diagram) and error analysis (worst images, confused pairs)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image

from imgcls.evaluation import evaluate
from imgcls.evaluation.calibration import calibration_report, expected_calibration_error, fit_temperature, plot_reliability
from imgcls.evaluation.metrics import compute_metrics, most_confused
from imgcls.modelfile import read_meta
from imgcls.predict import Predictor
from imgcls.training.run import train


def calibrated_set(n: int = 20000, k: int = 4, seed: int = 0, sharpness: float = 3.0):
    """Logits and labels drawn from the softmax of the logits themselves: perfectly calibrated by construction."""
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(n, k, generator=g) * sharpness
    labels = torch.multinomial(logits.softmax(1), 1, generator=g).squeeze(1)
    return logits, labels


def test_ece_of_a_calibrated_prediction_set_is_about_zero():
    logits, labels = calibrated_set()
    assert expected_calibration_error(logits.softmax(1), labels) < 0.015


def test_temperature_scaling_fixes_an_overconfident_set():
    logits, labels = calibrated_set()
    over = logits * 4  # same ranking, four times too sure
    before = expected_calibration_error(over.softmax(1), labels)
    t = fit_temperature(over, labels)
    after = expected_calibration_error((over / t).softmax(1), labels)
    assert t == pytest.approx(4, rel=0.1) and before > 0.05 and after < before / 3
    assert ((over / t).argmax(1) == over.argmax(1)).all()  # the predictions themselves do not change


def test_reliability_diagram_is_a_png(tmp_path):
    logits, labels = calibrated_set(2000)
    report = calibration_report(logits * 3, labels)
    path = plot_reliability(report, tmp_path / "r.png")
    img = Image.open(path)
    assert img.format == "PNG" and img.width > 400 and img.height > 200
    assert sum(report["bins"]["count"]) == 2000 and report["ece_scaled"] < report["ece"]


def test_most_confused_pairs_come_largest_first():
    logits = torch.eye(3)[[0, 0, 1, 1, 1, 2, 2]] * 5  # predictions
    labels = torch.tensor([0, 1, 1, 2, 2, 2, 0])  # truths: 1->0 once, 2->1 twice, 0->2 once
    pairs = most_confused(compute_metrics(logits, labels, ["a", "b", "c"]))
    assert [(p["true"], p["predicted"], p["count"]) for p in pairs] == [("c", "b", 2), ("a", "c", 1), ("b", "a", 1)]
    assert pairs[0]["share_of_true"] == pytest.approx(2 / 3)


def test_training_stores_a_temperature_and_evaluate_writes_the_error_analysis(image_folder, tmp_path):
    root = image_folder(n_train=16, n_test=6)
    r = train(data={"name": "folder", "root": str(root)}, model={"name": "simple_cnn", "width": 4},
              trainer={"epochs": 2, "batch_size": 8, "progress": False, "threads": 1, "project": str(tmp_path)})
    meta = read_meta(r.best)
    assert meta.calibration["fitted_on"] == "val" and meta.calibration["temperature"] > 0
    for name in ("calibration.json", "reliability.png", "most_confused.csv", "worst.csv"):
        assert (r.run_dir / name).is_file(), name
    assert r.metrics["calibration"]["temperature"] == pytest.approx(meta.calibration["temperature"])

    # Predictor scores are softmax(logits / T)
    p = Predictor.load(r.best, device="cpu")
    img = root / "test" / "red"
    first = sorted(img.iterdir())[0]
    logits = p.logits([p._to_pil(first)])[0]
    assert p.predict(first, top_k=1)["score"] == pytest.approx(float((logits / p.temperature).softmax(0).max()), rel=1e-5)

    # calibrate=True refits on the split asked for and writes it into the model file
    m = evaluate(r.best, split="test", out_dir=tmp_path / "ev", threads=1, calibrate=True)
    assert read_meta(r.best).calibration["fitted_on"] == "folder:test"
    assert read_meta(r.best).calibration["temperature"] == pytest.approx(m["calibration"]["temperature"])
    assert json.loads((tmp_path / "ev" / "calibration.json").read_text())["temperature_fitted_here"] is True


def test_worst_images_grid_shows_the_most_confident_mistakes(image_folder, tmp_path):
    root = image_folder(n_train=8, n_test=4)
    r = train(data={"name": "folder", "root": str(root), "val_fraction": 0}, model={"name": "simple_cnn", "width": 4},
              trainer={"epochs": 1, "batch_size": 8, "progress": False, "threads": 1, "project": str(tmp_path)},
              optim={"lr": 0.0})  # an untrained net: plenty of mistakes
    rows = (r.run_dir / "worst.csv").read_text().splitlines()
    assert rows[0] == "id,true,predicted,score,true_class_prob" and len(rows) > 1
    probs = [float(line.split(",")[-1]) for line in rows[1:]]
    assert probs == sorted(probs)  # least probability on the true class first
    grid = Image.open(r.run_dir / "worst_images.png")
    assert grid.format == "PNG" and grid.width > 100
