"""The ablation report: from a results table to report.md, report.html and one plot per factor.

Per variant: test accuracy mean ± std over seeds, its difference to the base recipe with a 95%
confidence interval (Welch's t interval: the two groups may differ in spread), epochs reached,
training seconds and throughput. Per factor: a table, a plot of accuracy (every seed a dot) and
throughput, and the mean training-loss curves against training time. For the whole study: an
accuracy-vs-time scatter of every variant.
"""

from __future__ import annotations

import html
import math
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from matplotlib.figure import Figure

from imgcls.ablation.run import BASE, AblationSpec, read_table, spec_from_dict
from imgcls.errors import ImgclsError
from imgcls.evaluation.plots import save_figure

# A run whose 1-minute load average ended above this many times the core count shared the machine
# (a training run keeps every core busy on its own: ~1x); the report names such runs.
BUSY_LOAD = 1.15


@dataclass
class VariantStats:
    name: str
    factor: str
    overrides: str
    n: int
    accs: list[float]  # test top-1 per seed, in %
    mean: float
    std: float  # sample standard deviation (n - 1); 0 for a single seed
    epochs: float
    train_seconds: float
    total_seconds: float
    images_per_second: float
    diff: float | None = None  # mean - base mean, percentage points
    ci: tuple[float, float] | None = None  # 95% interval of that difference; None when either has < 2 seeds
    note: str = ""
    curves: list[str] = field(default_factory=list)
    accs_no_tta: list[float] = field(default_factory=list)  # the same runs' single-view test top-1, in %
    eval_seconds: float = math.nan

    @property
    def tta_gains(self) -> list[float]:
        """Per seed: test top-1 with test-time augmentation minus without it, on the same weights (points)."""
        return [a - b for a, b in zip(self.accs, self.accs_no_tta) if not math.isnan(b)]

    @property
    def uses_tta(self) -> bool:
        return any(abs(g) > 1e-9 for g in self.tta_gains)

    @property
    def seconds_per_epoch(self) -> float:
        return self.train_seconds / self.epochs if self.epochs else math.nan


TIME_BUDGET_NOTE = " s of wall time from process start to test metrics (trainer.time_budget: the schedule follows the clock)"

def _mean(xs: list[float]) -> float:
    return statistics.fmean(xs) if xs else math.nan


def welch_ci(a: list[float], b: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of mean(a) - mean(b) by Welch's t (unequal variances); None below 2 samples each."""
    from scipy import stats

    if len(a) < 2 or len(b) < 2:
        return None
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    d = statistics.fmean(a) - statistics.fmean(b)
    se = math.sqrt(va + vb)
    if se == 0:
        return (d, d)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    t = float(stats.t.ppf(0.5 + level / 2, df))
    return (d - t * se, d + t * se)


def paired_ci(diffs: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Confidence interval of the mean of paired differences (Student's t, n - 1 df); None below 2 pairs."""
    from scipy import stats

    if len(diffs) < 2:
        return None
    d, half = statistics.fmean(diffs), 0.0
    sd = statistics.stdev(diffs)
    if sd > 0:
        half = float(stats.t.ppf(0.5 + level / 2, len(diffs) - 1)) * sd / math.sqrt(len(diffs))
    return (d - half, d + half)


def _float(value, default: float = math.nan) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return default


def variant_stats(rows: list[dict], spec: AblationSpec | None = None) -> list[VariantStats]:
    """One VariantStats per variant in the table (in the spec's order when given), with differences to the base."""
    by: dict[str, list[dict]] = {}
    for r in rows:
        by.setdefault(r["variant"], []).append(r)
    names = [v.name for v in spec.variants if v.name in by] if spec else list(by)
    notes = {v.name: v.note for v in spec.variants} if spec else {}
    out = []
    for name in names:
        rs = sorted(by[name], key=lambda r: int(r["seed"]))
        accs = [100 * float(r["test_top1"]) for r in rs]
        out.append(VariantStats(
            name=name, factor=rs[0]["factor"], overrides=rs[0]["overrides"], n=len(rs), accs=accs, mean=_mean(accs),
            std=statistics.stdev(accs) if len(accs) > 1 else 0.0,
            epochs=_mean([_float(r["epochs"]) for r in rs]), train_seconds=_mean([_float(r["train_seconds"]) for r in rs]),
            total_seconds=_mean([_float(r["total_seconds"]) for r in rs]),
            images_per_second=_mean([_float(r["images_per_second"]) for r in rs]), note=notes.get(name, ""),
            curves=[r["curve"] for r in rs if r.get("curve")],
            accs_no_tta=[100 * _float(r.get("test_top1_no_tta")) for r in rs],
            eval_seconds=_mean([_float(r.get("eval_seconds")) for r in rs])))
    base = next((s for s in out if s.name == BASE), None)
    if base is not None:
        for s in out:
            if s is not base:
                s.diff = s.mean - base.mean
                s.ci = welch_ci(s.accs, base.accs)
    return out


def factors_of(stats: list[VariantStats]) -> list[str]:
    seen: list[str] = []
    for s in stats:
        if s.factor != BASE and s.factor not in seen:
            seen.append(s.factor)
    return seen


# ---------------------------------------------------------------------------------------------------
# Tables


def fmt_acc(s: VariantStats) -> str:
    return f"{s.mean:.2f} ± {s.std:.2f}" if s.n > 1 else f"{s.mean:.2f}"


def fmt_diff(s: VariantStats) -> str:
    if s.diff is None:
        return "—"
    ci = f" [{s.ci[0]:+.2f}, {s.ci[1]:+.2f}]" if s.ci else " (CI needs ≥ 2 seeds each)"
    return f"{s.diff:+.2f}{ci}"


def verdict(s: VariantStats) -> str:
    """'better' / 'worse' when the 95% interval excludes 0, else 'no clear difference'."""
    if s.ci is None:
        return ""
    if s.ci[0] > 0:
        return "better"
    if s.ci[1] < 0:
        return "worse"
    return "no clear difference"


TABLE_HEAD = ["variant", "overrides", "seeds", "test top-1 % (mean ± std)", "Δ vs base, points [95% CI]", "",
              "epochs", "train s", "s / epoch", "img/s"]


def table_rows(stats: list[VariantStats]) -> list[list[str]]:
    return [[s.name, f"`{s.overrides}`" if s.overrides else "(base recipe)", str(s.n), fmt_acc(s), fmt_diff(s),
             verdict(s), f"{s.epochs:.1f}", f"{s.train_seconds:.0f}", f"{s.seconds_per_epoch:.1f}",
             f"{s.images_per_second:.0f}" if not math.isnan(s.images_per_second) else "—"] for s in stats]


TTA_HEAD = ["variant", "seeds", "without TTA %", "with TTA %", "gain, points [95% CI, paired]", "eval s"]


def tta_rows(stats: list[VariantStats]) -> list[list[str]]:
    """One row per variant evaluated with test-time augmentation: its gain over the same weights' single view."""
    out = []
    for s in stats:
        if not s.uses_tta:
            continue
        pairs = [(a, b) for a, b in zip(s.accs, s.accs_no_tta) if not math.isnan(b)]
        gains = s.tta_gains
        ci = paired_ci(gains)
        out.append([s.name, str(len(gains)), f"{_mean([b for _, b in pairs]):.2f}", f"{_mean([a for a, _ in pairs]):.2f}",
                    f"{_mean(gains):+.2f}" + (f" [{ci[0]:+.2f}, {ci[1]:+.2f}]" if ci else ""),
                    f"{s.eval_seconds:.1f}" if not math.isnan(s.eval_seconds) else "—"])
    return out


def markdown_table(head: list[str], rows: list[list[str]]) -> str:
    esc = [[c.replace("|", "\\|") for c in r] for r in rows]
    return "\n".join(["| " + " | ".join(head) + " |", "|" + "---|" * len(head), *("| " + " | ".join(r) + " |" for r in esc)])


# ---------------------------------------------------------------------------------------------------
# Plots


def _curve(path: Path) -> tuple[np.ndarray, np.ndarray] | None:
    rows = read_table(path)
    if not rows:
        return None
    secs = np.cumsum([_float(r.get("seconds"), 0.0) for r in rows])
    loss = np.array([_float(r.get("train_loss")) for r in rows])
    return secs, loss


def plot_factor(factor: str, stats: list[VariantStats], path: Path) -> Path:
    """Accuracy of each variant (mean ± std, every seed a dot) and its training throughput."""
    fig = Figure(figsize=(9, 0.5 * len(stats) + 1.4))
    ax, ax2 = fig.subplots(1, 2, sharey=True, gridspec_kw={"width_ratios": [3, 2]})
    y = np.arange(len(stats))[::-1]
    for yi, s in zip(y, stats):
        color = "tab:gray" if s.name == BASE else "tab:blue"
        ax.errorbar(s.mean, yi, xerr=s.std, fmt="o", color=color, capsize=3)
        ax.scatter(s.accs, [yi] * len(s.accs), s=12, color=color, alpha=0.5)
        ax2.barh(yi, s.images_per_second if not math.isnan(s.images_per_second) else 0, color=color, alpha=0.7)
    ax.set_yticks(y, [s.name for s in stats])
    ax.set_xlabel("test top-1 (%)")
    ax.set_title(f"{factor}: accuracy (mean ± std, dots = seeds)")
    ax.grid(axis="x", alpha=0.3)
    ax2.set_xlabel("training images / s")
    ax2.set_title("throughput")
    fig.tight_layout()
    return save_figure(fig, path)


def plot_curves(factor: str, stats: list[VariantStats], study_dir: Path, path: Path) -> Path | None:
    """Training loss against training time, the mean over seeds per epoch, one line per variant."""
    fig = Figure(figsize=(6.5, 4))
    ax = fig.subplots()
    drawn = 0
    for s in stats:
        curves = [c for c in (_curve(study_dir / p) for p in s.curves) if c is not None]
        if not curves:
            continue
        n = min(len(c[0]) for c in curves)
        secs = np.mean([c[0][:n] for c in curves], axis=0)
        loss = np.mean([c[1][:n] for c in curves], axis=0)
        ax.plot(secs, loss, marker="o", ms=3, label=s.name, color="black" if s.name == BASE else None,
                linestyle="--" if s.name == BASE else "-")
        drawn += 1
    if not drawn:
        return None
    ax.set_xlabel("training seconds")
    ax.set_ylabel("training loss (epoch mean)")
    ax.set_title(f"{factor}: learning curves")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return save_figure(fig, path)


ZOOM_POINTS = 5.0  # the scatter's second panel shows the variants within this many points of the best


def plot_scatter(stats: list[VariantStats], path: Path, x_key: str) -> Path:
    """Accuracy against time for every variant, coloured by factor (error bars: std over seeds).

    When some variants are far behind the best, a second panel zooms in on those within ZOOM_POINTS of
    it, where the leading variants crowd together and their labels would overlap.
    """
    factors = [BASE, *factors_of(stats)]
    cmap = {f: c for f, c in zip(factors, ["black", *[f"C{i}" for i in range(10)] * 3])}
    best = max(s.mean for s in stats)
    near = [s for s in stats if s.mean >= best - ZOOM_POINTS]
    panels = [(stats, "every variant", True)] + ([(near, f"within {ZOOM_POINTS:g} points of the best", False)]
                                                 if len(near) < len(stats) and len(near) > 1 else [])
    fig = Figure(figsize=(8 if len(panels) == 1 else 14, 5.5))
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (group, title, log_x) in zip(axes, panels):
        for s in group:
            x = s.seconds_per_epoch if x_key == "seconds_per_epoch" else s.train_seconds
            ax.errorbar(x, s.mean, yerr=s.std, fmt="o", color=cmap[s.factor], capsize=2, ms=5)
            ax.annotate(s.name, (x, s.mean), fontsize=6 if log_x else 7, xytext=(3, 3), textcoords="offset points")
        if log_x:
            ax.set_xscale("log")
        ax.set_xlabel(("training seconds per epoch" if x_key == "seconds_per_epoch" else "training seconds")
                      + (" (log)" if log_x else ""))
        ax.set_ylabel("test top-1 (%)")
        ax.set_title(f"{title}: accuracy against time")
        ax.grid(alpha=0.3)
    for f in factors:
        axes[0].scatter([], [], color=cmap[f], label=f)
    axes[0].legend(fontsize=7, loc="best")
    fig.tight_layout()
    return save_figure(fig, path)


# ---------------------------------------------------------------------------------------------------


def _slug(text: str) -> str:
    return "".join(c if c.isalnum() else "_" for c in text.lower()).strip("_")


HTML_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;line-height:1.45}}
table{{border-collapse:collapse;font-size:0.85em;margin:1em 0}}td,th{{border:1px solid #ccc;padding:3px 6px}}
th{{background:#f3f3f3}}img{{max-width:100%}}code{{background:#f5f5f5;padding:0 2px}}</style></head>
<body>
{body}
</body></html>
"""


@dataclass
class Report:
    markdown: Path
    html: Path
    figures: list[Path]
    stats: list[VariantStats]


def make_report(study_dir: str | Path, *, out_dir: str | Path | None = None, name: str = "report",
                notes: str | Path | None = None, title: str | None = None, command: str | None = None) -> Report:
    """Write `<out_dir>/<name>.md`, `<name>.html` and figures (in `<out_dir>/images/<name>/`) from a study folder.

    `study_dir` holds results.csv (and study.yaml, written by `run_ablation`); `notes` is a
    markdown file inserted after the header (a written analysis); `command` is quoted as the way the
    table was produced.
    """
    study_dir = Path(study_dir)
    table = study_dir / "results.csv"
    rows = read_table(table)
    if not rows:
        raise ImgclsError(f"no results in {table}: run `imgcls ablate` first (it writes that table)")
    spec_path = study_dir / "study.yaml"
    spec = spec_from_dict(yaml.safe_load(spec_path.read_text())) if spec_path.is_file() else None
    if spec is not None:  # rows of variants no longer in the study file are left out
        keep = {v.name for v in spec.variants}
        rows = [r for r in rows if r["variant"] in keep]
        if not rows:
            raise ImgclsError(f"none of the rows of {table} belongs to a variant of {spec_path}: nothing to report")
    stats = variant_stats(rows, spec)
    out_dir = Path(out_dir) if out_dir is not None else study_dir
    fig_dir = out_dir / "images" / name
    study = spec.name if spec else rows[0]["study"]
    title = title or f"Ablation study: {study}"
    notes_text = Path(notes).read_text() if notes else ""
    budget = rows[0]["budget"]
    by_time = budget.endswith("s")
    hardware = sorted({r["hardware"] for r in rows})
    seeds = sorted({int(r["seed"]) for r in rows})
    dates = sorted(r["finished_at"] for r in rows)
    loaded = busy_runs(rows)

    md = [f"# {title}", ""]
    if spec and spec.description:
        md += [spec.description.strip(), ""]
    md += [f"- **Base recipe**: `imgcls train {' '.join(spec.base) if spec else '?'}`; every other variant changes "
           f"one design choice of it (its overrides below).",
           f"- **Budget per run**: {budget[:-1] + TIME_BUDGET_NOTE if by_time else budget[:-2] + ' epochs'}.",
           f"- **Seeds**: {len(seeds)} ({', '.join(map(str, seeds))}); {len(rows)} runs; test accuracy on the full test split, "
           f"differences with Welch's 95% confidence interval (\"better\"/\"worse\" when it excludes 0).",
           f"- **Hardware**: {'; '.join(hardware)}; torch {rows[0]['torch']}; runs finished {dates[0]} – {dates[-1]}.",
           f"- **Reproduce**: {command or f'`imgcls ablate ablation={study}` then `imgcls report study=DIR`'}."]
    if spec is not None:
        planned = len(spec.variants) * spec.seeds
        if len(rows) < planned:
            missing = [v.name for v in spec.variants if v.name not in {st.name for st in stats}]
            short = [st.name for st in stats if st.n < spec.seeds]
            md.append(f"- **Partial**: {len(rows)} of the {planned} planned runs ({len(spec.variants)} variants x "
                      f"{spec.seeds} seeds)" + (f"; not run yet: {', '.join(missing)}" if missing else "")
                      + (f"; fewer than {spec.seeds} seeds: {', '.join(short)}" if short else "") + ".")
    if loaded:
        md.append(f"- **Shared machine**: {len(loaded)} run(s) got less CPU than the others (under {BUSY_SHARE:.0%} of the "
                  f"study's median CPU time per wall second) or ended with the 1-minute load average above {BUSY_LOAD}x "
                  f"the cores, so other work slowed them: {', '.join(loaded)}.")
    md.append("")
    if notes_text:
        md += [notes_text.strip(), ""]

    figures: list[Path] = []
    md += ["## All variants, best first", "",
           markdown_table(["factor", *TABLE_HEAD], [[s.factor, *r] for s, r in
                                                    sorted(zip(stats, table_rows(stats)), key=lambda t: -t[0].mean)]), ""]
    scatter = plot_scatter(stats, fig_dir / "scatter.png", "seconds_per_epoch" if by_time else "train_seconds")
    figures.append(scatter)
    md += ["## Accuracy against time", "",
           ("Every run had the same wall-time budget, so a variant's cost shows as fewer epochs in it: the x axis is "
            "the training time one epoch of that variant takes." if by_time else
            "Every run had the same number of epochs: the x axis is the training time that took."), "",
           f"![accuracy against time]({scatter.relative_to(out_dir).as_posix()})", ""]

    base = [s for s in stats if s.name == BASE]
    for factor in factors_of(stats):
        group = base + [s for s in stats if s.factor == factor]
        md += [f"## {factor}", ""]
        if spec and factor in spec.factors:
            md += [f"Base recipe: {spec.factors[factor]}.", ""]
        md += [markdown_table(TABLE_HEAD, table_rows(group)), ""]
        tta = tta_rows(group)
        if tta:
            md += ["Test-time augmentation changes only how the trained weights are scored: each of these runs was "
                   "also scored with a single view, so its gain is measured on the same weights, seed by seed (a "
                   "paired interval, free of the training noise that the Δ column above carries).", "",
                   markdown_table(TTA_HEAD, tta + [  # the base's single view, for its evaluation time
                       [b.name, str(b.n), f"{b.mean:.2f}", "—", "—", f"{b.eval_seconds:.1f}"]
                       for b in base if not b.uses_tta and not math.isnan(b.eval_seconds)]), ""]
        noted = [s for s in group if s.note]
        if noted:
            md += [*(f"- **{s.name}**: {s.note}" for s in noted), ""]
        f1 = plot_factor(factor, group, fig_dir / f"factor_{_slug(factor)}.png")
        figures.append(f1)
        md += [f"![{factor}: accuracy]({f1.relative_to(out_dir).as_posix()})", ""]
        f2 = plot_curves(factor, group, study_dir, fig_dir / f"curves_{_slug(factor)}.png")
        if f2 is not None:
            figures.append(f2)
            md += [f"![{factor}: learning curves]({f2.relative_to(out_dir).as_posix()})", ""]
    md += [f"<sub>Generated by `imgcls report` from {len(rows)} rows of results.csv on {time.strftime('%Y-%m-%d')}.</sub>", ""]

    out_dir.mkdir(parents=True, exist_ok=True)
    md_path, html_path = out_dir / f"{name}.md", out_dir / f"{name}.html"
    text = "\n".join(md)
    md_path.write_text(text)
    import markdown

    html_path.write_text(HTML_PAGE.format(title=html.escape(title),
                                          body=markdown.markdown(text, extensions=["tables", "fenced_code"])))
    return Report(markdown=md_path, html=html_path, figures=figures, stats=stats)


BUSY_SHARE = 0.85  # a run with less CPU per wall second than this share of the study's median shared the machine


def busy_runs(rows: list[dict]) -> list[str]:
    """"variant-sSEED" of the runs that other work on the machine slowed down (see BUSY_SHARE, BUSY_LOAD)."""
    shares = {}
    for r in rows:
        wall, cpu = _float(r.get("wall_seconds")), _float(r.get("cpu_seconds"))
        if wall > 0 and cpu > 0:
            shares[id(r)] = cpu / wall
    median = statistics.median(shares.values()) if shares else None
    out = []
    for r in rows:
        share = shares.get(id(r))
        low_cpu = share is not None and median is not None and share < BUSY_SHARE * median
        high_load = _float(r.get("load_average"), 0.0) > BUSY_LOAD * _cpu_count_of(r["hardware"])
        if low_cpu or high_load:
            out.append(f"{r['variant']}-s{r['seed']}")
    return out


def _cpu_count_of(hw: str) -> int:
    try:
        return int(hw.rsplit(",", 1)[1].split()[0])
    except (IndexError, ValueError):
        return 1
