"""How long the command line takes to answer: `imgcls --help` and `imgcls VERB --help`, median of warm runs.

    python benchmarks/cli_startup.py [--runs 5] [--out benchmarks/results/cli_startup.json]

Each command runs once to warm the file cache (not counted), then `--runs` times; the median wall time
is reported with the CPU it ran on. Targets (issue 19): `imgcls --help` <= 1.0 s, `imgcls train --help`
<= 2.0 s. Run it while nothing else heavy runs.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cifar10_speed import cpu_name  # noqa: E402

COMMANDS = {"imgcls --help": ["--help"], "imgcls train --help": ["train", "--help"],
            "imgcls evaluate --help": ["evaluate", "--help"]}
TARGETS = {"imgcls --help": 1.0, "imgcls train --help": 2.0}


def timed(args: list[str]) -> float:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "imgcls", *args], capture_output=True, text=True)
    if p.returncode != 0:
        raise SystemExit(f"imgcls {' '.join(args)} failed:\n{p.stderr[-2000:]}")
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "cli_startup.json"))
    a = ap.parse_args()
    rows = []
    for label, args in COMMANDS.items():
        timed(args)  # warm-up
        times = [timed(args) for _ in range(a.runs)]
        med = statistics.median(times)
        target = TARGETS.get(label)
        rows.append({"command": label, "median_s": round(med, 3), "min_s": round(min(times), 3),
                     "max_s": round(max(times), 3), "runs": a.runs, "target_s": target,
                     "met": None if target is None else med <= target})
        print(f"{label:<26} median {med:.2f}s (min {min(times):.2f}, max {max(times):.2f})"
              + (f"  target <= {target:.1f}s: {'met' if med <= target else 'MISSED'}" if target else ""))
    out = {"cpu": cpu_name(), "python": platform.python_version(), "date": time.strftime("%Y-%m-%d"), "rows": rows}
    Path(a.out).write_text(json.dumps(out, indent=2) + "\n")
    print(f"CPU: {out['cpu']}; written to {a.out}")


if __name__ == "__main__":
    main()
