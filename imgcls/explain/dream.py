"""DeepDream (Mordvintsev, Olah & Tyka 2015, "Inceptionism"): a photo changed to amplify what a layer sees in it.

Gradient ascent on the input image to raise the mean activation of a chosen layer (or one of its
channels), over octaves: the photo is processed from its smallest scale up (each octave
`octave_scale` times larger), and the detail dreamed at one scale is carried up into the next, so
that patterns grow at several sizes. Each step rolls the image by a random offset (jitter: patterns
do not lock to pixel positions), smooths the gradient with Gaussian blurs of three widths (the
"cascade" smoothing common in PyTorch ports: low-frequency changes, less pixel noise), normalizes it
by its mean magnitude, and keeps pixels in [0, 1].

    imgcls dream ckpt=runs/x/best.safetensors source=photo.jpg [layer=NAME channel=N]
    imgcls dream model=torchvision model.name=mobilenet_v2 model.pretrained=mobilenet_v2.pth source=photo.jpg
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.transforms.v2.functional import gaussian_blur

from imgcls.errors import ImgclsError


class _Reached(Exception):
    """Raised by the layer's hook: the rest of the network is not needed (its output is all the objective uses)."""


def layer_output(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The output of `layer` for input `x`, computing the network only up to it."""
    store: dict[str, torch.Tensor] = {}

    def hook(_module, _inputs, output):
        store["out"] = output[0] if isinstance(output, (tuple, list)) else output
        raise _Reached

    handle = layer.register_forward_hook(hook)
    try:
        model(x)
    except _Reached:
        pass
    finally:
        handle.remove()
    if "out" not in store:
        raise ImgclsError("the chosen layer did not run in the model's forward pass; choose another layer=")
    return store["out"]


OBJECTIVES = ("l2", "mean")


def activation(model: nn.Module, layer: nn.Module, x: torch.Tensor, channel: int | None = None,
               objective: str = "mean") -> torch.Tensor:
    """The mean activation of `layer` (or of its `channel`) for input `x` (already normalized), or with
    objective="l2" the mean of its squares (the original DeepDream's: it amplifies what the layer already
    responds to, strongly positive or negative, instead of pushing every unit up)."""
    out = layer_output(model, layer, x)
    if channel is not None:
        if out.ndim < 2 or not 0 <= channel < out.shape[1]:
            raise ImgclsError(f"channel={channel} is not a channel of the layer's output of shape {tuple(out.shape)}")
        out = out[:, channel]
    if objective not in OBJECTIVES:
        raise ImgclsError(f"objective={objective!r} is not one of: {', '.join(OBJECTIVES)}")
    return out.pow(2).mean() if objective == "l2" else out.mean()


def smooth(grad: torch.Tensor, sigma: float) -> torch.Tensor:
    """The gradient (1, C, H, W) blurred at sigma/2, sigma and 2 sigma, averaged."""
    side = min(grad.shape[-2:])
    outs = []
    for sd in (0.5 * sigma, sigma, 2 * sigma):
        k = min(2 * math.ceil(3 * sd) + 1, side if side % 2 else side - 1)  # the blur's window fits the image
        outs.append(gaussian_blur(grad, kernel_size=[k, k], sigma=[sd, sd]) if k >= 3 else grad)
    return sum(outs) / len(outs)


@dataclass
class Dream:
    image: torch.Tensor  # (C, H, W) in [0, 1]: the dreamed photo at the input's resolution
    octaves: list[torch.Tensor]  # each octave's result, smallest first (the last is `image`)
    before: float  # the objective on the input image
    after: float  # ... and on the dreamed image
    octave_objectives: list[float] = field(default_factory=list)  # the objective at the end of each octave


def deep_dream(model: nn.Module, image: torch.Tensor, layer: nn.Module, *, mean: list[float], std: list[float],
               channel: int | None = None, octaves: int = 4, octave_scale: float = 1.4, steps: int = 10,
               lr: float = 0.008, jitter: int = 16, sigma: float = 1.0, min_side: int = 32, objective: str = "l2",
               seed: int = 0) -> Dream:
    """Dream `image` (C, H, W) in [0, 1] on `layer` of `model` (evaluation mode; its weights are not changed).

    `lr` is the step in pixel units ([0, 1]) of the mean-magnitude-normalized gradient; `steps` per octave.
    Octaves whose shorter side would fall below `min_side` are skipped.
    """
    if image.ndim != 3:
        raise ImgclsError(f"deep_dream takes one image (C, H, W), not a tensor of shape {tuple(image.shape)}")
    device = next(model.parameters()).device
    g = torch.Generator().manual_seed(seed)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    base = image.unsqueeze(0).float().to(device)
    h, w = base.shape[-2:]
    shapes = [(round(h / octave_scale ** i), round(w / octave_scale ** i)) for i in reversed(range(octaves))]
    shapes = [sz for sz in shapes if min(sz) >= min_side] or [(h, w)]
    was_training = model.training
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    results, objectives = [], []
    try:
        with torch.no_grad():
            before = float(activation(model, layer, (base - m) / s, channel, objective))
        detail = torch.zeros_like(F.interpolate(base, size=shapes[0], mode="bilinear", align_corners=False))
        for shape in shapes:
            scaled = F.interpolate(base, size=shape, mode="bilinear", align_corners=False, antialias=True)
            detail = F.interpolate(detail, size=shape, mode="bilinear", align_corners=False)
            img = (scaled + detail).clamp(0, 1)
            for step in range(steps):
                dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist() if jitter else (0, 0))
                x = torch.roll(img, shifts=(dy, dx), dims=(2, 3)).requires_grad_(True)
                value = activation(model, layer, (x - m) / s, channel, objective)
                grad, = torch.autograd.grad(value, x)
                grad = torch.roll(grad, shifts=(-dy, -dx), dims=(2, 3))
                grad = smooth(grad, sigma * (0.5 + step / max(steps - 1, 1)))  # wider blurs later in the octave
                img = (img + lr * grad / (grad.abs().mean() + 1e-8)).clamp(0, 1)
            detail = img - scaled
            results.append(img[0].detach().cpu())
            with torch.no_grad():
                objectives.append(float(activation(model, layer, (img - m) / s, channel, objective)))
        with torch.no_grad():
            after = float(activation(model, layer, (img - m) / s, channel, objective))
    finally:
        for p, flag in zip(model.parameters(), flags):  # as they were (a frozen backbone stays frozen)
            p.requires_grad_(flag)
        model.train(was_training)
    return Dream(image=results[-1], octaves=results, before=before, after=after, octave_objectives=objectives)


def feature_layers(model: nn.Module, channels: int, size: int = 64) -> list[str]:
    """Names of the modules with a spatial (B, C, H, W) output, in the order the forward pass runs them."""
    order: list[str] = []
    hooks = []
    for name, module in model.named_modules():
        if name:
            hooks.append(module.register_forward_hook(
                lambda mod, i, o, name=name: order.append(name) if isinstance(o, torch.Tensor) and o.ndim == 4 else None))
    try:
        with torch.no_grad():
            model(torch.zeros(1, channels, size, size, device=next(model.parameters()).device))
    finally:
        for h in hooks:
            h.remove()
    return list(dict.fromkeys(order))


def default_layer(model: nn.Module, channels: int) -> str:
    """A block about 60% of the way through the network, where DeepDream's patterns are textures and parts
    (earlier layers give strokes and colours, later ones objects). The blocks: the children of the module
    with the most sub-blocks of spatial output (a ResNet's layer1..4, MobileNetV2's features.0..18); with
    no sub-blocks, every layer of spatial output."""
    names = feature_layers(model, channels)
    if not names:
        raise ImgclsError("the model has no layer with a spatial output to dream on (a dense net?)")
    by_parent: dict[str, list[str]] = {}
    for n in names:
        if any(True for _ in model.get_submodule(n).children()):
            by_parent.setdefault(n.rpartition(".")[0], []).append(n)
    pool = max(by_parent.values(), key=lambda ns: (len(ns), -ns[0].count("."))) if by_parent else names
    return pool[min(int(0.6 * len(pool)), len(pool) - 1)]


def _load(ckpt, model, device: torch.device):
    """(network, mean, std, channels, description) from a model file, or from model= with its pretrained weights."""
    if ckpt is not None:
        from imgcls.predict import Predictor

        if Path(str(ckpt)).suffix.lower() in (".pth", ".pt", ".th", ".bin"):
            raise ImgclsError(f"ckpt={ckpt} is a plain weights file, not an imgcls model file: give it as "
                              "model=NAME model.pretrained=PATH (e.g. model=torchvision model.name=mobilenet_v2)")
        p = Predictor.load(ckpt, device=str(device))
        if not isinstance(p.model, nn.Module):
            raise ImgclsError(f"DeepDream needs gradients: {ckpt} is an export; give the PyTorch model file")
        pre = p.meta.preprocess
        return p.model, list(pre.mean), list(pre.std), pre.channels, f"{p.meta.arch} from {ckpt}"
    from imgcls.config import model_config
    from imgcls.models.build import build_model, pretrained_preprocess, wants_download

    mcfg = model_config(model) if model is not None else None
    if mcfg is None or not mcfg.pretrained:
        raise ImgclsError("nothing to dream with: give ckpt=MODEL_FILE, or model=NAME model.pretrained=WEIGHTS "
                          "(e.g. model=torchvision model.name=mobilenet_v2 model.pretrained=mobilenet_v2.pth)")
    classes = 1000
    if not wants_download(mcfg.pretrained):
        from imgcls.models.pretrained import read_state_dict

        mats = [v for v in read_state_dict(mcfg.pretrained).values() if v.ndim == 2]
        classes = int(mats[-1].shape[0]) if mats else classes  # the classifier: the last matrix of the file
    net, _, report = build_model(mcfg, num_classes=classes, in_chans=3)
    pre = pretrained_preprocess(mcfg)
    if "mean" not in pre:
        raise ImgclsError(f"the normalization of {mcfg.pretrained} is unknown: use model=timm or model=torchvision "
                          "(their weights' normalization is known), or an imgcls model file as ckpt=")
    what = f"{mcfg.name} {mcfg.args.get('arch', '')}".strip()
    return net.to(device), pre["mean"], pre["std"], 3, f"{what} with {report.summary() if report else 'library weights'}"


def dream(source: str | os.PathLike, ckpt: str | os.PathLike | None = None, *, model=None, layer: str | None = None,
          channel: int | None = None, objective: str = "l2", octaves: int = 4, octave_scale: float = 1.4,
          steps: int = 10, lr: float = 0.008,
          jitter: int = 16, sigma: float = 1.0, max_side: int = 512, out_dir: str | os.PathLike | None = None,
          project: str = "runs", device: str = "auto", seed: int = 0) -> tuple[Path, Dream, str]:
    """DeepDream a photo with a model file (`ckpt`) or a pretrained `model` config; returns (folder, Dream, layer).

    Writes dream.png (the result, at most `max_side` px a side), octaves.png (the input, then each
    octave's result) and dream.json (the settings and the objective before and after).
    """
    from PIL import Image

    from imgcls.data.image_io import open_image
    from imgcls.device import select_device
    from imgcls.evaluation.plots import plot_image_grid
    from imgcls.run_dir import new_run_dir

    dev = select_device(device)
    net, mean, std, channels, what = _load(ckpt, model, dev)
    photo = open_image(source, channels=channels)
    if max(photo.size) > max_side:
        scale = max_side / max(photo.size)
        photo = photo.resize((max(1, round(photo.width * scale)), max(1, round(photo.height * scale))), Image.BICUBIC)
    arr = np.asarray(photo, dtype=np.float32) / 255
    image = torch.from_numpy(arr[..., None] if arr.ndim == 2 else arr).permute(2, 0, 1).contiguous()
    name = layer or default_layer(net, channels)
    try:
        module = net.get_submodule(name)
    except AttributeError:
        names = feature_layers(net, channels)
        near = [n for n in names if name.split(".")[-1] in n or n.startswith(name.rsplit(".", 1)[0])][:8] or names[:8]
        raise ImgclsError(f"the model has no layer {name!r}; layers with spatial outputs include: {', '.join(near)} "
                          f"({len(names)} in all)") from None
    result = deep_dream(net, image, module, mean=mean, std=std, channel=channel, octaves=octaves,
                        octave_scale=octave_scale, steps=steps, lr=lr, jitter=jitter, sigma=sigma, objective=objective,
                        seed=seed)
    out = Path(out_dir) if out_dir else new_run_dir(project, f"dream-{Path(str(source)).stem}")
    out.mkdir(parents=True, exist_ok=True)

    def to_uint8(t: torch.Tensor) -> np.ndarray:
        a = (t.permute(1, 2, 0).numpy() * 255).round().clip(0, 255).astype(np.uint8)
        return a[..., 0] if a.shape[-1] == 1 else a

    Image.fromarray(to_uint8(result.image)).save(out / "dream.png")
    h = result.image.shape[1]
    strip = [to_uint8(image)] + [to_uint8(F.interpolate(o[None], size=(h, result.image.shape[2]), mode="nearest")[0])
                                 for o in result.octaves]
    captions = ["input"] + [f"octave {i + 1}: {tuple(o.shape[1:])}\nobjective {v:.3f}"
                            for i, (o, v) in enumerate(zip(result.octaves, result.octave_objectives))]
    plot_image_grid(strip, captions, out / "octaves.png", cols=len(strip),
                    title=f"DeepDream of {name}" + (f"[{channel}]" if channel is not None else "")
                    + f": objective {result.before:.3f} -> {result.after:.3f}")
    (out / "dream.json").write_text(json.dumps({
        "source": str(source), "model": what, "layer": name, "channel": channel, "objective": objective,
        "octaves": len(result.octaves),
        "octave_scale": octave_scale, "steps": steps, "lr": lr, "jitter": jitter, "sigma": sigma, "seed": seed,
        "size": list(result.image.shape[1:]), "objective_before": result.before, "objective_after": result.after,
        "octave_objectives": result.octave_objectives}, indent=1) + "\n")
    return out, result, name
