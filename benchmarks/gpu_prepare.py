"""Build `.gpu/`, what `benchmarks/gpu_check.sh` needs on a GPU machine that has no network and no Hydra.

    python benchmarks/gpu_prepare.py            # reads $IMGCLS_DATA and $IMGCLS_WEIGHTS

`.gpu/` (git-ignored, ~45 MB, carried to the GPU machine with the checkout):
- `whl/`: pure-Python wheels of what the GPU machine's image lacks (hydra-core, omegaconf and the
  antlr4 runtime, whose PyPI release is a source archive only, so its wheel is built here);
- `data/cifar10/{train,test}/<class>/*.png`: a seeded real CIFAR-10 subset (500 train and 200 test
  images per class by default), read by `data=cifar10 data.root=.gpu/data`;
- `data/caltech101_subset/`: the Caltech101 subset as it is (photos for the fine-tune check);
- `weights/mobilenet_v2-imagenet-fp32.pth`: the ImageNet MobileNetV2 for that fine-tune.
Files already there are kept, so a second run only fills gaps.
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# Versions as pinned by the checkout's own environment (pyproject's ranges): pure Python, any Python 3.
WHEELS = ["hydra-core==1.3.8", "omegaconf==2.3.1"]
SOURCE_ONLY = ["antlr4-python3-runtime==4.9.3"]  # omegaconf 2.3 needs 4.9.*; PyPI has no wheel of it
PHOTO_WEIGHTS = "imagenet/mobilenet_v2-imagenet-fp32.pth"


def wheels(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    have = {p.name.split("-")[0].lower().replace("_", "-") for p in dest.glob("*.whl")}
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    for spec in WHEELS:
        if spec.split("==")[0].replace("_", "-") not in have:
            subprocess.run([*pip, "download", "--no-deps", "--only-binary=:all:", "-d", str(dest), spec], check=True)
    for spec in SOURCE_ONLY:
        if spec.split("==")[0].replace("-", "_") not in {h.replace("-", "_") for h in have}:
            subprocess.run([*pip, "wheel", "--no-deps", "-w", str(dest), spec], check=True)


def cifar_subset(src: Path, dest: Path, per_class: dict[str, int], seed: int = 0) -> int:
    """Copy `per_class[split]` seeded-random PNGs of each class of src/{train,test}/<class>/ to dest."""
    copied = 0
    for split, n in per_class.items():
        for cls_dir in sorted(p for p in (src / split).iterdir() if p.is_dir()):
            files = sorted(cls_dir.glob("*.png"))
            random.Random(f"{seed}-{split}-{cls_dir.name}").shuffle(files)
            out = dest / split / cls_dir.name
            out.mkdir(parents=True, exist_ok=True)
            for f in files[:n]:
                if not (out / f.name).exists():
                    shutil.copy2(f, out / f.name)
                    copied += 1
    return copied


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", default=os.environ.get("IMGCLS_DATA"), help="data root (default $IMGCLS_DATA)")
    ap.add_argument("--weights", default=os.environ.get("IMGCLS_WEIGHTS"), help="weights root (default $IMGCLS_WEIGHTS)")
    ap.add_argument("--out", default=str(ROOT / ".gpu"))
    ap.add_argument("--train-per-class", type=int, default=500)
    ap.add_argument("--test-per-class", type=int, default=200)
    a = ap.parse_args()
    if not a.data or not a.weights:
        raise SystemExit("set IMGCLS_DATA and IMGCLS_WEIGHTS (or pass --data and --weights)")
    out, data, weights = Path(a.out), Path(a.data), Path(a.weights)
    wheels(out / "whl")
    n = cifar_subset(data / "cifar10", out / "data" / "cifar10", {"train": a.train_per_class, "test": a.test_per_class})
    cal = out / "data" / "caltech101_subset"
    if not cal.exists():
        shutil.copytree(data / "caltech101_subset", cal)
    w = out / "weights" / Path(PHOTO_WEIGHTS).name
    if not w.exists():
        w.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(weights / PHOTO_WEIGHTS, w)
    size = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"{out}: {n} CIFAR-10 files copied now; {size / 2**20:.1f} MiB in all "
          f"(the checkout travels with it: keep the total under 64 MiB)")


if __name__ == "__main__":
    main()
