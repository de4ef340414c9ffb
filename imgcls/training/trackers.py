"""Experiment tracking (`trainer.logger`): per-epoch scalars, the final metrics and the confusion matrix.

- `csv`: results.csv (one row per epoch) and metrics.json, which every run writes anyway;
- `tensorboard`: event files in RUN/tensorboard (`tensorboard --logdir runs`);
- `mlflow`: a run in an MLflow tracking store, by default `sqlite:///<project>/mlflow.db` with the
  artifacts in `<project>/mlartifacts` (`mlflow ui --backend-store-uri sqlite:///runs/mlflow.db`);
  `trainer.mlflow_uri` points elsewhere (a server, another database). The run id is kept in
  RUN/mlflow.json, so that a resumed run goes on logging to the same MLflow run.

Several at once: `trainer.logger=[tensorboard,mlflow]`. Each scalar has the name of its results.csv
column (train_loss, val_acc, lr, ...) plus images_per_second, logged at step = epoch; the final test
numbers are test_top1, test_top5, test_loss, test_macro_f1 and test_ece. The trackers' libraries are
imported only when asked for, with an error that says what to install when missing.
"""

from __future__ import annotations

import importlib.util
import json
import math
import time
import warnings
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError

LOGGERS = ("csv", "tensorboard", "mlflow")
EPOCH_SCALARS = ("train_loss", "train_acc", "val_loss", "val_acc", "val_f1", "lr", "images_per_second", "seconds")


def logger_names(value: Any) -> list[str]:
    """trainer.logger as a list of known names: null/"" -> [], "tensorboard" -> ["tensorboard"], a list as it is."""
    if value is None or value == "":
        return []
    names = [str(v) for v in value] if isinstance(value, list | tuple) else [s.strip() for s in str(value).split(",")]
    bad = [n for n in names if n not in LOGGERS]
    if bad:
        raise ImgclsError(f"trainer.logger: unknown logger(s) {', '.join(map(repr, bad))}; choose from {', '.join(LOGGERS)} "
                          f"(several: trainer.logger=[tensorboard,mlflow])")
    for name, module, install in (("tensorboard", "tensorboard", "tensorboard"),
                                  ("mlflow", "mlflow", "mlflow-skinny sqlalchemy alembic")):
        if name in names and importlib.util.find_spec(module) is None:  # every process fails here, before training
            raise ImgclsError(f"trainer.logger={name} needs the {module} package: pip install {install} "
                              "(or pip install 'imgcls[track]')")
    return list(dict.fromkeys(names))


def final_scalars(metrics: dict) -> dict[str, float]:
    """The test numbers a tracker records from metrics.json's content."""
    out = {"test_top1": metrics.get("top1"), "test_top5": metrics.get("top5"), "test_loss": metrics.get("loss"),
           "test_macro_f1": (metrics.get("macro") or {}).get("f1"), "test_ece": (metrics.get("calibration") or {}).get("ece")}
    return {k: float(v) for k, v in out.items() if isinstance(v, int | float) and math.isfinite(v)}


def _finite(row: dict) -> dict[str, float]:
    return {k: float(row[k]) for k in EPOCH_SCALARS
            if isinstance(row.get(k), int | float) and math.isfinite(float(row[k]))}


class TensorBoardTracker:
    def __init__(self, run_dir: Path):
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as e:
            raise ImgclsError(f"trainer.logger=tensorboard needs the tensorboard package ({e}): "
                              "pip install tensorboard (or pip install 'imgcls[track]')") from None
        self.dir = run_dir / "tensorboard"
        self.writer = SummaryWriter(log_dir=str(self.dir))

    def start(self, params: dict[str, Any]) -> None:
        self.writer.add_text("config", "\n".join(f"    {k}: {v}" for k, v in params.items()), 0)

    def log_epoch(self, row: dict) -> None:
        for k, v in _finite(row).items():
            self.writer.add_scalar(k, v, int(row["epoch"]))
        self.writer.flush()

    def log_final(self, metrics: dict, run_dir: Path, epoch: int) -> None:
        for k, v in final_scalars(metrics).items():
            self.writer.add_scalar(k, v, epoch)
        cm = run_dir / "confusion_matrix.png"
        if cm.is_file():
            import numpy as np
            from PIL import Image

            self.writer.add_image("confusion_matrix", np.asarray(Image.open(cm).convert("RGB")), epoch, dataformats="HWC")
        self.writer.flush()

    def close(self, ok: bool) -> None:
        self.writer.close()


class MlflowTracker:
    def __init__(self, run_dir: Path, project: Path, uri: str | None, experiment: str, run_name: str):
        try:
            from mlflow.tracking import MlflowClient
        except ImportError as e:
            raise ImgclsError(f"trainer.logger=mlflow needs MLflow ({e}): pip install mlflow-skinny sqlalchemy alembic "
                              "(or pip install 'imgcls[track]')") from None
        project.mkdir(parents=True, exist_ok=True)
        self.uri = uri or f"sqlite:///{(project / 'mlflow.db').resolve()}"
        self.client = MlflowClient(tracking_uri=self.uri)
        self.id_file = run_dir / "mlflow.json"
        saved = json.loads(self.id_file.read_text()) if self.id_file.is_file() else {}
        if saved.get("tracking_uri") == self.uri:  # a resumed run: the same MLflow run
            self.run_id = saved["run_id"]
            self.client.update_run(self.run_id, status="RUNNING")
            return
        exp = self.client.get_experiment_by_name(experiment)
        if exp is None:
            try:
                exp_id = self.client.create_experiment(
                    experiment, artifact_location=(project / "mlartifacts").resolve().as_uri() if uri is None else None)
            except Exception:  # noqa: BLE001 - another run (a parallel trial) created it first
                exp = self.client.get_experiment_by_name(experiment)
                if exp is None:
                    raise
                exp_id = exp.experiment_id
        else:
            exp_id = exp.experiment_id
        self.run_id = self.client.create_run(exp_id, run_name=run_name, tags={"imgcls.run_dir": str(run_dir.resolve())}).info.run_id
        self.id_file.write_text(json.dumps({"tracking_uri": self.uri, "experiment": experiment, "run_id": self.run_id}))

    def start(self, params: dict[str, Any]) -> None:
        from mlflow.entities import Param

        have = set(self.client.get_run(self.run_id).data.params)
        new = [Param(k, str(v)[:6000]) for k, v in params.items() if k not in have]  # logged params cannot change
        for i in range(0, len(new), 100):
            self.client.log_batch(self.run_id, params=new[i:i + 100])

    def _metrics(self, values: dict[str, float], step: int) -> None:
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        self.client.log_batch(self.run_id, metrics=[Metric(k, v, now, step) for k, v in values.items()])

    def log_epoch(self, row: dict) -> None:
        self._metrics(_finite(row), int(row["epoch"]))

    def log_final(self, metrics: dict, run_dir: Path, epoch: int) -> None:
        self._metrics(final_scalars(metrics), epoch)
        for name in ("confusion_matrix.png", "learning_curves.png", "metrics.json"):
            if (run_dir / name).is_file():
                self.client.log_artifact(self.run_id, str(run_dir / name))

    def close(self, ok: bool) -> None:
        self.client.set_terminated(self.run_id, status="FINISHED" if ok else "FAILED")


class Trackers:
    """The trackers of one run, called by `train`: start, once per epoch, the final numbers, close.

    A tracker that fails after it started (a server gone, a locked database) is named in a warning and
    dropped: logging never ends a training run.
    """

    def __init__(self, trackers: list):
        self.trackers = trackers

    def __bool__(self) -> bool:
        return bool(self.trackers)

    def _each(self, method: str, *args) -> None:
        for t in list(self.trackers):
            try:
                getattr(t, method)(*args)
            except Exception as e:  # noqa: BLE001 - see the class docstring
                warnings.warn(f"trainer.logger: {type(t).__name__}.{method} failed ({type(e).__name__}: {e}); "
                              "it records nothing more for this run", stacklevel=2)
                self.trackers.remove(t)

    def start(self, params: dict[str, Any]) -> None:
        self._each("start", params)

    def log_epoch(self, row: dict) -> None:
        self._each("log_epoch", row)

    def log_final(self, metrics: dict, run_dir: Path, epoch: int) -> None:
        self._each("log_final", metrics, run_dir, epoch)

    def close(self, ok: bool) -> None:
        self._each("close", ok)


def make_trackers(names: Any, run_dir: Path, *, project: str | Path, run_name: str, mlflow_uri: str | None = None,
                  mlflow_experiment: str = "imgcls") -> Trackers:
    """The trackers `trainer.logger` names (csv needs none: results.csv and metrics.json are always written)."""
    out: list = []
    for name in logger_names(names):
        try:
            if name == "tensorboard":
                out.append(TensorBoardTracker(run_dir))
            elif name == "mlflow":
                out.append(MlflowTracker(run_dir, Path(project), mlflow_uri, mlflow_experiment, run_name))
        except ImgclsError:
            raise
        except Exception as e:  # noqa: BLE001 - a tracking server that cannot be reached does not stop training
            warnings.warn(f"trainer.logger={name}: could not start ({type(e).__name__}: {e}); this run is not "
                          f"recorded there", stacklevel=2)
    return Trackers(out)


def flat_params(record: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config record as flat `group.key: value` pairs (MLflow params, TensorBoard's config text)."""
    out: dict[str, Any] = {}
    for k, v in record.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict) and v:
            out.update(flat_params(v, key + "."))
        else:
            out[key] = v
    return out
