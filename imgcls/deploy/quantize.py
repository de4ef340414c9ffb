"""`quantize`: int8 ONNX models through onnxruntime's quantization, with accuracy and speed before and after.

dynamic: weights stored as int8, activations quantized on the fly (no calibration; mostly helps
Linear/MatMul-heavy models). static: weights and activations int8 (QDQ format, per-channel weights),
activation ranges calibrated on training images: the one that speeds up conv nets, where the CPU
has int8 instructions (VNNI/AMX) for it.
"""

from __future__ import annotations

import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from imgcls.deploy.export import batched, export, set_onnx_metadata
from imgcls.deploy.runtime import META_KEY, OnnxModel
from imgcls.errors import ImgclsError
from imgcls.modelfile import read_meta
from imgcls.run_dir import refuse_overwrite
from imgcls.tasks import require_classifier

MODES = ("dynamic", "static")


@dataclass
class Speed:
    latency_ms_p50: float  # batch 1
    images_per_second: float  # at `batch`
    batch: int
    latency_ms_p95: float = 0.0


@dataclass
class QuantizeResult:
    path: Path
    mode: str
    fp32_path: Path
    images: int  # test images scored
    fp32_top1: float
    int8_top1: float
    top1_agreement: float
    fp32_speed: Speed
    int8_speed: Speed
    fp32_bytes: int
    int8_bytes: int

    def summary(self) -> str:
        return (f"{self.mode} int8: top-1 {self.int8_top1:.2%} vs fp32 {self.fp32_top1:.2%} on {self.images} images "
                f"(agreement {self.top1_agreement:.2%}); batch-1 latency {self.int8_speed.latency_ms_p50:.2f} vs "
                f"{self.fp32_speed.latency_ms_p50:.2f} ms; {self.int8_speed.images_per_second:.0f} vs "
                f"{self.fp32_speed.images_per_second:.0f} images/s at batch {self.int8_speed.batch}; "
                f"{self.int8_bytes / 1e6:.2f} vs {self.fp32_bytes / 1e6:.2f} MB")


def measure_speed(fn, sample: torch.Tensor, *, batch: int = 256, repeats: int = 30, seconds: float = 3.0,
                  throughput_seconds: float | None = None) -> Speed:
    """Batch-1 latency (p50, p95 over `repeats` calls, at most `seconds`) and images/s at `batch` over at least
    `throughput_seconds` (default seconds / 2); inputs cycled from `sample`, after a warm-up."""
    one = sample[:1]
    big = sample.repeat((batch + len(sample) - 1) // len(sample), 1, 1, 1)[:batch]
    for _ in range(3):
        fn(one)
    fn(big)
    lat = []
    t_end = time.perf_counter() + seconds
    while len(lat) < repeats and (time.perf_counter() < t_end or len(lat) < 5):
        t = time.perf_counter()
        fn(one)
        lat.append(time.perf_counter() - t)
    n, t0 = 0, time.perf_counter()
    while n < 3 or time.perf_counter() - t0 < (seconds / 2 if throughput_seconds is None else throughput_seconds):
        fn(big)
        n += 1
    return Speed(latency_ms_p50=float(np.percentile(lat, 50) * 1000), latency_ms_p95=float(np.percentile(lat, 95) * 1000),
                 images_per_second=n * batch / (time.perf_counter() - t0), batch=batch)


def _ort_quantization():
    try:
        from onnxruntime import quantization
        from onnxruntime.quantization.shape_inference import quant_pre_process
    except ImportError:  # pragma: no cover - a dependency
        raise ImgclsError("quantization needs onnxruntime: pip install onnxruntime") from None
    return quantization, quant_pre_process


def quantize_onnx_dynamic(src: str | os.PathLike, out: str | os.PathLike) -> None:
    """int8 weights, activations quantized at run time (onnxruntime's quantize_dynamic)."""
    q, pre_process = _ort_quantization()
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_process(str(src), str(pre), skip_symbolic_shape=True)
        q.quantize_dynamic(str(pre), str(out), weight_type=q.QuantType.QInt8)


def quantize_onnx_static(src: str | os.PathLike, out: str | os.PathLike, calibration: torch.Tensor, *,
                         keep_first: bool = True) -> None:
    """int8 weights (per channel) and activations (ranges from `calibration` images), QDQ format.

    Conv, Gemm and MatMul are quantized; with `keep_first`, the layer reading the image stays fp32.
    """
    q, pre_process = _ort_quantization()
    with tempfile.TemporaryDirectory() as tmp:
        pre = Path(tmp) / "pre.onnx"
        pre_process(str(src), str(pre), skip_symbolic_shape=True)
        import onnxruntime as ort

        name = ort.InferenceSession(str(pre), providers=["CPUExecutionProvider"]).get_inputs()[0].name
        q.quantize_static(str(pre), str(out), _Reader(name, calibration), quant_format=q.QuantFormat.QDQ,
                          per_channel=True, activation_type=q.QuantType.QUInt8, weight_type=q.QuantType.QInt8,
                          calibrate_method=q.CalibrationMethod.MinMax, op_types_to_quantize=["Conv", "Gemm", "MatMul"],
                          nodes_to_exclude=first_layer(pre) if keep_first else [])


def first_layer(path: Path) -> list[str]:
    """Names of the Conv/Gemm/MatMul nodes that read the graph's input directly (the first layer)."""
    import onnx

    g = onnx.load(str(path)).graph
    inputs = {i.name for i in g.input} - {t.name for t in g.initializer}
    return [n.name for n in g.node if n.op_type in ("Conv", "Gemm", "MatMul") and set(n.input) & inputs]


class _Reader:
    """onnxruntime's CalibrationDataReader over a tensor of normalized images."""

    def __init__(self, name: str, x: torch.Tensor, batch: int = 32):
        self.batches = iter([{name: np.ascontiguousarray(x[i:i + batch].numpy())} for i in range(0, len(x), batch)])

    def get_next(self):
        return next(self.batches, None)


def _split_data(fp32: OnnxModel, data, split: str, n: int | None):
    from imgcls.data import make_loader
    from imgcls.evaluation.run import split_for_model

    bundle, ds, _ = split_for_model(fp32.meta, data, split)
    xs, ys, seen = [], [], 0
    for x, y in make_loader(bundle, ds, train=False, batch_size=500):
        xs.append(x.cpu())
        ys.append(y.cpu())
        seen += len(y)
        if n is not None and seen >= n:
            break
    x, y = torch.cat(xs), torch.cat(ys)
    return (x[:n], y[:n]) if n is not None else (x, y), bundle


def _calibration_images(bundle, n: int) -> torch.Tensor:
    from imgcls.data import make_loader

    x, _ = next(iter(make_loader(bundle, bundle.train, train=False, batch_size=min(n, len(bundle.train)))))
    return x.cpu()


def quantize(model: str | os.PathLike, mode: str = "static", out: str | os.PathLike | None = None, *, data=None,
             split: str = "test", eval_images: int | None = None, calib_images: int = 512, overwrite: bool = False,
             batch: int = 256, keep_first: bool = True, speed_seconds: float = 3.0) -> QuantizeResult:
    """Quantize `model` (an imgcls ONNX export, or a model file: exported first) to int8 and compare.

    Accuracy of both on the `split` of the model's data set (`eval_images` = all), speed of both
    (batch-1 median latency, images/s at `batch`); the int8 model keeps the export's metadata.
    Static quantization covers Conv, Gemm and MatMul; `keep_first` leaves the layer that reads the
    image in fp32 (its input and output ranges are the widest; on the fast CIFAR-10 net, whose first
    layer is the patch whitening, quantizing it costs most of the accuracy lost: docs/deploy.md).
    """
    if mode not in MODES:
        raise ImgclsError(f"mode={mode!r} is not one of: {', '.join(MODES)}")
    src = Path(model)
    require_classifier((read_meta(src) if src.suffix.lower() != ".onnx" else OnnxModel(src).meta).task,
                       "imgcls quantize (its accuracy check)")
    if src.suffix.lower() != ".onnx":  # a model file: export (and check) it first, unless its export is there
        onnx_path = src.with_suffix(".onnx")
        if not onnx_path.exists() or OnnxModel(onnx_path).meta.to_json() != read_meta(src).to_json():
            export(src, "onnx", onnx_path, data=data, overwrite=True)  # missing, or made from an older model file
        src = onnx_path
    out = Path(out) if out else src.with_name(f"{src.stem}.int8-{mode}.onnx")
    refuse_overwrite(out, overwrite)
    fp32 = OnnxModel(src)
    (x, y), bundle = _split_data(fp32, data, split, eval_images)
    if mode == "dynamic":
        quantize_onnx_dynamic(src, out)
    else:
        quantize_onnx_static(src, out, _calibration_images(bundle, calib_images), keep_first=keep_first)
    set_onnx_metadata(out, {META_KEY: fp32.meta.to_json(), "imgcls_quantization": mode})
    int8 = OnnxModel(out)
    ref, got = batched(fp32, x), batched(int8, x)
    return QuantizeResult(
        path=out, mode=mode, fp32_path=src, images=len(y),
        fp32_top1=float((ref.argmax(1) == y).float().mean()), int8_top1=float((got.argmax(1) == y).float().mean()),
        top1_agreement=float((ref.argmax(1) == got.argmax(1)).float().mean()),
        fp32_speed=measure_speed(fp32, x[:batch], batch=batch, seconds=speed_seconds),
        int8_speed=measure_speed(int8, x[:batch], batch=batch, seconds=speed_seconds),
        fp32_bytes=src.stat().st_size, int8_bytes=out.stat().st_size)
