"""Ablations through a Hydra launcher (hydra/launcher=joblib, 2 runs at a time) give the sequential runner's results."""

from __future__ import annotations

import json
import os

import pytest
import yaml

from imgcls.ablation import read_table
from tests.conftest import write_image_folder

pytest.importorskip("hydra_plugins.hydra_joblib_launcher", reason="hydra-joblib-launcher is a dependency of imgcls")


def study(tmp_path) -> dict:
    """2 variants x 2 seeds of a small net on noisy images, deterministic, a fixed number of epochs."""
    root = write_image_folder(tmp_path / "data", n_train=10, n_test=10, size=8)
    return {"name": "launched", "seeds": 2, "budget": {"epochs": 2},
            "base": ["data=folder", f"data.root={root}", "data.val_fraction=0", "model=mlp", "model.hidden=[8]",
                     "optim.lr=0.01", "trainer.batch_size=8", "trainer.threads=1", "trainer.device=cpu",
                     "trainer.deterministic=true"],
            "variants": [{"name": "no_flip", "factor": "augmentation", "overrides": ["aug.flip=false"]}]}


def test_joblib_launcher_two_at_a_time_matches_the_sequential_runner(tmp_path, monkeypatch, capsys):
    import imgcls.cli as cli

    conf = tmp_path / "conf" / "ablation"
    conf.mkdir(parents=True)
    (conf / "launched.yaml").write_text(yaml.safe_dump(study(tmp_path)))
    monkeypatch.chdir(tmp_path)
    common = ["ablate", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "ablation=launched"]
    cli.main([*common, "out=sequential"])  # each run a fresh `imgcls train` process, one after another
    capsys.readouterr()
    cli.main([*common, "out=parallel", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    out = capsys.readouterr().out
    assert "runs go through Hydra launcher hydra/launcher=joblib " in out and "hydra.launcher.n_jobs=2" in out
    assert "2 run(s) per launch" in out
    assert "4 run now, 0 were there, 0 failed, 0 pending" in out
    seq, par = read_table(tmp_path / "sequential" / "results.csv"), read_table(tmp_path / "parallel" / "results.csv")
    key = lambda r: (r["variant"], r["seed"])  # noqa: E731
    assert sorted(map(key, par)) == sorted(map(key, seq)) == [("base", "0"), ("base", "1"), ("no_flip", "0"), ("no_flip", "1")]
    seq, par = {key(r): r for r in seq}, {key(r): r for r in par}

    def curve(study: str, row: dict) -> list[tuple]:
        return [(c["epoch"], c["train_loss"], c["train_acc"]) for c in read_table(tmp_path / study / row["curve"])]

    for k in seq:  # the same numbers, to the last digit written
        assert par[k]["test_top1"] == seq[k]["test_top1"] and par[k]["epochs"] == seq[k]["epochs"], k
        assert curve("parallel", par[k]) == curve("sequential", seq[k]), k
    assert len({curve("sequential", r)[-1][1] for r in seq.values()}) == 4  # seeds and variants differ: not a trivial match
    # the jobs ran in the launcher's worker processes, two per launch
    trials = [json.loads(p.read_text()) for p in (tmp_path / "parallel" / "launched").glob("*/*/trial.json")]
    assert sorted(t["trial"] for t in trials) == [0, 1, 2, 3] and all(t["pid"] != os.getpid() for t in trials)
    # resumable as before: nothing left to run
    cli.main([*common, "out=parallel", "hydra/launcher=joblib", "hydra.launcher.n_jobs=2"])
    assert "0 run now, 4 were there" in capsys.readouterr().out
