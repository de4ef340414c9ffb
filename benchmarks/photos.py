"""The photo path's figures (docs/photos.md): fine-tuning, from scratch, and the defaults on a plain folder.

    python benchmarks/photos.py --seeds 0 1 2            # needs IMGCLS_DATA and IMGCLS_WEIGHTS

Variants, each run as its own process (wall time from process start, peak memory of the process and
of its loader workers), each seed appended to benchmarks/results/photos.json as it finishes:
- `finetune`: `experiment=photo_finetune` on `data=caltech101` (the 12-class subset, its stratified 20%
  test split), with the shared ImageNet MobileNetV2 placed where torchvision would have downloaded it
  (a temporary TORCH_HOME/hub/checkpoints/mobilenet_v2-b0353104.pth), so model=auto finds it;
- `scratch`: `experiment=photo_scratch` on the same data, with an empty TORCH_HOME (PhotoNet, 112 px);
- `folder_default`: `imgcls train data=folder data.root=.../101_ObjectCategories` and nothing else
  (one folder of class folders: 10% held out as validation, which scores it), weights in the cache.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cifar10_speed import cpu_name, run_seed, summarize  # noqa: E402

WEIGHTS = "imagenet/mobilenet_v2-imagenet-fp32.pth"  # under $IMGCLS_WEIGHTS
TORCHVISION_NAME = "mobilenet_v2-b0353104.pth"  # the file torchvision downloads for these weights


def torch_home(tmp: Path, weights: Path | None) -> Path:
    home = tmp / ("with_weights" if weights else "empty")
    (home / "hub" / "checkpoints").mkdir(parents=True, exist_ok=True)
    if weights and not (home / "hub" / "checkpoints" / TORCHVISION_NAME).exists():
        shutil.copy(weights, home / "hub" / "checkpoints" / TORCHVISION_NAME)
    return home


def folder_default(data: Path, project: str, seed: int) -> dict:
    """`imgcls train data=folder data.root=DIR` as a user types it (plus the seed and where runs go)."""
    cmd = [sys.executable, "-m", "imgcls", "train", "data=folder",
           f"data.root={data / 'caltech101_subset' / '101_ObjectCategories'}", f"trainer.seed={seed}",
           f"trainer.project={project}", f"trainer.name=folder_default-seed{seed}", "trainer.progress=false"]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"folder_default seed {seed} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    run_dir = Path(re.findall(r"^run folder: (.+)$", p.stdout, flags=re.M)[-1])
    metrics = json.loads((run_dir / "metrics.json").read_text())
    prof = json.loads((run_dir / "profile.json").read_text())
    return {"test_acc": metrics["top1"], "test_acc_no_tta": metrics["top1"], "wall_seconds": wall,
            "train_seconds": prof["training"], "images_per_second": prof["images_seen"] / prof["training"],
            "peak_rss_mb": prof["peak_rss_gb"] * 1024, "peak_rss_workers_mb": prof["peak_rss_workers_gb"] * 1024,
            "first_lines": p.stdout.splitlines()[:3], "run_dir": str(run_dir)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--only", nargs="*", default=["finetune", "scratch", "folder_default"])
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "photos.json"))
    ap.add_argument("--project", default="runs/bench")
    a = ap.parse_args()
    data, weights = os.environ.get("IMGCLS_DATA"), os.environ.get("IMGCLS_WEIGHTS")
    if not data or not weights:
        raise SystemExit("set IMGCLS_DATA (with caltech101_subset/) and IMGCLS_WEIGHTS (with " + WEIGHTS + ")")
    data, weights = Path(data), Path(weights) / WEIGHTS
    out = Path(a.out)
    rows = json.loads(out.read_text()) if out.exists() else []
    caltech = ["data=caltech101", f"data.root={data / 'caltech101_subset'}"]
    with tempfile.TemporaryDirectory() as tmp:
        homes = {"finetune": torch_home(Path(tmp), weights), "scratch": torch_home(Path(tmp), None),
                 "folder_default": torch_home(Path(tmp), weights)}
        for variant in a.only:
            os.environ["TORCH_HOME"] = str(homes[variant])
            for seed in a.seeds:
                if any(r["variant"] == variant and r["seed"] == seed for r in rows):
                    print(f"{variant} seed {seed}: already in {out}, skipped")
                    continue
                if variant == "folder_default":
                    r = folder_default(data, a.project, seed)
                else:
                    r = run_seed(f"photo_{variant}", seed, caltech, a.project)
                    prof = r.pop("profile")
                    r["peak_rss_workers_mb"] = prof.get("peak_rss_workers_gb", 0) * 1024
                rows.append({"variant": variant, "seed": seed, **r, "hardware": f"{cpu_name()}, {os.cpu_count()} cores",
                             "date": time.strftime("%Y-%m-%d"), "data": "Caltech101-12",
                             # for benchmarks/model_zoo.py (the data root is left out: it differs by machine)
                             "experiment": f"photo_{variant}", "overrides": []})
                out.write_text(json.dumps(rows, indent=2))
                print(f"{variant} seed {seed}: test {r['test_acc']:.2%}, wall {r['wall_seconds']:.0f}s, "
                      f"peak {r['peak_rss_mb'] / 1024:.2f} GB (+ workers {r['peak_rss_workers_mb'] / 1024:.2f} GB)",
                      flush=True)
    md = []
    for variant in dict.fromkeys(r["variant"] for r in rows):  # every variant measured so far, in order
        mine = [r for r in rows if r["variant"] == variant]
        if mine:
            md.append(f"`{variant}`, {len(mine)} seeds on {mine[0]['hardware']}\n\n{summarize(mine)}\n")
    out.with_suffix(".md").write_text("\n".join(md))
    print("\n".join(md))


if __name__ == "__main__":
    main()
