import csv
import json
import warnings

import numpy as np
import pytest
import torch

from imgcls.errors import ImgclsError
from imgcls.evaluation import compute_metrics, read_metrics, write_metrics, write_per_class_csv
from imgcls.evaluation.metrics import per_class_rows

CLASSES = ["cat", "dog", "bird"]
# Predictions (argmax) are [0, 1, 1, 1, 0, 2] against labels [0, 0, 1, 1, 2, 2].
LOGITS = np.array(
    [
        [3.0, 1.0, 0.0],
        [1.0, 2.0, 0.5],
        [0.0, 5.0, 1.0],
        [0.2, 0.9, 0.1],
        [2.0, 0.0, 1.5],
        [0.0, 0.1, 4.0],
    ]
)
LABELS = np.array([0, 0, 1, 1, 2, 2])


def _assert_plain(value):
    """Only builtin JSON types, recursively (np.float64 would pass json.dumps, so check types)."""
    if isinstance(value, dict):
        for k, v in value.items():
            assert type(k) is str
            _assert_plain(v)
    elif isinstance(value, list):
        for v in value:
            _assert_plain(v)
    else:
        assert type(value) in (int, float, str, bool), f"{value!r} is {type(value)}"


def test_hand_computed_example():
    m = compute_metrics(LOGITS, LABELS, CLASSES, loss=0.75)

    assert m["num_samples"] == 6
    assert m["top1"] == pytest.approx(4 / 6)
    assert m["top5"] == pytest.approx(1.0)  # k = min(5, 3) = 3 covers every class
    assert m["loss"] == 0.75
    assert m["classes"] == CLASSES
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [1, 0, 1]]

    expected = {  # precision = diagonal / column sum, recall = diagonal / row sum
        "cat": (1 / 2, 1 / 2, 2),
        "dog": (2 / 3, 2 / 2, 2),
        "bird": (1 / 1, 1 / 2, 2),
    }
    for name, (p, r, support) in expected.items():
        row = m["per_class"][name]
        assert row["precision"] == pytest.approx(p)
        assert row["recall"] == pytest.approx(r)
        assert row["f1"] == pytest.approx(2 * p * r / (p + r))
        assert row["support"] == support

    f1s = [2 * p * r / (p + r) for p, r, _ in expected.values()]
    assert m["macro"]["precision"] == pytest.approx((1 / 2 + 2 / 3 + 1) / 3)
    assert m["macro"]["recall"] == pytest.approx((1 / 2 + 1 + 1 / 2) / 3)
    assert m["macro"]["f1"] == pytest.approx(sum(f1s) / 3)
    # Single-label: micro precision = recall = f1 = accuracy.
    for key in ("precision", "recall", "f1"):
        assert m["micro"][key] == pytest.approx(4 / 6)
    # Equal supports, so weighted equals macro here.
    assert m["weighted"]["f1"] == pytest.approx(m["macro"]["f1"])

    _assert_plain(m)
    json.dumps(m)


def test_top5_counts_rank_of_true_class():
    # 7 classes; the true class is ranked 1st, 5th, 6th and 7th in the four rows.
    order = np.arange(7, 0, -1, dtype=float)  # class 0 highest ... class 6 lowest
    logits = np.tile(order, (4, 1))
    labels = np.array([0, 4, 5, 6])
    m = compute_metrics(logits, labels, [f"c{i}" for i in range(7)])
    assert m["top1"] == pytest.approx(1 / 4)
    assert m["top5"] == pytest.approx(2 / 4)
    assert "loss" not in m


def test_torch_tensors_match_numpy():
    from_numpy = compute_metrics(LOGITS, LABELS, CLASSES)
    from_torch = compute_metrics(
        torch.tensor(LOGITS, dtype=torch.bfloat16, requires_grad=True), torch.tensor(LABELS), CLASSES
    )
    assert from_torch == from_numpy


def test_perfect_predictions():
    labels = np.array([0, 1, 2, 1, 0])
    logits = np.eye(3)[labels] * 10
    m = compute_metrics(logits, labels, CLASSES)
    assert m["top1"] == 1.0 and m["top5"] == 1.0
    for avg in ("macro", "micro", "weighted"):
        assert m[avg] == {"precision": 1.0, "recall": 1.0, "f1": 1.0}
    assert m["confusion_matrix"] == [[2, 0, 0], [0, 2, 0], [0, 0, 1]]


def test_absent_class_gets_zeros_without_warnings():
    labels = np.array([0, 1, 0, 1])
    logits = np.array([[2.0, 1.0, 0.0], [1.0, 2.0, 0.0], [0.0, 2.0, 1.0], [1.0, 2.0, 0.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        m = compute_metrics(logits, labels, CLASSES)
    assert m["per_class"]["bird"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}
    assert m["confusion_matrix"] == [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    assert m["top1"] == pytest.approx(3 / 4)


@pytest.mark.parametrize(
    "logits, labels, classes",
    [
        (np.zeros((4, 3)), np.zeros(3, dtype=int), CLASSES),  # N mismatch
        (np.zeros((4, 2)), np.zeros(4, dtype=int), CLASSES),  # K mismatch
        (np.zeros(4), np.zeros(4, dtype=int), CLASSES),  # not 2-D
        (np.zeros((2, 3)), np.array([0, 3]), CLASSES),  # label out of range
        (np.zeros((0, 3)), np.zeros(0, dtype=int), CLASSES),  # empty
    ],
)
def test_bad_inputs_raise(logits, labels, classes):
    with pytest.raises(ImgclsError):
        compute_metrics(logits, labels, classes)


def test_write_read_round_trip(tmp_path):
    m = compute_metrics(LOGITS, LABELS, CLASSES, loss=0.5)
    path = write_metrics(m, tmp_path / "nested" / "metrics.json")
    assert path.is_file()
    assert read_metrics(path) == m


@pytest.mark.parametrize(
    "content", [None, "{not json", json.dumps({"classes": ["a"]}), json.dumps([1, 2])]
)
def test_read_metrics_bad_file_names_path(tmp_path, content):
    path = tmp_path / "metrics.json"
    if content is not None:
        path.write_text(content)
    with pytest.raises(ImgclsError, match=str(path)):
        read_metrics(path)


def test_per_class_csv(tmp_path):
    m = compute_metrics(LOGITS, LABELS, CLASSES)
    assert [r["class"] for r in per_class_rows(m)] == CLASSES
    path = write_per_class_csv(m, tmp_path / "out" / "per_class.csv")
    with path.open(newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == ["class", "precision", "recall", "f1", "support"]
    assert [r["class"] for r in rows] == CLASSES
    assert float(rows[1]["precision"]) == pytest.approx(2 / 3)
    assert int(rows[2]["support"]) == 2
