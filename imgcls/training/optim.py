"""Optimizers with parameter groups by role, and learning-rate schedules.

Groups: conv filters (Muon when optim.name=muon), other weights (decayed), 1-d parameters (norms and
biases: not decayed unless asked, lr scaled by bias_lr_scale), and one group per `optim.stop`
pattern (parameters that train only for the first part of the run, e.g. the whitening bias).
Schedules are pure functions of training progress p in [0, 1] (a share of all steps, or of the
time budget), so a run that adapts to a time budget or resumes mid-way computes the same rate.
"""

from __future__ import annotations

import fnmatch
import math

import torch
from torch import nn

from imgcls.config import OptimConfig, SchedConfig
from imgcls.errors import ImgclsError
from imgcls.training.muon import Muon

SCHEDULES = ("cosine", "onecycle", "linear", "step", "constant")
OPTIMIZERS = ("sgd", "adam", "adamw", "muon")


def layer_scales(model: nn.Module, lr_mult: float) -> dict[str, tuple[int, float, bool]]:
    """Parameter name -> (layer group, lr scale, is head): lr / lr_mult for the first group, lr for the head."""
    from imgcls.models.build import layer_groups

    groups = layer_groups(model)
    last = len(groups) - 1
    return {n: (i, lr_mult ** (-(last - i) / last) if last else 1.0, i == last)
            for i, names in enumerate(groups) for n in names}


def param_groups(model: nn.Module, cfg: OptimConfig, freeze_epochs: int = 0) -> list[dict]:
    """Parameter groups with their peak lr (`base_lr`), weight decay and optional `stop_at`/`start_epoch`.

    `freeze_epochs` > 0: everything but the head starts training only at that epoch (fastai's
    fine-tuning: head-only epochs first, see `set_epoch`); `cfg.lr_mult` > 1 spreads the lrs over the layers.
    """
    use_muon = cfg.name == "muon"
    groups: dict[str, dict] = {}
    layers = layer_scales(model, cfg.lr_mult) if cfg.lr_mult > 1 or freeze_epochs > 0 else {}

    def add(key: str, p: torch.Tensor, **opts) -> None:
        groups.setdefault(key, {"params": [], **opts})["params"].append(p)

    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        stop = next((at for pat, at in cfg.stop.items() if fnmatch.fnmatch(name, pat)), None)
        one_d = p.ndim <= 1
        if use_muon and p.ndim == 4:
            opts = {"base_lr": cfg.muon_lr, "muon": True, "momentum": cfg.muon_momentum, "weight_decay": 0.0}
        else:
            lr = cfg.lr * (cfg.bias_lr_scale if one_d else 1.0)
            wd = cfg.weight_decay if (not one_d or cfg.decay_norms) else 0.0
            if cfg.weight_decay_per_step and wd:
                wd = wd / lr  # the SGD step shrinks weights by lr * wd = weight_decay, whatever the lr
            opts = {"base_lr": lr, "weight_decay": wd, **({"muon": False} if use_muon else {})}
        key = f"{'muon' if opts.get('muon') else 'norm' if one_d else 'weight'}" + (f"@{stop}" if stop is not None else "")
        if name in layers:
            layer, scale, is_head = layers[name]
            opts["base_lr"] *= scale
            if freeze_epochs > 0 and not is_head:
                opts["start_epoch"] = freeze_epochs
            key += f"/layer{layer}"
        add(key, p, **opts, **({"stop_at": stop} if stop is not None else {}))
    return list(groups.values())


def build_optimizer(model: nn.Module, cfg: OptimConfig, freeze_epochs: int = 0) -> torch.optim.Optimizer:
    if cfg.name not in OPTIMIZERS:
        raise ImgclsError(f"unknown optimizer {cfg.name!r}; available: {', '.join(OPTIMIZERS)}")
    groups = param_groups(model, cfg, freeze_epochs)
    if not groups:
        raise ImgclsError("no trainable parameters (is the whole model frozen?)")
    for g in groups:
        g["lr"] = g["base_lr"]
    if cfg.name == "sgd":
        return torch.optim.SGD(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov and cfg.momentum > 0)
    if cfg.name == "adam":  # weight decay as an L2 term of the gradient (each group's own weight_decay)
        return torch.optim.Adam(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    if cfg.name == "adamw":
        return torch.optim.AdamW(groups, lr=cfg.lr, betas=tuple(cfg.betas))
    return Muon(groups, lr=cfg.lr, momentum=cfg.momentum, nesterov=cfg.nesterov, ns_steps=cfg.muon_ns_steps)


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


def apply_schedule(optimizer: torch.optim.Optimizer, p: float, sched: SchedConfig) -> float:
    """Set every group's lr for progress p; groups past their `stop_at` are frozen.

    Returns the lr of the first group that trains to the end (the one results.csv reports).
    """
    factor = lr_factor(p, sched)
    for g in optimizer.param_groups:
        lr = g.get("base_lr", g["lr"]) * factor
        if g.get("frozen"):  # before its start_epoch (see set_epoch)
            lr = 0.0
        stop = g.get("stop_at")
        if stop is not None:
            lr *= max(0.0, 1 - p / stop) if stop > 0 else 0.0
            if p >= stop and g["params"][0].requires_grad:
                for q in g["params"]:  # no gradient at all from now on: backward skips that work
                    q.requires_grad_(False)
                    q.grad = None
        g["lr"] = lr
    main = [g for g in optimizer.param_groups if g.get("stop_at") is None and not g.get("start_epoch")] or optimizer.param_groups
    return main[0]["lr"]


def set_epoch(optimizer: torch.optim.Optimizer, epoch: int) -> bool:
    """Freeze the groups whose `start_epoch` is after `epoch` (no gradients, lr 0), unfreeze the others.

    Counted in epochs, not in progress, so head-only epochs stay whole epochs under a time budget.
    Returns True if any group is frozen in this epoch.
    """
    any_frozen = False
    for g in optimizer.param_groups:
        start = g.get("start_epoch")
        if not start:
            continue
        g["frozen"] = epoch < start
        any_frozen |= g["frozen"]
        for q in g["params"]:
            q.requires_grad_(not g["frozen"])
    return any_frozen
