"""From a `ModelConfig` to a ready model: build, pretrained weights, frozen parts; and the data format they imply.

Shared by `train` and `evaluate` (plain arguments, no data-set objects), so both make a model the
same way. `model.pretrained` is a weights file, or `true` for the library's own weights (timm and
torchvision adapters; downloaded, so online only).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from torch import nn

from imgcls.config import ModelConfig
from imgcls.errors import ImgclsError
from imgcls.models.hub import ADAPTERS, pretrained_data_config
from imgcls.models.pretrained import LoadReport, load_pretrained
from imgcls.models.registry import create_model, model_accepts

FREEZE_CHOICES = (None, "backbone")


def wants_download(pretrained: Any) -> bool:
    """`model.pretrained=true`: the library's own pretrained weights (as opposed to a file)."""
    return pretrained is True or (isinstance(pretrained, str) and pretrained.lower() in ("true", "yes", "1"))


def build_model(cfg: ModelConfig, *, num_classes: int, in_chans: int, image_size: tuple[int, int] | None = None
                ) -> tuple[nn.Module, dict[str, Any], LoadReport | None]:
    """The model, the builder arguments that rebuild it (for the model file), and the pretrained-load report."""
    if cfg.freeze not in FREEZE_CHOICES:
        raise ImgclsError(f"model.freeze={cfg.freeze!r} is not one of: none, backbone")
    args = {**cfg.args, "num_classes": num_classes, "in_chans": in_chans}
    if image_size is not None and model_accepts(cfg.name, "img_size"):
        h, w = image_size
        args["img_size"] = h if h == w else [h, w]
    download = wants_download(cfg.pretrained)
    if download and cfg.name not in ADAPTERS:
        raise ImgclsError(f"model.pretrained=true downloads a library's weights (model=timm or model=torchvision); "
                          f"{cfg.name!r} is an imgcls model: give a weights file, model.pretrained=PATH")
    net = create_model(cfg.name, **args, **({"download": True} if download else {}))
    report = load_pretrained(net, cfg.pretrained) if cfg.pretrained and not download else None
    if cfg.freeze == "backbone":
        freeze_backbone(net)
    return net, args, report


def head_prefix(model: nn.Module) -> str:
    """Name of the classifier module: timm's `pretrained_cfg["classifier"]`, a model's `head_name`, else "head"."""
    cfg = getattr(model, "pretrained_cfg", None)
    if isinstance(cfg, dict) and cfg.get("classifier"):
        c = cfg["classifier"]
        return c[0] if isinstance(c, (tuple, list)) else c  # distilled timm models name two heads
    return getattr(model, "head_name", "head")


def head_parameter_names(model: nn.Module) -> set[str]:
    prefix = head_prefix(model) + "."
    names = {n for n, _ in model.named_parameters() if n.startswith(prefix)}
    if not names:
        raise ImgclsError(f"cannot find the classifier of {type(model).__name__} (looked for parameters under {prefix!r})")
    return names


def freeze_backbone(model: nn.Module) -> list[str]:
    """Feature extraction: only the head trains; returns the frozen parameter names.

    Batch-norm layers of the frozen part keep their running statistics (the loop puts a norm layer
    whose parameters are all frozen in eval mode), so the backbone computes exactly what it did.
    """
    head = head_parameter_names(model)
    frozen = []
    for n, p in model.named_parameters():
        if n not in head:
            p.requires_grad_(False)
            frozen.append(n)
    return frozen


def _has_params(m: nn.Module) -> bool:
    return next(m.parameters(), None) is not None


def _units(module: nn.Module, prefix: str, head: str) -> list[str]:
    """Name prefixes of the successive blocks of `module`, outside the head.

    A lone child (an adapter's `body`) is descended into; a Sequential or ModuleList of blocks
    (`features`, `layer1`, `blocks`) contributes its blocks, so each gets its own lr; a block made
    of plain layers (conv, norm, activation) stays one unit.
    """
    children = [(prefix + n, m) for n, m in module.named_children() if _has_params(m) and prefix + n != head]
    if len(children) == 1 and list(children[0][1].children()):
        return _units(children[0][1], children[0][0] + ".", head)
    units = []
    for name, m in children:
        if isinstance(m, (nn.Sequential, nn.ModuleList)) and len(m) > 1 and any(list(c.children()) for c in m):
            units += [f"{name}.{n}" for n, c in m.named_children() if _has_params(c)]
        else:
            units.append(name)
    return units


def layer_groups(model: nn.Module) -> list[list[str]]:
    """Parameter names by block, input to output, the head last: the layers of discriminative lrs."""
    head_params = head_parameter_names(model)
    units = _units(model, "", head_prefix(model))
    groups: dict[str, list[str]] = {u: [] for u in units}
    for n, _ in model.named_parameters():
        if n in head_params:
            continue
        unit = max((u for u in units if n.startswith(u + ".") or n == u), key=len, default=n.split(".", 1)[0])
        groups.setdefault(unit, []).append(n)
    return [g for g in groups.values() if g] + [sorted(head_params)]


def pretrained_preprocess(cfg: ModelConfig, channels: int | None = None) -> dict[str, Any]:
    """Input side, mean and std that the pretrained weights of `cfg` expect ({} when nothing is known).

    An imgcls model file: its normalization (and, for timm/torchvision models, its input size; our
    own nets pool globally, so their size stays free). Library weights (`true`, or a file from
    outside imgcls for model=timm/torchvision): the library's pretrained config.
    """
    if not cfg.pretrained:
        return {}
    path = Path(str(cfg.pretrained))
    if path.suffix == ".safetensors" and path.is_file():
        from imgcls.modelfile import read_meta

        try:
            pre = read_meta(path).preprocess
        except ImgclsError:  # plain safetensors weights, not an imgcls model file
            pre = None
        if pre is not None:
            if channels not in (None, pre.channels):
                return {}
            out: dict[str, Any] = {"mean": list(pre.mean), "std": list(pre.std)}
            if cfg.name in ADAPTERS and pre.input_size[0] == pre.input_size[1]:
                out["image_size"] = int(pre.input_size[0])
            return out
    if cfg.name in ADAPTERS:
        return pretrained_data_config(cfg.name, cfg.args.get("arch", "")) or {}
    return {}
