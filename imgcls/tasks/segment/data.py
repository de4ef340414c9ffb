"""Segmentation data: images with class-index masks, a class map, and image + mask augmented together.

`data=segfolder data.root=DIR` reads any of these layouts:
  - COCO JSON (DIR/annotations/instances_<split>*.json, polygons or RLE; imgcls/tasks/segment/coco.py), its
    masks painted once into the decode cache;
  - DIR/config.yaml as COCO128 and lightly's exports write it: per split `images:` and `masks:` folders
    (relative to DIR) and `classes: {id: name}`, the ids being the mask values;
  - DIR/images/[train|val|test/]*.jpg with DIR/masks/[train|val|test/]*.png of the same stems, and optionally
    DIR/classes.txt (one name per line: line i is mask value i).
Masks are single-channel PNGs of class indices, or palette PNGs (Pascal VOC), whose indices are the classes
(255: object borders, ignored). A class named "unlabeled"/"unlabelled"/"void"/"ignore" is the ignore index.
`data.merge=[person]` keeps person and makes every other class `data.rest` (background); "new=old1|old2"
merges classes.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image
from torch.utils.data import Dataset
from torchvision import tv_tensors
from torchvision.transforms import v2

from imgcls.config import AugConfig
from imgcls.data.bundle import DataBundle, Split
from imgcls.data.file_loader import FileLoader
from imgcls.data.image_io import IMAGE_EXTENSIONS, open_image
from imgcls.data.sources import register_source
from imgcls.errors import ImgclsError

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
IGNORED_NAMES = ("unlabeled", "unlabelled", "void", "ignore", "__ignore__")
SPLITS = ("train", "val", "test")
DEFAULT_SIZE = 320  # the side crops are trained at, unless data.image_size says (a CPU-friendly size for photos)


@dataclass
class ClassMap:
    """Mask values -> training classes: a lookup table over the 256 values a PNG mask can hold."""

    names: list[str]  # training classes, index = class
    lut: np.ndarray  # (256,) uint8: training class of each mask value; ignore_index for none
    ignore_index: int

    def apply(self, mask: np.ndarray) -> np.ndarray:
        return self.lut[mask]


def parse_merge(merge: list[str] | dict[str, list[str]] | None) -> dict[str, list[str]]:
    """data.merge as {new class: [classes of the masks]}: from ["person", "vehicle=car|bus"] (or such a dict)."""
    if not merge:
        return {}
    if isinstance(merge, dict):
        return {str(k): [str(o) for o in (v if isinstance(v, (list, tuple)) else [v])] for k, v in merge.items()}
    out: dict[str, list[str]] = {}
    for item in merge:
        new, _, olds = str(item).partition("=")
        if not new.strip() or (_ and not olds.strip()):
            raise ImgclsError(f"data.merge item {item!r}: write a class name, or new=old1|old2")
        out[new.strip()] = [o.strip() for o in (olds or new).split("|") if o.strip()]
    return out


def class_map(raw: dict[int, str], *, merge: list[str] | dict[str, list[str]] | None, rest: str | None,
              ignore_index: int) -> ClassMap:
    """From {mask value: name} (and a merge) to contiguous classes; unknown values and ignored names are ignored."""
    merge = parse_merge(merge)
    if not 0 <= ignore_index <= 255:
        raise ImgclsError(f"data.ignore_index={ignore_index} must be a mask value, 0 to 255")
    kept = {v: n for v, n in raw.items() if str(n).lower() not in IGNORED_NAMES and v != ignore_index}
    lut = np.full(256, ignore_index, dtype=np.uint8)
    if not merge:
        names = [kept[v] for v in sorted(kept)]
        for i, v in enumerate(sorted(kept)):
            lut[v] = i
        return ClassMap(names, lut, ignore_index)
    by_name = {str(n): v for v, n in kept.items()}
    unknown = sorted({o for olds in merge.values() for o in olds} - set(by_name))
    if unknown:
        raise ImgclsError(f"data.merge names classes the masks do not have: {', '.join(unknown)} "
                          f"(they have e.g. {', '.join(list(by_name)[:12])})")
    names = ([rest] if rest else []) + [n for n in merge if n != rest]
    if rest:
        for v in kept:
            lut[v] = 0
    for new, olds in merge.items():
        for old in olds:
            lut[by_name[old]] = names.index(new)
    return ClassMap(names, lut, ignore_index)


def _stems(folder: Path, exts: tuple[str, ...]) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.iterdir()) if p.suffix.lower() in exts and p.is_file()}


def _pairs(images: Path, masks: Path, split: str) -> tuple[list[str], list[str], list[str]]:
    """(images, masks, notes): the images that have a mask of the same stem."""
    for d in (images, masks):
        if not d.is_dir():
            raise ImgclsError(f"{split} split: folder not found: {d}")
    ims, ms = _stems(images, IMAGE_EXTENSIONS), _stems(masks, (".png",))
    common = sorted(set(ims) & set(ms))
    notes = []
    if len(ims) > len(common):
        notes.append(f"{split}: {len(ims) - len(common)} image(s) without a mask in {masks} skipped "
                     f"(e.g. {next(s for s in ims if s not in ms)})")
    if len(ms) > len(common):
        notes.append(f"{split}: {len(ms) - len(common)} mask(s) without an image skipped")
    return [str(ims[s]) for s in common], [str(ms[s]) for s in common], notes


def find_coco(root: Path) -> dict[str, tuple[Path, Path]]:
    """{split: (images folder, COCO JSON)} of a COCO-style folder: annotations/instances_<split>*.json (or any COCO JSON
    there, or in DIR) with images in DIR/<split>2017, DIR/images/<split>2017, DIR/images/<split>, DIR/<split> or DIR/images."""
    from imgcls.tasks.segment.coco import is_coco

    found = {}
    for js in sorted([*(root / "annotations").glob("*.json"), *root.glob("*.json")]) if root.is_dir() else []:
        split = next((s for s in SPLITS if s in js.stem.lower()), "train")
        if split in found or not is_coco(js):
            continue
        year = "".join(ch for ch in js.stem if ch.isdigit())
        for d in (root / f"{split}{year}", root / "images" / f"{split}{year}", root / "images" / split, root / split,
                  root / "images"):
            if d.is_dir():
                found[split] = (d, js)  # (images, "masks": the JSON they are painted from)
                break
        else:
            raise ImgclsError(f"{js}: COCO annotations, but no images folder for them (looked for {root / (split + year)}, "
                              f"{root / 'images' / split}, {root / 'images'})")
    return found


def find_layout(root: Path) -> tuple[dict[str, tuple[Path, Path]], dict[int, str] | None]:
    """{split: (images folder, masks folder)} and {mask value: class name} (None: not given)."""
    cfg = root / "config.yaml"
    if cfg.is_file():
        c = yaml.safe_load(cfg.read_text()) or {}
        splits = {s: (root / c[s]["images"], root / c[s]["masks"]) for s in SPLITS
                  if isinstance(c.get(s), dict) and "images" in c[s] and "masks" in c[s]}
        classes = {int(k): str(v) for k, v in (c.get("classes") or {}).items()} or None
        if not splits:
            raise ImgclsError(f"{cfg} names no split with images: and masks: folders")
        return splits, classes
    images, masks = root / "images", root / "masks"
    if not images.is_dir() or not masks.is_dir():
        raise ImgclsError(f"segmentation data in {root}: expected images/ and masks/ folders (or a config.yaml "
                          "naming them per split)")
    subs = [s for s in SPLITS if (images / s).is_dir()]
    splits = {s: (images / s, masks / s) for s in subs} if subs else {"train": (images, masks)}
    names = root / "classes.txt"
    classes = {i: n.strip() for i, n in enumerate(names.read_text().splitlines()) if n.strip()} if names.is_file() else None
    return splits, classes


def read_mask(path: str) -> np.ndarray:
    """A mask's class indices (H, W) uint8: a gray or palette PNG as stored (never converted to colours)."""
    try:
        with Image.open(path) as m:
            if m.mode not in ("L", "P", "I", "I;16"):
                raise ImgclsError(f"{path}: a mask must be a single-channel PNG of class indices (gray or palette), "
                                  f"not {m.mode}")
            a = np.asarray(m)
    except (OSError, ValueError) as e:
        raise ImgclsError(f"{path}: unreadable mask ({e})") from None
    if a.dtype != np.uint8:
        if a.max() > 255:
            raise ImgclsError(f"{path}: mask values up to {int(a.max())}; class indices must be below 256")
        a = a.astype(np.uint8)
    return a


@register_source("segfolder")
def segfolder(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
              workers: int, download: bool, merge: list[str] | None = None, rest: str | None = "background",
              ignore_index: int = 255) -> DataBundle:
    """Images with masks (see the module's docstring): a bundle of task "segment"."""
    if not root.is_dir():
        raise ImgclsError(f"data folder not found: {root}")
    coco = find_coco(root)
    layout, raw = (coco, {}) if coco else find_layout(root)
    splits: dict[str, Split] = {}
    notes: list[str] = []
    for name, (images, masks) in layout.items():
        if coco:  # masks is the COCO JSON: painted into PNGs once (imgcls/tasks/segment/coco.py)
            from imgcls.data.cache import default_cache_dir
            from imgcls.tasks.segment.coco import coco_masks

            ims, ms, cats, n = coco_masks(masks, images, default_cache_dir(cache_dir), ignore_index=ignore_index)
            raw.update(cats)
        else:
            ims, ms, n = _pairs(images, masks, name)
        notes += n
        if not ims:
            raise ImgclsError(f"{name} split: no image in {images} has a mask of the same name in {masks}")
        splits[name] = Split(labels=torch.zeros(len(ims), dtype=torch.long), ids=ims, targets=ms)
    if raw is None:  # no names given: the values found in (up to 200) training masks
        found = sorted({int(v) for m in splits["train"].targets[:200] for v in np.unique(read_mask(m))})
        raw = {v: f"class_{v}" for v in found if v != ignore_index}
        notes.append(f"no class names given (config.yaml classes: or classes.txt): classes named by mask value "
                     f"({len(raw)} found)")
    cmap = class_map(raw, merge=merge, rest=rest, ignore_index=ignore_index)
    side = image_size or DEFAULT_SIZE
    return DataBundle(name=f"segfolder-{root.name}", classes=cmap.names, channels=channels or 3, image_size=(side, side),
                      mean=IMAGENET_MEAN, std=IMAGENET_STD, notes=notes, task="segment", ignore_index=ignore_index,
                      loader=_loader(cmap), check_targets=lambda b: check_masks(b, cmap, raw),
                      **{k: splits.get(k) for k in SPLITS})


def check_masks(bundle: DataBundle, cmap: ClassMap, raw: dict[int, str]) -> list[dict[str, str]]:
    """`imgcls doctor` on masks: unreadable or not single-channel, another size than the image, values that are no
    class of the data set (out of range), and masks with no labelled pixel (empty)."""
    problems = []
    known = set(raw) | {cmap.ignore_index}
    for split in SPLITS:
        s = getattr(bundle, split)
        if s is None:
            continue
        for image, mask in zip(s.ids, s.targets):
            try:
                m = read_mask(mask)
                with Image.open(image) as im:
                    size = im.size
            except (ImgclsError, OSError) as e:
                problems.append({"split": split, "path": mask, "error": str(e)})
                continue
            if (m.shape[1], m.shape[0]) != size:
                problems.append({"split": split, "path": mask, "error": f"mask of {m.shape[1]}x{m.shape[0]} px for an image "
                                                                       f"of {size[0]}x{size[1]} ({image})"})
                continue
            values = set(np.unique(m).tolist())
            if values - known:
                problems.append({"split": split, "path": mask, "error": f"values that are no class: "
                                                                       f"{sorted(values - known)[:10]} (out of range)"})
            elif (cmap.apply(m) == cmap.ignore_index).all():
                problems.append({"split": split, "path": mask, "error": "empty: no pixel has a class (all ignored)"})
    return problems


class MaskDataset(Dataset):
    """(image (C, H, W) float normalized, mask (H, W) int64 of classes) pairs, transformed together."""

    def __init__(self, images: list[str], masks: list[str], cmap: ClassMap, transform, channels: int):
        self.images, self.masks, self.cmap, self.transform, self.channels = images, masks, cmap, transform, channels

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i: int):
        img = open_image(self.images[i], channels=self.channels)
        mask = self.cmap.apply(read_mask(self.masks[i]))
        if mask.shape != (img.height, img.width):
            raise ImgclsError(f"{self.masks[i]}: mask of {mask.shape[1]}x{mask.shape[0]} px for an image of "
                              f"{img.width}x{img.height} ({self.images[i]})")
        x, m = self.transform(tv_tensors.Image(v2.functional.pil_to_tensor(img)), tv_tensors.Mask(torch.from_numpy(mask)))
        return x, m.long()


def joint_transform(size: tuple[int, int], mean, std, *, train: bool, aug: AugConfig, flip: bool = True) -> v2.Compose:
    """torchvision v2 on (Image, Mask) together: the geometry moves both (masks with nearest neighbours),
    the colour only the image. Training: scale jitter with a random crop (aug.crop_scale of the area),
    flips, colour jitter; evaluation: the whole image resized to `size`."""
    if train:
        ops = [v2.RandomResizedCrop(size, scale=tuple(aug.crop_scale), antialias=True)]
        if flip:
            ops.append(v2.RandomHorizontalFlip())
        ops.append(v2.ColorJitter(0.3, 0.3, 0.3, 0.02))
    else:
        ops = [v2.Resize(size, antialias=True)]
    return v2.Compose([*ops, v2.ToDtype({tv_tensors.Image: torch.float32, "others": None}, scale=True),
                       v2.Normalize(mean, std)])


def _loader(cmap: ClassMap):
    def make(bundle: DataBundle, split: Split, *, train: bool, batch_size: int, aug: AugConfig, seed: int = 0,
             device="cpu", workers: int = 2, rank: int = 0, world: int = 1):
        flip = aug.flip if aug.flip is not None else bundle.flip_ok
        tf = joint_transform(bundle.image_size, bundle.mean, bundle.std, train=train, aug=aug, flip=flip)
        ds = MaskDataset(split.ids, split.targets, cmap, tf, bundle.channels)
        return FileLoader(ds, batch_size=batch_size, shuffle=train, drop_last=train and len(split) > batch_size,
                          workers=workers, seed=seed, pin_memory=torch.device(device).type == "cuda", rank=rank,
                          world=world)
    return make
