"""Boxes drawn on a photo: detections in a colour per class with their label and score, true boxes (when given)
as thin white outlines under them."""

from __future__ import annotations

import torch
from PIL import Image
from torchvision.transforms.v2 import functional as TF
from torchvision.utils import draw_bounding_boxes


def class_colour(k: int) -> tuple[int, int, int]:
    """A distinct, stable colour per class (the golden-ratio hue walk)."""
    import colorsys

    r, g, b = colorsys.hsv_to_rgb((k * 0.618033988749895) % 1.0, 0.85, 1.0)
    return int(r * 255), int(g * 255), int(b * 255)


def draw_boxes(image: Image.Image | torch.Tensor, pred: dict, classes: list[str], truth: dict | None = None,
               width: int | None = None) -> Image.Image:
    """`image` (PIL, or a (3, H, W) uint8/float tensor) with `pred` ({"boxes", "labels", "scores"}) drawn."""
    t = image if isinstance(image, torch.Tensor) else TF.pil_to_tensor(image.convert("RGB"))
    if t.dtype != torch.uint8:
        t = (t.clamp(0, 1) * 255).round().to(torch.uint8)
    w = width or max(2, round(max(t.shape[-2:]) / 320))
    if truth is not None and len(truth["boxes"]):
        t = draw_bounding_boxes(t, truth["boxes"].float(), colors="white", width=1)
    if len(pred["boxes"]):
        labels = [f"{classes[int(c)] if 0 <= int(c) < len(classes) else int(c)} {float(s):.2f}"
                  for c, s in zip(pred["labels"], pred["scores"])]
        colours = [class_colour(int(c)) for c in pred["labels"]]
        t = draw_bounding_boxes(t, pred["boxes"].float(), labels=labels, colors=colours, width=w)
    return TF.to_pil_image(t)
