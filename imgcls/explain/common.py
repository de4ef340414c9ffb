"""What the study tools share with `train`: the same configs turned into data, model, loader and optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from imgcls.config import (AugConfig, DataConfig, LossConfig, OptimConfig, TrainerConfig, coerce, model_config)
from imgcls.data import DataBundle, load_data, make_loader
from imgcls.device import select_device, set_threads
from imgcls.models.build import fill_data_defaults
from imgcls.train.optim import build_optimizer
from imgcls.train.run import build_model, class_weights_of, first_images, seed_everything


@dataclass
class Setup:
    bundle: DataBundle
    model: nn.Module
    optimizer: torch.optim.Optimizer
    device: torch.device
    trainer: TrainerConfig
    optim: OptimConfig
    aug: AugConfig
    class_weights: torch.Tensor | None


def setup(data: Any = None, model: Any = None, optim: Any = None, aug: Any = None, loss: Any = None,
          trainer: Any = None) -> Setup:
    """Data, model (pretrained weights and data-dependent init included) and optimizer, as `train` makes them."""
    tcfg, ocfg = coerce(TrainerConfig, trainer, "trainer"), coerce(OptimConfig, optim, "optim")
    acfg, lcfg, mcfg = coerce(AugConfig, aug, "aug"), coerce(LossConfig, loss, "loss"), model_config(model)
    set_threads(tcfg.threads)
    device = select_device(tcfg.device)
    seed_everything(tcfg.seed)
    dcfg, _ = fill_data_defaults(coerce(DataConfig, data, "data"), mcfg)
    bundle = load_data(dcfg)
    net, _, report = build_model(mcfg, bundle)
    net.to(device)
    if report is None and hasattr(net, "init_from_data"):
        net.init_from_data(first_images(bundle, tcfg.init_images, device))
    weights = class_weights_of(lcfg, bundle)
    return Setup(bundle=bundle, model=net, optimizer=build_optimizer(net, ocfg), device=device, trainer=tcfg, optim=ocfg, aug=acfg,
                 class_weights=weights.to(device) if weights is not None else None)


def train_loader(s: Setup, *, batch_size: int | None = None, augment: bool = True):
    aug = s.aug if augment else AugConfig(flip=False, crop_pad=0)
    return make_loader(s.bundle, s.bundle.train, train=True, batch_size=batch_size or s.trainer.batch_size, aug=aug,
                       seed=s.trainer.seed, device=s.device)
