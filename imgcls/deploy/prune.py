"""`prune`: global magnitude pruning (torch.nn.utils.prune) with optional fine-tuning, and what it did.

The `amount` share of all prunable weights (conv and linear weights that train; frozen layers such as
the patch whitening are left alone) with the smallest magnitude, compared across layers, is set to
zero. Fine-tuning keeps the pruning masks, so the zeros stay. The report: sparsity, test accuracy
before, after pruning and after fine-tuning, and file sizes (dense safetensors store zeros as zeros:
the gain shows compressed).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.nn.utils import prune as tprune

from imgcls.errors import ImgclsError
from imgcls.modelfile import save_model
from imgcls.models import load_model
from imgcls.run_dir import refuse_overwrite
from imgcls.tasks import require_classifier


@dataclass
class PruneResult:
    path: Path
    amount: float
    sparsity: float  # share of zeros among the prunable weights after pruning
    params_pruned: int  # weights set to zero
    images: int
    top1_before: float
    top1_pruned: float
    top1_finetuned: float | None
    finetune_epochs: int
    bytes: int  # model file
    gzip_bytes_before: int
    gzip_bytes_after: int

    def summary(self) -> str:
        ft = f", {self.top1_finetuned:.2%} after {self.finetune_epochs} fine-tuning epoch(s)" \
            if self.top1_finetuned is not None else ""
        return (f"sparsity {self.sparsity:.1%} ({self.params_pruned:,} weights zeroed); test top-1 {self.top1_before:.2%} "
                f"-> {self.top1_pruned:.2%} pruned{ft} on {self.images} images; gzip size "
                f"{self.gzip_bytes_before / 1e6:.2f} -> {self.gzip_bytes_after / 1e6:.2f} MB")


def prunable(model: nn.Module) -> list[tuple[nn.Module, str]]:
    """(module, "weight") of every conv and linear layer whose weight trains."""
    return [(m, "weight") for m in model.modules()
            if isinstance(m, (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)) and m.weight.requires_grad]


def sparsity(params: list[tuple[nn.Module, str]]) -> tuple[float, int, int]:
    zeros = sum(int((getattr(m, n) == 0).sum()) for m, n in params)
    total = sum(getattr(m, n).numel() for m, n in params)
    return zeros / max(total, 1), zeros, total


@torch.no_grad()
def _accuracy(model: nn.Module, loader, device) -> tuple[float, int]:
    from imgcls.evaluation.infer import predict_logits

    logits, labels = predict_logits(model, loader, device=device)
    return float((logits.argmax(1) == labels).float().mean()), len(labels)


def _gzip_size(path: Path) -> int:
    return len(gzip.compress(path.read_bytes(), compresslevel=6))


def prune_model(ckpt: str | os.PathLike, amount: float = 0.5, out: str | os.PathLike | None = None, *,
                finetune_epochs: int = 0, lr: float = 0.01, batch_size: int = 256, data=None, split: str = "test",
                device: str = "auto", overwrite: bool = False, progress: bool = True) -> PruneResult:
    """Prune `amount` (0-1) of the model's prunable weights globally by magnitude, optionally fine-tune, save.

    Fine-tuning: `finetune_epochs` of Nesterov SGD (momentum 0.9, weight decay 5e-4) at `lr` with a
    cosine decay, on the training split with the augmentation and label smoothing the model was
    trained with. Writes `out` (default: NAME.pruned.safetensors beside `ckpt`).
    """
    from imgcls.config import AugConfig, SchedConfig, coerce
    from imgcls.data import make_loader
    from imgcls.device import grad_scaler, select_device
    from imgcls.evaluation.run import split_for_model
    from imgcls.training.loop import Budget, train_one_epoch

    if not 0 < amount < 1:
        raise ImgclsError(f"amount={amount} must be between 0 and 1 (the share of weights set to zero)")
    if finetune_epochs < 0:
        raise ImgclsError(f"finetune_epochs={finetune_epochs} must be >= 0")
    ckpt = Path(ckpt)
    out = Path(out) if out else ckpt.with_name(f"{ckpt.stem}.pruned.safetensors")
    refuse_overwrite(out, overwrite)
    dev = select_device(device)
    model = load_model(ckpt, device=dev)
    require_classifier(model.meta.task, "imgcls prune (its fine-tuning and accuracy check)")
    meta = model.meta
    bundle, ds, _ = split_for_model(meta, data, split, source=str(ckpt), purpose="to measure accuracy on")
    test_loader = make_loader(bundle, ds, train=False, batch_size=500, device=dev)
    top1_before, n = _accuracy(model, test_loader, dev)
    params = prunable(model)
    if not params:
        raise ImgclsError(f"{meta.arch} has no trainable conv or linear weights to prune")
    tprune.global_unstructured(params, pruning_method=tprune.L1Unstructured, amount=amount)
    top1_pruned, _ = _accuracy(model, test_loader, dev)
    top1_ft = None
    if finetune_epochs:
        recipe = meta.train.get("config", {})
        aug = coerce(AugConfig, recipe.get("aug"), "aug")
        smoothing = float(recipe.get("trainer", {}).get("label_smoothing", 0.0))
        loader = make_loader(bundle, bundle.train, train=True, batch_size=batch_size, aug=aug, seed=0, device=dev)
        opt = torch.optim.SGD([p for p in model.parameters() if p.requires_grad], lr=lr, momentum=0.9, nesterov=True,
                              weight_decay=5e-4)
        for g in opt.param_groups:
            g["base_lr"] = lr
        sched, step, total = SchedConfig(name="cosine"), 0, finetune_epochs * len(loader)
        for epoch in range(finetune_epochs):
            loader.set_epoch(epoch)
            r = train_one_epoch(model, loader, opt, sched=sched, step=step, total_steps=total, budget=Budget(),
                                device=dev, amp_dtype=None, scaler=grad_scaler(dev, None), label_smoothing=smoothing,
                                desc=f"fine-tune {epoch + 1}/{finetune_epochs}", show_progress=progress)
            step = r["step"]
        top1_ft, _ = _accuracy(model, test_loader, dev)
    for m, name in params:  # make the zeros part of the weights (drop the masks)
        tprune.remove(m, name)
    share, zeros, _ = sparsity(params)
    meta = dataclasses.replace(meta, metrics={
        **meta.metrics, "pruning": {"amount": amount, "sparsity": round(share, 6), "finetune_epochs": finetune_epochs,
                                    "top1_before": top1_before, "top1_pruned": top1_pruned, "top1_finetuned": top1_ft,
                                    "source": str(ckpt), "date": time.strftime("%Y-%m-%d")}})
    save_model(out, model, meta)
    return PruneResult(path=out, amount=amount, sparsity=share, params_pruned=zeros, images=n, top1_before=top1_before,
                       top1_pruned=top1_pruned, top1_finetuned=top1_ft, finetune_epochs=finetune_epochs,
                       bytes=out.stat().st_size, gzip_bytes_before=_gzip_size(ckpt), gzip_bytes_after=_gzip_size(out))
