"""Object detection on COCO128 in 15 minutes of CPU: `experiment=detect_finetune` over seeds, and Ultralytics as a peer.

    python benchmarks/detection.py --seeds 0 1 2        # imgcls: Faster R-CNN, MobileNetV2 FPN from ImageNet
    python benchmarks/detection.py --peer --seeds 0     # Ultralytics' smallest YOLO from its model yaml, same minutes
    python benchmarks/detection.py --table              # rewrite the table in docs/detection.md from the JSON

Needs IMGCLS_DATA (coco128/object_detection: YOLO boxes for the 128 train and 128 val photos, 80 classes) and
IMGCLS_WEIGHTS (imagenet/mobilenet_v2-imagenet-fp32.pth, the backbone's ImageNet weights). Each imgcls seed is
`imgcls train experiment=detect_finetune data.root=... model.pretrained=... trainer.seed=S` as its own process; its
900 s time budget counts from process start (imports and data loading included) to the final val metrics.
The val split is COCO128's 128 val2017 photos: the best validated epoch is chosen on it and scored on it, so the
last epoch's val mAP (chosen by nothing) is recorded beside it.

The peer: Ultralytics (AGPL-3.0, never a dependency of imgcls) installed by this script into its own virtual
environment (benchmarks/.peer-venv, with the same torch), trained with `yolo detect train model=yolo11n.yaml` (no
weights: none can be downloaded here, so from scratch) on the same photos and labels for the same 900 s
(`time=0.25` hours, its own schedule), at its default 640 px, then run on the val photos (conf 0.001, as its own
validation); those boxes are scored by the same code as imgcls's (torchmetrics on pycocotools). Appends every run
to benchmarks/results/detection.json with the CPU, its flags and the curve.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))
from cifar10_speed import cpu_flags, cpu_name  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results" / "detection.json"
PEER_VENV = ROOT / "benchmarks" / ".peer-venv"
PEER_MODEL = "yolo11n.yaml"
BUDGET = 900


def data_root() -> Path:
    return Path(os.environ["IMGCLS_DATA"]) / "coco128" / "object_detection"


def machine() -> dict:
    return {"cpu": cpu_name(), "cpu_flags": cpu_flags(), "cores": os.cpu_count(), "date": time.strftime("%Y-%m-%d %H:%M")}


def run(seed: int, project: Path, extra: list[str]) -> dict:
    weights = Path(os.environ["IMGCLS_WEIGHTS"]) / "imagenet" / "mobilenet_v2-imagenet-fp32.pth"
    model = next((e.split("=", 1)[1] for e in extra if e.startswith("model=")), "fasterrcnn")
    name = f"coco128-{model}-seed{seed}"
    cmd = [sys.executable, "-m", "imgcls", "train", "experiment=detect_finetune", f"data.root={data_root()}",
           f"model.pretrained={weights}", f"trainer.seed={seed}", f"trainer.project={project}", f"trainer.name={name}",
           f"trainer.time_budget={BUDGET}", "trainer.progress=false", *extra]
    t0 = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"{name} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    run_dir = Path(re.findall(r"^run folder: (.+)$", p.stdout, flags=re.M)[-1])
    return record(run_dir, seed, " ".join(cmd[1:]), wall)


def person_ap50(metrics: dict) -> float | None:
    return next((r["ap50"] for r in metrics["per_class"] if r["class"] == "person"), None)


def record(run_dir: Path, seed: int, command: str, wall: float | None) -> dict:
    """A finished imgcls run's row: its metrics, profile, curve and the machine (wall: seconds from process start)."""
    from imgcls.modelfile import read_meta

    m = json.loads((run_dir / "metrics.json").read_text())
    prof = json.loads((run_dir / "profile.json").read_text())
    curve = [{k: float(v) for k, v in r.items() if v != ""} for r in csv.DictReader(open(run_dir / "results.csv"))]
    validated = [r for r in curve if "val_map" in r]
    return {"tool": "imgcls", "model": read_meta(run_dir / "best.safetensors").arch, "seed": seed, "command": command,
            "wall_seconds": None if wall is None else round(wall, 1), "train_seconds": prof["training"],
            "total_seconds": prof["total"], "epochs": len(curve),
            "best_epoch": read_meta(run_dir / "best.safetensors").metrics["epoch"],
            "map": m["map"], "map_50": m["map_50"], "person_ap50": person_ap50(m),
            "person_ap": next((r["ap"] for r in m["per_class"] if r["class"] == "person"), None),
            "last_validated_map": validated[-1]["val_map"] if validated else None,
            "peak_rss_gb": prof.get("peak_rss_gb"), "curve": curve, **machine(), "run_dir": str(run_dir)}


# ------------------------------------------------------------------------------------------------ the peer
def peer_python() -> Path:
    """The peer's virtual environment (made once): ultralytics with this machine's torch and torchvision."""
    py = PEER_VENV / "bin" / "python"
    if not py.is_file():
        subprocess.run([sys.executable, "-m", "venv", str(PEER_VENV)], check=True)
        import torch
        import torchvision

        subprocess.run([str(py), "-m", "pip", "install", "-q", f"torch=={torch.__version__.split('+')[0]}",
                        f"torchvision=={torchvision.__version__.split('+')[0]}", "ultralytics"], check=True)
    return py


PEER_TRAIN = r'''
import json, os, sys, time
t0 = time.perf_counter()
from ultralytics import YOLO
data, project, seed, budget = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
model = YOLO(sys.argv[5])  # a model yaml: random weights
left = budget - (time.perf_counter() - t0)
model.train(data=data, epochs=1000, time=left / 3600, device="cpu", workers=0, seed=seed, pretrained=False, amp=False,
            plots=False, project=project, name=f"seed{seed}", exist_ok=True, verbose=False)
print("TRAINED", time.perf_counter() - t0, flush=True)
best = os.path.join(project, f"seed{seed}", "weights", "best.pt")
m = YOLO(best if os.path.exists(best) else os.path.join(project, f"seed{seed}", "weights", "last.pt"))
out = []
for r in m.predict(source=sys.argv[6], conf=0.001, iou=0.7, max_det=100, device="cpu", verbose=False, stream=True):
    b = r.boxes
    out.append({"path": r.path, "boxes": b.xyxy.tolist(), "scores": b.conf.tolist(), "labels": [int(c) for c in b.cls.tolist()]})
json.dump(out, open(os.path.join(project, f"seed{seed}", "val_predictions.json"), "w"))
print("DONE", time.perf_counter() - t0, flush=True)
'''


def peer_data(workdir: Path) -> Path:
    """A dataset yaml Ultralytics reads: the photos of COCO128 linked file by file (Ultralytics finds labels by replacing
    images/ with labels/ in a photo's path, and resolves linked folders) and its YOLO labels copied beside them."""
    import shutil

    src = Path(os.environ["IMGCLS_DATA"]) / "coco128"
    for split in ("train2017", "val2017"):
        images, labels = workdir / "images" / split, workdir / "labels" / split
        images.mkdir(parents=True, exist_ok=True)
        for photo in sorted((src / "images" / split).glob("*.jpg")):
            if not (images / photo.name).exists():
                (images / photo.name).symlink_to(photo)
        if not labels.is_dir():
            shutil.copytree(src / "object_detection" / "labels" / split, labels)
    import yaml

    names = yaml.safe_load((src / "object_detection" / "config.yaml").read_text())["names"]
    cfg = workdir / "coco128.yaml"
    cfg.write_text(yaml.safe_dump({"path": str(workdir), "train": "images/train2017", "val": "images/val2017",
                                   "names": names}))
    return cfg


def peer(seed: int, project: Path) -> dict:
    py = peer_python()
    project.mkdir(parents=True, exist_ok=True)
    cfg = peer_data(project / "data")
    script = project / "peer_train.py"
    script.write_text(PEER_TRAIN)
    val = Path(os.environ["IMGCLS_DATA"]) / "coco128" / "images" / "val2017"
    env = {**os.environ, "YOLO_OFFLINE": "1", "YOLO_CONFIG_DIR": str(project / "config")}
    t0 = time.perf_counter()
    p = subprocess.run([str(py), str(script), str(cfg), str(project), str(seed), str(BUDGET), PEER_MODEL, str(val)],
                       capture_output=True, text=True, env=env, cwd=project)
    wall = time.perf_counter() - t0
    if p.returncode != 0:
        raise SystemExit(f"peer seed {seed} failed:\n{p.stdout[-3000:]}\n{p.stderr[-3000:]}")
    trained = float(re.findall(r"^TRAINED (\S+)", p.stdout, flags=re.M)[-1])
    preds = json.loads((project / f"seed{seed}" / "val_predictions.json").read_text())
    m = score_predictions(preds)
    curve_file = project / f"seed{seed}" / "results.csv"
    curve = [{k.strip(): float(v) for k, v in r.items() if v.strip()} for r in csv.DictReader(open(curve_file))] \
        if curve_file.is_file() else []
    return {"tool": "ultralytics", "model": PEER_MODEL, "seed": seed, "command": f"yolo detect train model={PEER_MODEL} "
            f"time={BUDGET / 3600:.3f} (benchmarks/detection.py --peer)", "wall_seconds": round(trained, 1),
            "wall_with_val_predictions": round(wall, 1), "epochs": len(curve), "map": m["map"], "map_50": m["map_50"],
            "person_ap50": person_ap50(m), "person_ap": next((r["ap"] for r in m["per_class"] if r["class"] == "person"), None),
            "ultralytics_version": peer_version(py), "curve": curve, **machine(), "run_dir": str(project / f"seed{seed}")}


def peer_version(py: Path) -> str:
    return subprocess.run([str(py), "-c", "import ultralytics; print(ultralytics.__version__)"], capture_output=True,
                          text=True).stdout.strip()


def score_predictions(preds: list[dict]) -> dict:
    """COCO metrics of the peer's val boxes against the same labels imgcls is scored on, by imgcls's own code."""
    import torch

    from imgcls.tasks.detect.data import detfolder
    from imgcls.tasks.detect.metrics import map_meter, summarize

    b = detfolder(data_root(), channels=None, image_size=None, small_max=64, cache_dir=None, workers=0, download=False)
    by_name = {Path(p["path"]).name: p for p in preds}
    meter = map_meter(extended=True)
    for path, t in zip(b.val.ids, b.val.targets):
        p = by_name.get(Path(path).name, {"boxes": [], "scores": [], "labels": []})
        meter.update([{"boxes": torch.tensor(p["boxes"], dtype=torch.float32).reshape(-1, 4),
                       "scores": torch.tensor(p["scores"], dtype=torch.float32),
                       "labels": torch.tensor(p["labels"], dtype=torch.long)}],
                     [{"boxes": torch.from_numpy(t.boxes).float(), "labels": torch.from_numpy(t.labels).long()}])
    return summarize(meter.compute(), b.classes)


# ------------------------------------------------------------------------------------------------ video
def video(ckpt: Path, seconds: tuple[int, ...] = (30, 60), project: Path = ROOT / "runs" / "bench_video",
          ) -> list[dict]:
    """`imgcls predict` on clips of 640x360 at 30 frames/s made from real COCO128 val photos (the camera panning over
    each photo in turn: real photos, not real footage), one clip and one twice as long: frames per second of the whole
    pipeline and the process's peak memory, each in its own process."""
    from imgcls.video import write_clip

    photos = sorted((Path(os.environ["IMGCLS_DATA"]) / "coco128" / "images" / "val2017").glob("*.jpg"))
    project.mkdir(parents=True, exist_ok=True)
    rows = []
    for sec in seconds:
        clip = write_clip(photos[: max(1, sec // 3)], project / f"coco_val_{sec}s.mp4", seconds=sec, fps=30)
        out = project / f"predict_{sec}s"
        code = ("import json, resource, sys; from imgcls.predict import predict_to_csv; "
                f"_, r = predict_to_csv({str(ckpt)!r}, {str(clip)!r}, {str(out)!r}, device='cpu', progress=False); "
                "r[0]['peak_rss_mb'] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024; print('RESULT', json.dumps(r[0]))")
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
        if p.returncode != 0:
            raise SystemExit(f"video {sec}s failed:\n{p.stdout[-2000:]}\n{p.stderr[-2000:]}")
        r = json.loads(re.findall(r"^RESULT (.+)$", p.stdout, flags=re.M)[-1])
        row = {"clip_seconds": sec, "frames": r["frames"], "fps": r["fps"], "seconds": r["seconds"],
               "peak_rss_mb": round(r["peak_rss_mb"], 1), "rss_mb_every_100_frames": r["rss_mb"],
               "size": f"{r['source']['width']}x{r['source']['height']}",
               "model": str(ckpt), **machine()}
        samples = [m for _, m in r["rss_mb"]]
        print(f"{sec} s clip: {row['frames']} frames at {row['fps']} frames/s, peak RSS {row['peak_rss_mb']} MB; resident "
              f"MB every 100 frames: {samples}", flush=True)
        rows.append(row)
    path = RESULTS.with_name("detection_video.json")
    kept = [r for r in json.loads(path.read_text()) if r["clip_seconds"] not in seconds] if path.is_file() else []
    path.write_text(json.dumps(sorted(kept + rows, key=lambda r: r["clip_seconds"]), indent=1) + "\n")
    return rows


def figure(ckpt: Path, photos: tuple[str, ...] = ("000000000139", "000000000632", "000000000785", "000000001000"),
           clip: Path | None = None) -> None:
    """docs/images/detection/: the model's boxes (score >= 0.3) on 4 COCO128 val photos (not trained on), and 4 frames
    of the annotated clip `imgcls predict` wrote (--video), if given."""
    import av
    import numpy as np
    from PIL import Image

    from imgcls.evaluation.plots import plot_image_grid
    from imgcls.predict import Predictor
    from imgcls.video import annotate

    out = ROOT / "docs" / "images" / "detection"
    out.mkdir(parents=True, exist_ok=True)
    val = Path(os.environ["IMGCLS_DATA"]) / "coco128" / "images" / "val2017"
    files = [str(val / f"{p}.jpg") for p in photos if (val / f"{p}.jpg").is_file()]
    pred = Predictor.load(ckpt, device="cpu")
    pred.min_score = 0.3
    images, captions = [], []
    for f, r in zip(files, pred.predict(files)):
        images.append(np.asarray(annotate(pred, Image.open(f).convert("RGB"), r)))
        captions.append(f"{Path(f).name}: " + (", ".join(d["label"] for d in r["detections"][:5]) or "nothing found"))
    plot_image_grid(images, captions, out / "coco128_val.png", cols=2,
                    title=f"{pred.meta.arch} on COCO128 val photos, boxes scoring >= 0.3 ({ckpt.parent.name})")
    print(f"figure: {out / 'coco128_val.png'}")
    if clip is not None:
        with av.open(str(clip)) as c:
            frames = [f.to_image() for f in c.decode(video=0)]
        picks = [frames[i] for i in np.linspace(0, len(frames) - 1, 4).round().astype(int)]
        plot_image_grid([np.asarray(p) for p in picks], [f"frame {i}" for i in np.linspace(0, len(frames) - 1, 4).round().astype(int)],
                        out / "clip_frames.png", cols=2, title=f"{clip.name}: a clip panned over real photos, as annotated")
        print(f"figure: {out / 'clip_frames.png'}")


# ------------------------------------------------------------------------------------------------ report
def write_table() -> None:
    rows = json.loads(RESULTS.read_text())
    out = ["| tool | model | seeds | val mAP@[.5:.95] | val mAP50 | person AP50 | person AP | epochs | wall s (max) |",
           "|---|---|---|---|---|---|---|---|---|"]

    def ms(v: list[float], scale: float = 1, fmt: str = "{:.3f}") -> str:
        v = [x for x in v if x is not None]
        if not v:
            return "-"
        return fmt.format(statistics.mean(v) * scale) + (" ± " + fmt.format(statistics.stdev(v) * scale) if len(v) > 1 else "")

    for tool, model in sorted({(r["tool"], r["model"]) for r in rows}, key=lambda g: (g[0] != "imgcls", g[1])):
        rs = [r for r in rows if r["tool"] == tool and r["model"] == model]
        out.append(f"| {tool} | {model} | {', '.join(str(r['seed']) for r in rs)} | {ms([r['map'] for r in rs])} "
                   f"| {ms([r['map_50'] for r in rs])} | {ms([r['person_ap50'] for r in rs])} "
                   f"| {ms([r['person_ap'] for r in rs])} | {ms([r['epochs'] for r in rs], 1, '{:.0f}')} "
                   f"| {max(r['wall_seconds'] for r in rs):.0f} |")
    out.append(f"\n{rows[-1]['cpu_flags']}, {rows[-1]['cores']} cores; mean ± std over the seeds listed.")
    doc = ROOT / "docs" / "detection.md"
    text = doc.read_text()
    marker = "<!-- detection-table -->"
    head, _, rest = text.partition(marker)
    _, _, tail = rest.partition(marker)
    doc.write_text(head + marker + "\n" + "\n".join(out) + "\n" + marker + tail)
    print("\n".join(out))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--peer", action="store_true", help="train the Ultralytics peer instead (its own virtual environment)")
    ap.add_argument("--project", default="runs/bench_detection")
    ap.add_argument("--table", action="store_true", help="only rewrite the table in docs/detection.md from the JSON")
    ap.add_argument("--video-seconds", type=int, nargs="+", default=[30, 60], help="clip lengths for --video")
    ap.add_argument("--figure", metavar="MODEL_FILE", help="only draw docs/images/detection/: the boxes of MODEL_FILE on 4 "
                    "val photos (and with --clip, 4 frames of an annotated clip)")
    ap.add_argument("--clip", help="an annotated video from --video, for --figure")
    ap.add_argument("--video", metavar="MODEL_FILE", help="only time `imgcls predict` on a 30 s and a 60 s clip at 640x360 "
                    "(frames per second, peak memory) into benchmarks/results/detection_video.json")
    ap.add_argument("extra", nargs="*", help="more overrides for every imgcls run (after --)")
    a = ap.parse_args()
    for k in ("IMGCLS_DATA", "IMGCLS_WEIGHTS"):
        if not os.environ.get(k):
            raise SystemExit(f"set {k} (see the docstring)")
    if a.table:
        write_table()
        return
    if a.video:
        video(Path(a.video), seconds=tuple(a.video_seconds))
        return
    if a.figure:
        figure(Path(a.figure), clip=Path(a.clip) if a.clip else None)
        return
    rows = json.loads(RESULTS.read_text()) if RESULTS.is_file() else []
    mine = []
    for seed in a.seeds:
        r = peer(seed, (ROOT / a.project / "peer").resolve()) if a.peer else run(seed, (ROOT / a.project).resolve(), a.extra)
        rows.append(r)
        mine.append(r)
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(json.dumps(rows, indent=1) + "\n")
        print(f"{r['tool']} {r['model']} seed {seed}: mAP {r['map']:.4f} mAP50 {r['map_50']:.4f} person AP50 "
              f"{r['person_ap50']} ({r['epochs']} epochs, {r['wall_seconds']:.0f} s wall)", flush=True)
    if len(mine) > 1:
        for key in ("map", "map_50", "person_ap50", "wall_seconds"):
            v = [r[key] for r in mine if r[key] is not None]
            print(f"{key}: {statistics.mean(v):.4f} ± {statistics.stdev(v):.4f} (n={len(v)})")


if __name__ == "__main__":
    main()
