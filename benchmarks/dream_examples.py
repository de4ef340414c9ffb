"""DeepDream on real photos with the ImageNet MobileNetV2, timed, for docs/understanding.md.

    python benchmarks/dream_examples.py     # needs IMGCLS_DATA (coco128, caltech101_subset) and IMGCLS_WEIGHTS

Runs `imgcls dream` on a COCO val2017 photo at two layers (an early block: strokes and textures; the
default block past the middle: eyes, fur, dog faces) and on a Caltech101 photo, writes
benchmarks/results/dream_examples.json (command, seconds, objective before and after) and copies each
octaves.png and dream.png to docs/images/understanding/.
"""

from __future__ import annotations

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


def main() -> None:
    data, weights = os.environ.get("IMGCLS_DATA"), os.environ.get("IMGCLS_WEIGHTS")
    if not data or not weights:
        raise SystemExit("set IMGCLS_DATA (with coco128/ and caltech101_subset/) and IMGCLS_WEIGHTS (imagenet/)")
    mnv2 = Path(weights) / "imagenet" / "mobilenet_v2-imagenet-fp32.pth"
    model = ["model=torchvision", "model.name=mobilenet_v2", f"model.pretrained={mnv2}"]
    coco = Path(data) / "coco128" / "images" / "val2017" / "000000000139.jpg"  # a living room
    dog = Path(data) / "caltech101_subset" / "101_ObjectCategories" / "dalmatian" / "image_0003.jpg"
    runs = {"coco_default": [f"source={coco}"], "coco_early": [f"source={coco}", "layer=body.features.4"],
            "dalmatian_default": [f"source={dog}"]}
    out = ROOT / "runs" / "dream_examples"
    results = {"hardware": f"{cpu_name()}, {os.cpu_count()} cores", "date": time.strftime("%Y-%m-%d"), "runs": {}}
    IMAGES.mkdir(parents=True, exist_ok=True)
    for name, args in runs.items():
        cmd = ["dream", *model, *args, f"out={out / name}", "device=cpu"]
        t = time.perf_counter()
        p = subprocess.run([sys.executable, "-m", "imgcls", *cmd], capture_output=True, text=True, cwd=ROOT)
        seconds = time.perf_counter() - t
        if p.returncode != 0:
            raise SystemExit(f"imgcls {' '.join(cmd)} failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        meta = json.loads((out / name / "dream.json").read_text())
        results["runs"][name] = {"command": "imgcls " + " ".join(cmd), "seconds": round(seconds, 1),
                                 **{k: meta[k] for k in ("layer", "size", "objective_before", "objective_after")}}
        shutil.copy(out / name / "octaves.png", IMAGES / f"dream_{name}_octaves.png")
        shutil.copy(out / name / "dream.png", IMAGES / f"dream_{name}.png")
        print(f"{name}: {seconds:.1f}s, {meta['layer']} {meta['objective_before']:.3f} -> {meta['objective_after']:.3f}",
              flush=True)
    (ROOT / "benchmarks" / "results" / "dream_examples.json").write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
