"""`Predictor`: a model file in, labels and scores for new images out.

It applies the preprocessing stored in the model file, so a prediction sees exactly the input
format the model was trained and evaluated with.
"""

from __future__ import annotations

import csv
import json
import os
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from imgcls.data.file_loader import eval_transform
from imgcls.data.image_io import is_image_file, open_image, to_mode
from imgcls.device import select_device
from imgcls.errors import ImgclsError
from imgcls.models import load_model
from imgcls.progress import progress_bar
from imgcls.run_dir import new_run_dir

ImageInput = str | os.PathLike | Image.Image | np.ndarray | torch.Tensor
SEGMENT_LOGIT_BYTES = 2**29  # at most this much memory for a segmentation's logits at the photo's size (512 MB)
MIN_SCORE = 0.25  # detections scoring below this are not reported (Predictor.min_score; Ultralytics' default conf)


class Predictor:
    """Predict with a trained model: `Predictor.load("runs/x/best.safetensors").predict("cat.jpg")`."""

    def __init__(self, model, *, device: str | torch.device = "cpu", batch_size: int = 64):
        """`model`: a module with `.meta` (`load_model`), or an export runtime (`imgcls.deploy.runtime`)."""
        self.model = model.eval()
        self.meta = model.meta
        self.classes = self.meta.classes
        self.device = torch.device(device)
        self.batch_size = batch_size
        # Temperature scaling (imgcls.evaluation.calibration): calibrated scores, the same predicted classes.
        self.temperature = float(self.meta.calibration.get("temperature", 1.0))
        self.task = getattr(self.meta, "task", "classify")  # segment: a mask per image; detect: boxes
        self.min_score = MIN_SCORE  # detection: the lowest score reported
        p = self.meta.preprocess
        self.channels = p.channels
        if self.task == "detect":  # the detector resizes and normalizes itself: the image as it is, in [0, 1]
            from torchvision.transforms import v2

            self.transform = v2.Compose([v2.PILToTensor(), v2.ToDtype(torch.float32, scale=True)])
            # a photo decoded larger than the detector's largest side (5/3 of its shorter) x 1.6 is shrunk first
            self.decode_cap = int(max(p.input_size) * 5 / 3 * 1.6)
        else:
            self.transform = eval_transform(tuple(p.input_size), p.mean, p.std, resize=p.resize,
                                            interpolation=p.interpolation)

    @classmethod
    def load(cls, path: str | os.PathLike, *, device: str = "auto", batch_size: int = 64) -> Predictor:
        """A model file (.safetensors), or an export of one: .onnx (run by onnxruntime) or .pt2 (torch.export)."""
        from imgcls.deploy.runtime import OnnxModel, load_runtime

        dev = select_device(device)
        runtime = load_runtime(path, device=dev.type)
        if runtime is not None:  # onnxruntime takes CPU arrays (its CUDA provider moves them itself)
            return cls(runtime, device="cpu" if isinstance(runtime, OnnxModel) else dev, batch_size=batch_size)
        return cls(load_model(path, device=dev), device=dev, batch_size=batch_size)

    # ------------------------------------------------------------ inputs

    def _to_pil(self, x: ImageInput) -> Image.Image:
        if isinstance(x, (str, os.PathLike)):
            return open_image(x, self.channels)
        if isinstance(x, Image.Image):
            return to_mode(x, self.channels)
        if isinstance(x, torch.Tensor):  # (C, H, W), float in [0, 1] or uint8
            t = x.detach().cpu()
            if t.ndim != 3:
                raise ImgclsError(f"a tensor image must be (C, H, W), got shape {tuple(t.shape)}")
            t = t if t.dtype == torch.uint8 else (t.float().clamp(0, 1) * 255).round().to(torch.uint8)
            x = t.permute(1, 2, 0).numpy()
        if isinstance(x, np.ndarray):  # (H, W), (H, W, C) uint8 or float in [0, 1]
            a = x if x.dtype == np.uint8 else (np.clip(x.astype(np.float32), 0, 1) * 255).round().astype(np.uint8)
            if a.ndim == 3 and a.shape[2] == 1:
                a = a[:, :, 0]
            if a.ndim not in (2, 3) or (a.ndim == 3 and a.shape[2] not in (3, 4)):
                raise ImgclsError(f"an array image must be (H, W) or (H, W, 3|4), got shape {a.shape}")
            return to_mode(Image.fromarray(a), self.channels)
        raise ImgclsError(f"cannot predict on a {type(x).__name__}; give a path, folder, PIL image, numpy array or tensor")

    def _expand(self, source: ImageInput | Iterable[ImageInput]) -> list[ImageInput]:
        if isinstance(source, (str, os.PathLike)) and Path(source).is_dir():
            files = sorted(str(p) for p in Path(source).rglob("*") if p.is_file() and is_image_file(p))
            if not files:
                raise ImgclsError(f"no image files in folder {source}")
            return files
        if isinstance(source, (str, os.PathLike, Image.Image, np.ndarray)):
            return [source]
        if isinstance(source, torch.Tensor):
            return list(source) if source.ndim == 4 else [source]
        return list(source)

    # ------------------------------------------------------------ prediction

    @torch.no_grad()
    def logits(self, images: list[Image.Image]) -> torch.Tensor:
        """Raw scores (N, num_classes) for already decoded images."""
        out = []
        for i in range(0, len(images), self.batch_size):
            x = torch.stack([self.transform(im) for im in images[i:i + self.batch_size]]).to(self.device)
            out.append(self.model(x).float().cpu())
        return torch.cat(out) if out else torch.zeros(0, len(self.classes))

    def result(self, probs: torch.Tensor, top_k: int = 5) -> dict[str, Any]:
        """One image's answer from its class probabilities (K,): {"label", "score", "index", "top_k": [...]}."""
        k = min(top_k, len(self.classes))
        scores, idx = probs.topk(k)
        top = [{"label": self.classes[i], "score": float(s)} for s, i in zip(scores.tolist(), idx.tolist())]
        return {"label": top[0]["label"], "score": top[0]["score"], "index": int(idx[0]), "top_k": top}

    def segment_result(self, logits: torch.Tensor, size: tuple[int, int]) -> dict[str, Any]:
        """One image's answer from its logits (K, h, w): the mask at the image's own (W, H) `size`, from logits
        resized bilinearly, and each class's share of the pixels."""
        w, h = size
        k = logits.shape[0]
        # Logits at the photo's size cost 4 K bytes a pixel (a 48-megapixel photo and 100 classes: 19 GB): above
        # SEGMENT_LOGIT_BYTES the classes are decided at a smaller size and the mask enlarged (nearest neighbours).
        scale = min(1.0, (SEGMENT_LOGIT_BYTES / (4 * k * w * h)) ** 0.5)
        mid = (max(1, round(h * scale)), max(1, round(w * scale)))
        up = torch.nn.functional.interpolate(logits[None].float(), size=mid, mode="bilinear", align_corners=False)[0]
        mask = up.argmax(0).to(torch.uint8)
        if mid != (h, w):
            mask = torch.nn.functional.interpolate(mask[None, None].float(), size=(h, w), mode="nearest")[0, 0].to(torch.uint8)
        mask = mask.numpy()
        counts = np.bincount(mask.ravel(), minlength=len(self.classes))
        return {"mask": mask, "pixel_share": {c: round(float(n) / mask.size, 6) for c, n in zip(self.classes, counts) if n},
                "label": self.classes[int(counts[1:].argmax()) + 1] if len(counts) > 1 and counts[1:].any() else self.classes[0]}

    @torch.no_grad()
    def detect(self, images: list[Image.Image], min_score: float | None = None) -> list[dict[str, Any]]:
        """Detections of decoded images, boxes in each image's own pixels: {"detections": [{"label", "index",
        "score", "box": [x1, y1, x2, y2]}, ...] best first, "label" and "score" of the best (or "" and 0.0)};
        those scoring below `min_score` (default: `self.min_score`) left out."""
        out = []
        for i in range(0, len(images), self.batch_size):
            chunk = images[i:i + self.batch_size]
            xs, scales = [], []
            for im in chunk:
                s = min(1.0, self.decode_cap / max(im.size))
                if s < 1.0:
                    im = im.resize((max(1, round(im.width * s)), max(1, round(im.height * s))), Image.BILINEAR)
                xs.append(self.transform(im).to(self.device))
                scales.append(s)
            for o, s in zip(self.model(xs), scales):
                out.append(self.detect_result(o, s, min_score))
        return out

    def detect_result(self, o: dict, scale: float = 1.0, min_score: float | None = None) -> dict[str, Any]:
        """One image's answer from the detector's {"boxes", "scores", "labels"} (boxes divided by `scale`)."""
        keep = o["scores"].float().cpu() >= (self.min_score if min_score is None else min_score)
        boxes = (o["boxes"].float().cpu()[keep] / scale).tolist()
        scores, labels = o["scores"].float().cpu()[keep].tolist(), o["labels"].cpu()[keep].tolist()
        dets = sorted(({"label": self.classes[int(k)] if 0 <= int(k) < len(self.classes) else str(int(k)),
                        "index": int(k), "score": round(float(sc), 6), "box": [round(float(v), 2) for v in b]}
                       for b, sc, k in zip(boxes, scores, labels)), key=lambda d: -d["score"])
        return {"detections": dets, "label": dets[0]["label"] if dets else "", "score": dets[0]["score"] if dets else 0.0}

    def predict(self, source: ImageInput | Iterable[ImageInput], top_k: int = 5, *, skip_errors: bool = False):
        """Predict one image (returns a dict) or many (a list of dicts).

        `source` is a path, a folder, a PIL image, a numpy array, a (C, H, W) tensor, or a list of
        these (an (N, C, H, W) tensor counts as a list). Each result has `label`, `score`, `index`
        and `top_k` = [{"label", "score"}, ...], and `path` for files. With `skip_errors`, an
        unreadable file gives {"path", "error"} instead of raising. A segmentation model's results have
        `mask` (H, W) uint8 of class indices at the image's size, `pixel_share` {class: share of the
        pixels} and `label` (the most frequent class after the first, the background). A detector's results have
        `detections` [{"label", "index", "score", "box": [x1, y1, x2, y2] in the image's pixels}, ...] scoring at
        least `min_score`, best first, and `label`/`score` of the best.
        """
        if top_k < 1:
            raise ImgclsError(f"top_k must be at least 1, got {top_k}")
        return self._predict(source, top_k, skip_errors)

    def _predict(self, source, top_k: int, skip_errors: bool):
        single = not (isinstance(source, (list, tuple)) or (isinstance(source, (str, os.PathLike)) and Path(source).is_dir())
                      or (isinstance(source, torch.Tensor) and source.ndim == 4))
        results = list(self.predict_iter(self._expand(source), top_k, skip_errors=skip_errors))
        return results[0] if single else results

    def predict_iter(self, items: Iterable[ImageInput], top_k: int = 5, *, skip_errors: bool = False
                     ) -> Iterator[dict[str, Any]]:
        """Results one by one, in order, decoding `batch_size` images at a time: memory stays bounded however
        many items there are (a folder of 10,000 photos costs what 100 cost)."""
        chunk: list[ImageInput] = []
        for item in items:
            chunk.append(item)
            if len(chunk) == self.batch_size:
                yield from self._predict_chunk(chunk, top_k, skip_errors)
                chunk = []
        if chunk:
            yield from self._predict_chunk(chunk, top_k, skip_errors)

    def _predict_chunk(self, items: list[ImageInput], top_k: int, skip_errors: bool) -> list[dict[str, Any]]:
        images, results = [], []
        for item in items:
            try:
                images.append(self._to_pil(item))
                results.append({"path": str(item)} if isinstance(item, (str, os.PathLike)) else {})
            except ImgclsError as e:
                if not skip_errors:
                    raise
                results.append({"path": str(item), "error": str(e)})
        if self.task == "detect":
            it = iter(self.detect(images))
            for r in results:
                if "error" not in r:
                    r.update(next(it))
            return results
        logits = self.logits(images)
        if self.task == "segment":
            it = iter(zip(logits, images))
            for r in results:
                if "error" not in r:
                    lg, im = next(it)
                    r.update(self.segment_result(lg, im.size))
            return results
        probs = (logits / self.temperature).softmax(1)
        it = iter(probs)
        for r in results:
            if "error" not in r:
                r.update(self.result(next(it), top_k))
        return results


def predict_to_csv(ckpt: str | os.PathLike, source: str | os.PathLike, out_dir: str | os.PathLike | None = None, *,
                   project: str = "runs", top_k: int = 5, device: str = "auto", batch_size: int = 64,
                   progress: bool | None = None, min_score: float | None = None) -> tuple[Path, list[dict]]:
    """Predict every file of `source` (a file or folder) into <out_dir>/predictions.csv, streaming.

    A video file (.mp4, .mov, .avi, .mkv, ...) is predicted frame by frame (imgcls.video.predict_video): frames.csv,
    frames.jsonl and an annotated video, and the one result is that run's summary. A detector's predictions also
    go to predictions.json and drawn/ (the boxes on each image); `min_score`: the lowest detection score kept.

    Files are decoded `batch_size` at a time and their rows written (and flushed) as each batch is
    done, so memory stays bounded and a long run can be watched. A file that is not a readable image
    gets a row with its error instead of a prediction. Without `out_dir` a new folder
    <project>/predict[-N] is made. `progress`: a progress bar (default: when the output is a terminal).
    Returns the CSV's path and the results (small dicts, no images).
    """
    if top_k < 1:
        raise ImgclsError(f"top_k must be at least 1, got {top_k}")
    if not Path(source).exists():
        raise ImgclsError(f"source not found: {source}")
    predictor = Predictor.load(ckpt, device=device, batch_size=batch_size)
    if min_score is not None:
        predictor.min_score = min_score
    from imgcls.video import is_video, predict_video

    if Path(source).is_file() and is_video(source):  # frames predicted as a stream, an annotated video beside
        out_dir = Path(out_dir) if out_dir else new_run_dir(project, "predict")
        summary = predict_video(predictor, source, out_dir, top_k=top_k, progress=progress)
        return Path(summary["csv"]), [summary]
    if Path(source).is_dir():  # every visible file, so that a non-image is reported rather than silently left out
        files = sorted(str(p) for p in Path(source).rglob("*")
                       if p.is_file() and not any(part.startswith(".") for part in p.relative_to(source).parts))
        if not files:
            raise ImgclsError(f"no files in folder {source}")
    else:
        files = [str(source)]
    out_dir = Path(out_dir) if out_dir else new_run_dir(project, "predict")
    out_dir.mkdir(parents=True, exist_ok=True)
    if predictor.task == "segment":
        return _segment_to_files(predictor, files, out_dir, progress)
    if predictor.task == "detect":
        return _detect_to_files(predictor, files, out_dir, progress)
    path = out_dir / "predictions.csv"
    results = []
    with open(path, "w", newline="") as f, progress_bar(desc="predict", total=len(files), unit="img", progress=progress,
                                                         leave=True) as bar:
        w = csv.writer(f)
        w.writerow(["path", "label", "score", "top_k", "error"])
        for i, r in enumerate(predictor.predict_iter(files, top_k, skip_errors=True)):
            w.writerow([r.get("path", ""), r.get("label", ""), f"{r['score']:.6f}" if "score" in r else "",
                        json.dumps(r.get("top_k", [])), r.get("error", "")])
            results.append(r)
            bar.update(1)
            if (i + 1) % predictor.batch_size == 0:
                f.flush()  # a batch's rows are on disk before the next batch is decoded
    return path, results


def _segment_to_files(predictor: Predictor, files: list[str], out_dir: Path, progress: bool | None) -> tuple[Path, list[dict]]:
    """A segmentation model's predictions: masks/NNNNN_<stem>.png (palette PNGs of class indices), overlays/ (the
    mask on the photo) and predictions.csv (path, most frequent class, the two files, pixel shares, error)."""
    from imgcls.tasks.segment.draw import overlay, save_mask

    (out_dir / "masks").mkdir(exist_ok=True)
    (out_dir / "overlays").mkdir(exist_ok=True)
    path, results, k = out_dir / "predictions.csv", [], len(predictor.classes)
    with open(path, "w", newline="") as f, progress_bar(desc="predict", total=len(files), unit="img", progress=progress,
                                                         leave=True) as bar:
        w = csv.writer(f)
        w.writerow(["path", "label", "mask", "overlay", "pixel_share", "error"])
        for i, r in enumerate(predictor.predict_iter(files, skip_errors=True)):
            row = {"path": r.get("path", ""), "error": r.get("error", "")}
            if "mask" in r:
                stem = f"{i:05d}_{Path(r['path']).stem}"
                mask = save_mask(r.pop("mask"), out_dir / "masks" / f"{stem}.png", k)
                image = predictor._to_pil(row["path"]) if predictor.channels == 3 else open_image(row["path"], 3)
                ov = out_dir / "overlays" / f"{stem}.jpg"
                overlay(image, np.asarray(Image.open(mask)), k).save(ov, quality=90)
                row.update(label=r["label"], mask=str(mask), overlay=str(ov), pixel_share=r["pixel_share"])
            w.writerow([row["path"], row.get("label", ""), row.get("mask", ""), row.get("overlay", ""),
                        json.dumps(row.get("pixel_share", {})), row["error"]])
            results.append(row)
            bar.update(1)
    return path, results


def _detect_to_files(predictor: Predictor, files: list[str], out_dir: Path, progress: bool | None) -> tuple[Path, list[dict]]:
    """A detector's predictions: predictions.csv (one row per box: path, label, score, x1, y1, x2, y2; an image
    without detections gets one row with no box; unreadable files their error), predictions.json (per image)
    and drawn/NNNNN_<stem>.jpg (the boxes on the photo)."""
    from imgcls.video import annotate

    (out_dir / "drawn").mkdir(exist_ok=True)
    path, results = out_dir / "predictions.csv", []
    with open(path, "w", newline="") as f, open(out_dir / "predictions.json.tmp", "w") as fj, \
            progress_bar(desc="predict", total=len(files), unit="img", progress=progress, leave=True) as bar:
        w = csv.writer(f)
        w.writerow(["path", "label", "score", "x1", "y1", "x2", "y2", "error"])
        fj.write("[")
        for i, r in enumerate(predictor.predict_iter(files, skip_errors=True)):
            if "error" in r:
                w.writerow([r["path"], "", "", "", "", "", "", r["error"]])
            else:
                for d in r["detections"] or [None]:
                    w.writerow([r["path"], d["label"], f"{d['score']:.6f}", *d["box"], ""] if d else
                               [r["path"], "", "", "", "", "", "", ""])
                drawn = out_dir / "drawn" / f"{i:05d}_{Path(r['path']).stem}.jpg"
                annotate(predictor, predictor._to_pil(r["path"]), r).save(drawn, quality=90)
                r["drawn"] = str(drawn)
            fj.write(("," if i else "") + "\n" + json.dumps(r))
            results.append(r)
            bar.update(1)
            if (i + 1) % predictor.batch_size == 0:
                f.flush()
        fj.write("\n]\n")
    os.replace(out_dir / "predictions.json.tmp", out_dir / "predictions.json")
    return path, results
