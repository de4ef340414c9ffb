"""The photo path's speed, budget and scale (docs/photos.md): is each photo decoded once, is the budget kept?

    python benchmarks/photo_speed.py                       # all parts; needs IMGCLS_DATA and IMGCLS_WEIGHTS
    python benchmarks/photo_speed.py --only speed --sizes 128 160 224
    python benchmarks/photo_speed.py --only budget --budget 120
    python benchmarks/photo_speed.py --only scale --scale-images 100000

Parts (results appended to benchmarks/results/photo_speed.json, a table in photo_speed.md):
- `speed`: on the Caltech101 subset's real photos, at each size, images/s of data loading alone (one
  pass of the training loader, 2 workers) and of training MobileNetV2 on those batches, from files
  decoded every epoch by 2 loader workers (`data.photo_cache=false`) and from the decode-once store
  (cropped in the training process, as `make_loader` does for stored photos; the first recorded run
  also had a `store` row with 2 workers and a `store-main` row without); the store's build time from a
  cold cache; user and system CPU seconds of each pass (workers included).
- `budget`: `imgcls train ... trainer.time_budget=T data.image_size=224` as its own process from a
  cold cache (an empty IMGCLS_CACHE: decoding counts), on the Caltech101 subset (model=auto finds the
  ImageNet weights in a temporary torch hub cache) and on a generated folder of 3,000 JPEG photos of
  150-500 px; wall seconds from process start against 1.05 T, and the peak memory the run prints.
- `scale`: a generated folder of N 50x50 JPEGs (2 classes): indexing (the folder scan), caching (decoding
  into the store, cold) and one training epoch of the default small-image model, each timed, with the
  peak resident memory of the process that does it.
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
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from cifar10_speed import cpu_flags, cpu_name  # noqa: E402
from photos import WEIGHTS, torch_home  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "photo_speed.json"


SPEED_WORKER = r"""
import json, sys, time, resource
import torch
from imgcls.config import DataConfig
from imgcls.data import load_data, make_loader
from imgcls.data.cache import default_cache_dir
from imgcls.data.prepare import store_photos
from imgcls.device import set_threads, tune_allocator
from imgcls.models import create_model

root, size, mode, steps = sys.argv[1], int(sys.argv[2]), sys.argv[3], int(sys.argv[4])
set_threads(None); tune_allocator()
def cpu():
    s, c = resource.getrusage(resource.RUSAGE_SELF), resource.getrusage(resource.RUSAGE_CHILDREN)
    return s.ru_utime + c.ru_utime, s.ru_stime + c.ru_stime
b = load_data(DataConfig(name="folder", root=root, image_size=size, val_fraction=0))
out = {"size": size, "mode": mode, "photos": len(b.train)}
if mode == "store":
    t = time.perf_counter()
    b, _ = store_photos(b, cache_dir=default_cache_dir(None) / "photos", workers=2, progress=False)
    out["store_build_s"] = time.perf_counter() - t
def loader():
    return make_loader(b, b.train, train=True, batch_size=32, workers=2)  # stored photos: make_loader uses none
u0, s0 = cpu(); t = time.perf_counter(); n = 0
for x, y in loader():
    n += len(x)
dt = time.perf_counter() - t; u1, s1 = cpu()
out.update(load_images_per_s=n / dt, load_user_s=u1 - u0, load_sys_s=s1 - s0, load_images=n)
net = create_model("torchvision", arch="mobilenet_v2", num_classes=len(b.classes))
opt = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
net.train(); n = 0; seen = 0
u0, s0 = cpu()
for i, (x, y) in enumerate(loader()):
    if i == 1:  # the first step pays for kernel set-up
        t = time.perf_counter(); u0, s0 = cpu()
    loss = torch.nn.functional.cross_entropy(net(x), y)
    loss.backward(); opt.step(); opt.zero_grad(set_to_none=True)
    if i >= 1:
        seen += len(x)
    if i == steps:
        break
dt = time.perf_counter() - t; u1, s1 = cpu()
out.update(train_images_per_s=seen / dt, train_user_s=u1 - u0, train_sys_s=s1 - s0, train_images=seen,
           peak_rss_mb=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
print("RESULT " + json.dumps(out))
"""


def run_worker(code: str, args: list[str], env: dict) -> dict:
    p = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env)
    if p.returncode != 0:
        raise SystemExit(f"worker failed: {args}\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    return json.loads([ln for ln in p.stdout.splitlines() if ln.startswith("RESULT ")][-1][7:])


def speed(data: Path, sizes: list[int], steps: int, tmp: Path) -> list[dict]:
    root = data / "caltech101_subset" / "101_ObjectCategories"
    rows = []
    for size in sizes:
        for mode in ("files", "store"):
            env = {**os.environ, "IMGCLS_CACHE": str(tmp / f"cache-{size}-{mode}")}  # cold: the store is built here
            r = run_worker(SPEED_WORKER, [str(root), str(size), mode, str(steps)], env)
            print(f"speed {size}px {mode}: load {r['load_images_per_s']:.0f} img/s (user {r['load_user_s']:.0f}s, "
                  f"sys {r['load_sys_s']:.0f}s), train {r['train_images_per_s']:.1f} img/s (user {r['train_user_s']:.0f}s, "
                  f"sys {r['train_sys_s']:.0f}s)" + (f", store built in {r['store_build_s']:.1f}s" if "store_build_s" in r else ""),
                  flush=True)
            rows.append({"part": "speed", **r})
    return rows


def write_jpegs(job: tuple[str, int, int, int, int]) -> None:
    """Files start..stop-1 of one class: random sizes in [lo, hi] (photos) or fixed (lo == hi), noise over a colour cast."""
    import numpy as np
    from PIL import Image

    folder, cls, start, stop, lo_hi = job[0], job[1], job[2], job[3], job[4]
    lo, hi = divmod(lo_hi, 10_000)
    rng = np.random.default_rng(start)
    d = Path(folder)
    d.mkdir(parents=True, exist_ok=True)
    for i in range(start, stop):
        w, h = (lo, lo) if lo == hi else (int(rng.integers(lo, hi + 1)), int(rng.integers(lo, hi + 1)))
        a = rng.integers(0, 256, (h, w, 3), dtype=np.uint8) // 2
        a[..., cls % 3] += 100
        Image.fromarray(a).save(d / f"{i}.jpg", quality=85)


def make_folder(root: Path, n: int, lo: int, hi: int) -> Path:
    """ROOT/{a,b}/*.jpg, n images in all, written by 2 processes."""
    if root.is_dir():
        return root
    step = 2000
    jobs = [(str(root / name), c, s, min(s + step, n // 2), lo * 10_000 + hi)
            for c, name in enumerate(("a", "b")) for s in range(0, n // 2, step)]
    with ProcessPoolExecutor(2) as pool:
        list(pool.map(write_jpegs, jobs))
    return root


def train_process(args: list[str], env: dict) -> dict:
    """`imgcls train ARGS` as its own process: wall seconds, the printed figures, the run's profile."""
    t0 = time.perf_counter()
    p = subprocess.run([sys.executable, "-m", "imgcls", "train", *args], capture_output=True, text=True, env=env)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"imgcls train {' '.join(args)} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    run_dir = Path(re.findall(r"^run folder: (.+)$", p.stdout, flags=re.M)[-1])
    prof = json.loads((run_dir / "profile.json").read_text())
    done = [ln for ln in p.stdout.splitlines() if ln.startswith("done in")][-1]
    return {"wall_s": wall, "done_line": done, "first_lines": p.stdout.splitlines()[:4], "profile": prof,
            "peak_rss_gb": prof["peak_rss_gb"], "peak_rss_workers_gb": prof["peak_rss_workers_gb"],
            "run_dir": str(run_dir)}


def budget(data: Path, weights: Path | None, seconds: float, tmp: Path, project: str) -> list[dict]:
    home = torch_home(tmp, weights)
    rows = []
    folders = {"caltech101_subset": data / "caltech101_subset" / "101_ObjectCategories",
               "generated_3000": make_folder(tmp / "photos3000", 3000, 150, 500)}
    for name, root in folders.items():
        env = {**os.environ, "TORCH_HOME": str(home), "IMGCLS_CACHE": str(tmp / f"cold-{name}")}
        r = train_process(["data=folder", f"data.root={root}", "data.image_size=224", f"trainer.time_budget={seconds:g}",
                           "trainer.progress=false", f"trainer.project={project}", f"trainer.name=budget-{name}"], env)
        r.update(part="budget", folder=name, budget_s=seconds, within=r["wall_s"] <= 1.05 * seconds)
        print(f"budget {name}: {r['wall_s']:.1f}s wall for T={seconds:g}s (limit {1.05 * seconds:.0f}s: "
              f"{'kept' if r['within'] else 'OVER'}); {r['done_line']}", flush=True)
        rows.append(r)
    return rows


def scale(n: int, tmp: Path, project: str) -> list[dict]:
    t = time.perf_counter()
    root = make_folder(tmp / f"small{n}", n, 50, 50)
    made = time.perf_counter() - t
    env = {**os.environ, "IMGCLS_CACHE": str(tmp / "cold-scale")}
    index = run_worker(r"""
import json, resource, sys, time
from pathlib import Path
t = time.perf_counter()
from imgcls.data.sources import scan_split
classes, paths, labels = scan_split(Path(sys.argv[1]))
index_s = time.perf_counter() - t
from imgcls.data.cache import decode_images
t = time.perf_counter()
images, keep, errors = decode_images(paths, (50, 50), 3, None, 2, progress=False)
cache_s = time.perf_counter() - t
print("RESULT " + json.dumps({"images": len(paths), "index_s": index_s, "cache_s": cache_s, "errors": len(errors),
      "cache_mb": images.numel() / 2**20, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))
""", [str(root)], env)
    print(f"scale: {index['images']} images of 50x50 made in {made:.0f}s; indexed in {index['index_s']:.1f}s, cached in "
          f"{index['cache_s']:.1f}s ({index['cache_mb']:.0f} MB on disk), peak memory {index['peak_rss_mb']:.0f} MB", flush=True)
    epoch = train_process(["data=folder", f"data.root={root}", "trainer.epochs=1", "trainer.progress=false",
                           f"trainer.project={project}", "trainer.name=scale"], env)
    images = epoch["profile"]["images_seen"]
    print(f"scale: one epoch ({images} images) {epoch['profile']['training']:.0f}s of training, "
          f"{images / epoch['profile']['training']:.0f} img/s, {epoch['wall_s']:.0f}s wall; {epoch['done_line']}", flush=True)
    return [{"part": "scale", **index, "made_s": made, "epoch": epoch,
             "epoch_images_per_s": images / epoch["profile"]["training"]}]


def table(rows: list[dict]) -> str:
    out = []
    sp = [r for r in rows if r["part"] == "speed"]
    if sp:
        out += ["| size | source | loading img/s (user / sys s) | training img/s (user / sys s) | store build s |",
                "|---|---|---|---|---|"]
        out += [f"| {r['size']} | {r['mode']} | {r['load_images_per_s']:.0f} ({r['load_user_s']:.0f} / {r['load_sys_s']:.0f}) | "
                f"{r['train_images_per_s']:.1f} ({r['train_user_s']:.0f} / {r['train_sys_s']:.0f}) | "
                f"{r.get('store_build_s', float('nan')):.1f} |" for r in sp]
    bu = [r for r in rows if r["part"] == "budget"]
    if bu:
        out += ["", "| folder (224 px, cold cache) | T s | wall s | within 1.05 T | peak memory GB (workers) | result |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['folder']} | {r['budget_s']:g} | {r['wall_s']:.1f} | {'yes' if r['within'] else 'no'} | "
                f"{r['peak_rss_gb']:.2f} ({r['peak_rss_workers_gb']:.2f}) | {r['done_line']} |" for r in bu]
    sc = [r for r in rows if r["part"] == "scale"]
    if sc:
        out += ["", "| 50x50 JPEGs | index s | cache s (cold) | cache peak MB | epoch img/s | epoch peak GB |",
                "|---|---|---|---|---|---|"]
        out += [f"| {r['images']} | {r['index_s']:.1f} | {r['cache_s']:.1f} | {r['peak_rss_mb']:.0f} | "
                f"{r['epoch_images_per_s']:.0f} | {r['epoch']['peak_rss_gb']:.2f} |" for r in sc]
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--only", choices=("speed", "budget", "scale"), nargs="+", default=["speed", "budget", "scale"])
    ap.add_argument("--sizes", type=int, nargs="+", default=[128, 160, 224])
    ap.add_argument("--steps", type=int, default=15, help="timed training steps (batch 32) per size and source")
    ap.add_argument("--budget", type=float, default=120.0, help="trainer.time_budget of the budget runs (seconds)")
    ap.add_argument("--scale-images", type=int, default=100_000)
    ap.add_argument("--project", default="runs/bench")
    ap.add_argument("--out", type=Path, default=RESULTS)
    a = ap.parse_args()
    data = Path(os.environ.get("IMGCLS_DATA", "data"))
    weights = Path(os.environ["IMGCLS_WEIGHTS"]) / WEIGHTS if os.environ.get("IMGCLS_WEIGHTS") else None
    if ("speed" in a.only or "budget" in a.only) and not (data / "caltech101_subset").is_dir():
        raise SystemExit(f"needs the Caltech101 subset under $IMGCLS_DATA ({data}/caltech101_subset)")
    rows: list[dict] = []
    with tempfile.TemporaryDirectory(prefix="photo_speed-") as tmp:
        tmp = Path(tmp)
        if "speed" in a.only:
            rows += speed(data, a.sizes, a.steps, tmp)
        if "budget" in a.only:
            rows += budget(data, weights if weights and weights.is_file() else None, a.budget, tmp, a.project)
        if "scale" in a.only:
            rows += scale(a.scale_images, tmp, a.project)
        shutil.rmtree(tmp, ignore_errors=True)
    stamp = {"hardware": f"{cpu_name()}, {os.cpu_count()} cores", "cpu": cpu_flags(), "date": time.strftime("%Y-%m-%d")}
    old = json.loads(a.out.read_text()) if a.out.is_file() else []
    a.out.parent.mkdir(parents=True, exist_ok=True)
    a.out.write_text(json.dumps(old + [{**stamp, **r} for r in rows], indent=2))
    md = f"photo_speed on {stamp['cpu']}, {os.cpu_count()} cores, {stamp['date']}\n\n{table(rows)}\n"
    a.out.with_suffix(".md").write_text(md)
    print(md)


if __name__ == "__main__":
    main()
