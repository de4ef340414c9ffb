"""Data sources: each turns a root directory into a `DataBundle` (before val split and conversions).

`data.root` is the directory that holds data sets, as in torchvision: MNIST is read from
ROOT/MNIST/raw, CIFAR-10 from ROOT/cifar-10-batches-py or image folders ROOT/cifar10/{train,test}/<class>,
and `folder` from ROOT/{train, val|valid|validation, test}/<class>/<image>.
"""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import torch

from imgcls.data.bundle import DataBundle, Split
from imgcls.data.cache import decode_images
from imgcls.data.image_io import is_image_file, open_image, to_mode
from imgcls.errors import ImgclsError

IMAGENET_MEAN, IMAGENET_STD = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
CIFAR10_MEAN, CIFAR10_STD = [0.4914, 0.4822, 0.4465], [0.2470, 0.2435, 0.2616]  # of the train set
MNIST_MEAN, MNIST_STD = [0.1307], [0.3081]
VAL_DIRS = ("val", "valid", "validation")
LARGE_DEFAULT_SIZE = 224

_SOURCES: dict[str, Callable[..., DataBundle]] = {}


def register_source(name: str):
    def deco(fn):
        if name in _SOURCES:
            raise ValueError(f"data source {name!r} is already registered")
        _SOURCES[name] = fn
        return fn

    return deco


def list_sources() -> list[str]:
    return sorted(_SOURCES)


def data_root(root: str | os.PathLike | None) -> Path:
    """`root`, else $IMGCLS_DATA, else ./data."""
    return Path(root or os.environ.get("IMGCLS_DATA") or "data").expanduser()


def get_source(name: str) -> Callable[..., DataBundle]:
    """A registered source, else a torchvision data set class of that name (any case): FashionMNIST, SVHN, STL10, ..."""
    if name in _SOURCES:
        return _SOURCES[name]
    own = [n for n in _SOURCES if n.lower() == name.lower()]
    if own:  # data.name=CIFAR10 means ours, not torchvision's class of that name
        return _SOURCES[own[0]]
    tv = _torchvision_dataset_class(name)
    if tv is None:
        raise ImgclsError(f"unknown data set {name!r}; available: {', '.join(list_sources())}, or the name of a "
                          f"torchvision.datasets class (FashionMNIST, KMNIST, SVHN, STL10, ...)")
    return lambda root, **kw: torchvision_dataset(tv, root, **kw)


def _torchvision_dataset_class(name: str):
    import torchvision.datasets as tvd
    from torch.utils.data import Dataset

    for attr in dir(tvd):
        cls = getattr(tvd, attr)
        if attr.lower() == name.lower() and isinstance(cls, type) and issubclass(cls, Dataset):
            return cls
    return None


# ---------------------------------------------------------------- image folders


def _images_in(d: Path) -> list[str]:
    """Files named like images under `d`; broken links, link loops and pipes are kept so the loader names them."""
    return sorted(str(p) for p in d.rglob("*") if is_image_file(p) and not p.is_dir())


def _class_dirs(d: Path) -> list[Path]:
    return sorted(p for p in d.iterdir() if p.is_dir() and not p.name.startswith("."))


def scan_split(d: Path, classes: list[str] | None = None) -> tuple[list[str], list[str], list[int]]:
    """Files and labels of DIR/<class>/...; `classes` fixes the class list (val/test use train's)."""
    found = [p.name for p in _class_dirs(d)]
    if classes is None:
        classes = found
    else:
        extra = sorted(set(found) - set(classes))
        if extra:
            raise ImgclsError(f"{d} has class folders not in the training set: {', '.join(extra)}")
    paths, labels = [], []
    for i, c in enumerate(classes):
        files = _images_in(d / c) if (d / c).is_dir() else []
        paths += files
        labels += [i] * len(files)
    return classes, paths, labels


def _check_classes(d: Path, classes: list[str], labels: list[int]) -> None:
    if not classes:
        raise ImgclsError(f"no class folders in {d}: expected {d}/<class name>/<image files>")
    counts = Counter(labels)
    empty = [c for i, c in enumerate(classes) if counts[i] == 0]
    if empty:
        raise ImgclsError(f"class folder(s) with no images in {d}: {', '.join(empty)}; add images or remove the folder")
    if len(classes) < 2:
        raise ImgclsError(f"only one class ({classes[0]}) in {d}: a classifier needs at least two class folders")


def _probe_size(paths: list[str], channels: int) -> tuple[int, int]:
    """Most common (H, W) and the largest side among a spread sample of files."""
    step = max(1, len(paths) // 16)
    sizes = []
    for p in paths[::step][:16]:
        try:
            img = open_image(p, channels)
            sizes.append((img.height, img.width))
        except ImgclsError:
            continue
    for p in paths if not sizes else []:  # a folder of mostly bad files: look further than the sample
        try:
            img = open_image(p, channels)
            sizes.append((img.height, img.width))
            break
        except ImgclsError:
            continue
    if not sizes:
        raise ImgclsError(f"none of the {len(paths)} image files could be read, e.g. {paths[0]}")
    return Counter(sizes).most_common(1)[0][0], max(max(s) for s in sizes)


def load_image_folders(
    name: str, split_dirs: dict[str, Path], *, channels: int, image_size: int | None, small_max: int,
    cache_dir: str | None, mean: list[float], std: list[float], workers: int = 2,
) -> DataBundle:
    """Build a bundle from {split: DIR/<class>/...}; small images are decoded into memory."""
    classes, paths, labels = scan_split(split_dirs["train"])
    _check_classes(split_dirs["train"], classes, labels)
    scanned = {"train": (paths, labels)}
    for split in ("val", "test"):
        if split in split_dirs:
            _, p, lab = scan_split(split_dirs[split], classes)
            if p:
                scanned[split] = (p, lab)
    return bundle_from_files(name, classes, scanned, channels=channels, image_size=image_size, small_max=small_max,
                             cache_dir=cache_dir, mean=mean, std=std, workers=workers)


def bundle_from_files(
    name: str, classes: list[str], scanned: dict[str, tuple[list[str], list[int]]], *, channels: int,
    image_size: int | None, small_max: int, cache_dir: str | None, mean: list[float], std: list[float], workers: int = 2,
    **extra,
) -> DataBundle:
    """A bundle from {split: (files, labels)}: decoded into memory when the model sees at most `small_max` pixels a side.

    Small native images keep their size; larger ones asked for at a small `image_size` are resized
    to it once (a 300-pixel photo trained at 64x64 costs a decode per run, not per epoch); otherwise
    the files stay on disk for RandomResizedCrop / resize-and-center-crop loaders.
    """
    common, largest = _probe_size(scanned["train"][0], channels)
    small = image_size <= small_max if image_size else largest <= small_max
    notes: list[str] = []
    splits: dict[str, Split] = {}
    if small:
        size = (image_size, image_size) if image_size else common
        for split, (p, lab) in scanned.items():
            images, keep, errors = decode_images(p, size, channels, cache_dir, workers)
            notes += [f"skipped {e}" for e in errors]
            splits[split] = Split(labels=torch.tensor(lab)[keep] if keep else torch.zeros(0, dtype=torch.long),
                                  ids=[p[i] for i in keep], images=images)
        resize = None
    else:
        side = image_size or LARGE_DEFAULT_SIZE
        size = (side, side)
        resize = round(side / 0.875)  # the usual eval resize: shorter side to side/0.875, then center crop
        for split, (p, lab) in scanned.items():
            splits[split] = Split(labels=torch.tensor(lab, dtype=torch.long), ids=p)
    return DataBundle(name=name, classes=classes, channels=channels, image_size=size, mean=mean, std=std,
                      resize=resize, notes=notes, **splits, **extra)


def find_split_dirs(root: Path) -> dict[str, Path]:
    """DIR/{train, val|valid|validation, test}; a DIR of class folders alone is a train set."""
    if not root.is_dir():
        raise ImgclsError(f"data folder not found: {root} (set data.root=DIR, DIR/train/<class>/<images>)")
    dirs: dict[str, Path] = {}
    if (root / "train").is_dir():
        dirs["train"] = root / "train"
        for v in VAL_DIRS:
            if (root / v).is_dir():
                dirs["val"] = root / v
                break
        if (root / "test").is_dir():
            dirs["test"] = root / "test"
    elif _class_dirs(root):
        dirs["train"] = root
    else:
        raise ImgclsError(f"no images in {root}: expected {root}/train/<class>/<images> (and optionally val/, test/)")
    return dirs


@register_source("folder")
def folder(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
           workers: int, download: bool) -> DataBundle:
    return load_image_folders("folder", find_split_dirs(root), channels=channels or 3, image_size=image_size,
                              small_max=small_max, cache_dir=cache_dir, mean=IMAGENET_MEAN, std=IMAGENET_STD,
                              workers=workers)


# ---------------------------------------------------------------- labels from a CSV file

CSV_SPLITS = {"train": "train", "val": "val", "valid": "val", "validation": "val", "test": "test"}
CSV_HEADERS = ({"path", "file", "filename", "image", "filepath"}, {"label", "class", "target"})


def read_label_csv(path: Path) -> tuple[dict[str, tuple[list[str], list[str]]], list[str]]:
    """{split: (files, labels)} from rows `path,label[,split]` (paths relative to the CSV's folder), and one note per bad row.

    A header row is recognised by its names (path/file/filename/image, label/class/target). A row with
    the wrong number of columns, an empty label or path, an unknown split, or a file that is missing or
    not an image is named with its line number and skipped; no good row at all is an error.
    """
    import csv

    from PIL import Image

    if not path.is_file():
        raise ImgclsError(f"data=csv: {path} is not a file (data.root=FILE.csv with rows path,label[,split])")
    base, rows, notes = path.parent, {}, []
    with open(path, newline="", encoding="utf-8-sig") as f:
        for n, row in enumerate(csv.reader(f), start=1):
            cells = [c.strip() for c in row]
            if not any(cells) or cells[0].startswith("#"):
                continue
            if n == 1 and cells[0].lower() in CSV_HEADERS[0] and len(cells) > 1 and cells[1].lower() in CSV_HEADERS[1]:
                continue
            where = f"{path.name} line {n}"
            if len(cells) not in (2, 3):
                notes.append(f"{where}: {len(cells)} columns, expected path,label[,split]; skipped")
                continue
            file, label, split = cells[0], cells[1], cells[2].lower() if len(cells) == 3 and cells[2] else "train"
            if not file or not label:
                notes.append(f"{where}: empty {'path' if not file else 'label'}; skipped")
                continue
            if split not in CSV_SPLITS:
                notes.append(f"{where}: split {cells[2]!r} is not train, val or test; skipped")
                continue
            full = Path(file) if Path(file).is_absolute() else base / file
            if not full.is_file():
                notes.append(f"{where}: {full} does not exist; skipped")
                continue
            try:  # the header only: cheap, and it catches files that are not images at all
                with Image.open(full) as img:
                    img.size  # noqa: B018
            except Exception as e:  # noqa: BLE001 - PIL raises many types for a bad file
                notes.append(f"{where}: {full} is not a readable image ({type(e).__name__}); skipped")
                continue
            files, labels = rows.setdefault(CSV_SPLITS[split], ([], []))
            files.append(str(full))
            labels.append(label)
    if not rows.get("train"):
        detail = "; ".join(notes[:5]) or "it has no rows"
        raise ImgclsError(f"data=csv: no usable training row in {path} ({detail})")
    return rows, notes


@register_source("csv")
def csv_labels(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
               workers: int, download: bool) -> DataBundle:
    """Images listed in a CSV file (data.root=FILE.csv): rows path,label[,split], classes from the training rows."""
    rows, notes = read_label_csv(root)
    classes = sorted(set(rows["train"][1]))
    index = {c: i for i, c in enumerate(classes)}
    scanned = {}
    for split, (files, labels) in rows.items():
        notes += [f"{root.name}: {f} ({split}) has label {lab!r}, which no training row has; skipped"
                  for f, lab in zip(files, labels) if lab not in index]
        kept = [(f, index[lab]) for f, lab in zip(files, labels) if lab in index]
        scanned[split] = ([f for f, _ in kept], [y for _, y in kept])
    if len(classes) < 2:
        raise ImgclsError(f"data=csv: only one class ({classes[0]}) in the training rows of {root}")
    b = bundle_from_files("csv", classes, {k: v for k, v in scanned.items() if v[0]}, channels=channels or 3,
                          image_size=image_size, small_max=small_max, cache_dir=cache_dir, mean=IMAGENET_MEAN,
                          std=IMAGENET_STD, workers=workers)
    b.notes[:0] = notes
    return b


# ---------------------------------------------------------------- torchvision data sets


def _offline_error(name: str, root: Path, what: str, err: Exception) -> ImgclsError:
    return ImgclsError(f"{name} not found under {root} and could not be downloaded ({type(err).__name__}). {what}")


@register_source("cifar10")
def cifar10(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
            workers: int, download: bool) -> DataBundle:
    channels = channels or 3
    if (root / "cifar10" / "train").is_dir():
        dirs = {"train": root / "cifar10" / "train", "test": root / "cifar10" / "test"}
        dirs = {k: v for k, v in dirs.items() if v.is_dir()}
        return load_image_folders("cifar10", dirs, channels=channels, image_size=image_size, small_max=small_max,
                                  cache_dir=cache_dir, mean=CIFAR10_MEAN, std=CIFAR10_STD, workers=workers)
    from torchvision.datasets import CIFAR10

    have = (root / "cifar-10-batches-py").is_dir()
    try:
        sets = {s: CIFAR10(str(root), train=(s == "train"), download=download and not have) for s in ("train", "test")}
    except Exception as e:  # network errors come in many types (URLError, OSError, RuntimeError)
        raise _offline_error("CIFAR-10", root, f"Download cifar-10-python.tar.gz from https://www.cs.toronto.edu/~kriz/cifar.html "
                             f"and extract it so that {root}/cifar-10-batches-py/data_batch_1 exists, or put PNG folders in "
                             f"{root}/cifar10/{{train,test}}/<class>/", e) from None
    splits = {s: Split(labels=torch.tensor(d.targets, dtype=torch.long), ids=[f"cifar10:{s}:{i}" for i in range(len(d))],
                       images=torch.from_numpy(d.data).permute(0, 3, 1, 2).contiguous()) for s, d in sets.items()}
    return DataBundle(name="cifar10", classes=list(sets["train"].classes), channels=3, image_size=(32, 32),
                      mean=CIFAR10_MEAN, std=CIFAR10_STD, **splits)


@register_source("mnist")
def mnist(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
          workers: int, download: bool) -> DataBundle:
    from torchvision.datasets import MNIST

    have = (root / "MNIST" / "raw" / "train-images-idx3-ubyte").is_file()
    try:
        sets = {s: MNIST(str(root), train=(s == "train"), download=download and not have) for s in ("train", "test")}
    except Exception as e:
        raise _offline_error("MNIST", root, "Download train-images-idx3-ubyte, train-labels-idx1-ubyte, "
                             "t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte (e.g. from "
                             "https://ossci-datasets.s3.amazonaws.com/mnist/), gunzip them and put them in "
                             f"{root}/MNIST/raw/", e) from None
    splits = {s: Split(labels=d.targets.long(), ids=[f"mnist:{s}:{i}" for i in range(len(d))], images=d.data[:, None].contiguous())
              for s, d in sets.items()}
    classes = [str(i) for i in range(10)]
    return DataBundle(name="mnist", classes=classes, channels=1, image_size=(28, 28), mean=MNIST_MEAN, std=MNIST_STD,
                      flip_ok=False, **splits)


@register_source("caltech101")
def caltech101(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
               workers: int, download: bool) -> DataBundle:
    """Caltech101 from ROOT/101_ObjectCategories (see `Caltech101`); no official split: 20% is held out as test."""
    from imgcls.data.caltech101 import Caltech101

    ds = Caltech101(root, download=download)
    return bundle_from_files("caltech101", ds.classes, {"train": (ds.samples, ds.targets)}, channels=channels or 3,
                             image_size=image_size, small_max=small_max, cache_dir=cache_dir, mean=IMAGENET_MEAN,
                             std=IMAGENET_STD, workers=workers, default_test_fraction=0.2)


SYNTHETIC_TRAIN, SYNTHETIC_TEST, SYNTHETIC_CLASSES = 50_000, 10_000, 10  # CIFAR-10's shape


@register_source("synthetic")
def synthetic(root: Path, *, channels: int | None, image_size: int | None, small_max: int, cache_dir: str | None,
              workers: int, download: bool) -> DataBundle:
    """Random uint8 images with random labels, CIFAR-10-shaped (50,000 train, 10,000 test, 10 classes, 32x32 RGB).

    For timing a recipe where the real data cannot be (a GPU check, a fresh machine): the step time is
    that of real data of the same shape, the accuracy is chance. `data.image_size` and `data.channels`
    change the shape, `data.limit` the counts; `root` is not read. Seeded, so every run sees the same images.
    """
    c, side = channels or 3, image_size or 32
    g = torch.Generator().manual_seed(0)
    splits = {s: Split(labels=torch.randint(0, SYNTHETIC_CLASSES, (n,), generator=g),
                       ids=[f"synthetic:{s}:{i}" for i in range(n)],
                       images=torch.randint(0, 256, (n, c, side, side), generator=g, dtype=torch.uint8))
              for s, n in (("train", SYNTHETIC_TRAIN), ("test", SYNTHETIC_TEST))}
    return DataBundle(name="synthetic", classes=[f"class{i}" for i in range(SYNTHETIC_CLASSES)], channels=c,
                      image_size=(side, side), mean=[0.5] * c, std=[0.29] * c, **splits)


def _make_torchvision_split(cls, root: Path, split: str, download: bool):
    import inspect

    params = inspect.signature(cls.__init__).parameters
    kw: dict = {"download": download} if "download" in params else {}
    if "train" in params:
        kw["train"] = split == "train"
    elif "split" in params:
        kw["split"] = split
    elif split != "train":
        return None  # a data set with one split only: test is held out by data.test_fraction
    return cls(str(root), **kw)


def torchvision_dataset(cls, root: Path, *, channels: int | None, image_size: int | None, small_max: int,
                        cache_dir: str | None, workers: int, download: bool) -> DataBundle:
    """Any torchvision classification data set, in torchvision's layout under `root`, decoded into memory.

    Downloaded when missing and `download` is on; offline, the error names the folder torchvision
    expects. Images are resized to `data.image_size` when given (needed when sizes vary).
    """
    import numpy as np

    name = cls.__name__
    sets = {}
    for split in ("train", "test"):
        try:
            try:
                ds = _make_torchvision_split(cls, root, split, download=False)
            except (RuntimeError, OSError, FileNotFoundError):
                if not download:
                    raise
                ds = _make_torchvision_split(cls, root, split, download=True)
        except (TypeError, ValueError) as e:  # the class needs other arguments than (root, train|split, download)
            raise ImgclsError(f"torchvision.datasets.{name} cannot be made with (root, train= or split=, download=): "
                              f"{type(e).__name__}: {str(e)[:160]}. Export it to image folders and use data=folder") from None
        except Exception as e:
            raise _offline_error(name, root, f"Put the files of torchvision.datasets.{name} where it looks for them "
                                 f"(under {root}/, usually {root}/{name}/; see its documentation), or run online with "
                                 f"data.download=true", e) from None
        if ds is not None:
            sets[split] = ds
    if not sets:
        raise ImgclsError(f"torchvision.datasets.{name} gave no data under {root}")
    c = channels or (1 if _first_mode(sets["train"]) in ("L", "1", "I", "I;16") else 3)
    out = {}
    for split, ds in sets.items():
        images, labels = [], []
        for img, label in ds:
            if isinstance(img, torch.Tensor):
                from torchvision.transforms.v2.functional import to_pil_image

                img = to_pil_image(img)
            if not isinstance(label, int) and not (hasattr(label, "ndim") and label.ndim == 0):
                raise ImgclsError(f"torchvision.datasets.{name} is not a single-label classification data set "
                                  f"(its labels look like {type(label).__name__}); it cannot be trained on as one")
            img = to_mode(img, c)
            if image_size:
                img = img.resize((image_size, image_size))
            images.append(torch.from_numpy(np.asarray(img, dtype=np.uint8).reshape(img.height, img.width, c).copy()))
            labels.append(int(label))
        sizes = {tuple(t.shape) for t in images}
        if len(sizes) > 1:
            raise ImgclsError(f"torchvision.datasets.{name} has images of several sizes; set data.image_size=SIDE")
        out[split] = Split(labels=torch.tensor(labels, dtype=torch.long), ids=[f"{name}:{split}:{i}" for i in range(len(labels))],
                           images=torch.stack(images).permute(0, 3, 1, 2).contiguous())
    first = out["train"].images
    classes = list(getattr(sets["train"], "classes", None) or [str(i) for i in range(int(out["train"].labels.max()) + 1)])
    sample = first[:10000].float() / 255  # this data set's own statistics, from (part of) its train split
    mean, std = sample.mean((0, 2, 3)).tolist(), sample.std((0, 2, 3)).tolist()
    return DataBundle(name=name.lower(), classes=classes, channels=c, image_size=tuple(first.shape[-2:]), mean=mean,
                      std=std, flip_ok=not (name.lower().endswith("mnist") or name in DIGIT_SETS),
                      default_test_fraction=0.0 if "test" in out else 0.2,
                      **out)


DIGIT_SETS = ("SVHN", "USPS", "SEMEION")  # digits: a mirrored digit is no valid example


def _first_mode(ds) -> str:
    img = ds[0][0]
    if isinstance(img, torch.Tensor):
        return "L" if img.ndim == 2 or img.shape[0] == 1 else "RGB"
    return getattr(img, "mode", "RGB")
