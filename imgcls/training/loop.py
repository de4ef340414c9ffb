"""The training engine: one epoch of training, inference over a loader, and `fit` over epochs.

`fit` writes into a run folder after every epoch: the training state (for resume), results.csv,
the `last` model and, when validation improves, `best`. Everything here takes plain objects.
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn
from tqdm.auto import tqdm

from imgcls.atomic import write_text_atomic
from imgcls.config import SchedConfig
from imgcls.device import autocast
from imgcls.tasks.classify import CLASSIFY, macro_f1  # noqa: F401 - macro_f1: where it was
from imgcls.training.checkpoint import load_state, save_state
from imgcls.training.distributed import SINGLE, Dist, all_sum, barrier, gather_cat
from imgcls.training.optim import apply_schedule, set_epoch

# results.csv of a classifier; another task (imgcls.tasks) has its own validation columns between train_acc and lr.
RESULTS_COLUMNS = ["epoch", "seconds", "train_loss", "train_acc", *CLASSIFY.columns, "lr"]
# What trainer.monitor may name, with the sign that makes larger better: it picks best.safetensors and drives early stopping.
MONITORS = CLASSIFY.monitors


def results_columns(task) -> list[str]:
    return ["epoch", "seconds", "train_loss", "train_acc", *task.columns, "lr"]


@dataclass
class Budget:
    """Training-time budget: the schedule follows max(step share, time share) and training stops at the limit."""

    seconds: float | None = None
    clock: Callable[[], float] = time.perf_counter
    spent_before: float = 0.0  # seconds used by earlier (resumed) sessions of this run
    # Multi-process training: the slowest process's clock (an all-reduce), so that every process
    # follows the same schedule and stops at the same step.
    reduce: Callable[[float], float] | None = None
    _start: float = field(default=0.0, init=False)

    def start(self) -> None:
        self._start = self.clock()

    def elapsed(self) -> float:
        local = self.spent_before + self.clock() - self._start
        return self.reduce(local) if self.reduce is not None and self.seconds else local

    def progress(self, step: int, total_steps: int) -> float:
        p = step / max(total_steps, 1)
        return max(p, self.elapsed() / self.seconds) if self.seconds else p

    def exhausted(self) -> bool:
        return self.seconds is not None and self.elapsed() >= self.seconds


def _without_ddp(model: nn.Module) -> nn.Module:
    """The module inside DistributedDataParallel (evaluation needs no gradient sync; files want plain keys)."""
    inner = getattr(model, "_orig_mod", model)
    if isinstance(inner, torch.nn.parallel.DistributedDataParallel):
        return inner.module
    return model


def freeze_norm_statistics(model: nn.Module) -> None:
    """Batch-norm layers whose parameters are all frozen keep their running statistics (eval mode).

    A frozen backbone (feature extraction, or the head-only epochs of fine-tuning) then computes
    exactly the features it was trained to; norm layers without parameters are left alone.
    """
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._NormBase):
            params = list(m.parameters(recurse=False))
            if params and not any(p.requires_grad for p in params):
                m.eval()
            elif model.training:
                m.train()


def train_one_epoch(
    model: nn.Module, loader, optimizer: torch.optim.Optimizer, *, sched: SchedConfig,
    step: int, total_steps: int, budget: Budget, device: torch.device, amp_dtype, scaler,
    label_smoothing: float = 0.0, ema: nn.Module | None = None, limit_batches: int | None = None,
    desc: str = "train", show_progress: bool = True, class_weights: torch.Tensor | None = None,
    mix: Callable | None = None, accum_steps: int = 1, clip_grad: float | None = None, task=CLASSIFY,
) -> dict:
    """One pass over `loader`; returns loss, accuracy, images seen, steps done and the last lr.

    `accum_steps` batches are summed into each optimizer step (the last group of an epoch may be
    shorter); `clip_grad` caps the gradients' global L2 norm before each step. `step` counts
    optimizer steps. `task` (imgcls.tasks) gives the loss and what counts as correct (images, or pixels).
    """
    model.train()
    optimizer.zero_grad(set_to_none=True)  # a group cut short by the budget left nothing behind
    params = [p for g in optimizer.param_groups for p in g["params"]]
    freeze_norm_statistics(model)  # frozen layers (feature extraction, head-only epochs) keep their statistics
    n_batches = min(len(loader), limit_batches or len(loader))
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    counted = torch.zeros((), device=device, dtype=torch.long)  # units of accuracy: images, or labelled pixels
    seen, lr, t0 = 0, 0.0, time.perf_counter()
    clock = PhaseClock(device)
    forward_loss = getattr(task, "forward_loss", None)
    counts_hits = getattr(task, "train_accuracy", True)
    bar = tqdm(total=n_batches, desc=desc, disable=not show_progress, leave=False, dynamic_ncols=True)
    for i, (x, y) in enumerate(loader):
        if i >= n_batches or budget.exhausted():
            break
        x, y = _to_device(task, x, y, device)
        if mix is not None:  # MixUp / CutMix: y becomes soft (B, K) targets
            x, y = mix(x, y)
        clock.tick("data")  # fetching, augmenting and normalizing the batch
        if i % accum_steps == 0:  # the first batch of an optimizer step
            lr = apply_schedule(optimizer, budget.progress(step, total_steps), sched)
        with autocast(device, amp_dtype):
            if forward_loss is not None:  # a model that computes its loss from the targets (detectors)
                out, loss = forward_loss(model, x, y)
            else:
                out = model(x)
                loss = task.loss(out, y, weight=class_weights, label_smoothing=label_smoothing)
        clock.tick("forward")
        steps_now = (i + 1) % accum_steps == 0 or i + 1 == n_batches
        # DistributedDataParallel: gradients are averaged over the processes once per optimizer step
        sync = contextlib.nullcontext() if steps_now or not hasattr(model, "no_sync") else model.no_sync()
        with sync:
            scaler.scale(loss / accum_steps if accum_steps > 1 else loss).backward()
        clock.tick("backward")
        if steps_now:
            if clip_grad:
                scaler.unscale_(optimizer)  # clip the true gradients (fp16 scales them)
                torch.nn.utils.clip_grad_norm_(params, clip_grad)
            scaler.step(optimizer)
            scaler.update()
            optimizer.zero_grad(set_to_none=True)
            if ema is not None:
                ema.update_parameters(model)
            step += 1
        clock.tick("optimizer")
        loss_sum += loss.detach() * len(y)
        if counts_hits:
            hit, units = task.hits(out.detach(), y)  # tensors stay on the device: no sync per step
            correct += hit
            counted += units
        seen += len(y)
        if show_progress and (i % 10 == 0 or i == n_batches - 1):  # .item() syncs the device: not every step
            acc = {"acc": f"{correct.item() / max(counted.item(), 1):.3f}"} if counts_hits else {}
            bar.set_postfix(loss=f"{loss_sum.item() / seen:.3f}", **acc,
                            img_s=f"{seen / (time.perf_counter() - t0):.0f}", lr=f"{lr:.3g}")
        bar.update(1)
        clock.tick("logging")
    bar.close()
    per = max(seen, 1)
    acc = correct.item() / max(counted.item(), 1) if counts_hits else None
    return {"loss": loss_sum.item() / per, "acc": acc, "images": seen, "step": step, "lr": lr,
            "seconds": time.perf_counter() - t0, "phases": clock.totals}


def _to_device(task, x, y, device):
    """A batch on the device: tensors, or a task's own structure (lists of images and box targets)."""
    move = getattr(task, "to_device", None)
    if move is not None:
        return move(x, y, device)
    return x.to(device, non_blocking=True), y.to(device, non_blocking=True)


class PhaseClock:
    """Wall time per phase of a training step, to show where the time goes (written to profile.json).

    On CUDA, kernels run asynchronously, so the phases are only exact when `sync` is set (it costs a
    little speed); on the CPU they are exact as they are.
    """

    def __init__(self, device: torch.device, sync: bool = False):
        self.sync = sync and device.type == "cuda"
        self.totals: dict[str, float] = {}
        self._last = time.perf_counter()

    def tick(self, phase: str) -> None:
        if self.sync:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.totals[phase] = self.totals.get(phase, 0.0) + now - self._last
        self._last = now


def write_results(rows: list[dict], path: Path, columns: list[str] = RESULTS_COLUMNS) -> None:
    """Rewrite results.csv from the history (atomically), so a resumed run never doubles or drops a row."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns)
    w.writeheader()
    for r in rows:
        w.writerow({k: ("" if r.get(k) is None else r[k]) for k in columns})
    write_text_atomic(path, buf.getvalue())


@dataclass
class FitResult:
    history: list[dict]
    best_epoch: int
    best_val_acc: float | None
    train_seconds: float
    stopped_early: bool
    images_seen: int  # training images processed, over all epochs (and resumed sessions)
    phases: dict[str, float]  # seconds per phase of this session: data, forward, backward, optimizer, validation


def fit(
    model: nn.Module, train_loader, val_loader, optimizer: torch.optim.Optimizer, *, run_dir: Path,
    epochs: int, sched: SchedConfig, device: torch.device, amp_dtype, scaler,
    save_model: Callable[[nn.Module, str, dict], None], label_smoothing: float = 0.0, ema: nn.Module | None = None,
    patience: int = 0, budget: Budget | None = None, limit_batches: int | None = None,
    show_progress: bool = True, resume: bool = False, small_crop: tuple[int, float] | None = None,
    class_weights: torch.Tensor | None = None, mix: Callable | None = None, dist: Dist = SINGLE,
    accum_steps: int = 1, clip_grad: float | None = None, monitor: str = "val_acc",
    on_epoch: Callable[[dict], None] | None = None, task=CLASSIFY, val_every: int = 1,
) -> FitResult:
    """Train for `epochs` (or until the time budget or early stopping), validating after each epoch.

    `save_model(model, "best" | "last", metrics)` writes a model file; the model passed is the EMA
    copy when EMA is on. With no validation loader the best model is the last one. `small_crop`
    = (side, share): epochs that start before that share of training train on random crops of that side.
    `mix(x, y) -> (x, soft y)` transforms each training batch (MixUp / CutMix). With `dist` (several
    processes, see imgcls.training.distributed) the epoch's loss and accuracy are summed over the
    processes, validation logits gathered, and only rank 0 writes files. `monitor` (a MONITORS key)
    picks the best epoch and drives early stopping; `accum_steps` and `clip_grad`: see `train_one_epoch`.
    `on_epoch(row)` (rank 0, after results.csv) gets each epoch's row with its training images/s (trackers).
    `task` (imgcls.tasks) gives the loss, accuracy and validation numbers (and the monitors they allow).
    `val_every` > 1 validates every that many epochs and after the last (best.safetensors: the best validated epoch).
    """
    from imgcls.tasks import effective_monitor

    monitor = effective_monitor(monitor, task)  # the default val_acc, on a task without accuracy (detection): val_map
    if monitor not in task.monitors:
        raise ValueError(f"monitor must be one of {', '.join(task.monitors)}, got {monitor!r}")
    sign = task.monitors[monitor]
    columns = results_columns(task)
    budget = budget or Budget()
    steps_per_epoch = min(len(train_loader), limit_batches or len(train_loader))
    total_steps = epochs * -(-steps_per_epoch // accum_steps)  # optimizer steps
    history: list[dict] = []
    start_epoch, step, best_acc, best_epoch, bad_epochs, images_seen = 0, 0, -math.inf, 0, 0, 0
    best_score = -math.inf  # sign x the monitored value of the best epoch
    state_path = run_dir / "state.safetensors"
    if resume:
        if dist.is_main:
            for stale in run_dir.glob("*.tmp"):  # half-written files of a session that was killed
                stale.unlink(missing_ok=True)
        info = load_state(state_path, model=_without_ddp(model), optimizer=optimizer, ema=ema, scaler=scaler,
                          device=device)
        start_epoch, step, history = info["epoch"], info["step"], info["history"]
        best_acc, best_epoch, bad_epochs = info["best_acc"], info["best_epoch"], info["bad_epochs"]
        best_score = info.get("best_score", best_acc)
        budget.spent_before, images_seen = info["train_seconds"], info.get("images_seen", 0)
        if dist.is_main:
            write_results(history, run_dir / "results.csv", columns)  # a kill between state and results.csv loses no row
        if info.get("finished"):
            tqdm.write(f"{run_dir} had already finished ({len(history)} epochs): nothing left to train")
            start_epoch = epochs
    budget.start()
    stopped_early = False
    phases: dict[str, float] = {}
    eval_model = ema.module if ema is not None else _without_ddp(model)
    for epoch in range(start_epoch, epochs):
        if budget.exhausted():
            break
        train_loader.set_epoch(epoch)
        if set_epoch(optimizer, epoch) and epoch == start_epoch:
            tqdm.write(f"epoch {epoch + 1}: only the head trains (trainer.freeze_epochs)")
        if small_crop and hasattr(train_loader, "set_crop"):  # progressive cropping: small crops early on
            train_loader.set_crop(small_crop[0] if budget.progress(step, total_steps) < small_crop[1] else None)
        t0 = time.perf_counter()
        tr = train_one_epoch(model, train_loader, optimizer, sched=sched, step=step,
                             total_steps=total_steps, budget=budget, device=device, amp_dtype=amp_dtype, scaler=scaler,
                             label_smoothing=label_smoothing, ema=ema, limit_batches=limit_batches,
                             desc=f"epoch {epoch + 1}/{epochs}", show_progress=show_progress,
                             class_weights=class_weights, mix=mix, accum_steps=accum_steps, clip_grad=clip_grad,
                             task=task)
        if dist.enabled:  # the epoch's numbers over all processes
            loss_sum, correct, seen = all_sum(dist, [tr["loss"] * tr["images"], (tr["acc"] or 0.0) * tr["images"],
                                                     tr["images"]])
            tr.update(loss=loss_sum / max(seen, 1), acc=correct / max(seen, 1) if tr["acc"] is not None else None,
                      images=int(seen))
        step, images_seen = tr["step"], images_seen + tr["images"]
        for k, v in tr["phases"].items():
            phases[k] = phases.get(k, 0.0) + v
        row = {"epoch": epoch + 1, "train_loss": round(tr["loss"], 6), "train_acc": None if tr["acc"] is None else round(tr["acc"], 6),
               **dict.fromkeys(task.columns), "lr": round(tr["lr"], 8)}
        last_epoch = epoch + 1 == epochs or budget.exhausted()
        validating = val_loader is not None and ((epoch + 1) % val_every == 0 or last_epoch)
        if validating:
            t_val = time.perf_counter()
            numbers = task.validate(eval_model, val_loader, device=device, amp_dtype=amp_dtype,
                                    gather=lambda t: gather_cat(dist, t))
            phases["validation"] = phases.get("validation", 0.0) + time.perf_counter() - t_val
            row.update({k: round(v, 6) for k, v in numbers.items()})
        row["seconds"] = round(time.perf_counter() - t0, 3)
        history.append(row)
        improved = val_loader is None or (validating and sign * row[monitor] > best_score)
        if improved:
            best_score = sign * row[monitor] if val_loader is not None else -math.inf
            best_acc = row.get("val_acc", row[monitor]) if val_loader is not None else -math.inf
            best_epoch, bad_epochs = epoch + 1, 0
        elif validating:
            bad_epochs += val_every if (epoch + 1) % val_every == 0 else 1
        metrics = {k: row[k] for k in ("epoch", "train_loss", "train_acc", *task.columns)}
        done = epoch + 1 == epochs or budget.exhausted() or (patience and bad_epochs >= patience)
        info = {"epoch": epoch + 1, "step": step, "history": history, "best_acc": best_acc, "best_score": best_score,
                "best_epoch": best_epoch,
                "bad_epochs": bad_epochs, "train_seconds": budget.elapsed(), "images_seen": images_seen,
                "finished": bool(done)}
        if dist.is_main:  # one process writes: models, the training state, then results.csv
            save_model(eval_model, "last", metrics)
            if improved:
                save_model(eval_model, "best", metrics)
            save_state(state_path, model=_without_ddp(model), optimizer=optimizer, ema=ema, scaler=scaler, info=info)
            write_results(history, run_dir / "results.csv", columns)
            if on_epoch is not None:
                on_epoch({**row, "images_per_second": tr["images"] / max(tr["seconds"], 1e-9)})
            shown = [k for k in ("train_loss", "train_acc", *task.columns[:3]) if row.get(k) is not None]
            tqdm.write(f"epoch {epoch + 1}/{epochs}: " + " ".join(f"{k} {row[k]:.4f}" for k in shown) +
                       f" ({row['seconds']:.1f}s)")
        barrier(dist)  # the others wait until the state is on disk (a resume finds it whole)
        if patience and bad_epochs >= patience:
            stopped_early = True
            tqdm.write(f"early stopping: no {monitor} improvement for {patience} epochs (best epoch {best_epoch})")
            break
    if dist.is_main and val_loader is not None and history and best_epoch == 0:
        # val_every > 1 and the budget ran out between two checks: no epoch was validated; the last one is the best known
        save_model(eval_model, "best", {k: history[-1][k] for k in ("epoch", "train_loss", "train_acc", *task.columns)})
        best_epoch = len(history)
    return FitResult(phases=phases, history=history, best_epoch=best_epoch, best_val_acc=None if best_acc == -math.inf else best_acc,
                     train_seconds=budget.elapsed(), stopped_early=stopped_early, images_seen=images_seen)
