"""Optimizers with weight decay kept off norms and biases, and learning-rate schedules.

Schedules are pure functions of training progress p in [0, 1] (a share of all steps, or of the
time budget), so a run that adapts to a time budget or resumes mid-way computes the same rate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from imgcls.config import OptimConfig, SchedConfig
from imgcls.errors import ImgclsError

SCHEDULES = ("cosine", "onecycle", "linear", "step", "constant")


def param_groups(model: nn.Module, weight_decay: float) -> list[dict]:
    """Two groups: weights of conv/linear layers (decayed) and 1-d parameters (norms, biases: never decayed)."""
    decay, no_decay = [], []
    for p in model.parameters():
        if p.requires_grad:
            (decay if p.ndim > 1 else no_decay).append(p)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]


def build_optimizer(model: nn.Module, cfg: OptimConfig) -> torch.optim.Optimizer:
    groups = param_groups(model, cfg.weight_decay)
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    raise ImgclsError(f"unknown optimizer {cfg.name!r}; available: sgd, adamw")


def lr_factor(p: float, cfg: SchedConfig) -> float:
    """Multiplier of the peak learning rate at progress p in [0, 1]."""
    p = min(max(p, 0.0), 1.0)
    if cfg.name == "onecycle":  # L. Smith's 1cycle: cosine up from peak/div over `warmup`, cosine down to final
        w = cfg.warmup or 0.25
        start = 1.0 / cfg.div_factor
        if p < w:
            return start + (1 - start) * 0.5 * (1 - math.cos(math.pi * p / w))
        q = (p - w) / (1 - w)
        return cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * q))
    if cfg.name not in SCHEDULES:
        raise ImgclsError(f"unknown schedule {cfg.name!r}; available: {', '.join(SCHEDULES)}")
    if p < cfg.warmup:
        return p / cfg.warmup
    q = (p - cfg.warmup) / (1 - cfg.warmup) if cfg.warmup < 1 else 1.0
    if cfg.name == "cosine":
        return cfg.final_factor + (1 - cfg.final_factor) * 0.5 * (1 + math.cos(math.pi * q))
    if cfg.name == "linear":
        return 1 - (1 - cfg.final_factor) * q
    if cfg.name == "step":
        return cfg.gamma ** math.floor(q / cfg.step_size + 1e-9)
    return 1.0


def set_lr(optimizer: torch.optim.Optimizer, peak_lr: float, factor: float) -> float:
    lr = peak_lr * factor
    for g in optimizer.param_groups:
        g["lr"] = lr * g.get("lr_scale", 1.0)
    return lr
