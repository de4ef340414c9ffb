"""Run every understanding verb on a CIFAR-10 model, time each, and keep one example image of each for the docs.

    python benchmarks/understanding.py --ckpt runs/bench/cifar10_cpu10-seed0/best.safetensors

The model file is any CIFAR-10 model (docs/understanding.md uses the `cifar10_cpu10` recipe's,
made by `python benchmarks/cifar10_speed.py --experiment cifar10_cpu10 --seeds 0 -- trainer.tta=1`).
lr-find and sanity run on `experiment=cifar10_resnet20` (plain SGD, whose learning rate the range test
is about). Needs IMGCLS_DATA to hold cifar10/{train,test}/<class>/*.png. Writes
benchmarks/results/understanding.json (seconds per verb and what each found) and copies the images
to docs/images/understanding/.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
from benchmarks.cifar10_speed import cpu_name  # noqa: E402

IMAGES = ROOT / "docs" / "images" / "understanding"


def run(*args: str) -> tuple[float, str]:
    t = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "imgcls", *args], capture_output=True, text=True, cwd=ROOT)
    if p.returncode != 0 and not (args[0] == "sanity" and p.returncode == 1):  # a failed sanity check exits 1
        raise SystemExit(f"imgcls {' '.join(args)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
    return time.perf_counter() - t, p.stdout


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--ckpt", required=True)
    ap.add_argument("--out", default="runs/understanding")
    a = ap.parse_args()
    data = Path(os.environ.get("IMGCLS_DATA", "data")) / "cifar10" / "test"
    if not data.is_dir():
        raise SystemExit(f"no CIFAR-10 test folders under {data}: set IMGCLS_DATA")
    out = (ROOT / a.out).resolve()
    if (ROOT / "runs").resolve() not in out.parents:
        raise SystemExit(f"--out must be a folder under {ROOT / 'runs'} (it is emptied first), got {out}")
    if out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True)
    # small image folders: 2 images of each of 4 classes to explain; 50 of each class to search in
    explain_dir, index_dir = out / "explain_images", out / "search_index"
    for cls in sorted(p.name for p in data.iterdir()):
        files = sorted((data / cls).iterdir())
        (index_dir / cls).mkdir(parents=True)
        for f in files[:50]:
            shutil.copy(f, index_dir / cls / f.name)
        if cls in ("airplane", "cat", "dog", "ship"):
            (explain_dir / cls).mkdir(parents=True)
            for f in files[:2]:
                shutil.copy(f, explain_dir / cls / f.name)
    query = sorted((index_dir / "horse").iterdir())[0]
    steps = {
        "evaluate": ("evaluate", f"ckpt={a.ckpt}", f"out={out / 'evaluate'}"),
        "lr-find": ("lr-find", "experiment=cifar10_resnet20", "trainer.batch_size=128", "steps=100", f"out={out / 'lr_find'}"),
        "sanity": ("sanity", "experiment=cifar10_resnet20", f"out={out / 'sanity'}"),
        "explain": ("explain", f"ckpt={a.ckpt}", f"source={explain_dir}", f"out={out / 'explain'}"),
        "embed": ("embed", f"ckpt={a.ckpt}", "limit=2000", f"out={out / 'embed'}"),
        "search": ("search", f"ckpt={a.ckpt}", f"index={index_dir}", f"query={query}", "k=8", f"out={out / 'search'}"),
        "visualize": ("visualize", f"ckpt={a.ckpt}", f"out={out / 'visualize'}"),
    }
    results = {"ckpt": a.ckpt, "hardware": f"{cpu_name()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"),
               "verbs": {}}
    for name, args in steps.items():
        seconds, stdout = run(*args)
        results["verbs"][name] = {"seconds": round(seconds, 1), "command": "imgcls " + " ".join(args),
                                  "output": stdout.strip().splitlines()[-12:]}
        print(f"{name}: {seconds:.0f}s", flush=True)
    cal = json.loads((out / "evaluate" / "calibration.json").read_text())
    results["calibration"] = {k: cal[k] for k in ("temperature", "temperature_fitted_here", "ece", "ece_scaled")}
    (ROOT / "benchmarks" / "results" / "understanding.json").write_text(json.dumps(results, indent=2))
    IMAGES.mkdir(parents=True, exist_ok=True)
    for src, dst in (("evaluate/reliability.png", "reliability.png"), ("evaluate/worst_images.png", "worst_images.png"),
                     ("evaluate/confusion_matrix.png", "confusion_matrix.png"), ("lr_find/lr_find.png", "lr_find.png"),
                     ("sanity/sanity_batch.png", "sanity_batch.png"), ("explain/gradcam.png", "gradcam.png"),
                     ("embed/tsne.png", "tsne.png"), ("embed/pca.png", "pca.png"), ("search/search.png", "search.png"),
                     ("visualize/visualize.png", "visualize.png")):
        shutil.copy(out / src, IMAGES / dst)
    print(json.dumps({k: v["seconds"] for k, v in results["verbs"].items()}))


if __name__ == "__main__":
    main()
