"""Model registry: `@register_model` on a builder, `create_model(name, ...)` to build it.

Builders take keyword-only options; `num_classes` and `in_chans` are passed to every builder, and
`img_size` only to builders that accept it (an MLP needs it, a conv net does not).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable

from torch import nn

from imgcls.errors import ImgclsError

_MODELS: dict[str, Callable[..., nn.Module]] = {}


def register_model(fn: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Register a builder under its function name; a name registered twice raises."""
    name = fn.__name__
    if name in _MODELS:
        raise ValueError(f"model {name!r} is already registered (by {_MODELS[name].__module__})")
    _MODELS[name] = fn
    return fn


def model_task(name: str) -> str:
    """The task a registered model is for (a builder's `task` attribute; classify unless it says)."""
    return getattr(_get(name), "task", "classify")


def list_models(pattern: str = "*", task: str | None = "classify") -> list[str]:
    """Sorted names of registered models of `task` (None: of every task) matching a shell-style pattern."""
    return sorted(n for n in _MODELS if fnmatch.fnmatch(n, pattern) and (task is None or model_task(n) == task))


def model_accepts(name: str, arg: str) -> bool:
    """True if the builder of `name` takes a keyword argument `arg`."""
    return arg in inspect.signature(_get(name)).parameters


def model_builder(name: str) -> Callable[..., nn.Module]:
    """The registered builder of `name` (its signature lists the model's options and their defaults)."""
    return _get(name)


def _get(name: str) -> Callable[..., nn.Module]:
    if name not in _MODELS:
        raise ImgclsError(f"unknown model {name!r}; available: {', '.join(list_models())}")
    return _MODELS[name]


def create_model(name: str, *, num_classes: int, in_chans: int = 3, **kwargs) -> nn.Module:
    """Build a registered model.

    Args:
        name: registered name, see `list_models()`.
        num_classes: size of the classifier output.
        in_chans: input channels (1 for grayscale, 3 for RGB).
        **kwargs: builder options, e.g. `img_size` or `width`; unknown options raise.
    """
    builder = _get(name)
    params = inspect.signature(builder).parameters
    if "img_size" in kwargs and "img_size" not in params:
        kwargs.pop("img_size")  # only size-dependent models (an MLP) need it
    unknown = sorted(k for k in kwargs if k not in params)
    if unknown:
        options = sorted(k for k in params if k not in ("num_classes", "in_chans"))
        raise ImgclsError(
            f"model {name!r} has no option(s) {', '.join(unknown)}; its options are: {', '.join(options) or 'none'}"
        )
    return builder(num_classes=num_classes, in_chans=in_chans, **kwargs)
