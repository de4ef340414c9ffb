"""Run a CIFAR-10 recipe for n seeds; append each seed's result to a JSON file as it finishes.

    python benchmarks/cifar10_speed.py --experiment cifar10_fast --seeds 0 1 2
    python benchmarks/cifar10_speed.py --experiment cifar10_cpu10 --seeds 0 1 2 -- trainer.time_budget=600

Each seed runs in its own process (`imgcls train`), so "wall seconds" is the whole job from process
start: imports, data loading (decode cache warm), whitening, training and the test evaluation with
TTA. Seeds already in the JSON file for the same experiment and overrides are skipped, so a study
can be continued later. The script prints, and writes next to the JSON, a markdown table with
mean, std and min over the seeds. Needs IMGCLS_DATA (or data.root=...) to point at the data.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

WORKER = r"""
import json, resource, sys, time, yaml
from imgcls.cli import compose_train
groups = compose_train([a for a in sys.argv[1:] if a != "--warm"])
if "--warm" in sys.argv:  # decode the data set into the cache only, so that no timed seed pays for it
    from imgcls.config import DataConfig, coerce
    from imgcls.data import load_data
    load_data(coerce(DataConfig, groups["data"], "data"))
    sys.exit(0)
import imgcls
r = imgcls.train(**groups)
s = r.metrics["summary"]
print("RESULT " + json.dumps({
    "test_acc": r.metrics["top1"], "test_acc_no_tta": s.get("test_top1_no_tta", r.metrics["top1"]),
    "val_acc": s.get("best_val_acc"), "model": yaml.safe_load((r.run_dir / "config.yaml").read_text())["model"],
    "train_seconds": r.train_seconds, "eval_seconds": s["eval_seconds"], "run_seconds": s["total_seconds"],
    "epochs": len(r.history), "images_per_second": r.images_seen / r.train_seconds,
    "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "run_dir": str(r.run_dir),
    "profile": json.loads((r.run_dir / "profile.json").read_text())}))
"""


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def cpu_flags() -> str:
    """The CPU with the flags that decide its speed, and any instruction-set limit set for an emulation run."""
    from imgcls.device import cpu_info

    limits = [f"{k}={os.environ[k]}" for k in ("ONEDNN_MAX_CPU_ISA", "ATEN_CPU_CAPABILITY") if os.environ.get(k)]
    return cpu_info().describe() + (f" [limited: {', '.join(limits)}]" if limits else "")


def run_seed(experiment: str, seed: int, overrides: list[str], project: str) -> dict:
    args = [f"experiment={experiment}", f"trainer.seed={seed}", "trainer.progress=false",
            f"trainer.project={project}", f"trainer.name={experiment}-seed{seed}", *overrides]
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-c", WORKER, *args], capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"seed {seed} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1]
    r = json.loads(line[7:])
    r["epochs_seen"] = r["profile"]["images_seen"] / r["profile"]["train_images"]  # fractional: a budget stops mid-epoch
    chosen = ("recipe:", "sized", "trainer.cpu_bf16", "model=auto")  # what the run measured and chose
    return {**r, "wall_seconds": wall, "first_lines": [ln for ln in p.stdout.splitlines() if ln.startswith(chosen)]}


def warm_cache(experiment: str, overrides: list[str]) -> None:
    p = subprocess.run([sys.executable, "-c", WORKER, f"experiment={experiment}", *overrides, "--warm"],
                       capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"loading the data failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")


def summarize(rows: list[dict]) -> str:
    cols = [("test_acc", "test acc (TTA)", 100, "{:.2f}"), ("test_acc_no_tta", "test acc (no TTA)", 100, "{:.2f}"),
            ("train_seconds", "train s", 1, "{:.0f}"), ("wall_seconds", "wall s", 1, "{:.0f}"),
            ("images_per_second", "img/s", 1, "{:.0f}"), ("peak_rss_mb", "peak RSS MB", 1, "{:.0f}")]
    out = ["| | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, fn in (("mean", statistics.mean), ("std", lambda v: statistics.stdev(v) if len(v) > 1 else 0.0),
                     ("min", min), ("max", max)):
        out.append(f"| {name} | " + " | ".join(fmt.format(fn([r[k] * scale for r in rows])) for k, _, scale, fmt in cols) + " |")
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--experiment", default="cifar10_fast")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--out", default=None, help="JSON file (default benchmarks/results/<experiment>.json)")
    ap.add_argument("--project", default="runs/bench", help="parent folder of the run folders")
    ap.add_argument("overrides", nargs="*", help="extra key=value overrides (after --)")
    a = ap.parse_args()
    out = Path(a.out or Path(__file__).parent / "results" / f"{a.experiment}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = json.loads(out.read_text()) if out.exists() else []
    key = {"experiment": a.experiment, "overrides": a.overrides}
    warm_cache(a.experiment, a.overrides)  # "data already cached": decoding is not part of a recipe's time
    for seed in a.seeds:
        if any(r["experiment"] == a.experiment and r["overrides"] == a.overrides and r["seed"] == seed for r in rows):
            print(f"seed {seed}: already in {out}, skipped")
            continue
        r = {**key, "seed": seed, **run_seed(a.experiment, seed, a.overrides, a.project),
             "hardware": f"{cpu_name()}, {os.cpu_count()} cores", "cpu": cpu_flags(), "torch_threads": os.cpu_count(),
             "date": time.strftime("%Y-%m-%d")}
        rows.append(r)
        out.write_text(json.dumps(rows, indent=2))  # after every seed: a stopped study keeps what it finished
        print(f"seed {seed}: test acc {r['test_acc']:.2%} (no TTA {r['test_acc_no_tta']:.2%}), "
              f"train {r['train_seconds']:.0f}s, wall {r['wall_seconds']:.0f}s", flush=True)
    mine = [r for r in rows if r["experiment"] == a.experiment and r["overrides"] == a.overrides]
    if mine:
        table = (f"`{a.experiment}` {' '.join(a.overrides)} — {len(mine)} seeds on {mine[0]['hardware']}\n\n"
                 + summarize(mine))
        print(table)
        out.with_suffix(".md").write_text(table + "\n")


if __name__ == "__main__":
    main()
