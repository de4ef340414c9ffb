"""Each CLI verb end to end on a tiny generated image folder: train -> evaluate -> predict."""

from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imgcls.evaluation import read_metrics


def make_folder(root: Path, n_train: int = 10, n_test: int = 4, size: int = 12) -> Path:
    """Two easy classes: dark and bright squares."""
    rng = np.random.default_rng(0)
    for split, n in (("train", n_train), ("test", n_test)):
        for c, level in (("dark", 40), ("bright", 210)):
            d = root / split / c
            d.mkdir(parents=True)
            for i in range(n):
                a = np.clip(level + rng.normal(0, 20, (size, size, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(a).save(d / f"{i}.png")
    return root


def imgcls(*args: str, cwd: Path, check: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "IMGCLS_CACHE": str(cwd / "cache")}
    p = subprocess.run([sys.executable, "-m", "imgcls", *args], cwd=cwd, env=env, capture_output=True, text=True,
                       timeout=300)
    if check and p.returncode != 0:
        raise AssertionError(f"imgcls {' '.join(args)} failed ({p.returncode}):\n{p.stdout}\n{p.stderr}")
    return p


def last_value(stdout: str, prefix: str) -> str:
    return [line for line in stdout.splitlines() if line.startswith(prefix)][-1].split(": ", 1)[1]


def test_help_lists_verbs(capsys):
    import imgcls.cli as cli

    cli.main(["--help"])
    out = capsys.readouterr().out
    for verb in ("train", "evaluate", "predict", "lr-find", "sanity", "explain", "embed", "search", "visualize", "ablate",
                 "report", "doctor", "export", "quantize", "prune", "serve"):
        assert f"  {verb}" in out


def verb(capsys, *args: str) -> subprocess.CompletedProcess:
    """A verb in this process (imports paid once), with the interface of `imgcls(...)`."""
    import imgcls.cli as cli

    cli.main(list(args))
    out = capsys.readouterr()
    return subprocess.CompletedProcess(args, 0, out.out, out.err)


def test_train_evaluate_predict(tmp_path, monkeypatch, capsys):
    """train and predict as real processes (the entry point); evaluate and the understanding verbs in this one."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    data = make_folder(tmp_path / "shapes")
    p = imgcls("train", "data=folder", f"data.root={data}", "data.val_fraction=0.2", "model=simple_cnn",
               "model.width=8", "trainer.epochs=3", "trainer.batch_size=4", "trainer.progress=false",
               "optim.lr=0.05", cwd=tmp_path)
    run = Path(tmp_path / last_value(p.stdout, "run folder"))
    assert run.parent == tmp_path / "runs" and run.name == "folder-simple_cnn"
    with open(run / "results.csv") as f:
        assert [r["epoch"] for r in csv.DictReader(f)] == ["1", "2", "3"]
    ckpt = run / "best.safetensors"
    assert ckpt.is_file()

    p = verb(capsys, "evaluate", f"ckpt={ckpt}", "out=ev")
    assert "calibration: ECE" in p.stdout
    metrics = read_metrics(tmp_path / "ev" / "metrics.json")
    assert metrics["num_samples"] == 8 and metrics["classes"] == ["bright", "dark"]
    assert metrics["top1"] >= 0.75  # two trivially separable classes
    assert (tmp_path / "ev" / "confusion_matrix.png").is_file()

    (data / "test" / "dark" / "broken.png").write_text("not an image")
    p = imgcls("predict", f"ckpt={ckpt}", f"source={data / 'test'}", "top_k=2", cwd=tmp_path)
    pred = Path(tmp_path / last_value(p.stdout, "predictions"))
    rows = list(csv.DictReader(open(pred)))
    assert len(rows) == 9
    bad = [r for r in rows if r["error"]]
    assert len(bad) == 1 and "broken.png" in bad[0]["error"]
    good = [r for r in rows if not r["error"]]
    assert all(len(json.loads(r["top_k"])) == 2 for r in good)
    correct = sum(Path(r["path"]).parent.name == r["label"] for r in good)
    assert correct >= 6

    (data / "test" / "dark" / "broken.png").unlink()
    p = verb(capsys, "explain", f"ckpt={ckpt}", f"source={data / 'test' / 'dark'}", "out=cam", "methods=gradcam")
    assert "predicted" in p.stdout and (tmp_path / "cam" / "gradcam.png").is_file()
    assert len(list((tmp_path / "cam").glob("*_gradcam.png"))) == 4
    query = sorted((data / "test" / "dark").iterdir())[0]
    p = verb(capsys, "search", f"ckpt={ckpt}", f"index={data / 'test'}", f"query={query}", "k=3", "out=search")
    assert p.stdout.splitlines()[0].endswith(str(query)) and (tmp_path / "search" / "search.png").is_file()
    p = verb(capsys, "visualize", f"ckpt={ckpt}", "steps=5", "classes=bright", "out=vis")  # a single value
    assert "bright: objective" in p.stdout and "dark" not in p.stdout and (tmp_path / "vis" / "visualize.png").is_file()


def test_sweep_makes_one_run_per_value(tmp_path):
    data = make_folder(tmp_path / "shapes", n_train=4, n_test=2)
    imgcls("train", "-m", "data=folder", f"data.root={data}", "data.val_fraction=0", "model=mlp", "model.hidden=[8]",
           "trainer=debug", "trainer.batch_size=4", "trainer.seed=1,2", cwd=tmp_path)
    runs = sorted(p.name for p in (tmp_path / "runs").iterdir() if not p.name.startswith("."))
    assert runs == ["folder-mlp", "folder-mlp-2"]


def test_bad_input_gives_one_clear_error_in_a_real_process(tmp_path):
    p = imgcls("train", "data=folder", "data.root=/does/not/exist", cwd=tmp_path, check=False)
    assert p.returncode == 2
    assert "data folder not found: /does/not/exist" in p.stderr and "Traceback" not in p.stdout + p.stderr


@pytest.mark.parametrize(
    "args, message",
    [
        (["evaluate", "ckpt=missing.safetensors"], "model file not found"),
        (["train", "trainer.nope=1"], "Could not override 'trainer.nope'"),
        (["train", "model=nope"], "Could not find 'model/nope'"),
        (["frobnicate"], "unknown verb"),
    ],
)
def test_bad_input_gives_one_clear_error(tmp_path, monkeypatch, capsys, args, message):
    """The same check in this process (each real process costs seconds of imports)."""
    import imgcls.cli as cli

    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as e:
        cli.main(list(args))
    assert e.value.code not in (0, None)
    out = capsys.readouterr()
    assert message in out.out + out.err
    assert "Traceback" not in out.err


def test_lr_find_and_sanity_verbs(tmp_path, monkeypatch, capsys):
    """In this process: the verbs' composition and printing (train's subprocess test covers the entry point)."""
    import imgcls.cli as cli

    monkeypatch.chdir(tmp_path)
    data = make_folder(tmp_path / "shapes")
    common = ["data=folder", f"data.root={data}", "model=simple_cnn", "model.width=4", "trainer.batch_size=4",
              "trainer.threads=1"]
    cli.main(["lr-find", *common, "steps=20", "start_lr=1e-4", "end_lr=1", f"out={tmp_path / 'lr'}"])
    assert "suggested learning rate" in capsys.readouterr().out and (tmp_path / "lr" / "lr_find.png").is_file()
    cli.main(["sanity", *common, "batch_size=8", f"out={tmp_path / 'sanity'}"])
    assert "passed" in capsys.readouterr().out and (tmp_path / "sanity" / "sanity_batch.png").is_file()
