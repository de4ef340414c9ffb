"""The one place a model file is written and read.

A model file is a single `.safetensors` file: the weights, plus a JSON document stored in the
safetensors header under the key "imgcls" (architecture and its arguments, classes, input size,
preprocessing, metrics, versions). Reading it never unpickles anything.
"""

from __future__ import annotations

import json
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_model as _st_load_model
from safetensors.torch import save_model as _st_save_model
from torch import nn

from imgcls.atomic import atomic_path
from imgcls.errors import ImgclsError

FORMAT_VERSION = 3  # 2: the softmax temperature; 3: the task (classify | segment | detect)
META_KEY = "imgcls"  # the ModelMeta as JSON: in a model file's header, an ONNX file's metadata_props, a .pt2's extra file


@dataclass
class Preprocess:
    """How an image becomes the model's input tensor (what `Predictor` and evaluation apply)."""

    input_size: list[int]  # [H, W] the model sees
    channels: int  # 1 = grayscale ("L"), 3 = RGB
    mean: list[float]  # per-channel, on [0, 1] pixel values
    std: list[float]
    resize: int | None = None  # shorter side before a center crop to input_size; None = resize straight to input_size
    interpolation: str = "bilinear"


@dataclass
class ModelMeta:
    """Everything besides weights that a model file carries."""

    arch: str  # registered model name
    arch_args: dict[str, Any]  # keyword arguments of the builder (num_classes and in_chans included)
    classes: list[str]
    preprocess: Preprocess
    metrics: dict[str, Any] = field(default_factory=dict)
    train: dict[str, Any] = field(default_factory=dict)  # data set and recipe it was trained with
    calibration: dict[str, Any] = field(default_factory=dict)  # {"temperature": T, ...}: Predictor divides logits by T
    # what the model predicts (imgcls.tasks): classify (a label per image) | segment (per pixel) | detect (boxes)
    task: str = "classify"
    versions: dict[str, str] = field(default_factory=dict)
    created: str = ""
    format_version: int = FORMAT_VERSION

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelMeta:
        d = dict(d)
        d["preprocess"] = Preprocess(**d["preprocess"])
        return cls(**d)


def _versions() -> dict[str, str]:
    import torchvision

    from imgcls._version import __version__

    return {"imgcls": __version__, "torch": torch.__version__, "torchvision": torchvision.__version__,
            "python": platform.python_version()}


def save_model(path: str | os.PathLike, model: nn.Module, meta: ModelMeta) -> Path:
    """Write weights and metadata to `path` atomically (a temporary file, then a rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    meta.versions = meta.versions or _versions()
    meta.created = meta.created or time.strftime("%Y-%m-%dT%H:%M:%S%z")
    model = getattr(model, "_orig_mod", model)  # unwrap torch.compile
    with atomic_path(path) as tmp:
        _st_save_model(model, str(tmp), metadata={META_KEY: meta.to_json(), "format": "pt"})
    return path


def _upgrade(d: dict[str, Any], path: Path) -> dict[str, Any]:
    version = d.get("format_version", 0)
    if not isinstance(version, int) or version < 1:
        raise ImgclsError(f"{path} has no valid model-file format version ({version!r}); it was not written by imgcls")
    if version > FORMAT_VERSION:
        raise ImgclsError(f"{path} is model-file format {version}, newer than this imgcls reads ({FORMAT_VERSION}); upgrade imgcls")
    # Upgrades of older formats, one `if version == n` step each.
    if version == 1:  # format 2 added the softmax temperature
        d = {**d, "calibration": {}, "format_version": 2}
        version = 2
    if version == 2:  # format 3 added the task; every earlier model file is a classifier
        d = {**d, "task": "classify", "format_version": 3}
    return d


def read_meta(path: str | os.PathLike) -> ModelMeta:
    """Read only the metadata of a model file (no weights loaded)."""
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"model file not found: {path}")
    try:
        with safe_open(str(path), framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ImgclsError(f"{path} is not a model file (expected an imgcls .safetensors file): {e}") from None
    if META_KEY not in header:
        raise ImgclsError(f"{path} is a safetensors file without imgcls metadata; load it as weights with model.pretrained instead")
    return meta_from_json(header[META_KEY], path)


def meta_from_json(text: str, path: str | os.PathLike) -> ModelMeta:
    """The `ModelMeta` stored as JSON in a model file or an export (`path` names it in errors), older formats upgraded."""
    try:
        return ModelMeta.from_dict(_upgrade(json.loads(text), Path(path)))
    except (json.JSONDecodeError, TypeError, KeyError) as e:
        raise ImgclsError(f"{path} has damaged imgcls metadata ({type(e).__name__}: {e})") from None


def load_weights(model: nn.Module, path: str | os.PathLike, *, arch: str = "?") -> None:
    """Load a model file's weights into `model`; a mismatch names the file and the architecture."""
    try:
        missing, unexpected = _st_load_model(model, str(path), strict=False)
    except RuntimeError as e:  # shape mismatch
        raise ImgclsError(f"{path} does not fit model {arch!r} (weights of another architecture?): "
                          f"{str(e).splitlines()[-1].strip()}") from None
    missing, unexpected = sorted(missing), sorted(unexpected)  # safetensors returns `missing` as a set
    if missing or unexpected:
        raise ImgclsError(
            f"{path} does not fit model {arch!r} (weights of another architecture?): "
            f"{len(missing)} missing keys (e.g. {missing[:2]}), {len(unexpected)} unexpected (e.g. {unexpected[:2]})"
        )


def read_tensors(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The weights of a `.safetensors` file (an imgcls model file or plain tensors), by name, on the CPU."""
    from safetensors.torch import load_file

    try:
        return load_file(str(path), device="cpu")
    except (SafetensorError, OSError, ValueError) as e:
        raise ImgclsError(f"{path} is not a readable safetensors file: {e}") from None
