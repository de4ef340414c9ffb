"""Box label formats, all read into the same `Boxes` per image: YOLO txt, COCO JSON, Pascal VOC XML, CSV.

Every box keeps where it came from (`file:line`, or the JSON's annotation id) so that `imgcls doctor` can
name it. Reading never drops a box silently: boxes that cannot train (degenerate, unknown class) are
left out by `clean` with a count in the data set's notes, and listed one by one by `problems`.
"""

from __future__ import annotations

import csv
import json
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml
from PIL import Image

from imgcls.data.image_io import IMAGE_EXTENSIONS
from imgcls.errors import ImgclsError

SPLITS = ("train", "val", "test")


@dataclass
class Boxes:
    """One image's boxes: xyxy in the image's pixels, class indices (-1: a class id the data set does not name)."""

    boxes: np.ndarray  # (N, 4) float32 x1 y1 x2 y2
    labels: np.ndarray  # (N,) int64
    where: list[str] = field(default_factory=list)  # per box: "file:line" (or "file: annotation id N")
    raw: list[str] = field(default_factory=list)  # per box: the class as written (to name an unknown id)
    size: tuple[int, int] | None = None  # (width, height) when the labels say it (VOC, COCO)

    @classmethod
    def empty(cls, size=None) -> Boxes:
        return cls(np.zeros((0, 4), np.float32), np.zeros(0, np.int64), [], [], size)


@dataclass
class Split:
    images: list[str]
    boxes: list[Boxes]
    notes: list[str] = field(default_factory=list)


def image_size(path: str) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


# ---------------------------------------------------------------------------------------------------- YOLO
def _yolo_names(c: dict) -> list[str]:
    names = c.get("names")
    if isinstance(names, dict):
        return [str(names[k]) for k in sorted(names, key=int)]
    if isinstance(names, list):
        return [str(n) for n in names]
    return []


def _label_dir(images: Path) -> Path:
    """Ultralytics' rule: the labels of .../images/<split> are in .../labels/<split>."""
    parts = list(images.parts)
    if "images" in parts:
        i = len(parts) - 1 - parts[::-1].index("images")
        return Path(*parts[:i], "labels", *parts[i + 1:])
    return images.parent / "labels" / images.name


def read_yolo_file(path: Path, size: tuple[int, int] | None, image: str) -> Boxes:
    """`class cx cy w h` per line, normalized to the image's size (0-1); blank lines and # comments skipped."""
    w, h = size or image_size(image)
    boxes, labels, where, raw = [], [], [], []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        parts = line.split("#", 1)[0].split()
        if not parts:
            continue
        try:
            if len(parts) < 5:
                raise ValueError
            c = int(float(parts[0]))
            cx, cy, bw, bh = (float(v) for v in parts[1:5])
        except ValueError:
            raise ImgclsError(f"{path}:{n}: expected 'class x_center y_center width height' (YOLO, 0-1), got "
                              f"{line.strip()[:80]!r}") from None
        boxes.append([(cx - bw / 2) * w, (cy - bh / 2) * h, (cx + bw / 2) * w, (cy + bh / 2) * h])
        labels.append(c)
        where.append(f"{path}:{n}")
        raw.append(str(c))
    if not boxes:
        return Boxes.empty((w, h))
    return Boxes(np.asarray(boxes, np.float32), np.asarray(labels, np.int64), where, raw, (w, h))


def resolve_dir(path: Path) -> Path:
    """`path`, or where it points when it is a symbolic link checked out as a small text file (git does that with
    core.symlinks=false, e.g. on Windows): the file holds a relative path to a folder."""
    if path.is_file() and path.stat().st_size < 1024:
        target = (path.parent / path.read_text(errors="replace").strip()).resolve()
        if target.is_dir():
            return target
    for i in range(len(path.parts) - 1):  # a link file earlier in the path (DIR/images/train2017)
        head = Path(*path.parts[: i + 1])
        if head.is_file() and head.stat().st_size < 1024:
            inner = resolve_dir(head)
            if inner != head:
                return inner.joinpath(*path.parts[i + 1:])
    return path


def _images_in(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS and p.is_file())


def yolo_split(images: Path, labels: Path, names: list[str]) -> Split:
    """Every image of `images` with its labels/<stem>.txt (an image without one has no boxes: a background image)."""
    images = resolve_dir(images)
    if not images.is_dir():
        raise ImgclsError(f"images folder not found: {images}")
    ims, out, missing = _images_in(images), [], 0
    for im in ims:
        txt = labels / f"{im.stem}.txt"
        if txt.is_file():
            b = read_yolo_file(txt, None, str(im))
        else:
            missing += 1
            b = Boxes.empty()
        b.labels = np.where((b.labels >= 0) & (b.labels < len(names)), b.labels, -1) if names else b.labels
        out.append(b)
    notes = [f"{images}: {missing} image(s) without a label file in {labels}: taken as images without boxes"] if missing else []
    return Split([str(p) for p in ims], out, notes)


def read_yolo(root: Path) -> tuple[dict[str, Split], list[str]] | None:
    """DIR/{config,data,dataset}.yaml as Ultralytics writes it (path, train/val/test image folders, names), or
    DIR/images/<split>/ + DIR/labels/<split>/ with DIR/classes.txt (or names in DIR/labels/classes.txt)."""
    cfg = next((root / f for f in ("config.yaml", "data.yaml", "dataset.yaml") if (root / f).is_file()), None)
    if cfg is not None:
        c = yaml.safe_load(cfg.read_text()) or {}
        if not any(isinstance(c.get(s), str) for s in SPLITS):
            return None  # another task's config.yaml (masks: per split)
        base = (root / c["path"]) if c.get("path") and not Path(str(c["path"])).is_absolute() else Path(c.get("path") or root)
        names = _yolo_names(c)
        if not names:
            raise ImgclsError(f"{cfg}: no class names (names: {{0: person, ...}} or a list)")
        splits = {}
        for s in SPLITS:
            if isinstance(c.get(s), str):
                images = base / c[s]
                splits[s] = yolo_split(images, _label_dir(images), names)
        return splits, names
    if (root / "labels").is_dir() and (root / "images").is_dir():
        txt = next((p for p in (root / "classes.txt", root / "labels" / "classes.txt") if p.is_file()), None)
        names = [n.strip() for n in txt.read_text().splitlines() if n.strip()] if txt else []
        subs = [s for s in SPLITS if (root / "images" / s).is_dir()]
        pairs = {s: (root / "images" / s, root / "labels" / s) for s in subs} or {"train": (root / "images", root / "labels")}
        splits = {s: yolo_split(i, lab, names) for s, (i, lab) in pairs.items()}
        if not names:  # named by id: the largest id found
            top = max((int(b.labels.max()) for sp in splits.values() for b in sp.boxes if len(b.labels)), default=0)
            names = [f"class_{i}" for i in range(top + 1)]
            for sp in splits.values():
                sp.notes.append("no classes.txt: classes named by their YOLO id")
        return splits, names
    return None


# ---------------------------------------------------------------------------------------------------- COCO
def read_coco_json(js: Path, images: Path, names: list[str] | None = None) -> tuple[Split, list[str], dict[int, int]]:
    """A COCO instances JSON: boxes [x, y, w, h] per annotation; crowd regions (iscrowd) are not boxes to find
    and are left out; categories become classes in the order of their ids (or of `names`, from another split)."""
    try:
        d = json.loads(js.read_text())
        cats = {int(c["id"]): str(c["name"]) for c in d["categories"]}
        imgs = {int(i["id"]): i for i in d["images"]}
        anns = d.get("annotations", [])
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ImgclsError(f"{js}: not a COCO JSON with images, annotations and categories ({e})") from None
    names = names or [cats[k] for k in sorted(cats)]
    index = {k: names.index(v) if v in names else -1 for k, v in cats.items()}
    per: dict[int, list] = {i: [] for i in imgs}
    crowd = 0
    for a in anns:
        if a.get("iscrowd"):
            crowd += 1
            continue
        if a.get("image_id") not in per:
            raise ImgclsError(f"{js}: annotation id {a.get('id')} names image_id {a.get('image_id')}, which is not in images")
        per[a["image_id"]].append(a)
    paths, out, missing = [], [], 0
    for i, info in imgs.items():
        p = images / info["file_name"]
        if not p.is_file():
            missing += 1
            continue
        rows = per[i]
        size = (int(info["width"]), int(info["height"])) if "width" in info and "height" in info else None
        if rows:
            xywh = np.asarray([a["bbox"] for a in rows], np.float32).reshape(-1, 4)
            boxes = np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)
            labels = np.asarray([index.get(int(a["category_id"]), -1) for a in rows], np.int64)
            b = Boxes(boxes, labels, [f"{js}: annotation id {a.get('id')}" for a in rows],
                      [str(a["category_id"]) for a in rows], size)
        else:
            b = Boxes.empty(size)
        paths.append(str(p))
        out.append(b)
    notes = [f"{js}: {crowd} crowd region(s) (iscrowd=1) left out"] if crowd else []
    if missing:
        notes.append(f"{js}: {missing} image(s) listed but not found in {images}: skipped")
    return Split(paths, out, notes), names, index


def read_coco(root: Path) -> tuple[dict[str, Split], list[str]] | None:
    from imgcls.tasks.segment.data import find_coco

    found = find_coco(root)
    if not found:
        return None
    splits, names = {}, None
    for s in sorted(found, key=lambda s: s != "train"):  # train first: its categories name the classes
        images, js = found[s]
        splits[s], names, _ = read_coco_json(js, images, names)
    return splits, names


# ---------------------------------------------------------------------------------------------------- VOC
def read_voc_xml(path: Path) -> tuple[str, Boxes, list[str]]:
    """(image file name, boxes, class names as written) of one Pascal VOC annotation; VOC's pixel coordinates
    are 1-based and inclusive: x1-1, y1-1 as Detectron2's VOC reader does (torchvision's keeps them as written)."""
    try:
        root = ET.parse(path).getroot()
    except (ET.ParseError, OSError) as e:
        raise ImgclsError(f"{path}: unreadable VOC XML ({e})") from None
    size = root.find("size")
    wh = (int(float(size.findtext("width", "0"))), int(float(size.findtext("height", "0")))) if size is not None else None
    boxes, names, where = [], [], []
    for k, obj in enumerate(root.iter("object")):
        bb = obj.find("bndbox")
        try:
            x1, y1, x2, y2 = (float(bb.findtext(t)) for t in ("xmin", "ymin", "xmax", "ymax"))
        except (AttributeError, TypeError, ValueError):
            raise ImgclsError(f"{path}: object {k + 1} ({obj.findtext('name')}) has no numeric bndbox "
                              f"xmin/ymin/xmax/ymax") from None
        boxes.append([x1 - 1, y1 - 1, x2, y2])
        names.append((obj.findtext("name") or "").strip())
        line = getattr(obj, "sourceline", None)
        where.append(f"{path}:{line}" if line else f"{path}: object {k + 1}")
    b = Boxes(np.asarray(boxes, np.float32).reshape(-1, 4), np.zeros(len(boxes), np.int64), where, names,
              wh if wh and all(wh) else None)
    return root.findtext("filename") or path.stem, b, names


def read_voc(root: Path) -> tuple[dict[str, Split], list[str]] | None:
    """VOCdevkit layout: Annotations/*.xml, JPEGImages/, ImageSets/Main/<split>.txt (else every XML is train);
    classes: DIR/classes.txt, else the names found, sorted."""
    ann = root / "Annotations"
    if not ann.is_dir():
        return None
    jpeg = root / "JPEGImages" if (root / "JPEGImages").is_dir() else root / "images"
    sets = root / "ImageSets" / "Main"
    lists = {s: [ln.split()[0] for ln in (sets / f"{s}.txt").read_text().splitlines() if ln.strip()]
             for s in SPLITS if (sets / f"{s}.txt").is_file()}
    if not lists:
        lists = {"train": [p.stem for p in sorted(ann.glob("*.xml"))]}
    parsed: dict[str, list] = {}
    for s, stems in lists.items():
        parsed[s] = []
        for stem in stems:
            xml = ann / f"{stem}.xml"
            if not xml.is_file():
                raise ImgclsError(f"{sets / (s + '.txt')} lists {stem!r}, but {xml} does not exist")
            parsed[s].append(read_voc_xml(xml))
    txt = root / "classes.txt"
    names = [n.strip() for n in txt.read_text().splitlines() if n.strip()] if txt.is_file() else \
        sorted({n for rows in parsed.values() for _, _, ns in rows for n in ns if n})
    splits = {}
    for s, rows in parsed.items():
        paths, out, notes = [], [], []
        for fname, b, ns in rows:
            p = jpeg / fname
            if not p.is_file():
                p = next((jpeg / (Path(fname).stem + e) for e in (".jpg", ".jpeg", ".png") if (jpeg / (Path(fname).stem + e)).is_file()), p)
            if not p.is_file():
                notes.append(f"{p}: image of {b.where[0].split(':')[0] if b.where else fname} not found: skipped")
                continue
            b.labels = np.asarray([names.index(n) if n in names else -1 for n in ns], np.int64)
            paths.append(str(p))
            out.append(b)
        splits[s] = Split(paths, out, notes)
    return splits, names


# ---------------------------------------------------------------------------------------------------- CSV
CSV_COLUMNS = ("image", "xmin", "ymin", "xmax", "ymax", "label")


def read_csv(path: Path) -> tuple[dict[str, Split], list[str]]:
    """One row per box: image,xmin,ymin,xmax,ymax,label (pixels; image paths relative to the CSV's folder); a row
    with the box fields empty is an image without boxes; an optional `split` column (train/val/test, else train)."""
    try:
        rows = list(csv.DictReader(path.open(newline="", encoding="utf-8-sig")))
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ImgclsError(f"{path}: unreadable CSV ({e})") from None
    if not rows:
        raise ImgclsError(f"{path}: no rows")
    missing = [c for c in CSV_COLUMNS if c not in rows[0]]
    if missing:
        raise ImgclsError(f"{path}: missing column(s) {', '.join(missing)}; expected {','.join(CSV_COLUMNS)} (+ split)")
    names_file = path.parent / "classes.txt"
    names = [n.strip() for n in names_file.read_text().splitlines() if n.strip()] if names_file.is_file() else \
        sorted({r["label"].strip() for r in rows if r["label"].strip()})
    per: dict[str, dict[str, list]] = {}
    for n, r in enumerate(rows, 2):  # line 1 is the header
        split = (r.get("split") or "train").strip() or "train"
        if split not in SPLITS:
            raise ImgclsError(f"{path}:{n}: split {split!r} is not one of {', '.join(SPLITS)}")
        img = str((path.parent / r["image"].strip()).resolve()) if r["image"].strip() else ""
        if not img:
            raise ImgclsError(f"{path}:{n}: no image")
        entry = per.setdefault(split, {}).setdefault(img, [])
        coords = [r[c].strip() for c in CSV_COLUMNS[1:5]]
        if not any(coords) and not r["label"].strip():
            continue  # an image without boxes
        try:
            box = [float(v) for v in coords]
        except ValueError:
            raise ImgclsError(f"{path}:{n}: box coordinates must be numbers, got {coords}") from None
        entry.append((box, r["label"].strip(), f"{path}:{n}"))
    splits = {}
    for s, imgs in per.items():
        paths, out, notes = [], [], []
        for img, boxes in imgs.items():
            if not Path(img).is_file():
                notes.append(f"{path}: image {img} not found: skipped")
                continue
            paths.append(img)
            out.append(Boxes(np.asarray([b for b, _, _ in boxes], np.float32).reshape(-1, 4),
                             np.asarray([names.index(lb) if lb in names else -1 for _, lb, _ in boxes], np.int64),
                             [w for _, _, w in boxes], [lb for _, lb, _ in boxes]))
        splits[s] = Split(paths, out, notes)
    return splits, names


def read_any(root: Path) -> tuple[dict[str, Split], list[str], str]:
    """(splits, class names, format) of a folder (COCO JSON, YOLO, VOC) or a CSV file."""
    if root.is_file() and root.suffix.lower() == ".csv":
        return (*read_csv(root), "csv")
    if root.is_file() and root.suffix.lower() == ".json":
        images = next((d for d in (root.parent / "images", root.parent) if d.is_dir()), root.parent)
        s, names, _ = read_coco_json(root, images)
        return {"train": s}, names, "coco"
    if not root.is_dir():
        raise ImgclsError(f"detection data not found: {root}")
    for fmt, reader in (("coco", read_coco), ("yolo", read_yolo), ("voc", read_voc)):
        got = reader(root)
        if got is not None:
            return (*got, fmt)
    csvs = sorted(root.glob("*.csv"))
    if len(csvs) == 1:
        return (*read_csv(csvs[0]), "csv")
    raise ImgclsError(f"no box labels found in {root}: expected COCO JSON (annotations/instances_<split>.json), a YOLO "
                      f"folder (data.yaml, or images/ + labels/), Pascal VOC (Annotations/ + JPEGImages/) or one CSV "
                      f"of boxes ({','.join(CSV_COLUMNS)}); docs/detection.md")
