"""`train()` end to end on a generated colour data set: run folder, naming, resume, evaluate."""

from __future__ import annotations

import csv
import importlib
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from imgcls.errors import ImgclsError
from imgcls.evaluation import evaluate, read_metrics
from imgcls.modelfile import read_meta
from imgcls.models import load_model
from imgcls.run_dir import new_run_dir, resume_dir
from imgcls.training.loop import RESULTS_COLUMNS
from imgcls.training.run import train
from tests.conftest import SORTED_CLASSES, write_image_folder

loop = importlib.import_module("imgcls.training.loop")  # `imgcls.train` the attribute is the train() function

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
CNN = {"name": "simple_cnn", "width": 8}


def trainer(project: Path, **kw) -> dict:
    return {"epochs": 3, "batch_size": 8, "project": str(project), "progress": False, "threads": 1, "device": "cpu",
            **kw}


def read_results(path: Path) -> tuple[list[str], list[dict]]:
    with open(path, newline="") as f:
        reader = csv.DictReader(f)
        return reader.fieldnames, list(reader)


def weights(path: Path) -> dict[str, torch.Tensor]:
    return load_file(str(path))


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for k in wa:
        assert torch.equal(wa[k], wb[k]), f"{a.name}: {k} differs"


@pytest.fixture(scope="module")
def colors(tmp_path_factory):
    """One training run shared by the tests that only inspect its outputs."""
    base = tmp_path_factory.mktemp("colors")
    root = write_image_folder(base / "data")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_CACHE", str(base / "cache"))
        result = train(data={"name": "folder", "root": str(root)}, model=CNN, optim={"lr": 0.05},
                       trainer=trainer(base / "runs", name="colors"))
    torch.set_num_threads(1)
    return root, base / "runs", result


def test_run_folder(colors):
    root, project, r = colors
    assert r.run_dir == project / "colors"
    for name in ("config.yaml", "results.csv", "learning_curves.png", "best.safetensors", "last.safetensors",
                 "state.safetensors", "metrics.json", "per_class.csv", "confusion_matrix.png"):
        assert (r.run_dir / name).is_file(), name
    assert r.best == r.run_dir / "best.safetensors" and r.last == r.run_dir / "last.safetensors"
    assert (r.run_dir / "learning_curves.png").read_bytes()[:8] == PNG_SIGNATURE
    assert not list(r.run_dir.glob("*.tmp"))

    config = yaml.safe_load((r.run_dir / "config.yaml").read_text())
    assert config["data"]["name"] == "folder" and config["data"]["root"] == str(root)
    assert config["model"] == CNN and config["optim"]["lr"] == 0.05 and config["trainer"]["epochs"] == 3

    columns, rows = read_results(r.run_dir / "results.csv")
    assert columns == RESULTS_COLUMNS == ["epoch", "seconds", "train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr"]
    assert [int(row["epoch"]) for row in rows] == [1, 2, 3]
    for row in rows:
        assert float(row["seconds"]) >= 0 and float(row["train_loss"]) > 0
        assert 0 <= float(row["train_acc"]) <= 1 and 0 <= float(row["val_acc"]) <= 1
    lrs = [float(row["lr"]) for row in rows]
    assert lrs[0] > lrs[1] > lrs[2] > 0  # cosine decay
    assert len(r.history) == 3 and r.history[-1]["epoch"] == 3

    splits = {s: (r.run_dir / "splits" / f"{s}.txt").read_text().splitlines() for s in ("train", "val", "test")}
    assert {s: len(v) for s, v in splits.items()} == {"train": 32, "val": 4, "test": 12}
    assert set(splits["train"]).isdisjoint(splits["val"])


def test_model_files_and_metrics(colors):
    _, _, r = colors
    m = read_metrics(r.run_dir / "metrics.json")
    assert m["split"] == "test" and m["num_samples"] == 12
    assert m["top1"] == pytest.approx(r.metrics["top1"])
    assert m["top1"] > 0.6  # three colours: far above chance (1/3)
    assert m["classes"] == SORTED_CLASSES

    model = load_model(r.best)
    meta = model.meta
    assert meta.arch == "simple_cnn" and meta.arch_args == {"width": 8, "num_classes": 3, "in_chans": 3}
    assert meta.classes == SORTED_CLASSES
    assert meta.preprocess.input_size == [16, 16] and meta.preprocess.channels == 3
    assert meta.metrics["test_top1"] == pytest.approx(m["top1"])
    assert 1 <= meta.metrics["epoch"] <= 3
    assert read_meta(r.last).metrics["epoch"] == 3
    best_row = r.history[meta.metrics["epoch"] - 1]
    assert meta.metrics["best_val_acc"] == max(row["val_acc"] for row in r.history) == best_row["val_acc"]


def test_evaluate_best(colors, tmp_path):
    _, _, r = colors
    out = tmp_path / "eval"
    metrics = evaluate(r.best, out_dir=out, device="cpu", threads=1)
    from_file = read_metrics(out / "metrics.json")
    assert 0.0 <= from_file["top1"] <= 1.0
    assert from_file["top1"] == pytest.approx(metrics["top1"]) == pytest.approx(r.metrics["top1"])
    assert metrics["out_dir"] == str(out)
    assert (out / "per_class.csv").is_file() and (out / "confusion_matrix.png").is_file()
    # The val split is rebuilt from the recorded seed: scoring best on it gives its recorded val accuracy.
    val = evaluate(r.best, split="val", out_dir=tmp_path / "val", device="cpu", threads=1)
    assert val["num_samples"] == 4
    assert val["top1"] == pytest.approx(read_meta(r.best).metrics["best_val_acc"])


def test_second_run_gets_a_new_folder_and_no_val_means_best_is_last(colors):
    root, project, first = colors
    before = (first.run_dir / "results.csv").read_text()
    r = train(data={"name": "folder", "root": str(root), "val_fraction": 0}, model=CNN, optim={"lr": 0.05},
              trainer=trainer(project, name="colors", epochs=2))
    assert r.run_dir == project / "colors-2"
    assert (first.run_dir / "results.csv").read_text() == before  # the first run is untouched
    _, rows = read_results(r.run_dir / "results.csv")
    assert len(rows) == 2 and all(row["val_acc"] == "" and row["val_loss"] == "" for row in rows)
    assert not (r.run_dir / "splits" / "val.txt").exists()
    assert_same_weights(r.best, r.last)
    assert read_meta(r.best).metrics["epoch"] == 2
    assert r.metrics["split"] == "test" and r.metrics["top1"] > 0.6


def test_run_dir_naming(tmp_path):
    assert [new_run_dir(tmp_path / "p", "x").name for _ in range(3)] == ["x", "x-2", "x-3"]
    with pytest.raises(ImgclsError, match="nothing to resume"):
        resume_dir(tmp_path / "p", "x", True)  # no state.safetensors in any of them
    with pytest.raises(ImgclsError, match="no state.safetensors"):
        resume_dir(tmp_path / "p", "x", str(tmp_path / "p" / "x-2"))
    (tmp_path / "p" / "x-2" / "state.safetensors").write_bytes(b"")
    assert resume_dir(tmp_path / "p", "x", True) == tmp_path / "p" / "x-2"
    assert resume_dir(tmp_path / "p", "x", str(tmp_path / "p" / "x-2")) == tmp_path / "p" / "x-2"


class Interrupted(Exception):
    pass


def test_resume_matches_an_unbroken_run(image_folder, tmp_path, monkeypatch):
    """Dropout and EMA make the outcome depend on the RNG and EMA state, which resume must restore."""
    root = image_folder()
    project = tmp_path / "runs"
    args = dict(data={"name": "folder", "root": str(root)}, model={"name": "mlp", "hidden": [32], "dropout": 0.2},
                optim={"lr": 0.05}, aug={"flip": True, "crop_pad": 2})
    a = train(**args, trainer=trainer(project, name="A", ema_decay=0.9))

    real_save_state, saves = loop.save_state, []

    def save_then_stop(*a_, **kw):
        real_save_state(*a_, **kw)
        saves.append(1)
        if len(saves) == 2:
            raise Interrupted  # killed right after the state of epoch 2 reached the disk

    monkeypatch.setattr(loop, "save_state", save_then_stop)
    with pytest.raises(Interrupted):
        train(**args, trainer=trainer(project, name="B", ema_decay=0.9))
    monkeypatch.setattr(loop, "save_state", real_save_state)
    run_b = project / "B"
    assert (run_b / "state.safetensors").is_file() and not (run_b / "metrics.json").exists()
    config_before = (run_b / "config.yaml").read_text()

    b = train(**args, trainer=trainer(project, name="B", ema_decay=0.9, resume=str(run_b)))
    assert b.run_dir == run_b and not (project / "B-2").exists()
    assert (run_b / "config.yaml").read_text() == config_before

    cols_a, rows_a = read_results(a.run_dir / "results.csv")
    cols_b, rows_b = read_results(run_b / "results.csv")
    assert cols_a == cols_b and len(rows_a) == len(rows_b) == 3
    strip = [{k: v for k, v in row.items() if k != "seconds"} for row in rows_a]
    assert strip == [{k: v for k, v in row.items() if k != "seconds"} for row in rows_b]
    assert_same_weights(a.last, b.last)
    assert_same_weights(a.best, b.best)
    assert b.metrics["top1"] == pytest.approx(a.metrics["top1"])


@pytest.mark.parametrize(("n_test", "kept"), [(4, 3), (0, 2)])
def test_a_time_budget_keeps_time_for_the_validation_passes_after_training(tmp_path, image_folder, monkeypatch, capsys,
                                                                           n_test, kept):
    """Reserved: the scored split (1 s here), the validation of the epoch the budget cuts short (1 s), and with a
    test split the validation pass that fits the temperature (1 s)."""
    monkeypatch.setattr("imgcls.training.run.estimate_eval_seconds", lambda *a, **k: 1.0)
    root = image_folder(n_train=12, n_test=n_test, n_val=3)
    train(data={"name": "folder", "root": str(root)}, model={"name": "mlp", "hidden": [8]},
          trainer={"epochs": 1, "batch_size": 8, "device": "cpu", "progress": False, "time_budget": 300,
                   "project": str(tmp_path)})
    assert f"s for training, {kept}s kept for the test evaluation" in capsys.readouterr().out
