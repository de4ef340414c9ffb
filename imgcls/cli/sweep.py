"""Multiruns (`imgcls train -m ...`, any Hydra sweeper and launcher): one record per trial, one summary per sweep.

Each `imgcls train` job of a multirun writes `trial.json` into its Hydra job folder
(`<hydra.sweep.dir>/<job number>/`): its overrides, the validation metric it returned to the sweeper,
its best validation numbers, its test top-1, seconds and run folder, or the error that failed it.
The files are written where the job runs, so they arrive from any launcher (local, joblib,
submitit/SLURM) that shares the file system. When the multirun ends, `SweepSummary` (a Hydra callback,
set in conf/_hydra.yaml) collects them into `summary.csv` (a row per trial, a column per swept key)
and `summary.png` (the metric per trial and against each swept number).
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import platform
import time
from pathlib import Path
from typing import Any

from hydra.experimental.callback import Callback

from imgcls.atomic import write_text_atomic

TRIAL_FILE = "trial.json"
SUMMARY_COLUMNS = ["trial", "status", "monitor", "value", "best_epoch", "val_acc", "val_loss", "val_f1", "test_top1",
                   "seconds", "run_dir", "overrides", "error"]
# best value of each validation column over the epochs: the same epoch selection as best.safetensors
BEST = {"val_acc": max, "val_loss": min, "val_f1": max, "val_miou": max,  # val_miou: segmentation
        "val_map": max, "val_map50": max}  # detection


def multirun_job() -> dict | None:
    """This job's place in a multirun (number, folder, overrides), or None in a single run or outside Hydra."""
    try:
        from hydra.core.hydra_config import HydraConfig
        from hydra.types import RunMode

        if not HydraConfig.initialized():
            return None
        hc = HydraConfig.get()
        if hc.mode != RunMode.MULTIRUN:
            return None
        return {"num": int(hc.job.num), "dir": Path(hc.runtime.output_dir), "overrides": list(hc.overrides.task)}
    except (ImportError, ValueError, AttributeError):
        return None


def objective(history: list[dict], monitor: str) -> tuple[float, int | None]:
    """The monitored validation number of the best epoch (what picked best.safetensors) and that epoch; nan without one."""
    pick = BEST[monitor]
    rows = [r for r in history if r.get(monitor) not in (None, "")]
    if not rows:
        return math.nan, None
    best = pick(rows, key=lambda r: float(r[monitor]))  # the first best: fit() keeps the first of equal scores
    return float(best[monitor]), int(best["epoch"])


def trial_record(history: list[dict], monitor: str, metrics: dict, run_dir: Path | str, seconds: float) -> dict:
    value, epoch = objective(history, monitor)
    best = next((r for r in history if r.get("epoch") == epoch), {}) if epoch else {}
    return {"status": "done", "monitor": monitor, "value": value, "best_epoch": epoch,
            **{k: best.get(k) for k in BEST}, "test_top1": metrics.get("top1"), "seconds": round(seconds, 2),
            "run_dir": str(run_dir)}


def write_trial(job: dict, record: dict) -> Path:
    path = job["dir"] / TRIAL_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps({"trial": job["num"], "overrides": job["overrides"], **record,
                                        "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"), "host": platform.node(),
                                        "pid": os.getpid()}, indent=1, default=str))
    return path


def read_trials(sweep_dir: str | Path) -> list[dict]:
    """The trial records under a sweep folder, by job number."""
    trials = []
    for p in Path(sweep_dir).glob(f"*/{TRIAL_FILE}"):
        try:
            trials.append(json.loads(p.read_text()))
        except (OSError, json.JSONDecodeError):
            continue  # a job killed while writing: its folder says so by having no record
    return sorted(trials, key=lambda t: t["trial"])


def _split(override: str) -> tuple[str, str]:
    key, _, value = override.partition("=")
    return key.lstrip("+~"), value


def _number(v: str) -> float | None:
    try:
        return float(v)
    except ValueError:
        return None


def summarize(sweep_dir: str | Path, *, plot: bool = True) -> Path | None:
    """summary.csv (and summary.png) of the trials in `sweep_dir`; None when it holds no trial record.

    The keys whose value differs between trials get a column each (the swept ones); `overrides`
    keeps each trial's whole list.
    """
    sweep_dir = Path(sweep_dir)
    trials = read_trials(sweep_dir)
    if not trials:
        return None
    values: dict[str, set] = {}
    for t in trials:
        for k, v in map(_split, t["overrides"]):
            values.setdefault(k, set()).add(v)
    swept = [k for k, vs in values.items() if len(vs) > 1 or any(k not in dict(map(_split, t["overrides"])) for t in trials)]
    rows = []
    for t in trials:
        ov = dict(map(_split, t["overrides"]))
        rows.append({**{c: t.get(c) for c in SUMMARY_COLUMNS}, "overrides": " ".join(t["overrides"]),
                     **{k: ov.get(k, "") for k in swept}})
    path = sweep_dir / "summary.csv"
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=[*SUMMARY_COLUMNS[:3], *swept, *SUMMARY_COLUMNS[3:]], extrasaction="ignore")
    w.writeheader()
    w.writerows({k: ("" if v is None or (isinstance(v, float) and math.isnan(v)) else v) for k, v in r.items()}
                for r in rows)
    write_text_atomic(path, buf.getvalue())  # jobs of a parallel launcher may summarize at the same moment
    if plot:
        _plot(rows, swept, sweep_dir / "summary.png")
    return path


def _plot(rows: list[dict], swept: list[str], out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    done = [r for r in rows if r["status"] == "done" and r["value"] is not None and not math.isnan(float(r["value"]))]
    if not done:
        return
    monitor = done[0]["monitor"]
    numeric = [k for k in swept if all(_number(r.get(k, "")) is not None for r in done)]
    fig, axes = plt.subplots(1, 1 + len(numeric), figsize=(4.2 * (1 + len(numeric)), 3.4), squeeze=False)
    ax = axes[0][0]
    x = [r["trial"] for r in done]
    y = [float(r["value"]) for r in done]
    better = min if monitor == "val_loss" else max
    ax.plot(x, y, "o", label=monitor)
    ax.step(x, [better(y[: i + 1]) for i in range(len(y))], where="post", label="best so far")
    if any(r.get("test_top1") not in (None, "") for r in done):
        ax.plot(x, [float(r["test_top1"]) if r.get("test_top1") not in (None, "") else math.nan for r in done], "x",
                alpha=0.6, label="test_top1")
    lo, hi = _focus(y, better)
    for a in axes[0]:
        a.set_ylim(lo, hi)
    off = sum(1 for v in y if not lo <= v <= hi)
    ax.set_xlabel("trial")
    ax.set_title(f"{len(done)} trials" + (f" ({off} far off, outside the plot)" if off else ""), fontsize=9)
    ax.legend(fontsize=7)
    for ax, key in zip(axes[0][1:], numeric):
        xs = [float(r[key]) for r in done]
        ax.scatter(xs, y, c=range(len(done)), cmap="viridis", s=18)
        if min(xs) > 0 and max(xs) / min(xs) > 20:
            ax.set_xscale("log")
        ax.set_xlabel(key)
        ax.set_ylabel(monitor)
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def _focus(y: list[float], better) -> tuple[float, float]:
    """A y-range around the good half of the trials, so that one diverged trial does not flatten the rest."""
    import numpy as np

    good = sorted(y, reverse=better is max)[: max(2, (len(y) + 1) // 2)]
    span = max(max(good) - min(good), 1e-3)
    best, worst = (max(good), min(good)) if better is max else (min(good), max(good))
    edge = worst - 3 * span if better is max else worst + 3 * span
    lo, hi = sorted((best, edge))
    lo, hi = max(lo, float(np.min(y))), min(hi, float(np.max(y)))
    pad = 0.05 * max(hi - lo, 1e-3)
    return lo - pad, hi + pad


class SweepSummary(Callback):
    """Hydra callback: summary.csv after every job of a multirun (a sweep that stops at a failed job keeps
    the table of the jobs before it), and summary.csv and summary.png when the multirun ends."""

    def on_job_end(self, config: Any, job_return: Any = None, **kwargs: Any) -> None:
        try:
            from hydra.core.hydra_config import HydraConfig
            from hydra.types import RunMode

            if HydraConfig.initialized() and HydraConfig.get().mode == RunMode.MULTIRUN:
                summarize(Path(str(HydraConfig.get().sweep.dir)), plot=False)
        except Exception as e:  # noqa: BLE001 - a summary never fails a training job
            print(f"warning: multirun summary not updated: {type(e).__name__}: {e}")

    def on_multirun_end(self, config: Any, **kwargs: Any) -> None:
        sweep_dir = Path(str(config.hydra.sweep.dir))
        path = summarize(sweep_dir)
        if path is not None:
            print(f"multirun summary: {path} and {path.with_suffix('.png')} ({len(read_trials(sweep_dir))} trials)")
