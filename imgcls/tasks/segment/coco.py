"""COCO JSON (instances: polygons and RLE) as class-index masks, made once and kept in the decode cache.

A COCO split is `annotations/instances_<split>*.json` (or any JSON with "images", "annotations" and
"categories") and a folder of its images. Each image's mask paints its annotations in order of
decreasing area (small objects on top), each with its category id; pixels no annotation covers are
class 0, "background"; `iscrowd` regions (RLE) get the ignore index. Masks are written as PNGs under
the cache folder, keyed by the JSON's path, size and modification time, so the next run reads them
as any mask folder.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from imgcls.errors import ImgclsError


def is_coco(path: Path) -> bool:
    """A JSON file with COCO's three lists (read only as far as needed to tell)."""
    if path.suffix.lower() != ".json" or not path.is_file():
        return False
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError):
        return False
    return isinstance(doc, dict) and all(isinstance(doc.get(k), list) for k in ("images", "annotations", "categories"))


def _rle_mask(segm, h: int, w: int) -> np.ndarray:
    try:
        from pycocotools import mask as rle
    except ImportError:  # pragma: no cover - a dependency
        raise ImgclsError("RLE masks in COCO JSON need pycocotools (pip install pycocotools)") from None
    if isinstance(segm.get("counts"), list):  # uncompressed RLE
        segm = rle.frPyObjects(segm, h, w)
    return rle.decode(segm).astype(bool)


def annotation_mask(segm, h: int, w: int) -> np.ndarray:
    """One annotation's pixels (H, W) bool: polygons ([[x1, y1, x2, y2, ...], ...]) or RLE ({"counts", "size"})."""
    if isinstance(segm, list):
        canvas = Image.new("L", (w, h), 0)
        draw = ImageDraw.Draw(canvas)
        for poly in segm:
            if len(poly) >= 6:
                draw.polygon([(float(poly[i]), float(poly[i + 1])) for i in range(0, len(poly) - 1, 2)], fill=1)
        return np.asarray(canvas, dtype=bool)
    if isinstance(segm, dict):
        return _rle_mask(segm, h, w)
    raise ImgclsError(f"unknown segmentation format {type(segm).__name__} (polygons or RLE expected)")


def coco_masks(json_path: Path, images_dir: Path, cache_dir: Path, *, ignore_index: int = 255
               ) -> tuple[list[str], list[str], dict[int, str], list[str]]:
    """(image paths, mask paths, {mask value: class name}, notes) of a COCO split; masks made on first use."""
    doc = json.loads(json_path.read_text())
    cats = {int(c["id"]): str(c["name"]) for c in doc["categories"]}
    if any(not 0 < i < 256 or i == ignore_index for i in cats):
        raise ImgclsError(f"{json_path}: category ids must be 1-254 (not {ignore_index}) to be mask values; found "
                          f"{sorted(i for i in cats if not 0 < i < 256 or i == ignore_index)[:5]}")
    st = json_path.stat()
    key = hashlib.sha1(f"{json_path.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:16]
    out = cache_dir / "coco_masks" / key
    out.mkdir(parents=True, exist_ok=True)
    by_image: dict[int, list[dict]] = {}
    for a in doc["annotations"]:
        by_image.setdefault(int(a["image_id"]), []).append(a)
    images, masks, notes, missing = [], [], [], 0
    for im in doc["images"]:
        path = images_dir / im["file_name"]
        if not path.is_file():
            missing += 1
            continue
        mask_path = out / f"{Path(im['file_name']).stem}.png"
        if not mask_path.is_file():
            h, w = int(im["height"]), int(im["width"])
            mask = np.zeros((h, w), np.uint8)
            for a in sorted(by_image.get(int(im["id"]), []), key=lambda a: -float(a.get("area", 0))):
                if int(a["category_id"]) not in cats:
                    raise ImgclsError(f"{json_path}: annotation {a.get('id')} has category {a['category_id']}, "
                                      f"not one of the file's categories")
                pixels = annotation_mask(a["segmentation"], h, w)
                mask[pixels] = ignore_index if a.get("iscrowd") else int(a["category_id"])
            tmp = mask_path.with_suffix(".tmp.png")
            Image.fromarray(mask).save(tmp)
            tmp.replace(mask_path)  # a killed run leaves no half-written mask
        images.append(str(path))
        masks.append(str(mask_path))
    if missing:
        notes.append(f"{json_path.name}: {missing} image(s) listed but not in {images_dir} skipped")
    return images, masks, {0: "background", **cats}, notes
