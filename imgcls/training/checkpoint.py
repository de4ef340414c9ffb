"""Training-state checkpoints: everything needed to continue a run, written atomically, read without pickle.

One safetensors file holds the tensors (model, EMA, optimizer buffers, RNG states) and, in its
header, a JSON document with the rest (epoch, step, history, optimizer hyperparameters, scaler).
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from imgcls.atomic import atomic_path
from imgcls.errors import ImgclsError


def _flat_optimizer(opt: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors, plain = {}, {}
    for pid, state in sd["state"].items():
        for k, v in state.items():
            if torch.is_tensor(v):
                tensors[f"optim.{pid}.{k}"] = v
            else:
                plain[f"{pid}.{k}"] = v
    return tensors, {"param_groups": sd["param_groups"], "plain_state": plain}


def _restore_optimizer(opt: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, v in tensors.items():
        _, pid, k = key.split(".", 2)
        state.setdefault(int(pid), {})[k] = v
    for key, v in meta["plain_state"].items():
        pid, k = key.split(".", 1)
        state.setdefault(int(pid), {})[k] = v
    opt.load_state_dict({"state": state, "param_groups": meta["param_groups"]})


def save_state(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
               ema: nn.Module | None, scaler: torch.amp.GradScaler, info: dict[str, Any]) -> None:
    """Write the training state to `path` (a temporary file, then an atomic rename)."""
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    if ema is not None:
        tensors.update({f"ema.{k}": v for k, v in ema.state_dict().items()})
    opt_tensors, opt_meta = _flat_optimizer(optimizer)
    tensors.update(opt_tensors)
    tensors["rng.torch"] = torch.get_rng_state()
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    np_state = np.random.get_state()
    tensors["rng.numpy"] = torch.from_numpy(np_state[1].astype(np.int64))
    py_state = random.getstate()
    doc = {
        "info": info,
        "optimizer": opt_meta,
        "scaler": scaler.state_dict() if scaler.is_enabled() else None,
        "rng": {"numpy": [np_state[0], int(np_state[2]), int(np_state[3]), float(np_state[4])],
                "python": [py_state[0], list(py_state[1]), py_state[2]]},
    }
    tensors = {k: v.detach().cpu().contiguous().clone() for k, v in tensors.items()}
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata={"imgcls_state": json.dumps(doc)})


def load_state(path: str | os.PathLike, *, model: nn.Module, optimizer: torch.optim.Optimizer,
               ema: nn.Module | None, scaler: torch.amp.GradScaler, device: torch.device) -> dict[str, Any]:
    """Restore everything `save_state` wrote; returns its `info` dict."""
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"no training state to resume from: {path} is missing (the run never finished an epoch?)")
    with safe_open(str(path), framework="pt") as f:
        doc = json.loads(f.metadata()["imgcls_state"])
        tensors = {k: f.get_tensor(k) for k in f.keys()}

    def part(prefix: str) -> dict[str, torch.Tensor]:
        return {k[len(prefix):]: v for k, v in tensors.items() if k.startswith(prefix)}

    try:
        model.load_state_dict(part("model."))
    except RuntimeError as e:
        raise ImgclsError(f"{path} was saved from a different model than this run builds: {str(e).splitlines()[0]}") from None
    if ema is not None:
        ema.load_state_dict(part("ema."))
    # Keys keep their "optim." prefix: `_restore_optimizer` parses "optim.<param id>.<state name>".
    _restore_optimizer(optimizer, {k: v.to(device) for k, v in tensors.items() if k.startswith("optim.")}, doc["optimizer"])
    if doc["scaler"] is not None:
        scaler.load_state_dict(doc["scaler"])
    torch.set_rng_state(tensors["rng.torch"])
    cuda = part("rng.cuda.")
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([cuda[str(i)] for i in range(len(cuda))])
    n = doc["rng"]["numpy"]
    np.random.set_state((n[0], tensors["rng.numpy"].numpy().astype(np.uint32), n[1], n[2], n[3]))
    p = doc["rng"]["python"]
    random.setstate((p[0], tuple(p[1]), p[2]))
    return doc["info"]
