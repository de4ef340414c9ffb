"""Video in, predictions per frame out, for every task: `imgcls predict ckpt=M source=clip.mp4`.

Frames are decoded as a stream (PyAV), predicted a few at a time, drawn (a classifier's label, a segmenter's
mask, a detector's boxes) and encoded into an annotated video beside the per-frame CSV and JSON lines as they
come: nothing grows with the clip's length but the output files, so an hour of video needs the memory of a
second of it. The frames per second of the whole pipeline (decode, predict, draw, encode) are printed.
"""

from __future__ import annotations

import csv
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from imgcls.errors import ImgclsError
from imgcls.progress import progress_bar

VIDEO_EXTENSIONS = (".mp4", ".m4v", ".mov", ".avi", ".mkv", ".webm", ".mpg", ".mpeg", ".wmv", ".flv")
FRAMES_PER_BATCH = 4  # frames predicted together (a detector's batch on a CPU)
RSS_EVERY = 100  # frames between two samples of the process's resident memory (the summary's "rss_mb")


def is_video(path) -> bool:
    return Path(str(path)).suffix.lower() in VIDEO_EXTENSIONS


def _open(path: Path):
    try:
        import av
    except ImportError:  # pragma: no cover - a dependency
        raise ImgclsError("video needs PyAV: pip install av") from None
    try:
        container = av.open(str(path))
    except (av.FFmpegError, OSError) as e:
        raise ImgclsError(f"{path}: not a video FFmpeg can read ({e})") from None
    if not container.streams.video:
        container.close()
        raise ImgclsError(f"{path}: no video stream (audio only?)")
    return container


def video_info(path) -> dict[str, Any]:
    """{"frames" (None when the container does not say), "fps", "width", "height", "seconds"} of a video file."""
    with _open(Path(path)) as c:
        s = c.streams.video[0]
        fps = float(s.average_rate or s.guessed_rate or 25)
        seconds = float(s.duration * s.time_base) if s.duration else (c.duration / 1e6 if c.duration else None)
        return {"frames": s.frames or None, "fps": fps, "width": s.codec_context.width, "height": s.codec_context.height,
                "seconds": seconds}


def annotate(predictor, image: Image.Image, r: dict) -> Image.Image:
    """A frame with its prediction drawn: boxes (detect), the mask blended in (segment), the label (classify)."""
    if predictor.task == "detect":
        import torch

        from imgcls.tasks.detect.draw import draw_boxes

        d = r.get("detections", [])
        pred = {"boxes": torch.tensor([x["box"] for x in d], dtype=torch.float32).reshape(-1, 4),
                "labels": torch.tensor([x["index"] for x in d], dtype=torch.long),
                "scores": torch.tensor([x["score"] for x in d], dtype=torch.float32)}
        return draw_boxes(image, pred, predictor.classes)
    if predictor.task == "segment":
        from imgcls.tasks.segment.draw import overlay

        return overlay(image, r["mask"], len(predictor.classes))
    out = image.copy()
    ImageDraw.Draw(out).text((8, 8), f"{r['label']} {r['score']:.2f}", fill=(255, 255, 0))
    return out


def row_of(predictor, frame: int, t: float, r: dict) -> dict[str, Any]:
    """The JSON line of a frame: its index, time and prediction (no mask array: its class shares)."""
    out = {"frame": frame, "time": round(t, 4), "label": r.get("label", ""), "score": r.get("score")}
    if predictor.task == "detect":
        out["detections"] = r["detections"]
    elif predictor.task == "segment":
        out["pixel_share"] = r["pixel_share"]
    else:
        out["top_k"] = r.get("top_k", [])
    return out


def predict_video(predictor, source, out_dir: Path, *, top_k: int = 5, progress: bool | None = None,
                  write_video: bool = True, max_frames: int | None = None, say=print) -> dict[str, Any]:
    """Predict every frame of `source` into out_dir: frames.csv, frames.jsonl and <stem>_annotated.mp4.

    Returns {"frames", "seconds", "fps", "csv", "jsonl", "video", "peak_rss_mb", "rss_mb"}: frames predicted, the
    wall time of the whole pipeline, its frames per second, and the resident memory every RSS_EVERY frames.
    """
    import av

    source, out_dir = Path(source), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    info = video_info(source)
    csv_path, jsonl_path = out_dir / "frames.csv", out_dir / "frames.jsonl"
    video_path = out_dir / f"{source.stem}_annotated.mp4" if write_video else None
    partial = out_dir / f".{source.stem}_annotated.partial.mp4"  # renamed once whole: no truncated video left behind
    container = _open(source)
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"  # FFmpeg decodes on its own threads
    rate = stream.average_rate or stream.guessed_rate or 25  # a Fraction (29.97 stays 30000/1001)
    writer = ostream = None
    finished = False
    rss: list[tuple[int, float]] = []  # (frames done, resident MB): flat over a clip when nothing accumulates
    t0, n = time.perf_counter(), 0
    total = min(info["frames"], max_frames) if info["frames"] and max_frames else (info["frames"] or max_frames)
    try:
        with open(csv_path, "w", newline="") as fc, open(jsonl_path, "w") as fj, \
                progress_bar(desc="video", total=total, unit="frame", progress=progress, leave=True) as bar:
            w = csv.writer(fc)
            w.writerow(["frame", "time", "label", "score", "prediction"])
            batch: list[tuple[int, float, Image.Image]] = []

            def flush():
                nonlocal writer, ostream
                results = predictor._predict_chunk([im for _, _, im in batch], top_k, False)
                for (i, t, im), r in zip(batch, results):
                    row = row_of(predictor, i, t, r)
                    extra = {k: v for k, v in row.items() if k not in ("frame", "time", "label", "score")}
                    w.writerow([i, row["time"], row["label"], "" if row["score"] is None else f"{row['score']:.6f}",
                                json.dumps(extra)])
                    fj.write(json.dumps(row) + "\n")
                    if video_path is not None:
                        if writer is None:
                            writer = av.open(str(partial), "w", format="mp4")
                            ostream = writer.add_stream("libx264", rate=rate)
                            ostream.width, ostream.height = im.width - im.width % 2, im.height - im.height % 2
                            ostream.pix_fmt = "yuv420p"
                            ostream.options = {"preset": "veryfast", "crf": "23"}
                        drawn = annotate(predictor, im, r).crop((0, 0, ostream.width, ostream.height))
                        for packet in ostream.encode(av.VideoFrame.from_image(drawn)):
                            writer.mux(packet)
                bar.update(len(batch))
                if (batch[-1][0] + 1) // RSS_EVERY != batch[0][0] // RSS_EVERY:  # a multiple of RSS_EVERY passed
                    rss.append((batch[-1][0] + 1, current_rss_mb()))
                batch.clear()

            for frame in container.decode(stream):
                if max_frames is not None and n >= max_frames:
                    break
                t = float(frame.time) if frame.time is not None else n / info["fps"]
                batch.append((n, t, frame.to_image()))
                n += 1
                if len(batch) == FRAMES_PER_BATCH:
                    flush()
            if batch:
                flush()
            if writer is not None:
                for packet in ostream.encode():
                    writer.mux(packet)
            finished = True
    except av.FFmpegError as e:
        raise ImgclsError(f"{source}: decoding failed at frame {n} ({e})") from None
    finally:
        try:
            container.close()
        finally:
            if writer is not None:
                writer.close()
            if not finished:
                partial.unlink(missing_ok=True)
    if writer is not None:
        partial.replace(video_path)
    seconds = time.perf_counter() - t0
    if not n:
        raise ImgclsError(f"{source}: no frame could be decoded")
    out = {"frames": n, "seconds": round(seconds, 3), "fps": round(n / seconds, 2), "csv": str(csv_path),
           "jsonl": str(jsonl_path), "video": str(video_path) if video_path else None, "peak_rss_mb": peak_rss_mb(),
           "rss_mb": rss,
           "source": {**info, "path": str(source)}}
    say(f"{n} frames of {source.name} ({info['width']}x{info['height']}) in {seconds:.1f} s: {out['fps']:.1f} frames/s "
        f"(decode, predict, draw, encode)")
    return out


def current_rss_mb() -> float:
    """This process's resident memory now (Linux /proc; 0 elsewhere)."""
    try:
        import os

        with open("/proc/self/statm") as f:
            return round(int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20, 1)
    except (OSError, ValueError, IndexError):
        return 0.0


def peak_rss_mb() -> float:
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0.0
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1)


def write_clip(images: list, path, *, seconds: float, fps: int = 30, size: tuple[int, int] = (640, 360),
               zoom: float = 1.3) -> Path:
    """A clip of real photos for tests and benchmarks: each photo in turn, the camera panning across it (a window
    of `size` moving over the photo enlarged `zoom` times), encoded with libx264. Says nothing about real footage."""
    import av

    path = Path(path)
    frames = int(round(seconds * fps))
    per = max(1, -(-frames // max(len(images), 1)))
    w, h = size
    with av.open(str(path), "w") as out:
        s = out.add_stream("libx264", rate=fps)
        s.width, s.height, s.pix_fmt = w, h, "yuv420p"
        s.options = {"preset": "veryfast", "crf": "23"}
        done = 0
        for src in images:
            im = Image.open(src).convert("RGB") if not isinstance(src, Image.Image) else src.convert("RGB")
            scale = max(w / im.width, h / im.height) * zoom
            big = im.resize((round(im.width * scale), round(im.height * scale)), Image.BILINEAR)
            for k in range(per):
                if done == frames:
                    break
                a = k / max(per - 1, 1)
                x, y = round((big.width - w) * a), round((big.height - h) * (0.5 + 0.3 * np.sin(np.pi * a)) / 1.3)
                frame = av.VideoFrame.from_image(big.crop((x, y, x + w, y + h)))
                for p in s.encode(frame):
                    out.mux(p)
                done += 1
        for p in s.encode():
            out.mux(p)
    return path
