"""Grad-CAM and Grad-CAM++ (Selvaraju et al. 2017; Chattopadhay et al. 2018) through the grad-cam library.

The target layer is found automatically: the last layer, in the order the forward pass runs them,
whose output is still a spatial map (B, C, H, W) with H, W >= 2 - the end of the feature extractor,
before global pooling - for our models and for timm/torchvision backbones alike.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from imgcls.errors import ImgclsError
from imgcls.tasks import require_classifier

METHODS = ("gradcam", "gradcam++")
# Layers whose output is no better a map than their input's (activations) or a coarser one (pooling).
SKIP = (nn.ReLU, nn.GELU, nn.ReLU6, nn.SiLU, nn.Hardswish, nn.Identity, nn.Dropout, nn.MaxPool2d, nn.AvgPool2d,
        nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d)


def find_target_layer(model: nn.Module, example: torch.Tensor) -> tuple[str, nn.Module]:
    """(name, module) of the last module whose output is a (B, C, H, W) map with H, W >= 2."""
    order: list[tuple[str, nn.Module]] = []
    hooks = []
    for name, m in model.named_modules():
        if name and not isinstance(m, SKIP):
            def hook(mod, inp, out, name=name):
                if isinstance(out, torch.Tensor) and out.ndim == 4 and min(out.shape[-2:]) >= 2:
                    order.append((name, mod))
            hooks.append(m.register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(example)
    finally:
        for h in hooks:
            h.remove()
    if not order:
        raise ImgclsError(f"{type(model).__name__} has no layer with a spatial output (a dense net): Grad-CAM needs a CNN")
    return order[-1]


@dataclass
class Explanation:
    path: str
    label: str  # the class explained
    predicted: str
    score: float
    cams: dict[str, np.ndarray]  # method -> (H, W) map in [0, 1], at the model's input size
    image: np.ndarray  # (H, W, 3) float in [0, 1]: the input as the model saw it, for overlays


def explain_images(model: nn.Module, images: list, *, transform, classes: list[str], methods: Iterable[str] = METHODS,
                   target: str | None = None, layer: str | None = None, mean=None, std=None,
                   device: torch.device = torch.device("cpu")) -> list[Explanation]:
    """Grad-CAM maps of PIL `images` for the predicted class (or class `target`)."""
    from pytorch_grad_cam import GradCAM, GradCAMPlusPlus
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget

    methods = list(methods)
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise ImgclsError(f"unknown Grad-CAM method(s) {', '.join(unknown)}; choose from {', '.join(METHODS)}")
    if target is not None and target not in classes:
        raise ImgclsError(f"target={target!r} is not one of the model's classes: {', '.join(classes[:20])}")
    x = torch.stack([transform(im) for im in images]).to(device)
    model.eval()
    if layer:
        try:
            target_layer = model.get_submodule(layer)
        except AttributeError:
            raise ImgclsError(f"the model has no layer {layer!r}") from None
    else:
        _, target_layer = find_target_layer(model, x[:1])
    with torch.no_grad():
        probs = model(x).float().softmax(1)
    pred = probs.argmax(1)
    idx = [classes.index(target)] * len(images) if target else pred.tolist()
    cams = {}
    for method in methods:
        cls = GradCAM if method == "gradcam" else GradCAMPlusPlus
        with cls(model=model, target_layers=[target_layer]) as cam:
            cams[method] = cam(input_tensor=x, targets=[ClassifierOutputTarget(i) for i in idx])
    m = torch.tensor(mean or [0.0] * x.shape[1]).view(1, -1, 1, 1)
    s = torch.tensor(std or [1.0] * x.shape[1]).view(1, -1, 1, 1)
    shown = (x.detach().cpu() * s + m).clamp(0, 1).permute(0, 2, 3, 1).numpy()
    if shown.shape[-1] == 1:
        shown = np.repeat(shown, 3, axis=-1)
    return [Explanation(path="", label=classes[idx[i]], predicted=classes[int(pred[i])], score=float(probs[i, pred[i]]),
                        cams={k: v[i] for k, v in cams.items()}, image=shown[i]) for i in range(len(images))]


def explain(ckpt: str | os.PathLike, source: Any, *, methods: Iterable[str] = METHODS, target: str | None = None,
            layer: str | None = None, out_dir: str | os.PathLike | None = None, project: str = "runs",
            device: str = "cpu", max_images: int = 16) -> tuple[Path, list[Explanation]]:
    """Grad-CAM overlays for an image or a folder: one PNG per image and a grid (gradcam.png), plus explain.csv."""
    from pytorch_grad_cam.utils.image import show_cam_on_image

    from imgcls.evaluation.plots import plot_image_grid
    from imgcls.predict import Predictor
    from imgcls.run_dir import new_run_dir

    p = Predictor.load(ckpt, device=device)
    require_classifier(p.task, "imgcls explain (Grad-CAM of a class)")
    items = p._expand(source)[:max_images]
    if not items:
        raise ImgclsError(f"no images in {source}")
    images = [p._to_pil(i) for i in items]
    pre = p.meta.preprocess
    out = Path(out_dir) if out_dir else new_run_dir(project, f"explain-{Path(str(ckpt)).parent.name or 'model'}")
    out.mkdir(parents=True, exist_ok=True)
    exps = explain_images(p.model, images, transform=p.transform, classes=p.classes, methods=methods, target=target,
                          layer=layer, mean=pre.mean, std=pre.std, device=p.device)
    grid, captions = [], []
    with open(out / "explain.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "predicted", "score", "explained_class", *[f"{m}_png" for m in exps[0].cams]])
        for k, (item, e) in enumerate(zip(items, exps)):
            e.path = str(item)
            # numbered: files of the same name in different class folders must not overwrite each other
            stem = f"{k:03d}_" + (Path(str(item)).stem if isinstance(item, (str, os.PathLike)) else "image")
            files = []
            grid.append((e.image * 255).astype(np.uint8))
            captions.append(f"{e.predicted} {e.score:.2f}")
            for m, cam in e.cams.items():
                overlay = show_cam_on_image(e.image.astype(np.float32), cam, use_rgb=True)
                name = f"{stem}_{m.replace('+', 'pp')}.png"
                Image.fromarray(overlay).save(out / name)
                files.append(name)
                grid.append(overlay)
                captions.append(f"{m}: {e.label}")
            w.writerow([e.path, e.predicted, f"{e.score:.4f}", e.label, *files])
    plot_image_grid(grid, captions, out / "gradcam.png", cols=1 + len(exps[0].cams),
                    title="input | " + " | ".join(exps[0].cams))
    return out, exps
