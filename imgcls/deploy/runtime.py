"""Exported models as callables with the model file's metadata: ONNX (onnxruntime) and `.pt2` (torch.export).

`OnnxModel(path)(x)` and `Pt2Model(path)(x)` take a normalized float batch (N, C, H, W) and return
logits (N, K) as a CPU tensor, like the PyTorch model; `.meta` is the `ModelMeta` stored in the
export, so `Predictor` runs an export exactly as it runs a model file.
"""

from __future__ import annotations

import contextlib
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from imgcls.errors import ImgclsError
from imgcls.modelfile import META_KEY, meta_from_json

PARITY_KEY = "imgcls_parity"  # the export check: max |logit difference|, top-1 agreement, images
PT2_META = "imgcls.json"
PT2_PARITY = "imgcls_parity.json"


def ort_providers(device: str = "cpu") -> list[str]:
    """onnxruntime's execution providers for `device`: CUDA first when asked for and available."""
    import onnxruntime as ort

    available = ort.get_available_providers()
    if device != "cpu" and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]


class OnnxModel:
    """An imgcls ONNX export run by onnxruntime."""

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu", threads: int | None = None):
        try:
            import onnxruntime as ort
        except ImportError:  # pragma: no cover - a dependency
            raise ImgclsError("running ONNX models needs onnxruntime: pip install onnxruntime") from None
        self.path = Path(path)
        if not self.path.is_file():
            raise ImgclsError(f"{path}: no such file")
        opts = ort.SessionOptions()
        if threads:
            opts.intra_op_num_threads = threads
        try:
            self.session = ort.InferenceSession(str(self.path), opts, providers=ort_providers(device))
        except Exception as e:  # onnxruntime raises its own exception types for bad files
            raise ImgclsError(f"{path} is not a model onnxruntime can load: {str(e).splitlines()[0]}") from None
        props = self.session.get_modelmeta().custom_metadata_map
        if META_KEY not in props:
            raise ImgclsError(f"{path} is an ONNX model without imgcls metadata (classes, preprocessing): "
                              f"export it with `imgcls export`")
        self.meta = meta_from_json(props[META_KEY], self.path)
        self.parity = json.loads(props[PARITY_KEY]) if PARITY_KEY in props else None
        self.input_name = self.session.get_inputs()[0].name

    def eval(self) -> OnnxModel:
        return self

    def __call__(self, x: torch.Tensor | list[torch.Tensor]):
        """Logits of a batch (N, C, H, W); a detector's export: a list of images (3, H, W) -> a list of
        {"boxes", "scores", "labels"}, one image per run."""
        if getattr(self.meta, "task", "classify") == "detect":
            out = []
            for im in x:
                b, s, k = self.session.run(None, {self.input_name: np.ascontiguousarray(im.detach().cpu().float().numpy())})
                out.append({"boxes": torch.from_numpy(b), "scores": torch.from_numpy(s), "labels": torch.from_numpy(k)})
            return out
        arr = np.ascontiguousarray(x.detach().cpu().float().numpy())
        return torch.from_numpy(self.session.run(None, {self.input_name: arr})[0])


@contextlib.contextmanager
def _tensors_only():
    """torch.export.load unpickles the weights in a .pt2 with weights_only=False: force True while it runs.

    A .pt2 made by torch.export holds plain tensors, which load either way; a crafted one whose
    pickles would run code is refused instead (pickle.UnpicklingError).
    """
    original = torch.load

    def safe_load(*args, **kwargs):
        kwargs["weights_only"] = True
        return original(*args, **kwargs)

    torch.load = safe_load
    try:
        yield
    finally:
        torch.load = original


class Pt2Model:
    """An imgcls `.pt2` export (torch.export's ExportedProgram) as a module."""

    def __init__(self, path: str | os.PathLike, *, device: str = "cpu"):
        self.path = Path(path)
        if not self.path.is_file():
            raise ImgclsError(f"{path}: no such file")
        extra = {PT2_META: "", PT2_PARITY: ""}
        try:
            with _tensors_only():
                program = torch.export.load(str(self.path), extra_files=extra)
        except pickle.UnpicklingError as e:
            raise ImgclsError(f"refused to load {path}: it holds pickled objects other than tensors, which could run "
                              f"code ({str(e).splitlines()[0][:200]})") from None
        except Exception as e:  # a zip that is no exported program, a truncated file, ...
            raise ImgclsError(f"{path} is not a torch.export program: {str(e).splitlines()[0]}") from None
        if not extra[PT2_META]:
            raise ImgclsError(f"{path} is a .pt2 program without imgcls metadata: export it with `imgcls export`")
        self.meta = meta_from_json(extra[PT2_META], self.path)
        self.parity = json.loads(extra[PT2_PARITY]) if extra[PT2_PARITY] else None
        self.device = torch.device(device)
        self.module = program.module().to(self.device)

    def eval(self) -> Pt2Model:
        return self

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return self.module(x.to(self.device)).float().cpu()


def load_runtime(path: str | os.PathLike, *, device: str = "cpu"):
    """OnnxModel for .onnx, Pt2Model for .pt2 (exports); None for anything else (a model file)."""
    suffix = Path(path).suffix.lower()
    if suffix == ".onnx":
        return OnnxModel(path, device=device)
    if suffix == ".pt2":
        return Pt2Model(path, device=device)
    return None
