"""`export`: a model file to ONNX (torch.onnx's torch.export-based exporter) or `.pt2` (torch.export), proven right.

Each export carries the model file's metadata (classes, preprocessing, calibration) and is checked
against the PyTorch model on real images: the largest absolute logit difference and the share of
images with the same top-1 class are stored in the export and returned; beyond tolerance the export
fails (the file is kept as `NAME.failed.EXT` to look at).
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from imgcls.deploy.runtime import META_KEY, PARITY_KEY, PT2_META, PT2_PARITY, OnnxModel, Pt2Model
from imgcls.errors import ImgclsError
from imgcls.modelfile import ModelMeta
from imgcls.models import load_model
from imgcls.progress import progress_bar
from imgcls.run_dir import refuse_overwrite

FORMATS = ("onnx", "pt2")


@dataclass
class Parity:
    images: int  # how many real images were compared
    source: str  # where they came from
    max_abs_diff: float  # largest |export logit - PyTorch logit|
    top1_agreement: float  # share of images with the same predicted class
    atol: float
    min_agreement: float

    @property
    def passed(self) -> bool:
        return self.max_abs_diff <= self.atol and self.top1_agreement >= self.min_agreement

    def summary(self) -> str:
        return (f"max |logit difference| {self.max_abs_diff:.2e} (tolerance {self.atol:g}), top-1 agreement "
                f"{self.top1_agreement:.2%} (at least {self.min_agreement:.2%}) on {self.images} images from {self.source}")


@dataclass
class ExportResult:
    path: Path
    format: str
    parity: Parity
    seconds: float


def check_images(meta: ModelMeta, *, images: str | os.PathLike | None = None, data=None, split: str = "test",
                 n: int = 256) -> tuple[torch.Tensor, torch.Tensor | None, str]:
    """Up to `n` real images in the model's input format (N, C, H, W), their labels (None for a folder), a description.

    From `images` (a folder or file) when given, else from the data set the model was trained on.
    """
    if images is not None:
        from imgcls.predict import Predictor

        p = Path(images)
        if not p.exists():
            raise ImgclsError(f"images={images}: no such file or folder")
        pred = Predictor(_Stub(meta))
        pils = [pred._to_pil(f) for f in pred._expand(str(p))[:n]]
        xs = [pred.transform(im) for im in pils]
        return (xs if meta.task == "detect" else torch.stack(xs)), None, f"{p} ({len(pils)} images)"
    from imgcls.data import make_loader
    from imgcls.evaluation.run import split_for_model

    try:
        try:
            bundle, ds, cfg = split_for_model(meta, data, split, purpose="to check the export on; pass split=... or images=FOLDER")
        except ImgclsError:
            if split != "test":
                raise
            split = "val"  # a data set without a test split (COCO-style train/val): its validation images
            bundle, ds, cfg = split_for_model(meta, data, split, purpose="to check the export on; pass split=... or images=FOLDER")
    except ImgclsError as e:
        raise ImgclsError(f"{e}\nthe export is checked on real images: pass images=FOLDER, or data=... with the "
                          f"data set the model was trained on") from None
    x, y = next(iter(make_loader(bundle, ds, train=False, batch_size=min(n, len(ds)))))
    return x, y, f"{cfg.name} {split}"


class _Stub(torch.nn.Module):
    """A stand-in model carrying only `meta`: lets `Predictor`'s input handling be reused without weights."""

    def __init__(self, meta: ModelMeta):
        super().__init__()
        self.meta = meta


@torch.no_grad()
def batched(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor, batch_size: int = 256,
            desc: str | None = None) -> torch.Tensor:
    starts = range(0, len(x), batch_size)
    return torch.cat([fn(x[i:i + batch_size]).float().cpu()
                      for i in (progress_bar(starts, desc=desc, unit="batch") if desc else starts)])


def compare(ref: torch.Tensor, got: torch.Tensor, *, source: str, atol: float, min_agreement: float) -> Parity:
    if got.shape != ref.shape:
        raise ImgclsError(f"the export returns logits of shape {tuple(got.shape)}, PyTorch {tuple(ref.shape)}")
    return Parity(images=len(ref), source=source, max_abs_diff=float((got - ref).abs().max()) if len(ref) else 0.0,
                  top1_agreement=float((got.argmax(1) == ref.argmax(1)).float().mean()) if len(ref) else 1.0,
                  atol=atol, min_agreement=min_agreement)


def export_onnx(model: torch.nn.Module, sample: torch.Tensor, path: Path, *, opset: int | None = None) -> None:
    """torch.onnx.export with the torch.export-based exporter and a dynamic batch size."""
    try:
        import onnx  # noqa: F401  (the exporter needs onnx and onnxscript)
        import onnxscript  # noqa: F401
    except ImportError:  # pragma: no cover - dependencies
        raise ImgclsError("ONNX export needs onnx and onnxscript: pip install onnx onnxscript") from None
    batch = torch.export.Dim("batch", min=1, max=4096)
    kwargs = {"opset_version": opset} if opset else {}
    try:
        torch.onnx.export(model, (sample,), str(path), dynamo=True, input_names=["images"], output_names=["logits"],
                          dynamic_shapes=({0: batch},), external_data=False, **kwargs)
    except Exception as e:  # the exporter's errors are long; the first line says what failed
        raise ImgclsError(f"ONNX export of {getattr(model.meta, 'arch', 'the model')} failed: "
                          f"{str(e).strip().splitlines()[0]}") from None


def set_onnx_metadata(path: Path, props: dict[str, str]) -> None:
    import onnx

    m = onnx.load(str(path))
    existing = {p.key: p.value for p in m.metadata_props}
    onnx.helper.set_model_props(m, {**existing, **props})
    onnx.save(m, str(path))


def export_pt2(model: torch.nn.Module, sample: torch.Tensor, path: Path, extra: dict[str, str]):
    batch = torch.export.Dim("batch", min=1, max=4096)
    try:
        program = torch.export.export(model, (sample,), dynamic_shapes=({0: batch},))
    except Exception as e:
        raise ImgclsError(f"torch.export of {model.meta.arch} failed: {str(e).strip().splitlines()[0]}") from None
    torch.export.save(program, str(path), extra_files=extra)
    return program


def default_out(ckpt: str | os.PathLike, fmt: str) -> Path:
    return Path(ckpt).with_suffix(f".{fmt}")


def export(ckpt: str | os.PathLike, format: str = "onnx", out: str | os.PathLike | None = None, *,
           images: str | os.PathLike | None = None, data=None, split: str = "test", check_images_n: int = 256,
           atol: float = 1e-3, min_agreement: float | None = None, overwrite: bool = False, opset: int | None = None
           ) -> ExportResult:
    """Export the model file `ckpt` to `format` (onnx | pt2) at `out` (default: beside it) and check it.

    The check runs the export and the PyTorch model on up to `check_images_n` real images
    (`images=FOLDER`, else the model's own data set, `split`) and raises `ImgclsError` when the largest
    logit difference exceeds `atol` or top-1 agreement falls below `min_agreement` (None: 0.999). A detector is
    checked box for box instead (`export_detector`: images agreeing, None: 0.95; `atol` at least DETECT_ATOL pixels).
    """
    if format not in FORMATS:
        raise ImgclsError(f"format={format!r} is not one of: {', '.join(FORMATS)}")
    t0 = time.perf_counter()
    out = Path(out) if out else default_out(ckpt, format)
    if out.suffix.lower() != f".{format}":
        raise ImgclsError(f"out={out} should end in .{format}")
    refuse_overwrite(out, overwrite)
    model = load_model(ckpt, device="cpu")
    if model.meta.task == "detect":
        if format != "onnx":
            raise ImgclsError("detectors export to ONNX (format=onnx): torch.export cannot yet trace their "
                              "data-dependent number of boxes into a .pt2")
        x, _, source = check_images(model.meta, images=images, data=data, split=split, n=min(check_images_n, 64))
        return export_detector(model, x, source, out, t0, atol=atol, opset=opset,
                               min_agreement=DETECT_AGREEMENT if min_agreement is None else min_agreement)
    min_agreement = 0.999 if min_agreement is None else min_agreement
    x, _, source = check_images(model.meta, images=images, data=data, split=split, n=check_images_n)
    sample = x[:2] if len(x) >= 2 else torch.cat([x, x])  # a batch of 2: the batch size stays symbolic
    out.parent.mkdir(parents=True, exist_ok=True)
    # Written under its final name in a temporary folder (a .pt2 archive names its root after the file),
    # then moved into place once checked.
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp = tmp_dir / out.name
    try:
        meta_json = model.meta.to_json()
        ref = batched(model, x, desc="export check: PyTorch")
        if format == "onnx":
            export_onnx(model, sample, tmp, opset=opset)
            set_onnx_metadata(tmp, {META_KEY: meta_json})
            got = batched(OnnxModel(tmp), x, desc="export check: onnxruntime")
        else:
            program = export_pt2(model, sample, tmp, {PT2_META: meta_json})
            got = batched(Pt2Model(tmp), x, desc="export check: .pt2")
        parity = compare(ref, got, source=source, atol=atol, min_agreement=min_agreement)
        record = json.dumps({**asdict(parity), "passed": parity.passed})
        if format == "onnx":
            set_onnx_metadata(tmp, {PARITY_KEY: record})
        else:
            torch.export.save(program, str(tmp), extra_files={PT2_META: meta_json, PT2_PARITY: record})
        if not parity.passed:
            failed = out.with_name(f"{out.stem}.failed{out.suffix}")
            os.replace(tmp, failed)
            raise ImgclsError(f"the {format} export disagrees with the PyTorch model: {parity.summary()}; "
                              f"kept as {failed} to inspect")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ExportResult(path=out, format=format, parity=parity, seconds=time.perf_counter() - t0)


class SingleImageDetector(torch.nn.Module):
    """A detector as ONNX sees it: one image (3, H, W) in [0, 1] of any size in, (boxes (N, 4), scores (N,), labels
    (N,)) out, in that image's pixels."""

    def __init__(self, detector: torch.nn.Module):
        super().__init__()
        self.detector = detector

    def forward(self, image: torch.Tensor):
        o = self.detector([image])[0]
        return o["boxes"], o["scores"], o["labels"]


def compare_detections(ref: list[dict], got: list[dict], *, source: str, atol: float, min_agreement: float) -> Parity:
    """Parity of boxes: an image agrees when the export finds as many boxes, of the same classes in the same order;
    max_abs_diff is the largest difference of a box coordinate (pixels) or score over the images that agree."""
    agree, diff = 0, 0.0
    for r, g in zip(ref, got):
        if len(r["boxes"]) == len(g["boxes"]) and torch.equal(r["labels"].long(), g["labels"].long()):
            agree += 1
            if len(r["boxes"]):
                diff = max(diff, float((r["boxes"] - g["boxes"]).abs().max()), float((r["scores"] - g["scores"]).abs().max()))
    return Parity(images=len(ref), source=source, max_abs_diff=diff, top1_agreement=agree / max(len(ref), 1), atol=atol,
                  min_agreement=min_agreement)


DETECT_ATOL = 0.05  # pixels of a box coordinate (and score) between the export and PyTorch
DETECT_AGREEMENT = 0.95  # share of images whose boxes agree (a score within rounding of a threshold may flip one box)


def export_detector(model, x: list[torch.Tensor], source: str, out: Path, t0: float, *, atol: float, min_agreement: float,
                    opset: int | None) -> ExportResult:
    """ONNX export of a detector (TorchScript-based exporter: torchvision's detectors trace with a dynamic image
    size and a data-dependent number of boxes), checked box for box against PyTorch on real images."""
    try:
        import onnx  # noqa: F401
    except ImportError:  # pragma: no cover - a dependency
        raise ImgclsError("ONNX export needs onnx: pip install onnx") from None
    import warnings

    out.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{out.name}.", dir=out.parent))
    tmp = tmp_dir / out.name
    atol = max(atol, DETECT_ATOL)
    wrapped = SingleImageDetector(model).eval()
    try:
        with torch.no_grad():
            ref = [model([im])[0] for im in progress_bar(x, desc="export check: PyTorch", unit="img")]
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # the tracer's warnings about Python values in the graph
                try:
                    torch.onnx.export(wrapped, (x[0],), str(tmp), dynamo=False, opset_version=opset or 17,
                                      input_names=["image"], output_names=["boxes", "scores", "labels"],
                                      dynamic_axes={"image": {1: "height", 2: "width"}, "boxes": {0: "n"},
                                                    "scores": {0: "n"}, "labels": {0: "n"}})
                except Exception as e:  # the exporter's errors are long; the first line says what failed
                    raise ImgclsError(f"ONNX export of {model.meta.arch} failed: {str(e).strip().splitlines()[0]}") from None
        set_onnx_metadata(tmp, {META_KEY: model.meta.to_json()})
        runtime = OnnxModel(tmp)
        got = [runtime([im])[0] for im in progress_bar(x, desc="export check: onnxruntime", unit="img")]
        parity = compare_detections(ref, got, source=source, atol=atol, min_agreement=min_agreement)
        set_onnx_metadata(tmp, {PARITY_KEY: json.dumps({**asdict(parity), "passed": parity.passed})})
        if not parity.passed:
            failed = out.with_name(f"{out.stem}.failed{out.suffix}")
            os.replace(tmp, failed)
            raise ImgclsError(f"the onnx export's boxes disagree with the PyTorch model's: the same boxes on "
                              f"{parity.top1_agreement:.0%} of {parity.images} images (at least {min_agreement:.0%}), largest "
                              f"box or score difference {parity.max_abs_diff:.3g} (tolerance {atol:g}); kept as {failed}")
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp_dir, ignore_errors=True)
    return ExportResult(path=out, format="onnx", parity=parity, seconds=time.perf_counter() - t0)
