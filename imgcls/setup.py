"""From option groups to the parts of a run: data, model, device, optimizer. Where data meets model.

`setup()` is what `train`, `lr-find` and `sanity` share, so the model they study is the one training
would make. It is also the one place that joins a data config to a model config (the input size and
normalization that pretrained weights imply): `models/` knows nothing of data sets and `data/`
nothing of models. Later choices that need both sides (the automatic model and input size for photos,
a recipe sized to the machine) belong here.
"""

from __future__ import annotations

import dataclasses
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

import imgcls.tasks.detect  # noqa: F401 - registers the detection data sources
import imgcls.tasks.segment  # noqa: F401 - registers the segmentation data sources
from imgcls.config import (
    TRAIN_GROUPS,
    AugConfig,
    DataConfig,
    LossConfig,
    ModelConfig,
    OptimConfig,
    SchedConfig,
    TrainerConfig,
    group_config,
)
from imgcls.data import DataBundle, load_data, make_loader
from imgcls.data.sources import list_sources
from imgcls.device import cpu_count, select_device, set_threads, tune_allocator
from imgcls.errors import ImgclsError
from imgcls.modelfile import Preprocess
from imgcls.models.build import build_model as build_net
from imgcls.models.build import pretrained_preprocess
from imgcls.training.optim import build_optimizer

# Sources decoded whole into memory at the size the model sees: their own size is kept even when
# pretrained weights ask for a larger input (CIFAR-10 at 224x224 would need ~30 GB).
IN_MEMORY_SOURCES = ("cifar10", "mnist", "synthetic")


@dataclass
class Configs:
    """The seven option groups of a run, as dataclasses."""

    data: DataConfig
    model: ModelConfig
    optim: OptimConfig
    sched: SchedConfig
    aug: AugConfig
    loss: LossConfig
    trainer: TrainerConfig


def configs(*, data: Any = None, model: Any = None, optim: Any = None, sched: Any = None, aug: Any = None,
            loss: Any = None, trainer: Any = None) -> Configs:
    """Each group from a dataclass, a dict of overrides, None (defaults) or (data, model) a name."""
    given = {"data": data, "model": model, "optim": optim, "sched": sched, "aug": aug, "loss": loss, "trainer": trainer}
    return Configs(**{k: group_config(k, given[k]) for k in TRAIN_GROUPS})


def fill_data_defaults(dcfg: DataConfig, mcfg: ModelConfig) -> tuple[DataConfig, dict[str, Any]]:
    """`dcfg` with image_size/mean/std the user left unset taken from the pretrained weights' preprocessing.

    The input size is not taken for data sets held whole in memory (see IN_MEMORY_SOURCES). Returns
    the new config and what was filled in.
    """
    pre = pretrained_preprocess(mcfg, dcfg.channels)
    if "image_size" in pre and (dcfg.name in IN_MEMORY_SOURCES or dcfg.name not in list_sources()):
        pre.pop("image_size")
    updates = {k: v for k, v in pre.items() if getattr(dcfg, k) is None}
    if updates and (dcfg.channels or 3) == 1 and "mean" in updates:  # RGB statistics for a gray model: average them
        updates["mean"], updates["std"] = [sum(updates["mean"]) / 3], [sum(updates["std"]) / 3]
    return dataclasses.replace(dcfg, **updates), updates


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: ModelConfig, bundle: DataBundle):
    """The model for `bundle`, the builder arguments that rebuild it and the pretrained-weights report."""
    return build_net(cfg, num_classes=len(bundle.classes), in_chans=bundle.channels, image_size=bundle.image_size)


def class_weights_of(cfg: LossConfig, bundle: DataBundle) -> torch.Tensor | None:
    """The cross-entropy's per-class weights: None, scikit-learn's "balanced" rule on the train split, or a list."""
    w = cfg.class_weights
    if w is None:
        return None
    k = len(bundle.classes)
    if bundle.task != "classify":
        raise ImgclsError(f"loss.class_weights is for classifiers; this is a {bundle.task} data set")
    if w == "balanced":
        counts = torch.bincount(bundle.train.labels.cpu(), minlength=k).double()
        return (counts.sum() / (k * counts.clamp(min=1))).float()
    if len(w) != k:
        raise ImgclsError(f"loss.class_weights has {len(w)} values but the data set has {k} classes")
    return torch.tensor(w, dtype=torch.float32)


def preprocess_of(bundle: DataBundle) -> Preprocess:
    """What a model file records of the data: input size, channels, normalization, resize."""
    return Preprocess(input_size=list(bundle.image_size), channels=bundle.channels, mean=list(bundle.mean),
                      std=list(bundle.std), resize=bundle.resize)


def first_images(bundle: DataBundle, n: int, device: torch.device) -> torch.Tensor:
    """The first n training images, normalized and unaugmented: input for a model's data-dependent init."""
    loader = make_loader(bundle, bundle.train, train=False, batch_size=min(n, 1000), device=device)
    batches, seen = [], 0
    for x, _ in loader:
        batches.append(x)
        seen += len(x)
        if seen >= n:
            break
    return torch.cat(batches)[:n]


# ---------------------------------------------------------------- model=auto: a model (and input size) for the data

SMALL_IMAGE_MODEL = "resnet_cifar20"  # model=auto on small images (<= data.small_max px), the former default
# Photo models whose ImageNet weights model=auto fine-tunes when the library's file is already on disk,
# fastest on a CPU first (torchvision's names, then timm's).
PRETRAINED_CANDIDATES = (("torchvision", "mobilenet_v3_large"), ("torchvision", "mobilenet_v2"),
                         ("timm", "mobilenetv3_large_100"), ("torchvision", "efficientnet_b0"),
                         ("timm", "efficientnet_b0"), ("torchvision", "resnet18"), ("timm", "resnet18"),
                         ("torchvision", "resnet50"), ("timm", "resnet50"))
SCRATCH_PHOTO_MODEL = "photonet"  # model=auto on photos when no pretrained weights are found
# Input side for photos by (device type, pretrained): a CPU trains ~2x faster at 160 than at 224 px
# and a from-scratch net at 112; a GPU affords the weights' native 224.
PHOTO_SIZES = {("cuda", True): 224, ("cuda", False): 160, ("cpu", True): 160, ("cpu", False): 112}
PHOTO_RECIPES = {True: "photo_finetune", False: "photo_scratch"}  # the experiment the CLI picks for auto photos
# model=auto on images with masks: DeepLabV3+ on MobileNetV2 (its ImageNet weights when torchvision's file is on
# disk), at 256 px on a CPU and 512 on a GPU; the CLI puts this recipe first
SEGMENT_MODEL, SEGMENT_ENCODER, SEGMENT_SIZES = "deeplabv3plus", "mobilenet_v2", {"cuda": 512, "cpu": 256}
SEGMENT_RECIPE = "segment_finetune"
# model=auto on images with boxes: Faster R-CNN on a MobileNetV2 FPN (its ImageNet weights when on disk), shorter
# side 416 px on a CPU and 640 on a GPU
DETECT_MODEL, DETECT_BACKBONE, DETECT_SIZES = "fasterrcnn", "mobilenet_v2", {"cuda": 640, "cpu": 416}
DETECT_RECIPE = "detect_finetune"


@dataclass
class Choice:
    """What model=auto chose for a data set, and why (`lines`, printed first)."""

    model: ModelConfig
    image_size: int | None  # for data.image_size when the user left it unset
    photos: bool
    pretrained: bool
    lines: list[str]
    probe: DataBundle | None = field(default=None, repr=False)  # the data as loaded to choose (reused by setup)
    probe_cfg: DataConfig | None = field(default=None, repr=False)  # ... from this config
    task: str = "classify"

    @property
    def recipe(self) -> str | None:
        """The experiment (conf/experiment/) made for this choice: None for small images."""
        if self.task in ("segment", "detect"):
            return SEGMENT_RECIPE if self.task == "segment" else DETECT_RECIPE
        return PHOTO_RECIPES[self.pretrained] if self.photos else None


def find_pretrained() -> tuple[str, str, str] | None:
    """(adapter, arch, file) of the first PRETRAINED_CANDIDATES whose library file is on disk, else None."""
    from imgcls.models.hub import cached_weights

    for adapter, arch in PRETRAINED_CANDIDATES:
        try:
            path = cached_weights(adapter, arch)
        except ImgclsError:
            continue
        if path:
            return adapter, arch, path
    return None


# The choice the CLI made before composing the run (to put the photo recipe first), kept for that run's
# setup so that the folder is scanned once: taken by the next choose_model of the same data and device.
_REMEMBERED: dict[tuple[str, str], Choice] = {}


def choose_model(dcfg: DataConfig, device: str | torch.device = "cpu", *, remember: bool = False) -> Choice:
    """model=auto: a CIFAR-style net for small images; for photos an ImageNet net fine-tuned from weights found on
    disk (torch hub's and the HF cache), else PhotoNet from scratch, at an input size for the device.

    `remember`: keep the choice for the next call with the same data config and device (used once; the CLI's
    pre-pass, so that the run it starts does not scan the folder again)."""
    dev = torch.device(device).type if not isinstance(device, str) or device != "auto" else select_device("auto").type
    key = (repr(dcfg), dev)
    if not remember and key in _REMEMBERED:
        return _REMEMBERED.pop(key)
    choice = _choose_model(dcfg, dev)
    _REMEMBERED.clear()
    if remember:
        _REMEMBERED[key] = choice
    return choice


def _choose_model(dcfg: DataConfig, dev: str) -> Choice:
    probe = load_data(dcfg)  # photos stay files (a scan and a few headers); small images are decoded (cached)
    if probe.task in ("segment", "detect"):
        return _choose_dense(dcfg, dev, probe)
    how = "model=NAME or model=timm|torchvision model.name=ARCH picks another"
    if probe.in_memory:
        side = probe.image_size[0]
        return Choice(ModelConfig(name=SMALL_IMAGE_MODEL), None, False, False,
                      [f"model=auto: small images ({side}x{probe.image_size[1]} px): {SMALL_IMAGE_MODEL} ({how})"],
                      probe, dcfg)
    found = find_pretrained()
    size = dcfg.image_size or PHOTO_SIZES[("cuda" if dev == "cuda" else "cpu", found is not None)]
    where = "a GPU" if dev == "cuda" else "the CPU"
    if found:
        adapter, arch, path = found
        lines = [f"model=auto: photos, and ImageNet weights on disk for {adapter} {arch} ({path}): fine-tuning it "
                 f"at {size} px for {where} ({how}; data.image_size=N for another size)"]
        return Choice(ModelConfig(name=adapter, args={"arch": arch}, pretrained=path), size, True, True, lines, probe, dcfg)
    from imgcls.models.hub import weights_download_hint

    lines = [f"model=auto: photos, and no pretrained weights on disk: {SCRATCH_PHOTO_MODEL} from scratch at {size} px "
             f"for {where} ({how})",
             f"  fine-tuning ImageNet weights is far better; offline, put {weights_download_hint(*PRETRAINED_CANDIDATES[0])}"
             f" (or pass model.pretrained=FILE with model=torchvision model.name=ARCH)"]
    return Choice(ModelConfig(name=SCRATCH_PHOTO_MODEL), size, True, False, lines, probe, dcfg)


def _choose_dense(dcfg: DataConfig, dev: str, probe: DataBundle) -> Choice:
    """model=auto for masks (DeepLabV3+) or boxes (Faster R-CNN), on MobileNetV2 with its ImageNet weights when on disk."""
    from imgcls.models.hub import cached_weights, weights_download_hint

    segment = probe.task == "segment"
    name, arch = (SEGMENT_MODEL, SEGMENT_ENCODER) if segment else (DETECT_MODEL, DETECT_BACKBONE)
    try:
        found = cached_weights("torchvision", arch)
    except ImgclsError:
        found = None
    size = dcfg.image_size or (SEGMENT_SIZES if segment else DETECT_SIZES)["cuda" if dev == "cuda" else "cpu"]
    part = "encoder" if segment else "backbone"
    model = ModelConfig(name=name, args={part: arch}, pretrained=found)
    other = "model=unet|lraspp|deeplabv3plus model.encoder=NAME" if segment else \
        "model=fcos|retinanet|fasterrcnn model.backbone=NAME"
    line = (f"model=auto: images with {'masks' if segment else 'boxes'}: {name} on {arch}, "
            + (f"its {part} from ImageNet weights on disk ({found})" if found else
               f"no ImageNet weights on disk: model.pretrained=FILE, or put {weights_download_hint('torchvision', arch)}")
            + f", at {size} px ({other} picks another)")
    return Choice(model, size, False, found is not None, [line], probe, dcfg, task=probe.task)


# ---------------------------------------------------------------- batch sizes that fit in memory

MEMORY_SHARE = 0.5  # of the memory available at start-up that a run's batches may take (the rest: data, workers, the OS)
ACTIVATION_FACTOR = 3.0  # bytes kept per activation byte in training: the activation, its gradient, workspace


def available_memory(device: torch.device) -> int:
    """Bytes free for this run: the GPU's free memory, else MemAvailable (Linux) or 8 GiB when unknown."""
    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    try:
        for line in open("/proc/meminfo"):
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 8 * 2**30


def activation_bytes(net: nn.Module, shape: tuple[int, int, int], device: torch.device) -> int:
    """Bytes of every module output of one forward pass of one (C, H, W) image: what training keeps per image."""
    total = 0

    def count(_m, _inp, out):
        nonlocal total
        if isinstance(out, torch.Tensor):
            total += out.numel() * out.element_size()

    leaves = [m for m in net.modules() if not list(m.children())]
    handles = [m.register_forward_hook(count) for m in leaves]
    was_training = net.training
    try:
        net.eval()
        with torch.no_grad():
            net(torch.zeros((1, *shape), device=device))
    finally:
        for h in handles:
            h.remove()
        net.train(was_training)
    return total


def fit_batch(batch: int, per_image: int, budget: int, *, train: bool) -> int:
    """The largest batch <= `batch` whose activations (x ACTIVATION_FACTOR in training) fit in `budget` bytes."""
    need = per_image * (ACTIVATION_FACTOR if train else 1.0)
    return max(1, min(batch, int(budget // max(need, 1))))


def batches_that_fit(net: nn.Module, bundle: DataBundle, t: TrainerConfig, device: torch.device
                     ) -> tuple[TrainerConfig, str | None]:
    """`t` with batch sizes lowered where their activations would not fit in memory, and a note saying so.

    On a CPU the kernel kills a process that runs out of memory before Python sees an error, so the
    sizes are chosen before the first step from a per-image estimate (`activation_bytes`).
    """
    per_image = activation_bytes(net, (bundle.channels, *bundle.image_size), device)
    budget = int(available_memory(device) * MEMORY_SHARE)
    train_b = fit_batch(t.batch_size, per_image, budget, train=True)
    eval_b = fit_batch(t.eval_batch_size, per_image, budget, train=False)
    if (train_b, eval_b) == (t.batch_size, t.eval_batch_size):
        return t, None
    changed = [f"trainer.{k} {old} -> {new}" for k, old, new in (("batch_size", t.batch_size, train_b),
                                                                  ("eval_batch_size", t.eval_batch_size, eval_b)) if old != new]
    note = (f"batch sizes lowered to fit in memory: {', '.join(changed)} ({per_image / 2**20:.1f} MB of activations per "
            f"{bundle.image_size[0]}x{bundle.image_size[1]} image, {budget / 2**30:.1f} GB for batches)")
    return dataclasses.replace(t, batch_size=train_b, eval_batch_size=eval_b), note


# ---------------------------------------------------------------- a recipe sized to the machine


def _probe(cfg: Configs, bundle: DataBundle, device: torch.device, channels_last: bool):
    """A batch (x, y) of the run's own images for timing steps, and `build(args)`: a net of cfg.model with args overrides."""
    from imgcls.sizing import PROBE_TRAIN

    x = first_images(bundle, min(PROBE_TRAIN, len(bundle.train), cfg.trainer.batch_size), device)
    y = torch.arange(len(x), device=device) % len(bundle.classes)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)

    def build(args: dict[str, Any]) -> nn.Module:
        net = build_model(dataclasses.replace(cfg.model, args={**cfg.model.args, **args}, pretrained=None), bundle)[0]
        net.to(device)
        return net.to(memory_format=torch.channels_last) if channels_last else net

    return x, y, build


def cpu_bf16_choice(cfg: Configs, bundle: DataBundle, device: torch.device, channels_last: bool) -> tuple[bool, str]:
    """trainer.cpu_bf16 on a CPU: (whether to train with bf16 autocast, the line saying why).

    Only a CPU with native bf16 (AVX512_BF16 or AMX, read from its flags) qualifies, and only when a
    training step of the run's net (the first of trainer.size_choices) is measured faster in bf16.
    """
    from imgcls.device import cpu_info
    from imgcls.sizing import BF16_MIN_SPEEDUP, bf16_speedup

    info = cpu_info()
    if not info.native_bf16:
        return False, f"trainer.cpu_bf16: fp32, as this CPU has no native bf16 arithmetic ({info.describe()})"
    t = cfg.trainer
    x, y, build = _probe(cfg, bundle, device, channels_last)
    speedup = bf16_speedup(build(t.size_choices[0] if t.size_choices and t.time_budget else {}), x, y)
    if speedup < BF16_MIN_SPEEDUP:
        return False, f"trainer.cpu_bf16: fp32, as a bf16 step measured {speedup:.2f}x as fast here ({info.describe()})"
    return True, f"trainer.cpu_bf16: bf16 autocast, a step measured {speedup:.2f}x as fast as fp32 here ({info.describe()})"


def size_to_machine(cfg: Configs, bundle: DataBundle, device: torch.device, channels_last: bool,
                    seconds_left: Callable[[], float]) -> tuple[ModelConfig, list[str]]:
    """cfg.model with the `trainer.size_choices` candidate that fits the time budget (imgcls.sizing), and what was measured."""
    from imgcls.sizing import choose_size, measured_costs

    t = cfg.trainer
    x, y, build = _probe(cfg, bundle, device, channels_last)
    dtype = torch.bfloat16 if t.cpu_bf16 and device.type == "cpu" else None
    scored = bundle.test if bundle.test is not None and len(bundle.test) else bundle.val
    choice = choose_size(measured_costs(list(t.size_choices), build, x, y, tta=t.tta, dtype=dtype), seconds=seconds_left,
                         n_train=len(bundle.train), n_eval=len(scored) if scored is not None else 0,
                         min_epochs=t.size_min_epochs)
    index = len(choice.measured) - 1  # the choice is the last candidate measured
    if torch.distributed.is_available() and torch.distributed.is_initialized():  # every process trains rank 0's pick
        box = [index]
        torch.distributed.broadcast_object_list(box, src=0)
        index = box[0]
    args = {**cfg.model.args, **t.size_choices[index]}
    return dataclasses.replace(cfg.model, args=args), choice.lines(t.size_min_epochs)


@dataclass
class Setup:
    """A run's parts, ready to train: what `setup()` returns."""

    cfg: Configs  # data as filled in from the pretrained weights
    bundle: DataBundle
    model: nn.Module  # on `device`, channels_last when asked, data-dependent init done
    arch_args: dict[str, Any]  # the builder arguments that rebuild `model` (recorded in model files)
    device: torch.device
    channels_last: bool
    optimizer: torch.optim.Optimizer
    class_weights: torch.Tensor | None  # on `device`
    messages: list[str] = field(default_factory=list)  # for the user: what was implied or loaded


def setup(cfg: Configs, *, device: torch.device | None = None, restore: bool = False,
          seconds_left: Callable[[], float] | None = None) -> Setup:
    """Threads, device, seed, data, model (pretrained weights, data-dependent init), optimizer, loss weights.

    `device` overrides `trainer.device` (a distributed run passes each process its own GPU).
    `restore=True` (a resumed run) skips pretrained weights and data-dependent init: the run's own
    state replaces them. `seconds_left()` is what a time budget has left (for `trainer.size_choices`;
    default: trainer.time_budget minus the time since setup started).
    """
    t = cfg.trainer
    set_threads(t.threads)
    device = device or select_device(t.device)
    if device.type == "cpu":
        tune_allocator()
    seed_everything(t.seed)
    messages: list[str] = []
    choice = None
    if cfg.model.name == "auto":
        choice = choose_model(cfg.data, device)
        messages += choice.lines
        chosen = choice.model
        if cfg.model.pretrained and choice.task != "classify":  # the user's encoder weights win over the caches'
            chosen = dataclasses.replace(chosen, pretrained=cfg.model.pretrained)
        cfg = dataclasses.replace(cfg, model=chosen, data=dataclasses.replace(
            cfg.data, image_size=cfg.data.image_size or choice.image_size))
    dcfg, implied = fill_data_defaults(cfg.data, cfg.model)
    if implied:
        messages.append(f"from the pretrained weights: {', '.join(f'data.{k}={v}' for k, v in implied.items())}")
    # the bundle model=auto loaded to choose, when nothing it depends on changed since (small images)
    bundle = choice.probe if choice is not None and choice.probe_cfg == dcfg else load_data(dcfg)
    if not bundle.in_memory and dcfg.photo_cache and bundle.loader is None:  # classification photos (a task's own
        # loader reads its files and targets itself)
        from imgcls.data.cache import default_cache_dir
        from imgcls.data.prepare import store_photos

        bundle, skipped = store_photos(bundle, cache_dir=default_cache_dir(dcfg.cache_dir) / "photos",
                                       workers=cpu_count(), progress=t.progress)
        bundle = dataclasses.replace(bundle, notes=[*(n for n in skipped if n not in bundle.notes), *bundle.notes])
    messages += [f"note: {n}" for n in bundle.notes[:20]]
    channels_last = t.channels_last if t.channels_last is not None else device.type == "cuda"
    if t.size_choices and not t.time_budget:
        messages.append("note: trainer.size_choices is ignored without trainer.time_budget (the model is trained as given)")
    cfg = dataclasses.replace(cfg, data=dcfg)
    if bundle.task == "detect":  # options made for batches of tensors: refused with the reason, not a deep traceback
        bad = [k for k, on in (("aug.mixup", cfg.aug.mixup), ("aug.cutmix", cfg.aug.cutmix),
                               ("trainer.cpu_bf16", t.cpu_bf16 and device.type == "cpu"),
                               ("trainer.size_choices", t.size_choices), ("aug.small_crop", cfg.aug.small_crop)) if on]
        if bad:
            raise ImgclsError(f"{', '.join(bad)}: not available for detection (they mix or time batches of equal-sized "
                              f"images; a detection batch is a list of photos with their boxes); leave them unset")
    if t.cpu_bf16 and device.type == "cpu":  # on only where this CPU has native bf16 and a step measures faster with it
        use, line = cpu_bf16_choice(cfg, bundle, device, channels_last)
        t = dataclasses.replace(t, cpu_bf16=use)
        cfg = dataclasses.replace(cfg, trainer=t)
        messages.append(line)
        seed_everything(t.seed)
    if t.size_choices and t.time_budget and not restore:
        if seconds_left is None:
            started = time.perf_counter()
            seconds_left = lambda: t.time_budget - (time.perf_counter() - started)  # noqa: E731
        model_cfg, lines = size_to_machine(cfg, bundle, device, channels_last, seconds_left)
        cfg = dataclasses.replace(cfg, model=model_cfg)
        messages += lines
        seed_everything(t.seed)  # the initial weights depend on the seed only (the candidates drew from the generator)
    net, arch_args, report = build_model(dataclasses.replace(cfg.model, pretrained=None) if restore else cfg.model, bundle)
    if report is not None:
        messages.append(report.summary())
    if (cfg.model.freeze or t.freeze_epochs) and not cfg.model.pretrained:
        messages.append("warning: model.freeze / trainer.freeze_epochs without model.pretrained freeze randomly "
                        "initialised layers")
    net.to(device)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if not cfg.model.pretrained and hasattr(net, "init_from_data") and not restore:  # e.g. patch whitening
        net.init_from_data(first_images(bundle, t.init_images, device))
    t, note = batches_that_fit(net, bundle, t, device)
    if note:
        messages.append(note)
    weights = class_weights_of(cfg.loss, bundle)
    return Setup(cfg=dataclasses.replace(cfg, data=dcfg, trainer=t), bundle=bundle, model=net, arch_args=arch_args, device=device,
                 channels_last=channels_last, optimizer=build_optimizer(net, cfg.optim, freeze_epochs=t.freeze_epochs),
                 class_weights=weights.to(device) if weights is not None else None, messages=messages)


def train_loader(s: Setup, *, batch_size: int | None = None, augment: bool = True, rank: int = 0, world: int = 1):
    """The training loader of a set-up run (unaugmented with augment=False)."""
    t = s.cfg.trainer
    aug = s.cfg.aug if augment else AugConfig(flip=False, crop_pad=0)
    return make_loader(s.bundle, s.bundle.train, train=True, batch_size=batch_size or t.batch_size, aug=aug,
                       seed=t.seed, balanced=s.cfg.data.sampler == "balanced", device=s.device,
                       channels_last=s.channels_last, workers=s.cfg.data.workers, rank=rank, world=world)
