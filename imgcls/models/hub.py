"""Any timm or torchvision classifier as an imgcls model: two registry entries, not a thousand.

    imgcls train model=timm model.name=resnet18 model.pretrained=true data=folder data.root=DIR
    imgcls train model=torchvision model.name=mobilenet_v3_small model.pretrained=weights.pth ...
    create_model("timm", arch="resnet18", num_classes=12, in_chans=1)

The head is made for `num_classes` and the stem for `in_chans`. `pretrained=True` downloads the
library's default weights (timm: its default tag; torchvision: `weights="DEFAULT"`); without a
network the error names the file to fetch and `model.pretrained=FILE` to use it. A local file goes
through `imgcls.models.pretrained.load_pretrained` like for every other model (the adapters build
the bare architecture). `pretrained_data_config` gives the input size and normalization the
weights were trained with, which a run uses unless the data config sets its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.models.registry import register_model


def _offline(what: str, source: str, err: Exception) -> ImgclsError:
    return ImgclsError(f"could not download the pretrained weights of {what} ({type(err).__name__}: {str(err)[:120]}). "
                       f"Offline, download {source} on a machine with network access and pass the file: "
                       f"model.pretrained=/path/to/that/file")


def _timm():
    try:
        import timm
    except ImportError:  # pragma: no cover - timm is a dependency
        raise ImgclsError("model=timm needs the timm package: pip install timm") from None
    return timm


@register_model
def timm(*, num_classes: int, in_chans: int = 3, arch: str = "resnet18", download: bool = False,
         drop_rate: float = 0.0, drop_path_rate: float = 0.0, img_size: int | list[int] | None = None) -> nn.Module:
    """A timm model by name (`timm.list_models()`); `download=True` fetches its pretrained weights.

    `drop_rate`: dropout before the classifier; `drop_path_rate`: stochastic depth (residual branches
    dropped per sample, rising to this rate in the last block), for models that have it.

    `img_size` goes to models that are built for one input size (ViTs: their position embeddings
    are resized to it); convolutional nets do not take it and work at any size.
    """
    lib = _timm()
    if not lib.is_model(arch):
        close = lib.list_models(f"*{arch}*")[:8]
        raise ImgclsError(f"timm has no model {arch!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    kwargs = dict(pretrained=download, num_classes=num_classes, in_chans=in_chans, drop_rate=drop_rate)
    if drop_path_rate:
        kwargs["drop_path_rate"] = drop_path_rate
    try:
        if img_size is not None:
            try:
                return lib.create_model(arch, img_size=tuple(img_size) if isinstance(img_size, list) else img_size,
                                        **kwargs)
            except TypeError as e:
                if "img_size" not in str(e):
                    raise
        try:
            return lib.create_model(arch, **kwargs)
        except TypeError as e:
            if "drop_path_rate" in str(e):
                raise ImgclsError(f"timm's {arch} has no stochastic depth: leave model.drop_path_rate at 0") from None
            raise
    except (OSError, RuntimeError, ValueError) as e:
        if not download:
            raise
        cfg = lib.get_pretrained_cfg(arch)
        where = f"https://huggingface.co/{cfg.hf_hub_id} (model.safetensors)" if cfg and cfg.hf_hub_id else (cfg.url if cfg else arch)
        raise _offline(f"timm {arch}", where, e) from None


class TorchvisionNet(nn.Module):
    """A torchvision classifier split into `body` (everything up to the last linear layer) and `head`.

    Keys are `body.<torchvision key>`; `load_pretrained` adds the prefix to a torchvision weights file.
    """

    def __init__(self, body: nn.Module, head_path: str, num_features: int, num_classes: int):
        super().__init__()
        self.body = body
        self.num_features = num_features
        self.head = nn.Linear(num_features, num_classes)
        self.head_path = head_path  # where torchvision keeps the head, e.g. "fc" or "classifier.3"

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)  # (B, num_features): torchvision models pool inside

    def forward_head(self, x: torch.Tensor, pre_logits: bool = False) -> torch.Tensor:
        return x if pre_logits else self.head(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


FIXED_KWARGS = {"googlenet": {"aux_logits": False, "transform_input": False, "init_weights": True},
                "inception_v3": {"aux_logits": False, "transform_input": False, "init_weights": True}}


def _last_linear(model: nn.Module) -> tuple[str, nn.Linear]:
    linears = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise ImgclsError(f"{type(model).__name__} has no linear classifier layer to replace")
    return linears[-1]


def _first_conv(model: nn.Module) -> tuple[str, nn.Conv2d]:
    return next((n, m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d))


def _set_module(root: nn.Module, path: str, new: nn.Module) -> None:
    parent, _, leaf = path.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, leaf, new)


@register_model
def torchvision(*, num_classes: int, in_chans: int = 3, arch: str = "mobilenet_v3_small",
                download: bool = False) -> TorchvisionNet:
    """A torchvision classifier by name (`torchvision.models.list_models()`); `download=True` fetches weights."""
    import torchvision.models as tvm

    if arch not in tvm.list_models(module=tvm):
        close = [m for m in tvm.list_models(module=tvm) if arch.split("_")[0] in m][:8]
        raise ImgclsError(f"torchvision has no classification model {arch!r}" + (f"; similar: {', '.join(close)}" if close else ""))
    # Always the same architecture, with or without weights (torchvision changes some when given weights:
    # aux heads, input transforms), so a model file rebuilds offline into exactly what was trained.
    body = tvm.get_model(arch, weights=None, **FIXED_KWARGS.get(arch, {}))
    if download:
        weights = tvm.get_model_weights(arch).DEFAULT
        try:
            state = weights.get_state_dict(progress=False)
        except (OSError, RuntimeError, ValueError) as e:
            raise _offline(f"torchvision {arch}", weights.url, e) from None
        own = body.state_dict()
        body.load_state_dict({k: v for k, v in state.items() if k in own and own[k].shape == v.shape}, strict=False)
    head_path, head = _last_linear(body)
    _set_module(body, head_path, nn.Identity())
    if in_chans != 3:
        name, conv = _first_conv(body)
        new = nn.Conv2d(in_chans, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                        conv.groups, conv.bias is not None)
        if download:  # pretrained RGB filters summed (gray) or tiled (other counts), timm's rule
            from imgcls.models.pretrained import adapt_input_channels

            with torch.no_grad():
                new.weight.copy_(adapt_input_channels(conv.weight, new.weight.shape))
                if conv.bias is not None:
                    new.bias.copy_(conv.bias)
        _set_module(body, name, new)
    net = TorchvisionNet(body, head_path, head.in_features, num_classes)
    if download and head.out_features == num_classes:  # e.g. evaluating ImageNet weights on ImageNet: keep their head
        net.head.load_state_dict(head.state_dict())
    return net


ADAPTERS = ("timm", "torchvision")
# googlenet and inception_v3 with weights use transform_input, which maps ImageNet-normalized input to
# the (0.5, 0.5) normalization they were trained with: we build them without it (and without aux heads)
# and normalize with 0.5 directly, which is the same thing.
HALF_NORMALIZED = ("googlenet", "inception_v3")


def pretrained_data_config(adapter: str, arch: str) -> dict[str, Any] | None:
    """Input side, mean and std the default pretrained weights of `arch` were trained with (None if unknown)."""
    if adapter == "timm":
        cfg = _timm().get_pretrained_cfg(arch)
        if cfg is None:
            return None
        return {"image_size": int(cfg.input_size[-1]), "mean": list(cfg.mean), "std": list(cfg.std)}
    if adapter == "torchvision":
        import torchvision.models as tvm

        try:
            t = tvm.get_model_weights(arch).DEFAULT.transforms()
        except (ValueError, KeyError):
            return None
        if arch in HALF_NORMALIZED:
            return {"image_size": int(t.crop_size[0]), "mean": [0.5] * 3, "std": [0.5] * 3}
        return {"image_size": int(t.crop_size[0]), "mean": list(t.mean), "std": list(t.std)}
    return None


def cached_weights(adapter: str, arch: str) -> str | None:
    """The library's pretrained file for `arch` if it is already on disk (no network), else None.

    torchvision: any of the model's published weight files in torch hub's checkpoints folder
    (`$TORCH_HOME/hub/checkpoints`, by default `~/.cache/torch/hub/checkpoints`), where
    `weights=...` downloads them. timm: the model's default tag in the Hugging Face cache
    (`$HF_HUB_CACHE`, by default `~/.cache/huggingface/hub`), where timm downloads it.
    """
    if adapter == "torchvision":
        import torchvision.models as tvm

        folder = Path(torch.hub.get_dir()) / "checkpoints"
        try:
            names = [w.url.rsplit("/", 1)[-1] for w in tvm.get_model_weights(arch)]
        except (ValueError, KeyError):
            return None
        return next((str(folder / n) for n in names if (folder / n).is_file()), None)
    if adapter == "timm":
        cfg = _timm().get_pretrained_cfg(arch)
        hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
        if not hub_id:
            return None
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:  # pragma: no cover - a timm dependency
            return None
        for filename in ("model.safetensors", "pytorch_model.bin"):
            found = try_to_load_from_cache(hub_id, filename)
            if isinstance(found, str) and Path(found).is_file():
                return found
        return None
    return None


def weights_download_hint(adapter: str, arch: str) -> str:
    """Where `cached_weights` looks for `arch`'s file, and where to get it: for a message to the user."""
    if adapter == "torchvision":
        import torchvision.models as tvm

        w = tvm.get_model_weights(arch).DEFAULT
        return f"{w.url} into {Path(torch.hub.get_dir()) / 'checkpoints'}/"
    cfg = _timm().get_pretrained_cfg(arch)
    return f"the Hugging Face repo {getattr(cfg, 'hf_hub_id', arch)} (timm downloads it into ~/.cache/huggingface/hub)"
