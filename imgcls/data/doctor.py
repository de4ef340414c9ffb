"""`doctor`: what is in a data set, and what is wrong with it, before training on it.

Per split and class: image counts. Per image: size, mode, content hash. Problems: files that cannot
be read as images (empty, truncated, not an image, too many pixels, broken or looping links, pipes,
unreadable), files ignored for their extension, exact duplicates within a split (with different
labels: conflicting labels) and across splits (leakage between train and test). Image folders are
scanned file by file, with the result of every file cached by (path, size, modification time), so a
second scan reads only what changed; data sets held in memory (MNIST, CIFAR-10 batches, ...) are
scanned image by image.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import time
from collections import Counter, defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from imgcls.atomic import write_text_atomic
from imgcls.data.image_io import IMAGE_EXTENSIONS, check_regular_file, decode_image
from imgcls.errors import ImgclsError
from imgcls.progress import progress_bar

SCAN_VERSION = 1


@dataclass
class FileScan:
    split: str
    cls: str
    path: str
    bytes: int = 0
    sha1: str = ""
    width: int = 0
    height: int = 0
    mode: str = ""
    error: str = ""  # why it cannot be used; "" = a readable image


@dataclass
class DoctorReport:
    name: str
    root: str
    classes: list[str]
    counts: dict[str, dict[str, int]]  # split -> class -> readable images
    sizes: dict[str, Any]  # min/median/max width and height, distinct sizes
    modes: dict[str, int]  # PIL mode -> images
    unreadable: list[dict[str, str]]  # {"path", "split", "error"}
    ignored: list[str]  # files without an image extension (the loaders skip them)
    duplicates_within: list[dict[str, Any]]  # {"split", "files", "classes"}: same bytes twice in a split
    duplicates_across: list[dict[str, Any]]  # {"splits", "files"}: same bytes in two splits (leakage)
    scanned: int
    from_cache: int
    seconds: float
    notes: list[str] = field(default_factory=list)
    # a task's target files (segmentation masks): {"split", "path", "error"} for each one that is unusable
    target_problems: list[dict[str, str]] = field(default_factory=list)
    target_kind: str = "masks"  # what the targets are: masks (segmentation) or boxes (detection)

    @property
    def conflicting_labels(self) -> list[dict[str, Any]]:
        return [d for d in self.duplicates_within if len(set(d["classes"])) > 1]

    @property
    def problems(self) -> int:
        return len(self.unreadable) + len(self.duplicates_across) + len(self.conflicting_labels) + len(self.target_problems)

    def summary(self) -> str:
        lines = [f"{self.name} at {self.root}: {len(self.classes)} classes, {self.scanned} files scanned "
                 f"({self.from_cache} from the cache) in {self.seconds:.1f}s"]
        for split, per_class in self.counts.items():
            n = sum(per_class.values())
            lo, hi = (min(per_class.values()), max(per_class.values())) if per_class else (0, 0)
            lines.append(f"  {split}: {n} images, {lo}-{hi} per class")
        if self.sizes:
            s = self.sizes
            lines.append(f"  sizes: width {s['width_min']}-{s['width_max']} (median {s['width_median']}), height "
                         f"{s['height_min']}-{s['height_max']} (median {s['height_median']}), {s['distinct']} distinct")
        lines.append("  modes: " + ", ".join(f"{m} {n}" for m, n in sorted(self.modes.items(), key=lambda t: -t[1])))
        lines.append(f"  unreadable: {len(self.unreadable)}" + "".join(f"\n    {u['path']}: {u['error']}"
                                                                      for u in self.unreadable[:20]))
        if len(self.unreadable) > 20:
            lines.append(f"    ... {len(self.unreadable) - 20} more (doctor.json)")
        if self.ignored:
            lines.append(f"  ignored (not an image extension): {len(self.ignored)}, e.g. {self.ignored[0]}")
        lines.append(f"  exact duplicates within a split: {len(self.duplicates_within)} groups "
                     f"({len(self.conflicting_labels)} with different labels)")
        lines.append(f"  exact duplicates across splits (leakage): {len(self.duplicates_across)} groups"
                     + "".join(f"\n    {' = '.join(d['files'][:3])}" for d in self.duplicates_across[:10]))
        if self.target_problems:
            lines.append(f"  targets ({self.target_kind}) with problems: {len(self.target_problems)}" + "".join(
                f"\n    {t['path']}: {t['error']}" for t in self.target_problems[:20]))
        lines.append("no problems found" if not self.problems else f"{self.problems} problem(s) found")
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------
# One file


def _reason(e: ImgclsError, path: str) -> str:
    msg = str(e)
    return msg[len(path) + 2:] if msg.startswith(f"{path}: ") else msg


def scan_file(job: tuple[str, str, str]) -> FileScan:
    """Hash and decode one file (never raises: the problem goes into `error`)."""
    split, cls, path = job
    r = FileScan(split=split, cls=cls, path=path)
    try:
        check_regular_file(path)
        with open(path, "rb") as f:
            data = f.read()
        r.bytes, r.sha1 = len(data), hashlib.sha1(data).hexdigest()
        if not data:
            r.error = "an empty file"
            return r
        img = decode_image(io.BytesIO(data), path, channels=None)
        r.width, r.height, r.mode = img.width, img.height, img.mode
    except ImgclsError as e:
        r.error = _reason(e, path)
    except OSError as e:
        r.error = f"cannot read ({e.strerror})"
    except Exception as e:  # noqa: BLE001 - one odd file must not stop a scan of thousands
        r.error = f"cannot decode the image ({type(e).__name__}: {e})"
    return r


# ---------------------------------------------------------------------------------------------------
# Where the files are


def folder_files(name: str, root: Path) -> dict[str, list[tuple[str, str]]] | None:
    """{split: [(class, path)]} of an image-folder data set, or None for one held in memory (MNIST, batches)."""
    from imgcls.data.sources import _class_dirs, find_split_dirs

    if name == "folder":
        dirs = find_split_dirs(root)
    elif name == "cifar10" and (root / "cifar10" / "train").is_dir():
        dirs = {s: root / "cifar10" / s for s in ("train", "test") if (root / "cifar10" / s).is_dir()}
    elif name == "caltech101":
        from imgcls.data.caltech101 import find_categories_dir

        base = find_categories_dir(root)
        if base is None:
            return None
        dirs = {"all": base}  # no official split: the stratified split is made at load time
    else:
        return None
    out: dict[str, list[tuple[str, str]]] = {}
    for split, d in dirs.items():
        entries = []
        for cdir in _class_dirs(d):  # the class folders the loaders use
            if name == "caltech101" and cdir.name == "BACKGROUND_Google":
                continue
            for p in sorted(cdir.rglob("*")):
                if p.is_dir() and not p.is_symlink() and not p.name.lower().endswith(IMAGE_EXTENSIONS):
                    continue
                entries.append((cdir.name, str(p)))
        out[split] = entries
    return out


def _cache_path(root: Path, cache_dir: str | None) -> Path:
    from imgcls.data.cache import default_cache_dir

    key = hashlib.sha1(str(root.resolve()).encode()).hexdigest()[:16]
    return default_cache_dir(cache_dir) / "doctor" / f"{key}.json"


def _signature(path: str) -> list:
    """What decides whether a cached scan still holds: the target's size, time and type (and the link's own)."""
    try:
        link = os.lstat(path)
        try:
            st = os.stat(path)
            return [st.st_size, st.st_mtime_ns, st.st_mode, link.st_mtime_ns]
        except OSError:  # a broken link or link loop
            return [-1, 0, link.st_mode, link.st_mtime_ns]
    except OSError:
        return []


def scan_folders(files: dict[str, list[tuple[str, str]]], root: Path, *, cache_dir: str | None, use_cache: bool,
                 workers: int) -> tuple[list[FileScan], list[str], int]:
    """Scan every image file (cached by path, size and mtime); returns the scans, ignored files, cache hits."""
    cache_file = _cache_path(root, cache_dir)
    cached: dict[str, Any] = {}
    if use_cache and cache_file.is_file():
        try:
            doc = json.loads(cache_file.read_text())
            cached = doc["files"] if doc.get("version") == SCAN_VERSION else {}
        except (OSError, ValueError, KeyError):
            cached = {}
    scans: list[FileScan] = []
    ignored: list[str] = []
    todo: list[tuple[str, str, str]] = []
    hits = 0
    for split, entries in files.items():
        for cls, path in entries:
            if not path.lower().endswith(IMAGE_EXTENSIONS):
                ignored.append(path)
                continue
            entry = cached.get(path)
            if entry and entry["sig"] == _signature(path) and entry["split"] == split and entry["cls"] == cls:
                scans.append(FileScan(**{k: v for k, v in entry.items() if k != "sig"}))
                hits += 1
            else:
                todo.append((split, cls, path))
    bar = progress_bar(desc="doctor: reading files", total=len(todo), unit="file")
    if workers > 1 and len(todo) > 2000:
        with ProcessPoolExecutor(workers) as pool:
            for s in pool.map(scan_file, todo, chunksize=256):
                scans.append(s)
                bar.update()
    else:
        for j in todo:
            scans.append(scan_file(j))
            bar.update()
    bar.close()
    if use_cache:
        cache_file.parent.mkdir(parents=True, exist_ok=True)
        doc = {"version": SCAN_VERSION, "root": str(root),
               "files": {s.path: {**asdict(s), "sig": _signature(s.path)} for s in scans}}
        write_text_atomic(cache_file, json.dumps(doc))
    return scans, ignored, hits


def scan_tensors(bundle) -> list[FileScan]:
    """Scans of an in-memory data set: each image's bytes hashed; all readable, one size and mode."""
    scans = []
    for split in ("train", "val", "test"):
        s = getattr(bundle, split, None)
        if s is None or s.images is None:
            continue
        mode = "L" if s.images.shape[1] == 1 else "RGB"
        h, w = s.images.shape[-2:]
        arr = s.images.contiguous().numpy()
        for i in range(len(arr)):
            scans.append(FileScan(split=split, cls=bundle.classes[int(s.labels[i])], path=str(s.ids[i]),
                                  bytes=arr[i].nbytes, sha1=hashlib.sha1(arr[i].tobytes()).hexdigest(), width=int(w),
                                  height=int(h), mode=mode))
    return scans


# ---------------------------------------------------------------------------------------------------


def _median(xs: list[int]) -> int:
    xs = sorted(xs)
    return xs[len(xs) // 2] if xs else 0


def build_report(name: str, root: Path, scans: list[FileScan], ignored: list[str], hits: int, seconds: float
                 ) -> DoctorReport:
    ok = [s for s in scans if not s.error]
    classes = sorted({s.cls for s in scans})
    counts: dict[str, dict[str, int]] = {}
    for s in ok:
        counts.setdefault(s.split, {c: 0 for c in classes})[s.cls] += 1
    sizes = {}
    if ok:
        ws, hs = [s.width for s in ok], [s.height for s in ok]
        sizes = {"width_min": min(ws), "width_median": _median(ws), "width_max": max(ws), "height_min": min(hs),
                 "height_median": _median(hs), "height_max": max(hs), "distinct": len({(s.width, s.height) for s in ok})}
    by_hash: dict[str, list[FileScan]] = defaultdict(list)
    for s in ok:
        by_hash[s.sha1].append(s)
    within, across = [], []
    for group in by_hash.values():
        if len(group) < 2:
            continue
        per_split: dict[str, list[FileScan]] = defaultdict(list)
        for s in group:
            per_split[s.split].append(s)
        for split, g in per_split.items():
            if len(g) > 1:
                within.append({"split": split, "files": [s.path for s in g], "classes": [s.cls for s in g]})
        if len(per_split) > 1:
            across.append({"splits": sorted(per_split), "files": [s.path for s in group],
                           "classes": [s.cls for s in group]})
    return DoctorReport(name=name, root=str(root), classes=classes, counts=counts, sizes=sizes,
                        modes=dict(Counter(s.mode for s in ok)),
                        unreadable=[{"path": s.path, "split": s.split, "error": s.error} for s in scans if s.error],
                        ignored=ignored, duplicates_within=within, duplicates_across=across, scanned=len(scans),
                        from_cache=hits, seconds=seconds)


def doctor(data: Any = None, *, out_dir: str | os.PathLike | None = None, project: str = "runs",
           use_cache: bool = True, workers: int = 2) -> DoctorReport:
    """Scan a data set (a DataConfig, a dict of data options or a name) and write doctor.json and doctor.md.

    Without `out_dir` a new <project>/doctor-<name> folder is made.
    """
    from imgcls.config import DataConfig, coerce
    from imgcls.data import data_root, load_data
    from imgcls.run_dir import new_run_dir

    cfg = coerce(DataConfig, data, "data")
    root = data_root(cfg.root)
    t0 = time.perf_counter()
    files = folder_files(cfg.name, root)
    targets: list[dict[str, str]] = []
    kind = "masks"
    if files is None:
        bundle = load_data(dataclasses.replace(cfg, val_fraction=0.0))  # the data set's own splits, no hold-out
        if bundle.train.targets is not None:  # images with target files (masks): the images as files, then the targets
            files = {split: [("-", i) for i in s.ids] for split in ("train", "val", "test")
                     if (s := getattr(bundle, split)) is not None}
            scans, ignored, hits = scan_folders(files, root, cache_dir=cfg.cache_dir, use_cache=use_cache, workers=workers)
            targets = bundle.check_targets(bundle) if bundle.check_targets else []
            kind = "boxes" if bundle.task == "detect" else "masks"
        elif bundle.train.images is None:
            raise ImgclsError(f"doctor scans image folders and data sets held in memory; {cfg.name} is neither here")
        else:
            scans, ignored, hits = scan_tensors(bundle), [], 0
    else:
        scans, ignored, hits = scan_folders(files, root, cache_dir=cfg.cache_dir, use_cache=use_cache, workers=workers)
    report = build_report(cfg.name, root, scans, ignored, hits, time.perf_counter() - t0)
    report.target_problems, report.target_kind = targets, kind
    out = Path(out_dir) if out_dir else new_run_dir(project, f"doctor-{cfg.name.lower()}")
    out.mkdir(parents=True, exist_ok=True)
    (out / "doctor.json").write_text(json.dumps(asdict(report), indent=1) + "\n")
    (out / "doctor.txt").write_text(report.summary() + "\n")
    report.notes.append(str(out))
    return report
