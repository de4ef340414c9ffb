"""Hyperparameter search: the Optuna sweeper plugin, the train verb's objective, the multirun summary."""

from __future__ import annotations

import csv
import json
import math

import pytest
import yaml
from hydra.core.utils import JobReturn, JobStatus
from omegaconf import OmegaConf

from imgcls.cli.sweep import objective, read_trials, summarize, write_trial
from tests.conftest import write_image_folder
from tests.test_cli import imgcls

optuna = pytest.importorskip("optuna", reason="optuna is a dependency of imgcls (pyproject.toml)")
from hydra_plugins.imgcls_optuna_sweeper.optuna_sweeper import OptunaSweeper, search_space  # noqa: E402


def test_three_trial_search_from_the_documented_config(tmp_path):
    """hparams_search=mnist_mlp on tiny images: 3 trials, trial 0 = the recipe, each value read back from its run."""
    data = write_image_folder(tmp_path / "d", n_train=8, n_val=4, n_test=4, size=12)
    p = imgcls("train", "hparams_search=mnist_mlp", "hydra.sweeper.n_trials=3", "data=folder", f"data.root={data}",
               "trainer.batch_size=4", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert "optuna search (TPESampler): 3 trials" in p.stdout
    sweep = tmp_path / "sweep"
    rows = list(csv.DictReader((sweep / "summary.csv").open()))
    assert [r["trial"] for r in rows] == ["0", "1", "2"] and all(r["status"] == "done" for r in rows)
    # trial 0 is the configured recipe (experiment=mnist_mlp: lr 0.05, sgd's weight decay, no smoothing)
    assert float(rows[0]["optim.lr"]) == 0.05 and float(rows[0]["optim.weight_decay"]) == 5e-4
    assert float(rows[0]["trainer.label_smoothing"]) == 0.0
    assert len({r["optim.lr"] for r in rows}) == 3  # the sampler moved
    for r in rows:
        history = list(csv.DictReader((tmp_path / r["run_dir"] / "results.csv").open()))
        assert float(r["value"]) == max(float(h["val_acc"]) for h in history)  # the objective is the best val_acc
        metrics = json.loads((tmp_path / r["run_dir"] / "metrics.json").read_text())
        assert float(r["test_top1"]) == pytest.approx(metrics["top1"])
    best = yaml.safe_load((sweep / "optimization_results.yaml").read_text())
    assert best["best_value"] == max(float(r["value"]) for r in rows) and best["complete"] == 3
    assert (sweep / "summary.png").stat().st_size > 0


def test_a_grid_that_stops_at_a_failed_job_keeps_the_summary_of_the_jobs_before(tmp_path):
    data = write_image_folder(tmp_path / "d", n_train=4, n_val=2, n_test=2, size=8)
    p = imgcls("train", "-m", "data=folder", f"data.root={data}", "model=mlp", "model.hidden=[4]", "trainer=debug",
               "trainer.batch_size=4", "optim.name=sgd,bogus", "hydra.sweep.dir=grid", cwd=tmp_path, check=False)
    assert p.returncode != 0 and "optim.name='bogus' is not one of" in p.stderr
    rows = list(csv.DictReader((tmp_path / "grid" / "summary.csv").open()))
    assert [(r["optim.name"], r["status"]) for r in rows] == [("sgd", "done"), ("bogus", "failed")]
    assert "optim.name='bogus'" in rows[1]["error"] and float(rows[0]["value"]) >= 0


def test_search_space_from_overrides_and_params():
    space, fixed = search_space(["optim.lr=tag(log, interval(0.01, 1))", "trainer.epochs=range(2, 8, 2)",
                                 "optim.name=adam,sgd", "trainer.seed=3", "trainer.batch_size=tag(int, log, interval(16, 64))"],
                                {"trainer.label_smoothing": "interval(0.0, 0.2)", "trainer.seed": "choice(1, 2)"})
    D = optuna.distributions
    assert space["optim.lr"] == D.FloatDistribution(0.01, 1.0, log=True)
    assert space["trainer.epochs"] == D.IntDistribution(2, 6, step=2)
    assert space["optim.name"] == D.CategoricalDistribution(["adam", "sgd"])
    assert space["trainer.batch_size"] == D.IntDistribution(16, 64, log=True)
    assert space["trainer.label_smoothing"] == D.FloatDistribution(0.0, 0.2)
    assert "trainer.seed" not in space and fixed == ["trainer.seed=3"]  # the command line wins over params


class FakeLauncher:
    """Runs the 'training' in this process: the objective is a function of the overrides; lr > 0.5 fails."""

    def __init__(self):
        self.batches = []

    def launch(self, job_overrides, initial_job_idx):
        self.batches.append((initial_job_idx, [list(o) for o in job_overrides]))
        out = []
        for overrides in job_overrides:
            lr = float(dict(o.split("=", 1) for o in overrides)["optim.lr"])
            r = JobReturn(overrides=list(overrides))
            if lr > 0.5:
                r.status, r._return_value = JobStatus.FAILED, RuntimeError("diverged")
            else:
                r.status, r._return_value = JobStatus.COMPLETED, -((math.log10(lr) + 1.5) ** 2)
            out.append(r)
        return out


def sweeper(tmp_path, **kwargs) -> tuple[OptunaSweeper, FakeLauncher]:
    s = OptunaSweeper(seed=0, **kwargs)
    s.config = OmegaConf.create({"optim": {"lr": 0.1}, "hydra": {"sweep": {"dir": str(tmp_path / "sweep")}}})
    s.launcher = FakeLauncher()
    s.validate_batch_is_legal = lambda batch: None  # no Hydra context here
    return s, s.launcher


def test_sweeper_starts_from_the_defaults_runs_n_jobs_at_a_time_and_survives_failures(tmp_path):
    s, launcher = sweeper(tmp_path, n_trials=10, n_jobs=2)
    s.sweep(["optim.lr=tag(log, interval(0.001, 1.0))", "trainer.epochs=1"])
    assert [idx for idx, _ in launcher.batches] == [0, 2, 4, 6, 8] and all(len(b) == 2 for _, b in launcher.batches)
    first = launcher.batches[0][1][0]
    assert first == ["trainer.epochs=1", "optim.lr=0.1"]  # trial 0: the configured value
    best = yaml.safe_load((tmp_path / "sweep" / "optimization_results.yaml").read_text())
    launched = [float(o[-1].split("=")[1]) for _, batch in launcher.batches for o in batch]
    assert best["trials"] == 10 and best["complete"] == sum(lr <= 0.5 for lr in launched) < 10  # the others: FAIL
    assert 0.001 <= best["best_params"]["optim.lr"] <= 0.5


def test_trial_zero_takes_a_config_groups_chosen_option(tmp_path):
    s, launcher = sweeper(tmp_path, n_trials=1)
    s.config = OmegaConf.create({"optim": {"lr": 0.1}, "model": {"name": "mlp", "hidden": [8]},
                                 "hydra": {"sweep": {"dir": str(tmp_path)}, "runtime": {"choices": {"model": "mlp"}}}})
    s.sweep(["model=choice(simple_cnn, mlp)", "optim.lr=interval(0.01, 0.2)"])
    assert launcher.batches[0][1][0] == ["model=mlp", "optim.lr=0.1"]


def test_sweeper_stops_when_the_first_trials_all_fail(tmp_path):
    s, _ = sweeper(tmp_path, n_trials=5, enqueue_defaults=False)
    with pytest.raises(RuntimeError, match="all failed.*diverged"):
        s.sweep(["optim.lr=interval(0.6, 0.9)"])


def test_sweeper_refuses_an_empty_search_and_a_bad_direction(tmp_path):
    s, _ = sweeper(tmp_path)
    with pytest.raises(ValueError, match="nothing to search"):
        s.sweep(["trainer.epochs=1"])
    with pytest.raises(ValueError, match="maximize or minimize"):
        OptunaSweeper(direction="up")


def test_objective_is_the_best_epoch_of_the_monitor():
    history = [{"epoch": 1, "val_acc": 0.5, "val_loss": 1.0, "val_f1": 0.4},
               {"epoch": 2, "val_acc": 0.7, "val_loss": 1.2, "val_f1": 0.6},
               {"epoch": 3, "val_acc": 0.6, "val_loss": 0.9, "val_f1": 0.65}]
    assert objective(history, "val_acc") == (0.7, 2)
    assert objective(history, "val_loss") == (0.9, 3)
    assert objective(history, "val_f1") == (0.65, 3)
    value, epoch = objective([{"epoch": 1, "val_acc": None}], "val_acc")
    assert math.isnan(value) and epoch is None


def test_summary_has_a_column_per_swept_key_and_keeps_failed_trials(tmp_path):
    for num, (lr, value) in enumerate([(0.1, 0.8), (0.3, 0.9)]):
        write_trial({"num": num, "dir": tmp_path / str(num), "overrides": ["data=folder", f"optim.lr={lr}"]},
                    {"status": "done", "monitor": "val_acc", "value": value, "test_top1": value - 0.01})
    write_trial({"num": 2, "dir": tmp_path / "2", "overrides": ["data=folder", "optim.lr=3"]},
                {"status": "failed", "error": "diverged"})
    assert [t["trial"] for t in read_trials(tmp_path)] == [0, 1, 2]
    rows = list(csv.DictReader(summarize(tmp_path).open()))
    assert [r["optim.lr"] for r in rows] == ["0.1", "0.3", "3"] and "data" not in rows[0]
    assert [r["status"] for r in rows] == ["done", "done", "failed"] and rows[2]["error"] == "diverged"
    assert (tmp_path / "summary.png").is_file()


@pytest.mark.parametrize("name", ["mnist_mlp", "cifar10_fast", "cifar10_cpu10", "photo_finetune"])
def test_shipped_search_spaces_name_real_options(name):
    """Every searched key of conf/hparams_search/NAME.yaml exists in the recipe, and the space parses."""
    from hydra import compose, initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from imgcls.cli.compose import register_configs

    register_configs()
    GlobalHydra.instance().clear()
    try:
        with initialize_config_module(config_module="imgcls.conf", version_base="1.3"):
            cfg = compose(config_name="train", overrides=[f"hparams_search={name}"], return_hydra_config=True)
    finally:
        GlobalHydra.instance().clear()
    sweeper = cfg.hydra.sweeper
    assert sweeper._target_.endswith("imgcls_optuna_sweeper.optuna_sweeper.OptunaSweeper") and sweeper.n_trials >= 12
    space, fixed = search_space([], OmegaConf.to_container(sweeper.params))
    assert len(space) >= 3 and fixed == []
    for key in space:
        assert OmegaConf.select(cfg, key, default="missing") != "missing", key
    assert cfg.trainer.monitor == "val_acc" and sweeper.direction == "maximize"
    assert cfg.data.val_fraction > 0  # a validation split to return a number from
