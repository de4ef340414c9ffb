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
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import nn

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
from imgcls.device import select_device, set_threads
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


def setup(cfg: Configs, *, device: torch.device | None = None, restore: bool = False) -> Setup:
    """Threads, device, seed, data, model (pretrained weights, data-dependent init), optimizer, loss weights.

    `device` overrides `trainer.device` (a distributed run passes each process its own GPU).
    `restore=True` (a resumed run) skips pretrained weights and data-dependent init: the run's own
    state replaces them.
    """
    t = cfg.trainer
    set_threads(t.threads)
    device = device or select_device(t.device)
    seed_everything(t.seed)
    dcfg, implied = fill_data_defaults(cfg.data, cfg.model)
    messages = [f"from the pretrained weights: {', '.join(f'data.{k}={v}' for k, v in implied.items())}"] if implied else []
    bundle = load_data(dcfg)
    messages += [f"note: {n}" for n in bundle.notes[:20]]
    # After seeding: the initial weights depend on the seed only.
    net, arch_args, report = build_model(dataclasses.replace(cfg.model, pretrained=None) if restore else cfg.model, bundle)
    if report is not None:
        messages.append(report.summary())
    if (cfg.model.freeze or t.freeze_epochs) and not cfg.model.pretrained:
        messages.append("warning: model.freeze / trainer.freeze_epochs without model.pretrained freeze randomly "
                        "initialised layers")
    net.to(device)
    channels_last = t.channels_last if t.channels_last is not None else device.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if not cfg.model.pretrained and hasattr(net, "init_from_data") and not restore:  # e.g. patch whitening
        net.init_from_data(first_images(bundle, t.init_images, device))
    weights = class_weights_of(cfg.loss, bundle)
    return Setup(cfg=dataclasses.replace(cfg, data=dcfg), bundle=bundle, model=net, arch_args=arch_args, device=device,
                 channels_last=channels_last, optimizer=build_optimizer(net, cfg.optim, freeze_epochs=t.freeze_epochs),
                 class_weights=weights.to(device) if weights is not None else None, messages=messages)


def train_loader(s: Setup, *, batch_size: int | None = None, augment: bool = True, rank: int = 0, world: int = 1):
    """The training loader of a set-up run (unaugmented with augment=False)."""
    t = s.cfg.trainer
    aug = s.cfg.aug if augment else AugConfig(flip=False, crop_pad=0)
    return make_loader(s.bundle, s.bundle.train, train=True, batch_size=batch_size or t.batch_size, aug=aug,
                       seed=t.seed, balanced=s.cfg.data.sampler == "balanced", device=s.device,
                       channels_last=s.channels_last, workers=s.cfg.data.workers, rank=rank, world=world)
