"""`train`: from option groups to a run folder with model files, results.csv, plots and test metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

from imgcls.config import (AugConfig, DataConfig, LossConfig, ModelConfig, OptimConfig, SchedConfig, TrainerConfig,
                           coerce, model_config)
from imgcls.data.augment import batch_mix
from imgcls.data import DataBundle, data_root, load_data, make_loader, write_split_lists
from imgcls.errors import ImgclsError
from imgcls.evaluate import evaluate_model, plot_learning_curves
from imgcls.modelfile import ModelMeta, Preprocess, load_weights, read_meta, save_model
from imgcls.models.build import build_model as build_net, fill_data_defaults
from imgcls.device import amp_dtype as pick_amp_dtype
from imgcls.device import autocast, grad_scaler, select_device, set_deterministic, set_threads
from imgcls.evaluate.calibration import fit_temperature
from imgcls.evaluate.infer import predict_logits
from imgcls.evaluate.tta import tta_logits
from imgcls.train.loop import Budget, fit
from imgcls.train.distributed import all_max, barrier, broadcast, device_for, sync_batchnorm
from imgcls.train.distributed import init as init_distributed
from imgcls.train.distributed import shutdown as shutdown_distributed
from imgcls.train.optim import build_optimizer
from imgcls.run_dir import new_run_dir, resume_dir


@dataclass
class TrainResult:
    run_dir: Path
    best: Path  # model file with the best validation accuracy (the last one without validation)
    last: Path
    metrics: dict[str, Any]  # test-split metrics of `best` (val split when there is no test split)
    history: list[dict]
    train_seconds: float
    images_seen: int  # training images processed (for images/s)


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def build_model(cfg: ModelConfig, bundle: DataBundle):
    """The model for `bundle`, the builder arguments that rebuild it and the pretrained-weights report."""
    return build_net(cfg, num_classes=len(bundle.classes), in_chans=bundle.channels, image_size=bundle.image_size)


def default_run_name(dcfg: DataConfig, mcfg: ModelConfig) -> str:
    """"<data>-<model>", e.g. "mnist-mlp" or "caltech101-timm-resnet18": the same for a new run and for resume."""
    arch = mcfg.args.get("arch")
    return f"{dcfg.name.lower()}-{mcfg.name}" + (f"-{arch}" if arch else "")


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
    return Preprocess(input_size=list(bundle.image_size), channels=bundle.channels, mean=list(bundle.mean),
                      std=list(bundle.std), resize=bundle.resize)


BUDGET_MARGIN = 8.0  # seconds kept free for metrics, calibration, plots, model files and printing at the end of a time-budgeted run
# The probe batch runs hotter in cache than the real evaluation's batches: measured here, a 200-image
# probe predicted ~0.85x of what 2000-image batches took, hence the slack.
EVAL_SLACK = 1.2


RUNTIME_KEYS = ("device", "threads", "progress", "resume")  # trainer options a resumed run takes from the new call


def saved_config(run_dir: Path, current: TrainerConfig) -> tuple:
    """The option groups a run was started with (config.yaml), with runtime-only trainer keys from `current`."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ImgclsError(f"cannot resume {run_dir}: its config.yaml is missing")
    c = yaml.safe_load(path.read_text())
    trainer = {**c["trainer"], **{k: getattr(current, k) for k in RUNTIME_KEYS}}
    return (coerce(DataConfig, c["data"], "data"), model_config(c["model"]), coerce(OptimConfig, c["optim"], "optim"),
            coerce(SchedConfig, c["sched"], "sched"), coerce(AugConfig, c["aug"], "aug"),
            coerce(LossConfig, c.get("loss"), "loss"), coerce(TrainerConfig, trainer, "trainer"))


def process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): a time budget counts the imports too."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


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


def estimate_eval_seconds(net: nn.Module, bundle: DataBundle, split: str, tcfg: TrainerConfig, device, dtype,
                          probe: int = 200) -> float:
    """What the final evaluation (with TTA) will cost: time a `probe`-image batch and scale to the split.

    The probe runs twice and the second is timed: the first call of a shape pays for kernel set-up
    (oneDNN primitives, cuDNN autotuning) that the real evaluation pays once, not per batch.
    """
    data = getattr(bundle, split)
    n = min(probe, len(data), tcfg.eval_batch_size)
    x, _ = next(iter(make_loader(bundle, data, train=False, batch_size=n, device=device)))
    was_training = net.training
    net.eval()
    with torch.no_grad(), autocast(device, dtype):
        tta_logits(net, x, tcfg.tta)  # warm-up, same shape
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        tta_logits(net, x, tcfg.tta)
        if device.type == "cuda":
            torch.cuda.synchronize()
        per_image = (time.perf_counter() - t) / n
    net.train(was_training)
    return per_image * len(data) * EVAL_SLACK


def train(*, data: DataConfig | dict | str | None = None, model: ModelConfig | dict | str | None = None,
          optim: OptimConfig | dict | None = None, sched: SchedConfig | dict | None = None,
          aug: AugConfig | dict | None = None, loss: LossConfig | dict | None = None,
          trainer: TrainerConfig | dict | None = None, budget_from: float | None = None) -> TrainResult:
    """Train a model; every group takes a config dataclass, a dict of overrides or (data, model) a name.

    Example: `imgcls.train(data={"name": "mnist"}, model="mlp", trainer={"epochs": 1})`.
    A time budget (trainer.time_budget) counts from `budget_from` (a `time.perf_counter()` value), by
    default from the start of the process: the imports count too, as they do for `imgcls train`.
    """
    before = torch.are_deterministic_algorithms_enabled()
    try:
        return _train(data=data, model=model, optim=optim, sched=sched, aug=aug, loss=loss, trainer=trainer,
                      budget_from=budget_from)
    finally:  # trainer.deterministic applies to this run only: the process is left as it was
        set_deterministic(before)


def _train(*, data, model, optim, sched, aug, loss, trainer, budget_from) -> TrainResult:
    t_start = time.perf_counter()
    # imports and anything before train() count against a time budget
    age_at_start = process_age() if budget_from is None else max(0.0, t_start - budget_from)
    dcfg, mcfg = coerce(DataConfig, data, "data"), model_config(model)
    ocfg, scfg = coerce(OptimConfig, optim, "optim"), coerce(SchedConfig, sched, "sched")
    acfg, tcfg = coerce(AugConfig, aug, "aug"), coerce(TrainerConfig, trainer, "trainer")
    lcfg = coerce(LossConfig, loss, "loss")
    dist = init_distributed(tcfg.device)  # torchrun: this process's rank among WORLD_SIZE (else one process)
    say = print if dist.is_main else (lambda *a, **k: None)  # one process talks
    run_dir = None
    if tcfg.resume:  # a resumed run continues with the configuration it was started with
        run_dir = resume_dir(tcfg.project, tcfg.name or default_run_name(dcfg, mcfg), tcfg.resume)
        dcfg, mcfg, ocfg, scfg, acfg, lcfg, tcfg = saved_config(run_dir, tcfg)
        say(f"resuming {run_dir} with its saved configuration (config.yaml)")
    if dist.enabled and tcfg.batch_size % dist.world:
        raise ImgclsError(f"trainer.batch_size={tcfg.batch_size} is the global batch: it must be a multiple of the "
                          f"{dist.world} processes")
    set_threads(tcfg.threads)
    set_deterministic(tcfg.deterministic)  # undone when train() returns or fails (see `train`)
    device = device_for(dist, select_device(tcfg.device))
    seed_everything(tcfg.seed)
    dcfg, implied = fill_data_defaults(dcfg, mcfg)  # size/normalization the pretrained weights expect
    if implied:
        say(f"from the pretrained weights: {', '.join(f'data.{k}={v}' for k, v in implied.items())}")
    bundle = load_data(dcfg)
    for note in bundle.notes[:20]:
        say(f"note: {note}")
    # After seeding: the initial weights depend on the seed only. A resumed run restores its own weights.
    net, arch_args, report = build_model(dataclasses.replace(mcfg, pretrained=None) if tcfg.resume else mcfg, bundle)
    if report is not None:
        say(report.summary())
    if (mcfg.freeze or tcfg.freeze_epochs) and not mcfg.pretrained:
        say("warning: model.freeze / trainer.freeze_epochs without model.pretrained freeze randomly initialised layers")
    net.to(device)
    channels_last = tcfg.channels_last if tcfg.channels_last is not None else device.type == "cuda"
    if channels_last:
        net = net.to(memory_format=torch.channels_last)

    if not mcfg.pretrained and hasattr(net, "init_from_data") and not tcfg.resume:  # e.g. patch whitening (resume restores it)
        net.init_from_data(first_images(bundle, tcfg.init_images, device))

    # The data root is recorded resolved, so `imgcls evaluate ckpt=...` finds the data from anywhere.
    data_record = {**dataclasses.asdict(dcfg), "root": str(data_root(dcfg.root).resolve())}
    model_record = {"name": mcfg.name, **mcfg.args, **({"pretrained": mcfg.pretrained} if mcfg.pretrained else {}),
                    **({"freeze": mcfg.freeze} if mcfg.freeze else {})}
    config = {"data": data_record, "model": model_record,
              "optim": dataclasses.asdict(ocfg), "sched": dataclasses.asdict(scfg), "aug": dataclasses.asdict(acfg),
              "loss": dataclasses.asdict(lcfg), "trainer": dataclasses.asdict(tcfg)}
    if run_dir is None:  # rank 0 makes the folder; the others learn its name
        if dist.is_main:
            run_dir = new_run_dir(tcfg.project, tcfg.name or default_run_name(dcfg, mcfg))
            (run_dir / "config.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
            write_split_lists(bundle, run_dir / "splits")
        run_dir = Path(broadcast(dist, str(run_dir) if run_dir else None))

    loader_args = dict(device=device, channels_last=channels_last, workers=dcfg.workers, rank=dist.rank,
                       world=dist.world)
    train_loader = make_loader(bundle, bundle.train, train=True, batch_size=tcfg.batch_size, aug=acfg,
                               seed=tcfg.seed, balanced=dcfg.sampler == "balanced", **loader_args)
    val_loader = make_loader(bundle, bundle.val, train=False, batch_size=tcfg.eval_batch_size, **loader_args) \
        if bundle.val is not None and len(bundle.val) else None
    if dist.enabled and not len(train_loader):
        raise ImgclsError(f"{len(bundle.train)} training images make no batch of {tcfg.batch_size} (the global batch "
                          f"of {dist.world} processes): lower trainer.batch_size")
    if dist.enabled and val_loader is not None and len(bundle.val) < dist.world:
        raise ImgclsError(f"the validation split has {len(bundle.val)} images, fewer than the {dist.world} processes")
    if tcfg.sync_batchnorm and dist.enabled:  # before the optimizer and EMA copy: same parameters, new modules
        net = sync_batchnorm(net, device)
    optimizer = build_optimizer(net, ocfg, freeze_epochs=tcfg.freeze_epochs)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(tcfg.ema_decay), use_buffers=True) \
        if tcfg.ema_decay > 0 else None
    dtype = pick_amp_dtype(device, tcfg.amp)
    scaler = grad_scaler(device, dtype)
    train_net = net
    if dist.enabled:  # gradients averaged over the processes; parameters that stop training mid-run are allowed for
        from torch.nn.parallel import DistributedDataParallel

        train_net = DistributedDataParallel(
            net, device_ids=[device.index] if device.type == "cuda" else None,
            find_unused_parameters=bool(ocfg.stop or tcfg.freeze_epochs or mcfg.freeze))
    train_net = torch.compile(train_net) if tcfg.compile else train_net
    preprocess = preprocess_of(bundle)
    recipe = {"data": config["data"], "config": config}

    calibration: dict[str, Any] = {}  # the softmax temperature, fitted on val after training

    def save(m: nn.Module, which: str, metrics: dict) -> None:
        if not dist.is_main:
            return
        meta = ModelMeta(arch=mcfg.name, arch_args=arch_args, classes=bundle.classes, preprocess=preprocess,
                         metrics=metrics, train=recipe, calibration=dict(calibration))
        save_model(run_dir / f"{which}.safetensors", m, meta)

    test_split = "test" if bundle.test is not None and len(bundle.test) else "val" if bundle.val is not None else None
    budget = Budget(None)
    if tcfg.time_budget:
        reserve = estimate_eval_seconds(net, bundle, test_split, tcfg, device, dtype) if test_split else 0.0
        if test_split == "test" and bundle.val is not None and len(bundle.val):  # the plain pass that fits T on val
            reserve += estimate_eval_seconds(net, bundle, "val", dataclasses.replace(tcfg, tta=0), device, dtype)
        spent = age_at_start + time.perf_counter() - t_start
        # every process follows rank 0's budget and the slowest clock (see Budget.reduce)
        budget = Budget(broadcast(dist, tcfg.time_budget - spent - reserve - BUDGET_MARGIN),
                        reduce=(lambda v: all_max(dist, v)) if dist.enabled else None)
        say(f"time budget {tcfg.time_budget:.0f}s: {budget.seconds:.0f}s for training, {reserve:.0f}s kept for the test evaluation")
        if budget.seconds <= 0:
            raise ImgclsError(f"trainer.time_budget={tcfg.time_budget} leaves no time for training after loading and evaluation")
    say(f"training {mcfg.name} on {bundle.name} ({len(bundle.train)} train, "
        f"{len(bundle.val) if bundle.val is not None else 0} val images, {len(bundle.classes)} classes) "
        f"on {device} in {run_dir}" + (f" with {dist.world} process{'es' if dist.world > 1 else ''} ({dist.backend})" if dist.enabled else ""))
    weights = class_weights_of(lcfg, bundle)
    if weights is not None:
        weights = weights.to(device)
    t_fit = time.perf_counter()
    result = fit(train_net, train_loader, val_loader, optimizer, run_dir=run_dir, epochs=tcfg.epochs,
                 sched=scfg, device=device, amp_dtype=dtype, scaler=scaler, save_model=save,
                 label_smoothing=tcfg.label_smoothing, ema=ema, patience=tcfg.patience,
                 budget=budget, limit_batches=tcfg.limit_batches,
                 show_progress=tcfg.progress and dist.is_main, resume=bool(tcfg.resume),
                 small_crop=(acfg.small_crop, acfg.small_crop_until) if acfg.small_crop else None,
                 class_weights=weights, mix=batch_mix(acfg, len(bundle.classes)), dist=dist)
    if not result.history:
        raise ImgclsError(f"no epoch was trained in {run_dir} (the time budget is too small for one epoch)")
    # Training is over: the processes part here, and rank 0 alone scores the model (no collective can
    # time out while it evaluates).
    barrier(dist)
    shutdown_distributed(dist)
    if not dist.is_main:
        return TrainResult(run_dir=run_dir, best=run_dir / "best.safetensors", last=run_dir / "last.safetensors",
                           metrics={}, history=result.history, train_seconds=result.train_seconds,
                           images_seen=result.images_seen)
    plot_learning_curves(run_dir / "results.csv", run_dir / "learning_curves.png")

    # Score the best weights on the test split (or val); the numbers go into both model files' metadata.
    best, last = run_dir / "best.safetensors", run_dir / "last.safetensors"
    split = test_split
    metrics: dict[str, Any] = {}
    if split:
        eval_net = ema.module if ema is not None else net
        load_weights(eval_net, best, arch=mcfg.name)
        t_eval = time.perf_counter()
        if val_loader is not None and split == "test":  # temperature scaling on held-out data, plain logits as Predictor
            if dist.enabled:  # the training-time loader held this rank's block only: all of val here
                val_loader = make_loader(bundle, bundle.val, train=False, batch_size=tcfg.eval_batch_size,
                                         device=device, channels_last=channels_last, workers=dcfg.workers)
            val_logits, val_labels = predict_logits(eval_net, val_loader, device=device, amp_dtype=dtype)
            calibration.update(temperature=fit_temperature(val_logits, val_labels), fitted_on="val")
        metrics = evaluate_model(eval_net, bundle, split, run_dir, device=device, batch_size=tcfg.eval_batch_size,
                                 amp_dtype=dtype, workers=dcfg.workers, tta=tcfg.tta,
                                 temperature=calibration.get("temperature"))
        summary = {"epoch": result.best_epoch, "best_val_acc": result.best_val_acc, f"{split}_top1": metrics["top1"],
                   f"{split}_top5": metrics["top5"], "tta": tcfg.tta, "train_seconds": round(result.train_seconds, 2),
                   "eval_seconds": round(time.perf_counter() - t_eval, 2)}
        if tcfg.tta:  # the plain number too, to show what TTA adds
            summary[f"{split}_top1_no_tta"] = metrics["top1_no_tta"]
        metrics["summary"] = summary
        save(eval_net, "best", summary)
        if result.best_epoch == len(result.history) or bundle.val is None:  # best is last: same weights, same numbers
            save(eval_net, "last", summary)
        elif calibration:  # last keeps its own weights; give it the temperature too (fitted on best's val logits)
            last_net = ema.module if ema is not None else net
            load_weights(last_net, last, arch=mcfg.name)
            save(last_net, "last", read_meta(last).metrics)
    total = time.perf_counter() - t_start
    profile = {"total": total, "before_training": t_fit - t_start, "training": result.train_seconds,
               **{f"train/{k}": v for k, v in result.phases.items()}}
    if split:
        metrics["summary"]["total_seconds"] = round(total, 2)
        profile["test_evaluation"] = metrics["summary"]["eval_seconds"]
    profile["images_seen"] = result.images_seen
    profile["train_images"] = len(bundle.train)
    (run_dir / "profile.json").write_text(json.dumps({k: round(v, 3) for k, v in profile.items()}, indent=2))
    tta_note = f" with TTA level {tcfg.tta} ({metrics['top1_no_tta']:.2%} without)" if split and tcfg.tta else ""
    print(f"done in {total:.1f}s (training {result.train_seconds:.1f}s)"
          + (f"; {split} top-1 {metrics['top1']:.2%}{tta_note}" if split else ""))
    return TrainResult(run_dir=run_dir, best=best, last=last, metrics=metrics, history=result.history,
                       train_seconds=result.train_seconds, images_seen=result.images_seen)
