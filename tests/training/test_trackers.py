"""Experiment tracking (trainer.logger): what TensorBoard and MLflow received, read back and compared with the run's files."""

from __future__ import annotations

import csv
import json

import pytest

import imgcls
from imgcls.errors import ImgclsError
from imgcls.training.trackers import logger_names

pytest.importorskip("tensorboard", reason="tensorboard is in imgcls[track] (installed by make test)")
pytest.importorskip("mlflow", reason="mlflow-skinny is in imgcls[track] (installed by make test)")

TINY = {"name": "synthetic", "limit": 64, "val_fraction": 0.25}


def run(tmp_path, logger, name="tracked", **trainer):
    return imgcls.train(data=TINY, model={"name": "mlp", "hidden": [16]}, optim={"lr": 0.05},
                        trainer={"epochs": 3, "batch_size": 16, "threads": 1, "device": "cpu", "progress": False,
                                 "project": str(tmp_path), "name": name, "logger": logger, **trainer})


def rows(run_dir) -> list[dict]:
    return list(csv.DictReader((run_dir / "results.csv").open()))


@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("trackers")
    return tmp, run(tmp, ["csv", "tensorboard", "mlflow"])


def test_tensorboard_has_every_epoch_and_the_final_numbers(tracked):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    _, r = tracked
    ea = EventAccumulator(str(r.run_dir / "tensorboard"), size_guidance={"images": 0, "scalars": 0})
    ea.Reload()
    table = rows(r.run_dir)
    for key in ("train_loss", "val_acc", "val_loss", "lr"):
        events = ea.Scalars(key)
        assert [e.step for e in events] == [int(t["epoch"]) for t in table]
        assert [e.value for e in events] == pytest.approx([float(t[key]) for t in table], rel=1e-5)
    assert all(e.value > 0 for e in ea.Scalars("images_per_second"))
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    assert ea.Scalars("test_top1")[-1].value == pytest.approx(metrics["top1"])
    assert "confusion_matrix" in ea.Tags()["images"]


def test_mlflow_run_in_the_project_sqlite_store_matches_the_run_files(tracked):
    from mlflow.tracking import MlflowClient

    tmp, r = tracked
    saved = json.loads((r.run_dir / "mlflow.json").read_text())
    assert saved["tracking_uri"] == f"sqlite:///{(tmp / 'mlflow.db').resolve()}" and (tmp / "mlflow.db").is_file()
    client = MlflowClient(tracking_uri=saved["tracking_uri"])
    run = client.get_run(saved["run_id"])
    assert run.info.status == "FINISHED" and run.info.run_name == r.run_dir.name
    table = rows(r.run_dir)
    history = sorted(client.get_metric_history(saved["run_id"], "val_acc"), key=lambda m: m.step)
    assert [(m.step, round(m.value, 6)) for m in history] == [(int(t["epoch"]), float(t["val_acc"])) for t in table]
    metrics = json.loads((r.run_dir / "metrics.json").read_text())
    assert run.data.metrics["test_top1"] == pytest.approx(metrics["top1"])
    assert run.data.params["optim.lr"] == "0.05" and run.data.params["trainer.epochs"] == "3"
    artifacts = {a.path for a in client.list_artifacts(saved["run_id"])}
    assert {"confusion_matrix.png", "metrics.json"} <= artifacts


def test_a_resumed_run_logs_to_the_same_mlflow_run(tmp_path):
    from mlflow.tracking import MlflowClient

    first = run(tmp_path, "mlflow", name="resumed", epochs=2)
    run_id = json.loads((first.run_dir / "mlflow.json").read_text())["run_id"]
    again = run(tmp_path, "mlflow", name="resumed", epochs=2, resume=True)
    assert again.run_dir == first.run_dir
    assert json.loads((first.run_dir / "mlflow.json").read_text())["run_id"] == run_id
    client = MlflowClient(tracking_uri=f"sqlite:///{(tmp_path / 'mlflow.db').resolve()}")
    assert len(client.search_runs([client.get_experiment_by_name("imgcls").experiment_id])) == 1


def test_logger_names():
    assert logger_names(None) == [] and logger_names("tensorboard") == ["tensorboard"]
    assert logger_names("csv,mlflow") == ["csv", "mlflow"] and logger_names(["mlflow", "mlflow"]) == ["mlflow"]
    with pytest.raises(ImgclsError, match="'wandb'.*csv, tensorboard, mlflow"):
        logger_names(["csv", "wandb"])


def test_an_unknown_logger_fails_before_training(tmp_path):
    with pytest.raises(ImgclsError, match="trainer.logger: unknown logger"):
        run(tmp_path, "wandb")
    assert not (tmp_path / "tracked").exists()
