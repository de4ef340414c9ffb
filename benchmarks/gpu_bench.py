"""The GPU figures of `benchmarks/gpu_check.sh`: the fast recipe's speed, its accuracy on a real subset, a photo fine-tune.

    python benchmarks/gpu_bench.py --out DIR                       # on a GPU machine (gpu_check.sh calls it)
    python benchmarks/gpu_bench.py --only subset --device cpu --seeds 0 1 2 --out benchmarks/results/gpu_subset_cpu

Parts, each appended to DIR/gpu_bench.json as it finishes (so a run cut short keeps what it did):
- `speed`: `experiment=cifar10_fast` on full-size synthetic data (`data.name=synthetic`: 50,000 train and
  10,000 test random 32x32 images; the step time is real data's, the accuracy chance), one warm-up run,
  then `--seeds` timed runs, eager and with `trainer.compile=true`, all in this one process;
- `subset`: the same recipe on the real CIFAR-10 subset that `benchmarks/gpu_prepare.py` puts in
  `.gpu/data` (500 train and 200 test images per class), 3 seeds, with the batch at 500 (the per-example
  rates kept); the CPU runs the same part with `--device cpu` for the comparison;
- `photo`: the ImageNet MobileNetV2 fine-tuned on the Caltech101 subset at 224 px (one head-only epoch,
  then all layers with discriminative learning rates).
DIR/gpu_bench.md gets the tables. `--deadline` seconds after start, parts not yet begun are skipped.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from cifar10_speed import cpu_name  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
FAST = ["experiment=cifar10_fast", "trainer.progress=false"]
# A 5,000-image subset makes 2.5 batches of 2,000 per epoch: batch 500 instead, with cifar10_fast's
# per-example SGD rates (lr and per-step decay x 1/4; Muon's steps are normalized).
SUBSET = ["optim.lr=335", "optim.weight_decay=0.001", "trainer.batch_size=500"]
PHOTO = ["data=caltech101", "data.image_size=224", "data.workers=8", "model=torchvision", "model.name=mobilenet_v2",
         "optim=sgd", "optim.lr=0.01", "optim.lr_mult=10", "sched=onecycle", "trainer.epochs=6",
         "trainer.freeze_epochs=1", "trainer.batch_size=64", "trainer.label_smoothing=0.1", "trainer.progress=false"]


def machine() -> dict:
    info = {"cpu": cpu_name(), "torch": torch.__version__, "python": platform.python_version()}
    if torch.cuda.is_available():
        info.update(gpu=torch.cuda.get_device_name(), cuda=torch.version.cuda, cudnn=torch.backends.cudnn.version())
    return info


def run(overrides: list[str], project: Path, name: str) -> dict:
    import imgcls
    from imgcls.cli import compose_train

    groups = compose_train([*overrides, f"trainer.project={project}", f"trainer.name={name}"])
    t0 = time.perf_counter()
    r = imgcls.train(**groups, budget_from=t0)
    wall = time.perf_counter() - t0
    s = r.metrics["summary"]
    prof = json.loads((r.run_dir / "profile.json").read_text())
    return {"name": name, "test_acc": r.metrics["top1"], "test_acc_no_tta": s.get("test_top1_no_tta"),
            "train_seconds": r.train_seconds, "eval_seconds": s["eval_seconds"], "wall_seconds": wall,
            "before_training_seconds": prof.get("before_training"), "epochs": len(r.history),
            "images_per_second": r.images_seen / r.train_seconds}


def table(rows: list[dict], cols: list[tuple[str, str, float, str]]) -> str:
    out = ["| | n | " + " | ".join(c[1] for c in cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for label, fn in (("mean", statistics.mean), ("std", lambda v: statistics.stdev(v) if len(v) > 1 else 0.0),
                      ("min", min), ("max", max)):
        out.append(f"| {label} | {len(rows)} | " + " | ".join(
            fmt.format(fn([r[k] * scale for r in rows])) for k, _, scale, fmt in cols) + " |")
    return "\n".join(out)


SPEED_COLS = [("train_seconds", "train s", 1, "{:.2f}"), ("eval_seconds", "eval s (TTA)", 1, "{:.2f}"),
              ("wall_seconds", "train() wall s", 1, "{:.2f}"), ("images_per_second", "img/s", 1, "{:.0f}")]
ACC_COLS = [("test_acc", "test acc (TTA)", 100, "{:.2f}"), ("test_acc_no_tta", "no TTA", 100, "{:.2f}"),
            ("train_seconds", "train s", 1, "{:.2f}"), ("wall_seconds", "wall s", 1, "{:.2f}")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", required=True, help="folder for gpu_bench.json and gpu_bench.md")
    ap.add_argument("--only", nargs="*", default=["speed", "subset", "photo"], choices=["speed", "subset", "photo"])
    ap.add_argument("--seeds", type=int, nargs="+", default=None, help="default: 0-4 for speed, 0-2 for subset")
    ap.add_argument("--data", default=str(ROOT / ".gpu" / "data"), help="root holding cifar10/ and caltech101_subset/")
    ap.add_argument("--weights", default=str(ROOT / ".gpu" / "weights" / "mobilenet_v2-imagenet-fp32.pth"))
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--no-compile", action="store_true", help="speed: eager only")
    ap.add_argument("--deadline", type=float, default=float("inf"), help="seconds: skip parts not begun by then")
    ap.add_argument("overrides", nargs="*", help="key=value overrides for every run (after --), e.g. a smoke test's "
                    "trainer.epochs=1 data.limit=1000")
    a = ap.parse_args()
    t_start = time.perf_counter()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "device": a.device, "runs": {}}
    md = [f"Machine: {json.dumps(report['machine'])}, device {a.device}"
          + (f", overrides {' '.join(a.overrides)}" if a.overrides else "") + "\n"]

    def save() -> None:
        (out / "gpu_bench.json").write_text(json.dumps(report, indent=2))
        (out / "gpu_bench.md").write_text("\n".join(md) + "\n")

    def late(what: str) -> bool:
        if time.perf_counter() - t_start > a.deadline:
            md.append(f"{what}: skipped (past --deadline {a.deadline:.0f}s)\n")
            print(md[-1], flush=True)
            save()
            return True
        return False

    dev = [f"trainer.device={a.device}", *a.overrides]
    with tempfile.TemporaryDirectory() as tmp:
        project = Path(tmp)
        if "speed" in a.only:
            for compiled in ([False] if a.no_compile else [False, True]):
                key = "speed_compiled" if compiled else "speed_eager"
                if late(key):
                    break
                base = [*FAST, *dev, "data.name=synthetic", f"trainer.compile={str(compiled).lower()}"]
                warm = run([*base, "trainer.seed=100"], project, f"{key}-warmup")
                report["runs"][f"{key}_warmup"] = [warm]
                rows = report["runs"].setdefault(key, [])
                for seed in a.seeds or range(5):
                    rows.append(run([*base, f"trainer.seed={seed}"], project, f"{key}-s{seed}"))
                    print(f"{key} seed {seed}: train {rows[-1]['train_seconds']:.2f}s, "
                          f"wall {rows[-1]['wall_seconds']:.2f}s", flush=True)
                    save()
                md.append(f"`cifar10_fast` on full-size synthetic data, {'torch.compile' if compiled else 'eager'} "
                          f"(warm-up run: train {warm['train_seconds']:.1f}s, wall {warm['wall_seconds']:.1f}s)\n\n"
                          + table(rows, SPEED_COLS) + "\n")
                save()
        if "subset" in a.only and not late("subset"):
            rows = report["runs"].setdefault("subset", [])
            for seed in a.seeds or range(3):
                rows.append(run([*FAST, *SUBSET, *dev, "data=cifar10", f"data.root={a.data}", f"trainer.seed={seed}"],
                                project, f"subset-s{seed}"))
                print(f"subset seed {seed}: {rows[-1]['test_acc']:.2%}", flush=True)
                save()
            md.append(f"`cifar10_fast` on the real CIFAR-10 subset ({a.data}/cifar10; {' '.join(SUBSET)})\n\n"
                      + table(rows, ACC_COLS) + "\n")
            save()
        if "photo" in a.only and not late("photo"):
            rows = report["runs"].setdefault("photo", [])
            rows.append(run([*PHOTO, *dev, f"data.root={a.data}/caltech101_subset", f"model.pretrained={a.weights}"],
                            project, "photo-s0"))
            print(f"photo fine-tune: {rows[-1]['test_acc']:.2%}", flush=True)
            cols = [c for c in ACC_COLS if c[0] != "test_acc_no_tta"]  # no TTA here
            md.append(f"Photo fine-tune, Caltech101 subset ({' '.join(PHOTO)})\n\n" + table(rows, cols) + "\n")
            save()
    print("\n".join(md))


if __name__ == "__main__":
    main()
