"""Weights from elsewhere into one of our models: `model.pretrained=PATH`.

A source is a PyTorch weights file (`.pt`, `.pth`, `.th`, `.bin`: a state dict, or a dict holding
one under "state_dict", "model", ...), read with `weights_only=True` so that it can never run code,
or a `.safetensors` file (plain tensors, or an imgcls model file). Key prefixes added by wrappers
(`module.` from DataParallel, `_orig_mod.` from torch.compile) are stripped; tensors whose shape does
not fit (a head for another number of classes) are left as initialised and reported.
"""

from __future__ import annotations

import pickle
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from imgcls.errors import ImgclsError

WRAPPER_PREFIXES = ("module.", "_orig_mod.")  # DataParallel / DDP, torch.compile
NESTED_KEYS = ("state_dict", "model_state_dict", "model", "net", "weights")  # where checkpoints keep the weights


@dataclass
class LoadReport:
    path: str
    loaded: list[str]  # keys taken from the file
    missing: list[str]  # model keys the file has no tensor for (left as initialised)
    mismatched: list[str]  # keys in both whose shapes differ (left as initialised), e.g. the head
    unexpected: list[str]  # file keys the model does not have
    adapted: list[str] = field(default_factory=list)  # stem filters converted to the model's input channels

    def summary(self) -> str:
        parts = [f"loaded {len(self.loaded)} tensors from {self.path}"]
        for name, keys in (("adapted to the input channels", self.adapted), ("shape differs, kept as initialised", self.mismatched),
                           ("missing in the file", self.missing), ("not in the model", self.unexpected)):
            if keys:
                parts.append(f"{len(keys)} {name} ({', '.join(keys[:3])}{', ...' if len(keys) > 3 else ''})")
        return "; ".join(parts)


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, by name, on the CPU."""
    path = Path(path)
    if not path.is_file():
        raise ImgclsError(f"pretrained weights not found: {path}")
    if path.suffix == ".safetensors":
        from imgcls.modelfile import read_tensors

        return read_tensors(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ImgclsError(f"refused to load {path}: it is not a plain weights file and unpickling it could run "
                          f"code from the file ({first[:200]})") from None
    except (RuntimeError, EOFError, OSError, ValueError) as e:
        raise ImgclsError(f"{path} could not be read as PyTorch weights: {type(e).__name__}: {str(e)[:200]}") from None
    while isinstance(obj, dict):
        nested = next((obj[k] for k in NESTED_KEYS if isinstance(obj.get(k), dict)), None)
        if nested is None:
            break
        obj = nested
    tensors = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)} if isinstance(obj, dict) else {}
    if not tensors:
        raise ImgclsError(f"no weight tensors found in {path} (expected a state dict, or a dict with 'state_dict')")
    return tensors


def strip_wrapper_prefixes(sd: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Remove prefixes that every key shares because of a wrapper (`module.`, `_orig_mod.`)."""
    stripped = True
    while stripped:
        stripped = False
        for prefix in WRAPPER_PREFIXES:
            if sd and all(k.startswith(prefix) for k in sd):
                sd = {k[len(prefix):]: v for k, v in sd.items()}
                stripped = True
    return sd


def align_keys(sd: dict[str, torch.Tensor], own: dict[str, torch.Tensor], model: nn.Module) -> dict[str, torch.Tensor]:
    """Rename file keys to the model's when the model nests the same network under a prefix.

    A torchvision weights file (`features.0.weight`, `fc.weight`) fits an adapter that keeps the
    network as `body` and its classifier as `head` (`body.features.0.weight`, `head.weight`).
    """
    prefixes = {k.split(".", 1)[0] + "." for k in own if "." in k}
    if getattr(model, "weights_prefix", None):  # a model that says where a classifier's weights go (a detector's trunk)
        prefixes.add(model.weights_prefix)
    best, best_hits = "", sum(k in own for k in sd)
    for p in prefixes:
        hits = sum(p + k in own for k in sd)
        if hits > best_hits:
            best, best_hits = p, hits
    if best:
        sd = {(best + k if best + k in own else k): v for k, v in sd.items()}
    head_path = getattr(model, "head_path", None)  # where the wrapped library model kept its classifier
    if head_path:
        olds = (f"{best}{head_path}.", f"{head_path}.")
        sd = {next(("head." + k[len(o):] for o in olds if k.startswith(o)), k): v for k, v in sd.items()}
    return sd


def adapt_input_channels(weight: torch.Tensor, target: torch.Size) -> torch.Tensor | None:
    """A stem conv's filters for another number of input channels (RGB -> gray sums them), or None."""
    if weight.ndim != 4 or weight.shape[0] != target[0] or weight.shape[2:] != target[2:] or weight.shape[1] == target[1]:
        return None
    from timm.models import adapt_input_conv  # timm's rule: sum for 1 channel, tile and rescale for more

    return adapt_input_conv(int(target[1]), weight.float(), base_chans=int(weight.shape[1])).to(weight.dtype)


@torch.no_grad()
def load_pretrained(model: nn.Module, path: str | Path) -> LoadReport:
    """Copy every tensor of `path` that fits `model` (same name and shape) into it; report the rest.

    A stem whose filters were made for another number of input channels is adapted (RGB weights
    into a grayscale model: the filters summed over the channels), as timm does.
    """
    own = model.state_dict()
    sd = align_keys(strip_wrapper_prefixes(read_state_dict(path)), own, model)
    fit = {k: v for k, v in sd.items() if k in own and own[k].shape == v.shape}
    adapted = []
    for k, v in sd.items():
        if k in own and k not in fit and (new := adapt_input_channels(v, own[k].shape)) is not None:
            fit[k] = new
            adapted.append(k)
    if not fit:
        raise ImgclsError(f"none of the {len(sd)} tensors in {path} fit this model (weights of another architecture?): "
                          f"the file has e.g. {list(sd)[:3]}, the model expects e.g. {list(own)[:3]}")
    model.load_state_dict(fit, strict=False)
    return LoadReport(path=str(path), loaded=sorted(fit), adapted=adapted,
                      missing=sorted(k for k in own if k not in sd and not _is_counter(k)),
                      mismatched=sorted(k for k in sd if k in own and k not in fit),
                      unexpected=sorted(k for k in sd if k not in own and not _is_counter(k)))


def _is_counter(key: str) -> bool:
    return key.endswith("num_batches_tracked")  # batch norm's step counter: not a weight, often absent
