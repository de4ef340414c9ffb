"""Feature visualisation by activation maximisation ("DeepDream"): the input that excites a class or a channel.

Gradient ascent on the image, from faint noise, with the usual regularisers (Olah et al. 2017,
"Feature Visualization"): random jitter (the image is rolled by a few pixels each step, so the
result does not rely on exact pixel positions), a Gaussian blur every few steps (suppresses high-
frequency noise), a small L2 penalty, and pixels kept in the valid range of the model's input.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2.functional import gaussian_blur

from imgcls.errors import ImgclsError
from imgcls.tasks import require_classifier


def maximize(model: torch.nn.Module, objective, *, shape: tuple[int, int, int], mean: list[float], std: list[float],
             steps: int = 200, lr: float = 0.05, jitter: int = 2, blur_every: int = 4, blur_sigma: float = 0.5,
             l2: float = 1e-3, seed: int = 0, device: torch.device = torch.device("cpu")) -> tuple[torch.Tensor, float, float]:
    """Optimize an image (C, H, W) in [0, 1] to maximise `objective(model, x_normalized)`; returns it and the
    objective before and after."""
    g = torch.Generator().manual_seed(seed)
    m = torch.tensor(mean, device=device).view(1, -1, 1, 1)
    s = torch.tensor(std, device=device).view(1, -1, 1, 1)
    img = (0.5 + 0.01 * torch.randn((1, *shape), generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([img], lr=lr)
    model.eval()
    flags = [p.requires_grad for p in model.parameters()]
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            before = float(objective(model, (img - m) / s))
        for step in range(steps):
            dy, dx = (torch.randint(-jitter, jitter + 1, (2,), generator=g).tolist() if jitter else (0, 0))
            x = torch.roll(img, shifts=(dy, dx), dims=(2, 3))
            value = objective(model, (x - m) / s)
            loss = -value + l2 * (img - 0.5).pow(2).sum()
            opt.zero_grad()
            loss.backward()
            opt.step()
            with torch.no_grad():
                if blur_every and (step + 1) % blur_every == 0 and step < steps - 1:
                    img.copy_(gaussian_blur(img, kernel_size=[3, 3], sigma=[blur_sigma, blur_sigma]))
                img.clamp_(0, 1)
        with torch.no_grad():
            after = float(objective(model, (img - m) / s))
    finally:
        for p, flag in zip(model.parameters(), flags):  # as they were (a frozen backbone stays frozen)
            p.requires_grad_(flag)
    return img.detach()[0].cpu(), before, after


def class_objective(index: int):
    return lambda model, x: model(x)[0, index]


def channel_objective(layer: torch.nn.Module, channel: int):
    def objective(model, x):
        store = {}
        h = layer.register_forward_hook(lambda mod, i, o: store.__setitem__("out", o))
        try:
            model(x)
        finally:
            h.remove()
        out = store["out"]
        if out.ndim != 4 or channel >= out.shape[1]:
            raise ImgclsError(f"channel {channel} is not in the layer's output of shape {tuple(out.shape)}")
        return out[0, channel].mean()
    return objective


def visualize(ckpt: str | os.PathLike, *, classes: list[str] | None = None, layer: str | None = None,
              channels: list[int] | None = None, steps: int = 200, lr: float = 0.05, jitter: int = 2,
              blur_every: int = 4, size: int | None = None, out_dir: str | os.PathLike | None = None,
              project: str = "runs", device: str = "auto", seed: int = 0) -> tuple[Path, list[dict]]:
    """Images that maximise each class logit (default: every class, up to 20), or channels of `layer`.

    Writes one PNG per target and visualize.png (a grid with the objective before -> after).
    """
    from PIL import Image

    from imgcls.evaluation.plots import plot_image_grid
    from imgcls.predict import Predictor
    from imgcls.run_dir import new_run_dir

    p = Predictor.load(ckpt, device=device)
    if layer is None and channels is None:  # class logits: a classifier's; a layer's channels work on any model
        require_classifier(p.task, "imgcls visualize of classes (give layer= and channels= for a segmenter)")
    pre = p.meta.preprocess
    h, w = (size, size) if size else tuple(pre.input_size)
    shape = (pre.channels, h, w)
    if layer is not None or channels is not None:
        if layer is None:  # the last convolution: pre-activation, so even a channel a ReLU silences has a gradient
            convs = [(n, m) for n, m in p.model.named_modules() if isinstance(m, torch.nn.Conv2d)]
            if not convs:
                raise ImgclsError("the model has no convolution; give layer=NAME")
            layer, module = convs[-1]
        else:
            try:
                module = p.model.get_submodule(layer)
            except AttributeError:
                raise ImgclsError(f"the model has no layer {layer!r}") from None
        targets = [(f"{layer}[{c}]", channel_objective(module, c)) for c in (channels or list(range(8)))]
    else:
        names = classes or p.classes[:20]
        unknown = [c for c in names if c not in p.classes]
        if unknown:
            raise ImgclsError(f"not classes of this model: {', '.join(unknown)}")
        targets = [(c, class_objective(p.classes.index(c))) for c in names]
    out = Path(out_dir) if out_dir else new_run_dir(project, f"visualize-{Path(str(ckpt)).parent.name or 'model'}")
    out.mkdir(parents=True, exist_ok=True)
    images, captions, rows = [], [], []
    for k, (name, objective) in enumerate(targets):
        img, before, after = maximize(p.model, objective, shape=shape, mean=pre.mean, std=pre.std, steps=steps, lr=lr,
                                      jitter=jitter, blur_every=blur_every, seed=seed + k, device=p.device)
        arr = (img.permute(1, 2, 0).numpy() * 255).round().astype(np.uint8)
        file = f"{k:02d}_" + "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in name) + ".png"
        Image.fromarray(arr.squeeze(-1) if arr.shape[-1] == 1 else arr).save(out / file)
        images.append(arr)
        captions.append(f"{name}\n{before:.2f} -> {after:.2f}")
        rows.append({"target": name, "file": file, "objective_before": before, "objective_after": after})
    plot_image_grid(images, captions, out / "visualize.png", cols=min(len(images), 5),
                    title="activation maximisation (objective: start -> end)")
    return out, rows
