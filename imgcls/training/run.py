"""`train`: from option groups to a run folder with model files, results.csv, plots and test metrics."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml
from torch import nn
from torch.optim.swa_utils import AveragedModel, get_ema_multi_avg_fn

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
from imgcls.data import DataBundle, data_root, make_loader, write_split_lists
from imgcls.data.augment import batch_mix
from imgcls.device import amp_dtype as pick_amp_dtype
from imgcls.device import autocast, grad_scaler, select_device, set_deterministic
from imgcls.errors import ImgclsError
from imgcls.evaluation.calibration import fit_temperature
from imgcls.evaluation.infer import predict_logits
from imgcls.evaluation.plots import plot_learning_curves
from imgcls.evaluation.run import evaluate_model
from imgcls.modelfile import ModelMeta, load_weights, read_meta, save_model
from imgcls.progress import show_progress
from imgcls.run_dir import new_run_dir, resume_dir
from imgcls.setup import (  # noqa: F401
    Configs,
    Setup,
    build_model,
    class_weights_of,
    configs,
    first_images,
    preprocess_of,
    seed_everything,
    setup,
    train_loader,
)
from imgcls.tasks import task_for
from imgcls.training.distributed import Dist, all_max, barrier, broadcast, device_for, sync_batchnorm
from imgcls.training.distributed import init as init_distributed
from imgcls.training.distributed import shutdown as shutdown_distributed
from imgcls.training.loop import Budget, FitResult, fit
from imgcls.training.trackers import Trackers, flat_params, make_trackers
from imgcls.tta import tta_logits


@dataclass
class TrainResult:
    run_dir: Path
    best: Path  # model file with the best validation accuracy (the last one without validation)
    last: Path
    metrics: dict[str, Any]  # test-split metrics of `best` (val split when there is no test split)
    history: list[dict]
    train_seconds: float
    images_seen: int  # training images processed (for images/s)


def default_run_name(dcfg: DataConfig, mcfg: ModelConfig) -> str:
    """"<data>-<model>", e.g. "mnist-mlp" or "caltech101-timm-resnet18": the same for a new run and for resume."""
    arch = mcfg.args.get("arch")
    return f"{dcfg.name.lower()}-{mcfg.name}" + (f"-{arch}" if arch else "")


BUDGET_MARGIN = 8.0  # seconds kept free for metrics, calibration, plots, model files and printing at the end of a time-budgeted run
# The probe batch runs hotter in cache than the real evaluation's batches: measured here, a 200-image
# probe predicted ~0.85x of what 2000-image batches took, hence the slack.
EVAL_SLACK = 1.2


RUNTIME_KEYS = ("device", "threads", "progress", "resume")  # trainer options a resumed run takes from the new call


def saved_config(run_dir: Path, current: TrainerConfig) -> Configs:
    """The option groups a run was started with (config.yaml), with runtime-only trainer keys from `current`."""
    path = run_dir / "config.yaml"
    if not path.is_file():
        raise ImgclsError(f"cannot resume {run_dir}: its config.yaml is missing")
    c = yaml.safe_load(path.read_text())
    c["trainer"] = {**c["trainer"], **{k: getattr(current, k) for k in RUNTIME_KEYS}}
    return Configs(**{k: group_config(k, c.get(k)) for k in TRAIN_GROUPS})


def peak_memory() -> tuple[int, int]:
    """Peak resident bytes of this process and of its largest finished child (loader or compile workers)."""
    try:
        import resource
    except ImportError:  # pragma: no cover - not on Windows
        return 0, 0
    kb = 1024  # ru_maxrss is in kilobytes on Linux
    return (resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kb,
            resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kb)


def process_age() -> float:
    """Seconds since this process started (Linux; 0 elsewhere): a time budget counts the imports too."""
    try:
        start_ticks = int(open("/proc/self/stat").read().rsplit(")", 1)[1].split()[19])
        uptime = float(open("/proc/uptime").read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return 0.0


def estimate_eval_seconds(net: nn.Module, bundle: DataBundle, split: str, tcfg: TrainerConfig, device, dtype,
                          probe: int = 200) -> float:
    """What the final evaluation (with TTA) will cost: time a `probe`-image batch and scale to the split.

    The probe runs twice and the second is timed: the first call of a shape pays for kernel set-up
    (oneDNN primitives, cuDNN autotuning) that the real evaluation pays once, not per batch.
    """
    data = getattr(bundle, split)
    n = min(probe, len(data), tcfg.eval_batch_size)
    x, y = next(iter(make_loader(bundle, data, train=False, batch_size=n, device=device)))
    task = task_for(bundle)
    was_training = net.training
    net.eval()
    if isinstance(x, list):  # a task whose batches are lists (detection): its own data on the device
        x, y = task.to_device(x, y, device)
    with torch.no_grad(), autocast(device, dtype):
        if task.name == "detect":  # boxes: the detector's own forward, no TTA, no loss at evaluation
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            net(x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            net.train(was_training)
            return (time.perf_counter() - t) / n * len(data) * EVAL_SLACK
        tta_logits(net, x, tcfg.tta)  # warm-up, same shape
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        out = tta_logits(net, x, tcfg.tta)
        if task.name != "classify":  # its evaluation also takes the loss and the metrics of every batch (per pixel)
            task.loss(out.float().cpu(), y.cpu())
            out.argmax(1)
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
        return _train(configs(data=data, model=model, optim=optim, sched=sched, aug=aug, loss=loss, trainer=trainer),
                      budget_from=budget_from)
    finally:  # trainer.deterministic applies to this run only: the process is left as it was
        set_deterministic(before)


def _train(cfg: Configs, *, budget_from: float | None) -> TrainResult:
    """One run as a sequence of steps: join the processes, set up, make the folder, fit, score, write the profile."""
    t_start = time.perf_counter()
    # imports and anything before train() count against a time budget
    age_at_start = process_age() if budget_from is None else max(0.0, t_start - budget_from)
    dist = init_distributed(cfg.trainer.device)  # torchrun: this process's rank among WORLD_SIZE (else one process)
    say = print if dist.is_main else (lambda *a, **k: None)  # one process talks
    run_dir = None
    if cfg.trainer.resume:  # a resumed run continues with the configuration it was started with
        run_dir = resume_dir(cfg.trainer.project, cfg.trainer.name or default_run_name(cfg.data, cfg.model),
                             cfg.trainer.resume)
        cfg = saved_config(run_dir, cfg.trainer)
        say(f"resuming {run_dir} with its saved configuration (config.yaml)")
    if dist.enabled and cfg.trainer.batch_size % dist.world:
        raise ImgclsError(f"trainer.batch_size={cfg.trainer.batch_size} is the global batch: it must be a multiple of "
                          f"the {dist.world} processes")
    set_deterministic(cfg.trainer.deterministic)  # undone when train() returns or fails (see `train`)
    budget_zero = t_start - age_at_start  # the perf_counter() time the budget counts from

    def seconds_left() -> float:  # for a recipe sized to the machine (trainer.size_choices)
        return (cfg.trainer.time_budget or 0.0) - (time.perf_counter() - budget_zero) - BUDGET_MARGIN

    s = setup(cfg, device=device_for(dist, select_device(cfg.trainer.device)), restore=bool(cfg.trainer.resume),
              seconds_left=seconds_left)
    cfg = s.cfg  # as set up: model=auto resolved, data filled in, batch sizes fitted to memory
    for message in s.messages:
        say(message)
    if run_dir is None:
        run_dir = _make_run_dir(s, dist)
    train_dl, val_dl = _loaders(s, dist)
    net, ema, train_net = _wrap(s, dist)
    calibration: dict[str, Any] = {}  # the softmax temperature, fitted on val after training
    save = _saver(s, run_dir, dist, calibration)
    test_split = "test" if s.bundle.test is not None and len(s.bundle.test) else \
        "val" if s.bundle.val is not None else None
    dtype = pick_amp_dtype(s.device, cfg.trainer.amp, cfg.trainer.cpu_bf16)
    t = cfg.trainer
    # the trackers start before the budget is set, so that their imports and database set-up count against it
    trackers = make_trackers(t.logger, run_dir, project=t.project, run_name=run_dir.name, mlflow_uri=t.mlflow_uri,
                             mlflow_experiment=t.mlflow_experiment) if dist.is_main else Trackers([])
    try:
        trackers.start(flat_params(run_record(s.cfg)))
        budget = _budget(s, net, dist, dtype, test_split, spent=age_at_start + time.perf_counter() - t_start, say=say)
        arch = f"{s.cfg.model.name} {s.cfg.model.args['arch']}" if "arch" in s.cfg.model.args else s.cfg.model.name
        say(f"training {arch} on {s.bundle.name} ({len(s.bundle.train)} train, "
            f"{len(s.bundle.val) if s.bundle.val is not None else 0} val images, {len(s.bundle.classes)} classes) "
            f"on {s.device} in {run_dir}"
            + (f" with {dist.world} process{'es' if dist.world > 1 else ''} ({dist.backend})" if dist.enabled else ""))
        t_fit = time.perf_counter()
        done = _fit_and_score(s, cfg, dist, run_dir, train_dl, val_dl, net, ema, train_net, save, calibration, test_split,
                              dtype, budget, trackers, t_start, t_fit)
    except BaseException:
        trackers.close(ok=False)
        raise
    trackers.close(ok=True)
    return done


def _fit_and_score(s: Setup, cfg: Configs, dist: Dist, run_dir: Path, train_dl, val_dl, net, ema, train_net, save,
                   calibration: dict, test_split: str | None, dtype, budget: Budget, trackers: Trackers, t_start: float,
                   t_fit: float) -> TrainResult:
    """Train, then (rank 0) score the best weights, write the profile and give the trackers the final numbers."""
    a, t = cfg.aug, cfg.trainer
    task = task_for(s.bundle)
    result = fit(train_net, train_dl, val_dl, s.optimizer, run_dir=run_dir, epochs=t.epochs, sched=cfg.sched,
                 device=s.device, amp_dtype=dtype, scaler=grad_scaler(s.device, dtype), save_model=save,
                 label_smoothing=t.label_smoothing, ema=ema, patience=t.patience, budget=budget,
                 limit_batches=t.limit_batches, show_progress=show_progress(t.progress) and dist.is_main, resume=bool(t.resume),
                 small_crop=(a.small_crop, a.small_crop_until) if a.small_crop else None,
                 class_weights=s.class_weights, mix=batch_mix(a, len(s.bundle.classes)), dist=dist,
                 accum_steps=t.accum_steps, clip_grad=t.clip_grad, monitor=t.monitor, val_every=t.val_every,
                 on_epoch=trackers.log_epoch if trackers else None, task=task)
    if not result.history:
        raise ImgclsError(f"no epoch was trained in {run_dir} (the time budget is too small for one epoch)")
    # Training is over: the processes part here, and rank 0 alone scores the model (no collective can
    # time out while it evaluates).
    barrier(dist)
    shutdown_distributed(dist)
    best, last = run_dir / "best.safetensors", run_dir / "last.safetensors"
    if not dist.is_main:
        return TrainResult(run_dir=run_dir, best=best, last=last, metrics={}, history=result.history,
                           train_seconds=result.train_seconds, images_seen=result.images_seen)
    plot_learning_curves(run_dir / "results.csv", run_dir / "learning_curves.png")
    eval_net = ema.module if ema is not None else net
    score = _score if task.name == "classify" else _score_task
    metrics = score(s, eval_net, result, run_dir, test_split, val_dl, dtype, dist, save, calibration) if test_split else {}
    trackers.log_final(metrics, run_dir, len(result.history))
    total = time.perf_counter() - t_start
    _write_profile(run_dir, result, metrics, total=total, before_training=t_fit - t_start, train_images=len(s.bundle.train))
    tta_note = f" with TTA level {t.tta} ({metrics['top1_no_tta']:.2%} without)" if test_split and t.tta and \
        task.name == "classify" else ""
    own, workers = peak_memory()
    headline = f"{test_split} top-1 {metrics['top1']:.2%}{tta_note}" if task.name == "classify" else \
        task.headline(metrics, test_split) if test_split else ""
    print(f"done in {total:.1f}s (training {result.train_seconds:.1f}s)"
          + (f"; {headline}" if test_split else "")
          + f"; peak memory {own / 2**30:.2f} GB"
          + (f" (+ {workers / 2**30:.2f} GB in child processes: loader or compile workers)" if workers else ""))
    return TrainResult(run_dir=run_dir, best=best, last=last, metrics=metrics, history=result.history,
                       train_seconds=result.train_seconds, images_seen=result.images_seen)


def run_record(cfg: Configs) -> dict[str, Any]:
    """The configuration as config.yaml and the model files record it (data root resolved, model args flat)."""
    # The data root is recorded resolved, so `imgcls evaluate ckpt=...` finds the data from anywhere.
    data_record = {**dataclasses.asdict(cfg.data), "root": str(data_root(cfg.data.root).resolve())}
    model_record = {"name": cfg.model.name, **cfg.model.args,
                    **({"pretrained": cfg.model.pretrained} if cfg.model.pretrained else {}),
                    **({"freeze": cfg.model.freeze} if cfg.model.freeze else {})}
    return {"data": data_record, "model": model_record, "optim": dataclasses.asdict(cfg.optim),
            "sched": dataclasses.asdict(cfg.sched), "aug": dataclasses.asdict(cfg.aug),
            "loss": dataclasses.asdict(cfg.loss), "trainer": dataclasses.asdict(cfg.trainer)}


def _make_run_dir(s: Setup, dist: Dist) -> Path:
    """Rank 0 makes the run folder and writes config.yaml and the split lists; the others learn its name."""
    run_dir = None
    if dist.is_main:
        t = s.cfg.trainer
        run_dir = new_run_dir(t.project, t.name or default_run_name(s.cfg.data, s.cfg.model))
        (run_dir / "config.yaml").write_text(yaml.safe_dump(run_record(s.cfg), sort_keys=False))
        write_split_lists(s.bundle, run_dir / "splits")
    return Path(broadcast(dist, str(run_dir) if run_dir else None))


def _loaders(s: Setup, dist: Dist):
    """The training loader (this process's share of each global batch) and the validation loader (or None)."""
    t, b = s.cfg.trainer, s.bundle
    train_dl = train_loader(s, rank=dist.rank, world=dist.world)
    val_dl = make_loader(b, b.val, train=False, batch_size=t.eval_batch_size, device=s.device,
                         channels_last=s.channels_last, workers=s.cfg.data.workers, rank=dist.rank, world=dist.world) \
        if b.val is not None and len(b.val) else None
    if dist.enabled and not len(train_dl):
        raise ImgclsError(f"{len(b.train)} training images make no batch of {t.batch_size} (the global batch "
                          f"of {dist.world} processes): lower trainer.batch_size")
    if dist.enabled and val_dl is not None and len(b.val) < dist.world:
        raise ImgclsError(f"the validation split has {len(b.val)} images, fewer than the {dist.world} processes")
    return train_dl, val_dl


def _wrap(s: Setup, dist: Dist):
    """(net, EMA copy or None, the module the loop trains: DDP and/or compiled around net)."""
    t, net = s.cfg.trainer, s.model
    if t.sync_batchnorm and dist.enabled:  # same parameter tensors in new modules: the optimizer still holds them
        net = s.model = sync_batchnorm(net, s.device)
    ema = AveragedModel(net, multi_avg_fn=get_ema_multi_avg_fn(t.ema_decay), use_buffers=True) \
        if t.ema_decay > 0 else None
    train_net = net
    if dist.enabled:  # gradients averaged over the processes; parameters that stop training mid-run are allowed for
        from torch.nn.parallel import DistributedDataParallel

        train_net = DistributedDataParallel(
            net, device_ids=[s.device.index] if s.device.type == "cuda" else None,
            find_unused_parameters=bool(s.cfg.optim.stop or t.freeze_epochs or s.cfg.model.freeze))
    return net, ema, (torch.compile(train_net) if t.compile else train_net)


def _saver(s: Setup, run_dir: Path, dist: Dist, calibration: dict) -> Callable[[nn.Module, str, dict], None]:
    """`save(model, "best" | "last", metrics)`: a model file with the run's metadata (rank 0 only)."""
    config = run_record(s.cfg)
    recipe = {"data": config["data"], "config": config}

    def save(m: nn.Module, which: str, metrics: dict) -> None:
        if not dist.is_main:
            return
        meta = ModelMeta(arch=s.cfg.model.name, arch_args=s.arch_args, classes=s.bundle.classes,
                         preprocess=preprocess_of(s.bundle), metrics=metrics, train=recipe,
                         calibration=dict(calibration), task=s.bundle.task)
        save_model(run_dir / f"{which}.safetensors", m, meta)

    return save


def _budget(s: Setup, net: nn.Module, dist: Dist, dtype, test_split: str | None, *, spent: float, say) -> Budget:
    """The training time a time budget leaves after what was spent and what the final evaluation will take."""
    t = s.cfg.trainer
    if not t.time_budget:
        return Budget(None)
    reserve = estimate_eval_seconds(net, s.bundle, test_split, t, s.device, dtype) if test_split else 0.0
    if s.bundle.val is not None and len(s.bundle.val):
        # plain passes over val after the budget runs out: the validation of the epoch it cut short, and (when a
        # test split is scored) the one that fits the temperature
        passes = 2 if test_split == "test" else 1
        reserve += passes * estimate_eval_seconds(net, s.bundle, "val", dataclasses.replace(t, tta=0), s.device, dtype)
    # every process follows rank 0's budget and the slowest clock (see Budget.reduce)
    budget = Budget(broadcast(dist, t.time_budget - spent - reserve - BUDGET_MARGIN),
                    reduce=(lambda v: all_max(dist, v)) if dist.enabled else None)
    say(f"time budget {t.time_budget:.0f}s: {budget.seconds:.0f}s for training, {reserve:.0f}s kept for the test evaluation")
    if budget.seconds <= 0:
        raise ImgclsError(f"trainer.time_budget={t.time_budget} leaves no time for training after loading and evaluation")
    return budget


def _score(s: Setup, eval_net: nn.Module, result: FitResult, run_dir: Path, split: str, val_dl, dtype, dist: Dist,
           save, calibration: dict) -> dict[str, Any]:
    """Score the best weights on `split` (test, else val), fit the temperature on val; both model files get the numbers."""
    t, b = s.cfg.trainer, s.bundle
    best, last = run_dir / "best.safetensors", run_dir / "last.safetensors"
    load_weights(eval_net, best, arch=s.cfg.model.name)
    t_eval = time.perf_counter()
    if val_dl is not None and split == "test":  # temperature scaling on held-out data, plain logits as Predictor
        if dist.enabled:  # the training-time loader held this rank's block only: all of val here
            val_dl = make_loader(b, b.val, train=False, batch_size=t.eval_batch_size, device=s.device,
                                 channels_last=s.channels_last, workers=s.cfg.data.workers)
        val_logits, val_labels = predict_logits(eval_net, val_dl, device=s.device, amp_dtype=dtype)
        calibration.update(temperature=fit_temperature(val_logits, val_labels), fitted_on="val")
    metrics = evaluate_model(eval_net, b, split, run_dir, device=s.device, batch_size=t.eval_batch_size,
                             amp_dtype=dtype, workers=s.cfg.data.workers, tta=t.tta,
                             temperature=calibration.get("temperature"))
    summary = {"epoch": result.best_epoch, "best_val_acc": result.best_val_acc, f"{split}_top1": metrics["top1"],
               f"{split}_top5": metrics["top5"], "tta": t.tta, "train_seconds": round(result.train_seconds, 2),
               "eval_seconds": round(time.perf_counter() - t_eval, 2)}
    if t.tta:  # the plain number too, to show what TTA adds
        summary[f"{split}_top1_no_tta"] = metrics["top1_no_tta"]
    metrics["summary"] = summary
    save(eval_net, "best", summary)
    if result.best_epoch == len(result.history) or b.val is None:  # best is last: same weights, same numbers
        save(eval_net, "last", summary)
    elif calibration:  # last keeps its own weights; give it the temperature too (fitted on best's val logits)
        load_weights(eval_net, last, arch=s.cfg.model.name)
        save(eval_net, "last", read_meta(last).metrics)
    return metrics


def _score_task(s: Setup, eval_net: nn.Module, result: FitResult, run_dir: Path, split: str, val_dl, dtype, dist: Dist,
                save, calibration: dict) -> dict[str, Any]:
    """Score the best weights on `split` with the task's own evaluation (segmentation: mIoU); the model files get it."""
    t, b = s.cfg.trainer, s.bundle
    task = task_for(b)
    load_weights(eval_net, run_dir / "best.safetensors", arch=s.cfg.model.name)
    t_eval = time.perf_counter()
    metrics = task.evaluate(eval_net, b, split, run_dir, device=s.device, batch_size=t.eval_batch_size, amp_dtype=dtype,
                            workers=s.cfg.data.workers)
    headline = {k: metrics[k] for k in ("miou", "pixel_acc", "mean_dice", "map", "map_50", "mar_100") if k in metrics}
    summary = {"epoch": result.best_epoch, "best_val_acc": result.best_val_acc, "task": task.name,
               **{f"{split}_{k}": v for k, v in headline.items()}, "train_seconds": round(result.train_seconds, 2),
               "eval_seconds": round(time.perf_counter() - t_eval, 2)}
    metrics["summary"] = summary
    save(eval_net, "best", summary)
    if result.best_epoch == len(result.history) or b.val is None:
        save(eval_net, "last", summary)
    return metrics


def _write_profile(run_dir: Path, result: FitResult, metrics: dict, *, total: float, before_training: float,
                   train_images: int) -> None:
    """profile.json: where the run's time went (and metrics' summary gets the total)."""
    profile = {"total": total, "before_training": before_training, "training": result.train_seconds,
               **{f"train/{k}": v for k, v in result.phases.items()}}
    if metrics:
        metrics["summary"]["total_seconds"] = round(total, 2)
        profile["test_evaluation"] = metrics["summary"]["eval_seconds"]
    profile["images_seen"] = result.images_seen
    profile["train_images"] = train_images
    profile["peak_rss_gb"], profile["peak_rss_workers_gb"] = (v / 2**30 for v in peak_memory())
    (run_dir / "profile.json").write_text(json.dumps({k: round(v, 3) for k, v in profile.items()}, indent=2))

