"""Detection data: images with boxes in any of four formats, boxes kept through augmentation, and checks.

`data=detfolder data.root=PATH` reads (imgcls/tasks/detect/formats.py):
  - COCO JSON: PATH/annotations/instances_<split>*.json with the images in PATH/<split>2017, PATH/images/<split>...;
  - YOLO: PATH/data.yaml (or config.yaml, dataset.yaml) as Ultralytics writes it, or PATH/images/<split>/ with
    PATH/labels/<split>/*.txt and PATH/classes.txt;
  - Pascal VOC: PATH/Annotations/*.xml, PATH/JPEGImages/, PATH/ImageSets/Main/<split>.txt;
  - CSV: PATH is a .csv (or a folder with one) of image,xmin,ymin,xmax,ymax,label[,split] rows, in pixels.
Images without boxes are kept (they teach the detector what is not an object). Boxes that cannot train are
left out with a count in the notes: unknown class ids, and boxes with no area; boxes reaching out of the
image are clipped to it. `imgcls doctor` lists each of these, and duplicates, with its file and line.
`data.merge=[person]` keeps only person boxes (other classes' boxes are dropped: their images stay, as
background where they have no person); "vehicle=car|bus" merges classes.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from imgcls.config import AugConfig
from imgcls.data.bundle import DataBundle, Split
from imgcls.data.file_loader import FileLoader
from imgcls.data.image_io import open_image
from imgcls.data.sources import register_source
from imgcls.errors import ImgclsError
from imgcls.tasks.detect.formats import SPLITS, Boxes, image_size, read_any

DEFAULT_SIZE = 416  # the shorter side detectors see (the network resizes; data.image_size sets it)
DECODE_CAP = 1.6  # photos larger than this x the longer side the network sees are shrunk at decode
DUPLICATE_IOU = 0.95  # two boxes of one class overlapping this much are one object labelled twice


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    import torchvision.ops as ops

    return ops.box_iou(torch.from_numpy(a).float(), torch.from_numpy(b).float()).numpy()


def box_problems(b: Boxes, size: tuple[int, int], names: list[str]) -> list[tuple[int, str]]:
    """(box index, what is wrong) for each box of one image: unknown class id, degenerate (no area), out of the
    image (more than a pixel past an edge), or a duplicate of an earlier box of the same class."""
    w, h = size
    out = []
    for i, ((x1, y1, x2, y2), c) in enumerate(zip(b.boxes.tolist(), b.labels.tolist())):
        if c < 0:
            out.append((i, f"class {b.raw[i] if i < len(b.raw) else c!r} is not one of the {len(names)} classes"))
        if not np.isfinite([x1, y1, x2, y2]).all():
            out.append((i, "coordinates are not finite numbers"))
        elif x2 - x1 < 1 or y2 - y1 < 1:
            out.append((i, f"degenerate box ({x2 - x1:.1f} x {y2 - y1:.1f} px)"))
        elif x1 < -1 or y1 < -1 or x2 > w + 1 or y2 > h + 1:
            out.append((i, f"out of the image: ({x1:.0f}, {y1:.0f}, {x2:.0f}, {y2:.0f}) in a {w}x{h} image"))
    if len(b.boxes) > 1:
        iou = np.triu(box_iou(b.boxes, b.boxes), 1)
        same = b.labels[:, None] == b.labels[None, :]
        for i, j in zip(*np.nonzero((iou >= DUPLICATE_IOU) & same)):
            out.append((int(j), f"duplicate of the box at {b.where[i] if i < len(b.where) else i} (IoU {iou[i, j]:.2f})"))
    return out


def clean(b: Boxes, size: tuple[int, int] | None) -> tuple[Boxes, int]:
    """The boxes a detector can train on: clipped to the image, without unknown classes or empty boxes; (boxes, dropped)."""
    boxes = b.boxes.copy()
    if size is not None and len(boxes):
        boxes[:, 0::2] = boxes[:, 0::2].clip(0, size[0])
        boxes[:, 1::2] = boxes[:, 1::2].clip(0, size[1])
    keep = (b.labels >= 0) & np.isfinite(boxes).all(1) & (boxes[:, 2] - boxes[:, 0] >= 1) & (boxes[:, 3] - boxes[:, 1] >= 1)
    idx = np.nonzero(keep)[0]
    return Boxes(boxes[keep], b.labels[keep], [b.where[i] for i in idx] if b.where else [],
                 [b.raw[i] for i in idx] if b.raw else [], size), int((~keep).sum())


def merged(names: list[str], merge) -> tuple[list[str], np.ndarray]:
    """data.merge for boxes: (new class names, lookup old class -> new class or -1 to drop)."""
    from imgcls.tasks.segment.data import parse_merge

    m = parse_merge(merge)
    unknown = sorted({o for olds in m.values() for o in olds} - set(names))
    if unknown:
        raise ImgclsError(f"data.merge names classes the labels do not have: {', '.join(unknown)} "
                          f"(they have e.g. {', '.join(names[:12])})")
    new = list(m)
    lut = np.full(len(names) + 1, -1, np.int64)  # the last entry: unknown (-1) stays -1
    for k, olds in m.items():
        for o in olds:
            lut[names.index(o)] = new.index(k)
    return new, lut


@register_source("detfolder")
def detfolder(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
              workers: int, download: bool, merge: list[str] | None = None, rest: str | None = None,
              ignore_index: int = 255) -> DataBundle:
    """Images with boxes (see the module's docstring): a bundle of task "detect"."""
    if not root.exists():
        raise ImgclsError(f"data folder not found: {root}")
    if channels not in (None, 3):
        raise ImgclsError(f"detectors take RGB images; data.channels={channels}")
    parsed, names, fmt = read_any(root)
    original = list(names)  # the labels' own classes (doctor checks the boxes as written, before any merge)
    lut = None
    if merge:
        names, lut = merged(names, merge)
    splits, notes = {}, [f"box labels read as {fmt}"]
    for s, sp in parsed.items():
        notes += sp.notes
        if not sp.images:
            raise ImgclsError(f"{s} split of {root}: no image found (looked for the images its labels name)")
        targets, dropped = [], 0
        for b in sp.boxes:
            if lut is not None:
                b = Boxes(b.boxes, lut[b.labels], b.where, b.raw, b.size)
                keep = b.labels >= 0
                b = Boxes(b.boxes[keep], b.labels[keep], [w for w, k in zip(b.where, keep) if k],
                          [r for r, k in zip(b.raw, keep) if k], b.size)
            c, n = clean(b, b.size)  # without a size in the labels, the dataset clips after decoding
            dropped += n
            targets.append(c)
        if dropped:
            notes.append(f"{s}: {dropped} box(es) left out (unknown class or no area; `imgcls doctor` lists them)")
        empty = sum(1 for t in targets if not len(t.boxes))
        if empty:
            notes.append(f"{s}: {empty} of {len(targets)} image(s) without boxes (kept as background)")
        # per image its most frequent class (len(names): none), for stratified val/test splits of a train-only set
        labels = torch.tensor([int(np.bincount(t.labels).argmax()) if len(t.labels) else len(names) for t in targets])
        splits[s] = Split(labels=labels, ids=list(sp.images), targets=targets)
    if "train" not in splits:
        raise ImgclsError(f"{root}: no train split (found {', '.join(splits)})")
    side = image_size or DEFAULT_SIZE
    raw = {"root": root, "names": original, "parsed": parsed}
    return DataBundle(name=f"detfolder-{root.stem}", classes=list(names), channels=3, image_size=(side, side),
                      mean=[0.0, 0.0, 0.0], std=[1.0, 1.0, 1.0], notes=notes, task="detect",
                      loader=make_loader, check_targets=lambda b: check_boxes(b, raw),
                      **{k: splits.get(k) for k in SPLITS})


def check_boxes(bundle: DataBundle, raw: dict) -> list[dict[str, str]]:
    """`imgcls doctor` on box labels: each degenerate, out-of-image, duplicate or unknown-class box with its file and
    line (before any cleaning), and label files without an image."""
    problems = []
    for split, sp in raw["parsed"].items():
        for img, b in zip(sp.images, sp.boxes):
            try:
                size = b.size or image_size(img)
            except OSError as e:
                problems.append({"split": split, "path": img, "error": f"unreadable image ({e})"})
                continue
            for i, what in box_problems(b, size, raw["names"]):
                problems.append({"split": split, "path": b.where[i] if i < len(b.where) else img, "error": what})
    return problems


class BoxDataset(Dataset):
    """(image (3, H, W) float in [0, 1], {"boxes": (N, 4) xyxy px, "labels": (N,)}) per image, transformed together."""

    def __init__(self, images: list[str], targets: list[Boxes], transform, cap: int | None):
        self.images, self.targets, self.transform, self.cap = images, targets, transform, cap

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = open_image(self.images[i], channels=3)
        t = self.targets[i]
        w, h = img.size
        boxes = torch.from_numpy(t.boxes).float().reshape(-1, 4)
        if len(boxes):
            boxes[:, 0::2] = boxes[:, 0::2].clamp(0, w)
            boxes[:, 1::2] = boxes[:, 1::2].clamp(0, h)
        sample = {"image": tv_tensors.Image(v2.functional.pil_to_tensor(img)),
                  "boxes": tv_tensors.BoundingBoxes(boxes, format="XYXY", canvas_size=(h, w)),
                  "labels": torch.from_numpy(t.labels).long()}
        if self.cap and max(w, h) > self.cap:  # a large photo: shrink once, boxes with it
            s = self.cap / max(w, h)
            sample = v2.Resize((max(1, round(h * s)), max(1, round(w * s))), antialias=True)(sample)
        out = self.transform(sample)
        return out["image"], {"boxes": out["boxes"].as_subclass(torch.Tensor).float(), "labels": out["labels"]}


def box_transform(*, train: bool, aug: AugConfig, flip: bool = True, photometric: bool = True) -> v2.Compose:
    """torchvision v2 on image + BoundingBoxes: in training photometric distortion, zoom out (the photo on a
    larger canvas: objects smaller) and a random IoU crop (objects larger; boxes cut by it are clipped, boxes
    left with too little of themselves dropped), a horizontal flip; then boxes with no area removed."""
    ops: list = []
    if train:
        if photometric:
            ops.append(v2.RandomPhotometricDistort(p=0.5))
        if aug.crop_scale and min(aug.crop_scale) < 1.0:  # scale jitter: zoom out or crop in, each now and then
            ops.append(v2.RandomZoomOut(fill={tv_tensors.Image: (124, 116, 104), "others": 0}, side_range=(1.0, 2.0), p=0.3))
            ops.append(v2.RandomApply([v2.RandomIoUCrop()], p=0.5))
        if flip:
            ops.append(v2.RandomHorizontalFlip())
        ops.append(v2.SanitizeBoundingBoxes(min_size=1))
    return v2.Compose([*ops, v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True)])


def collate(batch):
    """A list of images of their own sizes and a list of targets (the detector batches them)."""
    xs, ys = zip(*batch)
    return list(xs), list(ys)


def make_loader(bundle: DataBundle, split: Split, *, train: bool, batch_size: int, aug: AugConfig, seed: int = 0,
                device="cpu", workers: int = 2, rank: int = 0, world: int = 1):
    flip = aug.flip if aug.flip is not None else bundle.flip_ok
    side = max(bundle.image_size)
    ds = BoxDataset(split.ids, split.targets, box_transform(train=train, aug=aug, flip=flip), cap=int(side * 1.7 * DECODE_CAP))
    return FileLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train and len(split) > batch_size,
                      workers=workers, seed=seed, pin_memory=torch.device(device).type == "cuda", rank=rank,
                      world=world, collate_fn=collate)
