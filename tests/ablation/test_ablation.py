"""Ablation studies: the runner (variants x seeds, resume, refusing changed variants) and the report's numbers."""

from __future__ import annotations

import csv
import os
from pathlib import Path

import pytest
import yaml

from imgcls.ablation import (
    AblationSpec,
    InProcessRunner,
    make_report,
    paired_ci,
    read_table,
    run_ablation,
    spec_from_dict,
    variant_stats,
    welch_ci,
)
from imgcls.ablation.run import COLUMNS, SubprocessRunner
from imgcls.cli import compose_many, compose_train
from imgcls.errors import ImgclsError

PNG = b"\x89PNG\r\n\x1a\n"


def tiny_spec(root: Path, seeds: int = 2) -> dict:
    return {"name": "tiny", "seeds": seeds, "budget": {"epochs": 1},
            "base": ["data=folder", f"data.root={root}", "data.val_fraction=0", "model=simple_cnn", "model.width=4",
                     "trainer.batch_size=8", "trainer.threads=1", "trainer.device=cpu", "optim.lr=0.05"],
            "factors": {"augmentation": "flip + crop"},
            "variants": [{"name": "no_flip", "factor": "augmentation", "overrides": ["aug.flip=false"],
                          "note": "no mirrored images"}]}


class Counting:
    """A runner that records what it was asked to run (and runs it in this process)."""

    def __init__(self, fail: set[str] = frozenset()):
        self.calls: list[str] = []
        self.fail = fail
        self.inner = InProcessRunner(compose_train)

    def __call__(self, overrides: list[str], log: Path) -> Path:
        name = next(o.split("=", 1)[1] for o in overrides if o.startswith("trainer.name="))
        self.calls.append(name)
        if name in self.fail:
            raise ImgclsError("boom")
        return self.inner(overrides, log)


def test_spec_validation():
    spec = spec_from_dict({"name": "s", "base": "experiment=x", "budget": {"seconds": 60},
                           "variants": [{"name": "a", "factor": "f", "overrides": "x=1 y=2"}]})
    assert [v.name for v in spec.variants] == ["base", "a"] and spec.variants[1].overrides == ["x=1", "y=2"]
    assert spec.budget == "60s" and spec.budget_overrides() == ["trainer.time_budget=60"]
    with pytest.raises(ImgclsError, match="exactly one budget"):
        spec_from_dict({"name": "s", "base": [], "variants": [], "budget": {"seconds": 1, "epochs": 2}})
    with pytest.raises(ImgclsError, match="unique"):
        spec_from_dict({"name": "s", "base": [], "budget": {"epochs": 1},
                        "variants": [{"name": "a"}, {"name": "a"}]})
    with pytest.raises(ImgclsError, match="unknown key"):
        spec_from_dict({"name": "s", "base": [], "budget": {"epochs": 1}, "variantz": []})


def test_select_keeps_some_variants_and_the_base():
    variants = [{"name": n, "overrides": [f"x={i}"]} for i, n in enumerate(["a", "b", "c"])]
    spec = spec_from_dict({"name": "s", "base": [], "budget": {"epochs": 9}, "variants": variants, "select": ["c", "a"]})
    assert [v.name for v in spec.variants] == ["base", "a", "c"] and spec.variant("c").overrides == ["x=2"]
    assert [v.name for v in spec_from_dict(spec.to_dict()).variants] == ["base", "a", "c"]  # as study.yaml does
    with pytest.raises(ImgclsError, match="select names unknown variant.*zz"):
        spec_from_dict({"name": "s", "base": [], "budget": {"epochs": 1}, "variants": variants, "select": ["a", "zz"]})
    assert [v.name for v in spec_from_dict({"name": "s", "base": [], "budget": {"epochs": 1}, "variants": variants,
                                            "select": "b"}).variants] == ["base", "b"]
    with pytest.raises(ImgclsError, match="select is empty"):
        spec_from_dict({"name": "s", "base": [], "budget": {"epochs": 1}, "variants": variants, "select": []})


def test_runs_every_variant_and_seed_and_resumes(tmp_path, image_folder):
    root = image_folder(n_train=8, n_test=4, size=12)
    out = tmp_path / "study"
    runner = Counting()
    # "Stopped" after 3 of the 4 runs: seed by seed, so seed 0 is whole.
    r = run_ablation(tiny_spec(root), out, runner=runner, max_runs=3, log=lambda s: None)
    assert runner.calls == ["base-s0", "no_flip-s0", "base-s1"]
    assert r.pending == [("no_flip", 1)]
    rows = read_table(out / "results.csv")
    assert [(x["variant"], x["seed"]) for x in rows] == [("base", "0"), ("no_flip", "0"), ("base", "1")]
    with open(out / "results.csv", newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
    for x in rows:
        assert 0.0 <= float(x["test_top1"]) <= 1.0 and float(x["epochs"]) == 1.0 and float(x["train_seconds"]) > 0
        assert float(x["cpu_seconds"]) > 0 and float(x["wall_seconds"]) >= float(x["train_seconds"])
        assert float(x["images_per_second"]) > 0 and x["budget"] == "1ep"
        curve = read_table(out / x["curve"])
        assert [c["epoch"] for c in curve] == ["1"]
    assert rows[1]["overrides"] == "aug.flip=false" and rows[0]["overrides"] == ""

    # Continued later: only the missing run is trained, the table keeps one row per (variant, seed).
    runner2 = Counting()
    r2 = run_ablation(tiny_spec(root), out, runner=runner2, log=lambda s: None)
    assert runner2.calls == ["no_flip-s1"] and len(r2.skipped) == 3 and not r2.pending
    rows = read_table(out / "results.csv")
    assert sorted((x["variant"], x["seed"]) for x in rows) == [("base", "0"), ("base", "1"), ("no_flip", "0"),
                                                                ("no_flip", "1")]
    assert yaml.safe_load((out / "study.yaml").read_text())["name"] == "tiny"

    # Nothing left: a third call trains nothing.
    runner3 = Counting()
    run_ablation(tiny_spec(root), out, runner=runner3, log=lambda s: None)
    assert runner3.calls == []

    # Runs to do again (e.g. they shared the machine): their rows move to dropped.csv, then they run again.
    runner4 = Counting()
    run_ablation(tiny_spec(root), out, runner=runner4, rerun=["base-s1"], log=lambda s: None)
    assert runner4.calls == ["base-s1"]
    assert [(x["variant"], x["seed"]) for x in read_table(out / "dropped.csv")] == [("base", "1")]
    assert len(read_table(out / "results.csv")) == 4
    with pytest.raises(ImgclsError, match="no such run.*base-s7"):
        run_ablation(tiny_spec(root), out, runner=Counting(), rerun=["base-s7"], log=lambda s: None)

    # A variant edited after its runs would mix two recipes under one name: refused.
    changed = tiny_spec(root)
    changed["variants"][0]["overrides"] = ["aug.flip=false", "aug.crop_pad=0"]
    with pytest.raises(ImgclsError, match="no_flip.*changed"):
        run_ablation(changed, out, runner=Counting(), log=lambda s: None)
    # ... and so is another study's folder.
    other = tiny_spec(root)
    other["name"] = "other"
    with pytest.raises(ImgclsError, match="another out="):
        run_ablation(other, out, runner=Counting(), log=lambda s: None)


def test_failed_runs_are_not_recorded_and_retried(tmp_path, image_folder):
    root = image_folder(n_train=8, n_test=4, size=12)
    out = tmp_path / "study"
    spec = tiny_spec(root, seeds=1)
    r = run_ablation(spec, out, runner=Counting(fail={"no_flip-s0"}), log=lambda s: None)
    assert [f[:2] for f in r.failed] == [("no_flip", 0)] and r.ran == [("base", 0)]
    assert [x["variant"] for x in read_table(out / "results.csv")] == ["base"]
    again = Counting()
    run_ablation(spec, out, runner=again, log=lambda s: None)
    assert again.calls == ["no_flip-s0"]


def test_subprocess_runner_reports_the_failure(tmp_path):
    with pytest.raises(ImgclsError, match=r"exit code [1-9].*x\.log"):
        SubprocessRunner()(["model=no_such_model", f"trainer.project={tmp_path}"], tmp_path / "x.log")
    assert "imgcls train model=no_such_model" in (tmp_path / "x.log").read_text()


# ---------------------------------------------------------------------------------------------------
# The report, from a fixed results table


def write_study(path: Path, accs: dict[str, list[float]], factors: dict[str, str],
                no_tta: dict[str, list[float]] | None = None) -> None:
    """A study folder with fixed test accuracies (in %) per variant and seed; `no_tta` the single-view scores."""
    path.mkdir(parents=True)
    spec = AblationSpec(name="fixed", base=["experiment=x"], seconds=100, seeds=3,
                        variants=[{"name": n, "factor": factors[n], "overrides": [f"k={n}"] if n != "base" else []}
                                  for n in accs if n in factors],
                        factors={"aug": "flip"})
    (path / "study.yaml").write_text(yaml.safe_dump(spec.to_dict()))
    (path / "curves").mkdir()
    with open(path / "results.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS)
        w.writeheader()
        for name, values in accs.items():
            for seed, a in enumerate(values):
                curve = f"curves/{name}-s{seed}.csv"
                (path / curve).write_text("epoch,seconds,train_loss,train_acc,val_loss,val_acc,lr\n"
                                          "1,10.0,2.0,0.3,,,0.1\n2,10.0,1.5,0.5,,,0.05\n")
                w.writerow({"study": "fixed", "variant": name, "factor": factors.get(name, "gone"),
                            "overrides": "" if name == "base" else f"k={name}", "budget": "100s", "seed": seed,
                            "test_top1": a / 100, "test_top1_no_tta": (no_tta or {}).get(name, values)[seed] / 100,
                            "epochs": 2, "train_seconds": 20.0, "eval_seconds": 6 if name in (no_tta or {}) else 2,
                            "total_seconds": 30, "images_per_second": 500 if name != "slow" else 250,
                            "curve": curve, "run_dir": "x", "hardware": "Test CPU, 2 cores", "torch": "2.x",
                            "load_average": 0.5, "finished_at": f"2026-01-01 00:00:0{seed}"})


def test_table_written_by_an_older_version_gets_the_new_columns(tmp_path):
    from imgcls.ablation.run import append_row

    table = tmp_path / "results.csv"
    old = [c for c in COLUMNS if c not in ("wall_seconds", "cpu_seconds")]
    with open(table, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=old)
        w.writeheader()
        w.writerow({c: "1" for c in old})
    append_row(table, {c: "2" for c in COLUMNS})
    with open(table, newline="") as f:
        assert next(csv.reader(f)) == COLUMNS
    rows = read_table(table)
    assert [r["study"] for r in rows] == ["1", "2"] and rows[0]["cpu_seconds"] == "" and rows[1]["cpu_seconds"] == "2"


def test_report_names_runs_that_shared_the_machine(tmp_path):
    from imgcls.ablation.report import busy_runs

    rows = [{"variant": v, "seed": "0", "hardware": "X, 2 cores", "load_average": load, "wall_seconds": "100",
             "cpu_seconds": cpu} for v, cpu, load in (("a", "190", "2.0"), ("b", "188", "2.1"), ("c", "120", "2.0"),
                                                        ("d", "191", "3.5"), ("e", "", "1.0"))]
    assert busy_runs(rows) == ["c-s0", "d-s0"]


def test_welch_interval():
    lo, hi = welch_ci([83, 84, 85], [80, 81, 82])
    assert lo == pytest.approx(3 - 2.7764451 * (2 / 3) ** 0.5, abs=1e-6)
    assert hi == pytest.approx(3 + 2.7764451 * (2 / 3) ** 0.5, abs=1e-6)
    assert welch_ci([1.0], [1.0, 2.0]) is None


def test_report_tables_and_figures(tmp_path):
    study = tmp_path / "study"
    write_study(study, {"base": [80, 81, 82], "cutout": [83, 84, 85], "slow": [79, 82, 82], "removed": [99, 99, 99]},
                {"base": "base", "cutout": "aug", "slow": "backbone"})
    rows = read_table(study / "results.csv")
    stats = {s.name: s for s in variant_stats([r for r in rows if r["variant"] != "removed"])}
    assert stats["cutout"].mean == pytest.approx(84.0) and stats["cutout"].std == pytest.approx(1.0)
    assert stats["cutout"].diff == pytest.approx(3.0) and stats["slow"].diff == pytest.approx(0.0)
    assert stats["slow"].seconds_per_epoch == pytest.approx(10.0)

    rep = make_report(study, out_dir=tmp_path / "docs", name="cifar", notes=None)
    md = rep.markdown.read_text()
    assert rep.markdown == tmp_path / "docs" / "cifar.md"
    assert "| cutout | `k=cutout` | 3 | 84.00 ± 1.00 | +3.00 [+0.73, +5.27] | better |" in md
    assert "| slow | `k=slow` | 3 | 81.00 ± 1.73 | +0.00 [" in md and "no clear difference" in md
    assert "| base | (base recipe) | 3 | 81.00 ± 1.00 | — |" in md
    assert "removed" not in md  # a variant no longer in study.yaml
    assert "## aug" in md and "## backbone" in md and "Base recipe: flip." in md
    assert "Test CPU, 2 cores" in md and "100 s of wall time" in md
    # best first in the overall table
    overall = md.split("## All variants, best first")[1].split("##")[0]
    assert overall.index("cutout") < overall.index("| base |")
    html = rep.html.read_text()
    assert html.startswith("<!doctype html>") and "<table>" in html and "+3.00 [+0.73, +5.27]" in html
    assert len(rep.figures) == 5  # scatter + (accuracy, curves) for 2 factors
    for fig in rep.figures:
        assert fig.read_bytes()[:8] == PNG and fig.stat().st_size > 5000
        assert fig.relative_to(tmp_path / "docs").as_posix() in md


def test_report_measures_tta_on_the_same_weights(tmp_path):
    """A TTA variant's gain is paired seed by seed with its own single-view score, not compared with the base's."""
    study = tmp_path / "study"
    write_study(study, {"base": [80, 82, 81], "tta": [81.5, 83.0, 82.5], "flip": [81, 82, 83]},
                {"base": "base", "tta": "eval", "flip": "aug"}, no_tta={"tta": [80, 82, 81]})
    stats = {s.name: s for s in variant_stats(read_table(study / "results.csv"))}
    assert stats["tta"].tta_gains == pytest.approx([1.5, 1.0, 1.5]) and stats["tta"].uses_tta
    assert not stats["flip"].uses_tta and not stats["base"].uses_tta
    lo, hi = paired_ci([1.5, 1.0, 1.5])
    half = 4.30265273 * (1 / 12) ** 0.5 / 3 ** 0.5  # t(0.975, 2) * sd / sqrt(n)
    assert (lo, hi) == (pytest.approx(4 / 3 - half, abs=1e-6), pytest.approx(4 / 3 + half, abs=1e-6))
    assert paired_ci([1.0]) is None and paired_ci([2.0, 2.0]) == (2.0, 2.0)

    md = make_report(study, out_dir=tmp_path / "docs", name="r").markdown.read_text()
    section = md.split("## eval")[1].split("## ")[0]
    assert f"| tta | 3 | 81.00 | 82.33 | +1.33 [{lo:+.2f}, {hi:+.2f}] | 6.0 |" in section
    assert "| base | 3 | 81.00 | — | — | 2.0 |" in section
    assert "paired" not in md.split("## aug")[1].split("## ")[0]  # no TTA table where nothing used TTA
    # the unpaired difference to the base is wider: training noise of two sets of runs
    assert stats["tta"].ci[1] - stats["tta"].ci[0] > hi - lo

    # a base that itself uses TTA is not listed as a single-view row (its score there would be the TTA one)
    both = tmp_path / "both"
    write_study(both, {"base": [81.5, 83.0, 82.5], "tta": [81.5, 83.0, 82.5]}, {"base": "base", "tta": "eval"},
                no_tta={"base": [80, 82, 81], "tta": [80, 82, 81]})
    md = make_report(both, out_dir=tmp_path / "docs2", name="r").markdown.read_text()
    section = md.split("## eval")[1].split("## ")[0]
    assert "| tta | 3 | 81.00 | 82.33 |" in section and "| base | 3 | 82.33 | — | — |" not in section


def test_scatter_zooms_in_when_some_variants_are_far_behind(tmp_path):
    from imgcls.ablation.report import ZOOM_POINTS, plot_scatter

    def width(stats, name):  # PNG header: width is the big-endian int at bytes 16-20
        return int.from_bytes(plot_scatter(stats, tmp_path / name, "train_seconds").read_bytes()[16:20], "big")

    study = tmp_path / "s"
    write_study(study, {"base": [80, 81], "a": [81, 82], "far": [50, 51]}, {"base": "base", "a": "aug", "far": "aug"})
    stats = variant_stats(read_table(study / "results.csv"))
    assert min(s.mean for s in stats) < max(s.mean for s in stats) - ZOOM_POINTS
    one_panel = width([s for s in stats if s.name != "far"], "near.png")
    assert width(stats, "all.png") > 1.5 * one_panel  # a second, zoomed panel beside the first


def test_report_needs_results(tmp_path):
    with pytest.raises(ImgclsError, match="imgcls ablate"):
        make_report(tmp_path)


def test_cli_ablate_and_report(tmp_path, image_folder, monkeypatch, capsys):
    """`imgcls ablate` with a user's ablation file (hydra.searchpath) then `imgcls report`."""
    root = image_folder(n_train=8, n_test=4, size=12)
    conf = tmp_path / "conf" / "ablation"
    conf.mkdir(parents=True)
    spec = tiny_spec(root, seeds=1)
    (conf / "mine.yaml").write_text(yaml.safe_dump(spec))
    env = {**os.environ, "IMGCLS_CACHE": str(tmp_path / "cache")}
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "study"
    import imgcls.cli as cli

    monkeypatch.setenv("IMGCLS_CACHE", env["IMGCLS_CACHE"])
    cli.main(["ablate", f"hydra.searchpath=[file://{tmp_path / 'conf'}]", "ablation=mine", f"out={out}", "max_runs=1"])
    assert "1 run now, 0 were there, 0 failed, 1 pending" in capsys.readouterr().out  # the run: a real process
    assert [x["variant"] for x in read_table(out / "results.csv")] == ["base"]
    assert (out / "logs" / "base-s0.log").read_text().startswith("$ imgcls train data=folder")
    cli.main(["report", f"study={out}"])  # in this process: the verb's composition and printing
    assert (out / "report.md").is_file() and (out / "report.html").is_file()


def test_check_variants_catches_typos_before_any_run(tmp_path, image_folder):
    from imgcls.ablation.run import check_variants

    root = image_folder(n_train=8, n_test=4, size=12)
    spec = tiny_spec(root)
    spec["variants"] += [{"name": "typo", "factor": "aug", "overrides": ["aug.flipp=false"]},
                         {"name": "bad_value", "factor": "aug", "overrides": ["aug.policy=random"]},
                         {"name": "bad_arg", "factor": "model", "overrides": ["+model.depth=3"]}]
    with pytest.raises(ImgclsError) as e:
        run_ablation(spec, tmp_path / "s", runner=Counting(), check=True, log=lambda s: None, compose=compose_many)
    msg = str(e.value)
    assert "3 variant(s)" in msg and "typo: " in msg and "bad_value: " in msg and "bad_arg: " in msg
    assert "no_flip" not in msg
    assert not (tmp_path / "s" / "results.csv").exists()
    check_variants(spec_from_dict(tiny_spec(root)), compose=compose_many)  # the valid ones pass


def test_report_says_when_the_study_is_partial(tmp_path):
    study = tmp_path / "study"
    write_study(study, {"base": [80, 81, 82], "cutout": [83]}, {"base": "base", "cutout": "aug", "slow": "backbone"})
    spec = yaml.safe_load((study / "study.yaml").read_text())
    spec["variants"].append({"name": "slow", "factor": "backbone", "overrides": ["k=slow"], "note": ""})
    (study / "study.yaml").write_text(yaml.safe_dump(spec))
    md = make_report(study).markdown.read_text()
    assert "**Partial**: 4 of the 9 planned runs (3 variants x 3 seeds); not run yet: slow; fewer than 3 seeds: cutout." in md
    assert "| cutout | `k=cutout` | 1 | 83.00 | +2.00 (CI needs ≥ 2 seeds each) |" in md


class Batches:
    """A runner with run_batch (as the CLI's launcher runner): records each launch; runs in this process."""

    parallel = 2

    def __init__(self, fail: set[str] = frozenset()):
        self.launches: list[list[str]] = []
        self.fail = fail
        self.inner = InProcessRunner(compose_train)

    def describe(self) -> str:
        return "two at a time"

    def run_batch(self, jobs):
        names = [next(o.split("=", 1)[1] for o in ov if o.startswith("trainer.name=")) for ov, _ in jobs]
        self.launches.append(names)
        return [ImgclsError("boom") if n in self.fail else self.inner(ov, log) for n, (ov, log) in zip(names, jobs)]


def test_a_batch_runner_gets_runs_n_at_a_time_within_max_runs(tmp_path, image_folder):
    root = image_folder(n_train=8, n_test=4, size=12)
    runner, logs = Batches(fail={"no_flip-s0"}), []
    r = run_ablation(tiny_spec(root), tmp_path / "study", runner=runner, max_runs=3, log=logs.append)
    assert runner.launches == [["base-s0", "no_flip-s0"], ["base-s1"]]  # max_runs cuts the second launch to one run
    assert r.ran == [("base", 0), ("base", 1)] and [f[:2] for f in r.failed] == [("no_flip", 0)]
    assert r.pending == [("no_flip", 1)] and "runs go through two at a time" in logs
    rows = read_table(tmp_path / "study" / "results.csv")
    assert [x["variant"] + x["seed"] for x in rows] == ["base0", "base1"]
    assert all(x["cpu_seconds"] == "" and x["load_average"] == "" for x in rows)  # not this process's runs
    runner.fail = set()
    r = run_ablation(tiny_spec(root), tmp_path / "study", runner=runner, log=logs.append)  # continues: the rest
    assert runner.launches[2:] == [["no_flip-s0", "no_flip-s1"]] and len(r.ran) == 2 and len(r.skipped) == 2
