"""Ablation studies: every variant of a recipe x every seed, one results table, resumable.

A study (`AblationSpec`) is a base recipe (`imgcls train` overrides), a budget per run (seconds
or epochs), a seed count and variants, each a set of overrides that changes one design choice
(its *factor*: backbone, augmentation, optimizer, ...). `run_ablation` trains what is missing from
`results.csv` in the study folder, appending one row per finished run (and its per-epoch curve), so
a study can be stopped at any point and continued later; the table is the data a report is made of
(`imgcls.ablation.report`).

Each run is a fresh `python -m imgcls train ...` process by default: its time budget counts from its
own start, exactly as a user's `imgcls train` with those overrides, and a run that fails is logged
and retried next time without stopping the study. `InProcessRunner` trains in this process instead
(tests, notebooks).
"""

from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from imgcls.atomic import atomic_path
from imgcls.errors import ImgclsError

COLUMNS = ["study", "variant", "factor", "overrides", "budget", "seed", "test_top1", "test_top1_no_tta", "epochs",
           "train_seconds", "eval_seconds", "total_seconds", "images_per_second", "curve", "run_dir", "hardware",
           "torch", "load_average", "finished_at", "wall_seconds", "cpu_seconds"]
BASE = "base"  # name of the variant without overrides: the recipe every other variant is compared with


@dataclass
class Variant:
    name: str  # unique, used in file names: letters, digits, - _ . +
    factor: str  # the design choice this variant changes (backbone, augmentation, ...); "base" for the base
    overrides: list[str] = field(default_factory=list)  # `imgcls train` overrides on top of the base
    note: str = ""  # one line on what it is, shown in the report


@dataclass
class AblationSpec:
    name: str
    base: list[str]  # overrides that make the base recipe, e.g. ["experiment=cifar10_ablation"]
    variants: list[Variant]  # the base variant ("base", no overrides) is added in front when missing
    seeds: int = 3
    seconds: float | None = None  # per-run budget: wall seconds of `imgcls train` (trainer.time_budget) ...
    epochs: int | None = None  # ... or epochs
    description: str = ""
    factors: dict[str, str] = field(default_factory=dict)  # factor -> what the base recipe uses for it
    # keep only these variants (and the base): a study that re-runs some of another's variants, e.g. at a
    # longer budget, takes that study's file as its Hydra default and names the variants here
    select: list[str] | None = None

    def __post_init__(self) -> None:
        self.variants = [v if isinstance(v, Variant) else _variant(v) for v in self.variants]
        if self.select is not None:
            self.select = [self.select] if isinstance(self.select, str) else [str(n) for n in self.select]
            if not self.select:
                raise ImgclsError(f"ablation {self.name}: select is empty; name the variants to keep, or leave select out")
            missing = [n for n in self.select if n != BASE and n not in {v.name for v in self.variants}]
            if missing:
                raise ImgclsError(f"ablation {self.name}: select names unknown variant(s) {', '.join(missing)}; "
                                  f"it has: {', '.join(v.name for v in self.variants)}")
            self.variants = [v for v in self.variants if v.name == BASE or v.name in self.select]
        if not any(v.name == BASE for v in self.variants):
            self.variants.insert(0, Variant(BASE, BASE, [], "the base recipe"))
        names = [v.name for v in self.variants]
        dup = sorted({n for n in names if names.count(n) > 1})
        if dup:
            raise ImgclsError(f"ablation {self.name}: variant names must be unique, repeated: {', '.join(dup)}")
        for v in self.variants:
            if not re.fullmatch(r"[A-Za-z0-9_.+-]+", v.name):
                raise ImgclsError(f"ablation {self.name}: variant name {v.name!r} may only use letters, digits, - _ . +")
        if (self.seconds is None) == (self.epochs is None):
            raise ImgclsError(f"ablation {self.name}: give exactly one budget per run, seconds or epochs "
                              f"(got seconds={self.seconds}, epochs={self.epochs})")
        if self.seeds < 1:
            raise ImgclsError(f"ablation {self.name}: seeds must be >= 1, got {self.seeds}")

    @property
    def budget(self) -> str:
        return f"{self.seconds:g}s" if self.seconds is not None else f"{self.epochs}ep"

    def budget_overrides(self) -> list[str]:
        if self.seconds is not None:
            return [f"trainer.time_budget={self.seconds:g}"]
        return [f"trainer.epochs={self.epochs}", "trainer.time_budget=null"]

    def variant(self, name: str) -> Variant:
        for v in self.variants:
            if v.name == name:
                return v
        raise ImgclsError(f"ablation {self.name} has no variant {name!r}; it has: {', '.join(v.name for v in self.variants)}")

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _variant(d: Any) -> Variant:
    if not isinstance(d, dict) or "name" not in d:
        raise ImgclsError(f"a variant needs at least a name (and factor, overrides), got {d!r}")
    unknown = set(d) - {f.name for f in dataclasses.fields(Variant)}
    if unknown:
        raise ImgclsError(f"variant {d['name']}: unknown key(s) {', '.join(sorted(unknown))}")
    overrides = d.get("overrides") or []
    if isinstance(overrides, str):
        overrides = overrides.split()
    return Variant(name=str(d["name"]), factor=str(d.get("factor", d["name"])), overrides=[str(o) for o in overrides],
                   note=str(d.get("note", "") or ""))


def spec_from_dict(d: dict) -> AblationSpec:
    """An AblationSpec from a plain dict (a loaded ablation YAML file); budget: {seconds: S} or {epochs: N}."""
    d = dict(d)
    budget = d.pop("budget", None) or {}
    unknown = set(d) - {f.name for f in dataclasses.fields(AblationSpec)}
    if unknown:
        raise ImgclsError(f"ablation file: unknown key(s) {', '.join(sorted(unknown))}")
    if set(budget) - {"seconds", "epochs"}:
        raise ImgclsError(f"ablation budget: expected seconds or epochs, got {budget!r}")
    base = d.get("base") or []
    return AblationSpec(name=str(d.get("name") or "ablation"), base=[base] if isinstance(base, str) else list(base),
                        variants=list(d.get("variants") or []), seeds=int(d.get("seeds", 3)),
                        seconds=budget.get("seconds", d.get("seconds")), epochs=budget.get("epochs", d.get("epochs")),
                        description=str(d.get("description", "") or ""), factors=dict(d.get("factors") or {}),
                        select=d.get("select"))


def overrides_key(overrides: Iterable[str]) -> str:
    return " ".join(overrides)


def read_table(path: str | Path) -> list[dict]:
    """The rows of a results table (strings as written); [] when it does not exist."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def append_row(path: Path, row: dict) -> None:
    """Append one row as one write (and fsync): a study killed at any moment leaves whole rows only.

    A table written with fewer columns (an older imgcls) is first rewritten with today's header, its
    rows kept (new columns empty), atomically.
    """
    if path.is_file() and path.stat().st_size:
        with path.open(newline="") as f:
            header = next(csv.reader(f), [])
        if header != COLUMNS:
            rows = read_table(path)
            with atomic_path(path) as tmp, tmp.open("w", newline="") as f:
                w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
                w.writeheader()
                w.writerows(rows)
                f.flush()
                os.fsync(f.fileno())
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=COLUMNS, extrasaction="ignore")
    new = not path.is_file() or path.stat().st_size == 0
    if new:
        w.writeheader()
    w.writerow(row)
    with path.open("a", newline="") as f:
        f.write(buf.getvalue())
        f.flush()
        os.fsync(f.fileno())


def _cpu_seconds() -> float:
    """User + system CPU seconds of this process and its finished children (a subprocess run counts when it ends)."""
    import resource

    total = 0.0
    for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN):
        r = resource.getrusage(who)
        total += r.ru_utime + r.ru_stime
    return total


def drop_rows(table: Path, tags: set[str], log: Callable[[str], None]) -> None:
    """Move the rows of runs "VARIANT-sSEED" in `tags` from `table` to dropped.csv beside it (atomically)."""
    rows = read_table(table)
    tag = lambda r: f"{r['variant']}-s{r['seed']}"  # noqa: E731
    unknown = tags - {tag(r) for r in rows}
    if unknown:
        raise ImgclsError(f"rerun: no such run(s) in {table}: {', '.join(sorted(unknown))} (names are VARIANT-sSEED)")
    for r in rows:
        if tag(r) in tags:
            append_row(table.with_name("dropped.csv"), r)
    with atomic_path(table) as tmp, tmp.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=COLUMNS, extrasaction="ignore")
        w.writeheader()
        w.writerows(r for r in rows if tag(r) not in tags)
    log(f"moved {len(tags)} run(s) to {table.with_name('dropped.csv')} to train them again: {', '.join(sorted(tags))}")


def hardware() -> str:
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


# ---------------------------------------------------------------------------------------------------
# Runners: overrides -> a finished run folder


class SubprocessRunner:
    """Each run as `python -m imgcls train OVERRIDES` in a new process, its output in `log`."""

    def __init__(self, python: str = sys.executable):
        self.python = python

    def __call__(self, overrides: list[str], log: Path) -> Path:
        with log.open("w") as f:
            f.write("$ imgcls train " + " ".join(overrides) + "\n")
            f.flush()
            p = subprocess.run([self.python, "-m", "imgcls", "train", *overrides], stdout=f, stderr=subprocess.STDOUT,
                               stdin=subprocess.DEVNULL)
        text = log.read_text(errors="replace")
        if p.returncode != 0:
            tail = "\n".join(text.splitlines()[-15:])
            raise ImgclsError(f"exit code {p.returncode}; the end of {log}:\n{tail}")
        found = re.findall(r"^run folder: (.+)$", text, flags=re.M)
        if not found:
            raise ImgclsError(f"no 'run folder:' line in {log}")
        return Path(found[-1].strip())


# What turns a list of `imgcls train` overrides into plain option-group dicts, one per list (None
# where a list does not compose, its ImgclsError appended to `errors`): the CLI layer hands its
# Hydra-backed `imgcls.cli.compose_many` in, so that this package imports no Hydra.
Compose = Callable[..., list]


def check_variants(spec: AblationSpec, train_overrides: list[str] | None = None, *, compose: Compose) -> None:
    """Compose every variant and build its model (untrained, no data) before hours of runs: a typo fails now.

    `compose(override_lists, errors=list)` is the CLI's `imgcls.cli.compose_many`.

    Catches unknown keys and values (the config schemas) and builder arguments a model does not take.
    """
    from imgcls.config import TRAIN_GROUPS, group_config, model_config
    from imgcls.models.build import build_model

    problems, errors = [], []
    composed = compose([[*spec.base, *spec.budget_overrides(), *v.overrides, *(train_overrides or [])]
                             for v in spec.variants], errors=errors)
    errors.reverse()
    for v, g in zip(spec.variants, composed):
        if g is None:
            problems.append(f"{v.name}: {errors.pop()}")
            continue
        try:
            for key in TRAIN_GROUPS:
                group_config(key, g[key])
            mcfg = model_config(g["model"])
            if not mcfg.pretrained and mcfg.name != "auto":  # auto is chosen from the data when a run starts
                side = g["data"].get("image_size") or 32
                build_model(mcfg, num_classes=2, in_chans=g["data"].get("channels") or 3, image_size=(side, side))
        except (ImgclsError, TypeError, ValueError) as e:
            problems.append(f"{v.name}: {e}")
    if problems:
        raise ImgclsError(f"ablation {spec.name}: {len(problems)} variant(s) do not make a valid run:\n  "
                          + "\n  ".join(problems))


class InProcessRunner:
    """Each run composed by `compose` (the CLI's `imgcls.cli.compose_train`) and trained by `imgcls.train` here.

    A time budget counts from the start of each run (not of the process). Output goes to the
    console; `log` gets the command.
    """

    def __init__(self, compose: Callable[[list[str]], dict]):
        self.compose = compose

    def __call__(self, overrides: list[str], log: Path) -> Path:
        from imgcls.training.run import train

        t0 = time.perf_counter()
        log.write_text("$ imgcls train " + " ".join(overrides) + "\n")
        return train(**self.compose(overrides), budget_from=t0).run_dir


# ---------------------------------------------------------------------------------------------------


def run_record(run_dir: Path) -> dict:
    """Test accuracy, epochs, seconds and throughput of a finished `imgcls train` run folder."""
    metrics_path, profile_path = run_dir / "metrics.json", run_dir / "profile.json"
    if not metrics_path.is_file() or not profile_path.is_file():
        raise ImgclsError(f"{run_dir} has no metrics.json/profile.json: the run did not reach its test evaluation")
    metrics = json.loads(metrics_path.read_text())
    profile = json.loads(profile_path.read_text())
    history = read_table(run_dir / "results.csv")
    summary = metrics.get("summary", {})
    train_s = float(profile.get("training", summary.get("train_seconds", 0.0)))
    images = float(profile.get("images_seen", 0.0))
    n_train = profile.get("train_images")
    if n_train is None and (run_dir / "splits" / "train.txt").is_file():  # runs of an older imgcls
        n_train = sum(1 for _ in (run_dir / "splits" / "train.txt").open())
    # epochs as passes over the training set: a time budget usually ends training inside an epoch
    epochs = round(images / n_train, 2) if images and n_train else len(history)
    return {"test_top1": metrics["top1"], "test_top1_no_tta": metrics.get("top1_no_tta", metrics["top1"]),
            "epochs": epochs, "train_seconds": round(train_s, 2),
            "eval_seconds": summary.get("eval_seconds", profile.get("test_evaluation")),
            "total_seconds": round(float(profile.get("total", 0.0)), 2),
            "images_per_second": round(images / train_s, 1) if train_s > 0 and images else ""}


@dataclass
class AblationResult:
    out_dir: Path
    table: Path
    ran: list[tuple[str, int]]  # (variant, seed) trained by this call
    skipped: list[tuple[str, int]]  # already in the table
    failed: list[tuple[str, int, str]]  # (variant, seed, error): not in the table, retried next time
    pending: list[tuple[str, int]]  # left for a later call (max_runs reached)


def planned_runs(spec: AblationSpec, only: list[str] | None = None) -> list[tuple[Variant, int]]:
    """Every (variant, seed) in the order they run: seed by seed, so a stopped study has whole seeds."""
    variants = [spec.variant(n) for n in only] if only else spec.variants
    return [(v, seed) for seed in range(spec.seeds) for v in variants]


def check_table(spec: AblationSpec, rows: list[dict], table: Path) -> None:
    """Refuse to mix results: a variant whose overrides or budget changed since its rows were written."""
    for r in rows:
        if r.get("study") != spec.name:
            raise ImgclsError(f"{table} holds results of study {r.get('study')!r}, not {spec.name!r}: "
                              f"choose another out= folder")
        try:
            v = spec.variant(r["variant"])
        except ImgclsError:
            continue  # a variant since removed from the file: its rows stay, the report leaves them out
        if r["overrides"] != overrides_key(v.overrides) or r["budget"] != spec.budget:
            raise ImgclsError(
                f"variant {v.name!r} changed since its runs in {table} (table: {r['overrides']!r} at {r['budget']}, "
                f"file: {overrides_key(v.overrides)!r} at {spec.budget}): rename the variant, or move its rows out of "
                f"the table to re-run it")


def run_ablation(spec: AblationSpec | dict, out_dir: str | Path, *, train_overrides: list[str] | None = None,
                 runner: Callable[[list[str], Path], Path] | None = None, max_runs: int | None = None,
                 only: list[str] | None = None, check: bool = False, rerun: list[str] | None = None,
                 log: Callable[[str], None] | None = None, compose: Compose | None = None) -> AblationResult:
    """Train every (variant, seed) of `spec` missing from `out_dir/results.csv`, appending a row per finished run.

    `train_overrides` go to every run (e.g. `data.root=DIR`); `max_runs` stops after that many
    runs (the rest stay pending); `only` restricts to some variants; `check` composes every variant and
    builds its model first (`check_variants`, with `compose`: the CLI's `imgcls.cli.compose_many`), so a
    typo fails before the first run; `rerun` lists runs
    ("VARIANT-sSEED", e.g. ones the report says shared the machine) whose rows move from results.csv
    to dropped.csv (kept, not deleted) so that they are trained again. Writes `study.yaml` (the spec),
    `curves/<variant>-s<seed>.csv` (per-epoch training curve) and `logs/`; the run folders go to
    `out_dir/runs`.
    """
    spec = spec if isinstance(spec, AblationSpec) else spec_from_dict(spec)
    log = log or (lambda msg: print(msg, flush=True))  # flushed: a study's log is usually a file being watched
    out_dir = Path(out_dir)
    for sub in ("curves", "logs", "runs"):
        (out_dir / sub).mkdir(parents=True, exist_ok=True)
    table = out_dir / "results.csv"
    if rerun:
        drop_rows(table, set(rerun), log)
    rows = read_table(table)
    check_table(spec, rows, table)
    if check:
        if compose is None:
            raise ImgclsError("check=True needs compose= (imgcls.cli.compose_many) to compose the variants")
        check_variants(spec, train_overrides, compose=compose)
    (out_dir / "study.yaml").write_text(yaml.safe_dump(spec.to_dict(), sort_keys=False))
    done = {(r["variant"], int(r["seed"])) for r in rows}
    runner = runner or SubprocessRunner()
    plan = planned_runs(spec, only)
    todo = [(v, s) for v, s in plan if (v.name, s) not in done]
    result = AblationResult(out_dir, table, [], [(v.name, s) for v, s in plan if (v.name, s) in done], [], [])
    log(f"ablation {spec.name}: {len(plan)} runs ({len(plan) // spec.seeds} variants x {spec.seeds} seeds, "
        f"{spec.budget} each), {len(result.skipped)} already in {table}, {len(todo)} to run")
    hw = hardware()
    import torch

    batch = max(1, int(getattr(runner, "parallel", 1))) if hasattr(runner, "run_batch") else 1
    if batch > 1 or hasattr(runner, "run_batch"):
        log(f"runs go through {runner.describe() if hasattr(runner, 'describe') else type(runner).__name__}")
    i = 0
    while i < len(todo):
        if max_runs is not None and len(result.ran) + len(result.failed) >= max_runs:
            result.pending = [(w.name, s) for w, s in todo[i:]]
            log(f"stopping after {max_runs} runs; {len(result.pending)} left for the next call")
            break
        n = min(batch, len(todo) - i, max_runs - len(result.ran) - len(result.failed) if max_runs is not None else batch)
        chunk = todo[i:i + n]
        jobs = []
        for k, (v, seed) in enumerate(chunk):
            tag = f"{v.name}-s{seed}"
            overrides = [*spec.base, *spec.budget_overrides(), *v.overrides, *(train_overrides or []),
                         f"trainer.seed={seed}", f"trainer.project={out_dir / 'runs'}", f"trainer.name={tag}",
                         "trainer.progress=false"]
            log(f"[{i + k + 1}/{len(todo)}] {tag}: {overrides_key(v.overrides) or '(base recipe)'}")
            jobs.append((overrides, out_dir / "logs" / f"{tag}.log"))
        t0 = time.perf_counter()
        cpu0 = _cpu_seconds()
        if hasattr(runner, "run_batch"):
            outcomes = runner.run_batch(jobs)
        else:
            outcomes = []
            for overrides, log_file in jobs:
                try:
                    outcomes.append(runner(overrides, log_file))
                except Exception as e:  # noqa: BLE001 - one failed run is logged and retried later; the study goes on
                    outcomes.append(e)
        wall = time.perf_counter() - t0
        # CPU time and load belong to a run only when it ran alone in a child of this process (not through a launcher,
        # whose workers are not this process's children and may be other machines)
        alone = not hasattr(runner, "run_batch")
        cpu = round(_cpu_seconds() - cpu0, 2) if alone else ""
        for (v, seed), outcome in zip(chunk, outcomes):
            _record(spec, out_dir, table, v, seed, outcome, wall=wall, cpu=cpu, alone=alone, hw=hw,
                    torch_version=torch.__version__, result=result, log=log)
        i += len(chunk)
    return result


def _record(spec: AblationSpec, out_dir: Path, table: Path, v: Variant, seed: int, outcome, *, wall: float, cpu, alone: bool,
            hw: str, torch_version: str, result: AblationResult, log: Callable[[str], None]) -> None:
    """A finished run's row into results.csv (and its curve), or the failure into `result.failed`."""
    tag = f"{v.name}-s{seed}"
    try:
        if isinstance(outcome, BaseException):
            raise outcome
        run_dir = Path(outcome)
        rec = run_record(run_dir)
        curve = Path("curves") / f"{tag}.csv"
        shutil.copyfile(run_dir / "results.csv", out_dir / curve)
    except Exception as e:  # noqa: BLE001 - one failed run is logged and retried later; the study goes on
        msg = str(e) if isinstance(e, ImgclsError) else f"{type(e).__name__}: {e}"
        result.failed.append((v.name, seed, msg))
        log(f"  {tag} FAILED ({wall:.0f}s): {msg}")
        return
    row = {"study": spec.name, "variant": v.name, "factor": v.factor, "overrides": overrides_key(v.overrides),
           "budget": spec.budget, "seed": seed, **rec, "curve": curve.as_posix(), "run_dir": str(run_dir),
           "hardware": hw, "torch": torch_version,
           # through a launcher the load is not the run's: left empty so that the report does not flag it as disturbed
           "load_average": round(os.getloadavg()[0], 2) if alone and hasattr(os, "getloadavg") else "",
           "finished_at": time.strftime("%Y-%m-%d %H:%M:%S"),
           # CPU time the run got: with the wall time, shows whether other work shared the machine
           "wall_seconds": round(wall, 2), "cpu_seconds": cpu}
    append_row(table, row)
    result.ran.append((v.name, seed))
    log(f"  {tag}: test top-1 {rec['test_top1']:.2%} in {rec['epochs']} epochs, {rec['train_seconds']:.0f}s training "
        f"({wall:.0f}s wall)")
