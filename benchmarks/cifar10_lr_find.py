"""The learning-rate range test for every family of the CIFAR-10 learning-rate sweep, beside the sweep's result.

    python benchmarks/cifar10_lr_find.py            # needs IMGCLS_DATA (cifar10/{train,test}/<class>/*.png)

conf/ablation/cifar10_lr.yaml sweeps three or more rates per optimizer or backbone ("factor" there).
This runs `imgcls lr-find` once per family (its first variant's overrides, without optim.lr) over a
wide ramp, and writes benchmarks/results/ablation/cifar10_lr/lr_find.md: the range test's suggestion
(fastai's valley rule), the rate of its lowest smoothed loss, and, when the sweep has rows, the sweep's
best rate and accuracy; each family's curve is kept in lr_find/<family>/ (lr_find.csv, lr_find.png).
"""

from __future__ import annotations

import argparse
import csv
import os
import subprocess
import sys
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cifar10_speed import cpu_name  # noqa: E402
from imgcls.ablation.run import read_table  # noqa: E402
from imgcls.explain.lr_find import valley  # noqa: E402

STUDY = ROOT / "imgcls" / "conf" / "ablation" / "cifar10_lr.yaml"
OUT = ROOT / "benchmarks" / "results" / "ablation" / "cifar10_lr"


def families(spec: dict) -> dict[str, dict]:
    """factor -> {overrides without optim.lr, swept rates}, in the file's order."""
    out: dict[str, dict] = {}
    for v in spec["variants"]:
        lr = [o for o in v["overrides"] if o.startswith("optim.lr=")]
        rest = [o for o in v["overrides"] if not o.startswith("optim.lr=")]
        fam = out.setdefault(v["factor"], {"overrides": rest, "rates": {}})
        fam["rates"][v["name"]] = float(lr[0].split("=", 1)[1])
    return out


def sweep_best(rates: dict[str, float]) -> tuple[float, float] | None:
    acc = {r["variant"]: float(r["test_top1"]) for r in read_table(OUT / "results.csv") if r["variant"] in rates}
    if not acc:
        return None
    best = max(acc, key=acc.get)
    return rates[best], acc[best]


def lowest(csv_path: Path) -> float:
    with open(csv_path, newline="") as f:
        rows = [(float(r["lr"]), float(r["smoothed_loss"])) for r in csv.DictReader(f)]
    return min(rows, key=lambda r: r[1])[0]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=100)
    ap.add_argument("--only", nargs="*", help="families (factor names) to run; default all")
    ap.add_argument("--table-only", action="store_true", help="rewrite lr_find.md from the curves already there")
    args = ap.parse_args()
    if not os.environ.get("IMGCLS_DATA"):
        raise SystemExit("set IMGCLS_DATA to the folder holding cifar10/")
    spec = yaml.safe_load(STUDY.read_text())
    fams = families(spec)
    seconds: dict[str, float] = {}
    for name, fam in fams.items():
        if args.table_only or (args.only and name not in args.only):
            continue
        folder = OUT / "lr_find" / name.replace(" + ", "_").replace(" ", "_")
        lo = min(fam["rates"].values())
        # a ramp from 1/10,000 of the smallest swept rate to 1,000x it: the whole descent and the blow-up
        cmd = [sys.executable, "-m", "imgcls", "lr-find", *spec["base"], *fam["overrides"],
               f"start_lr={lo / 1e4:g}", f"end_lr={lo * 1e3:g}", f"steps={args.steps}", f"out={folder.relative_to(ROOT)}",
               "trainer.progress=false"]
        t = time.perf_counter()
        p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
        seconds[name] = time.perf_counter() - t
        if p.returncode:
            raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        (folder / "command.txt").write_text("imgcls " + " ".join(cmd[3:]) + "\n")
        print(name, p.stdout.strip().splitlines()[0], f"({seconds[name]:.0f}s)", flush=True)

    lines = ["| family | range test ramp | valley suggestion | lowest smoothed loss at | swept rates | "
             "best swept rate | its test top-1 % |", "|---|---|---|---|---|---|---|"]
    for name, fam in fams.items():
        folder = OUT / "lr_find" / name.replace(" + ", "_").replace(" ", "_")
        if not (folder / "lr_find.csv").is_file():
            continue
        with open(folder / "lr_find.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        lrs, losses = [float(r["lr"]) for r in rows], [float(r["smoothed_loss"]) for r in rows]
        best = sweep_best(fam["rates"])
        swept = ", ".join(f"{r:g}" for r in sorted(fam["rates"].values()))
        lines.append(f"| {name} | {lrs[0]:.2g} – {lrs[-1]:.2g} ({len(rows)} steps) | {lrs[valley(lrs, losses)]:.3g} | "
                     f"{lowest(folder / 'lr_find.csv'):.3g} | {swept} | "
                     + (f"{best[0]:g} | {100 * best[1]:.2f} |" if best else "— | — |"))
    text = ("<!-- written by benchmarks/cifar10_lr_find.py -->\n## How the rates were chosen\n\n"
            "Each family's range test (`imgcls lr-find`) against the sweep's rates and results; "
            "docs/cifar10_analysis.md compares the two.\n"
            f"Range tests: `python benchmarks/cifar10_lr_find.py` ({cpu_name()}; one run per family, "
            "its first 100 training batches; each family's curve and command are in "
            f"{OUT.relative_to(ROOT).as_posix()}/lr_find/). Sweep: "
            "`imgcls ablate ablation=cifar10_lr` (3 epochs, seed 0).\n\n" + "\n".join(lines) + "\n")
    (OUT / "lr_find.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
