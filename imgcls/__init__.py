"""imgcls: train, understand and ship image classifiers.

    import imgcls
    result = imgcls.train(data={"name": "mnist"}, model="mlp", trainer={"epochs": 1})
    metrics = imgcls.evaluate(result.best)
    predictor = imgcls.Predictor.load(result.best)
    predictor.predict("digit.png")

The names below load on first use (PEP 562), so `import imgcls` and `imgcls --help` do not pay for
importing torch. The subpackages are `training` and `evaluation`: `imgcls.train` and
`imgcls.evaluate` are always the functions, whatever else was imported.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from imgcls._version import __version__

# public name -> the module that defines it
_LAZY = {
    "ImgclsError": "imgcls.errors",
    "Predictor": "imgcls.predict",
    "TrainResult": "imgcls.training.run",
    "create_model": "imgcls.models",
    "evaluate": "imgcls.evaluation.run",
    "list_models": "imgcls.models",
    "load_model": "imgcls.models",
    "read_meta": "imgcls.modelfile",
    "read_metrics": "imgcls.evaluation.metrics",
    "register_model": "imgcls.models",
    "train": "imgcls.training.run",
}

__all__ = ["__version__", *sorted(_LAZY)]

if TYPE_CHECKING:  # for type checkers and IDEs: the same names, imported eagerly
    from imgcls.errors import ImgclsError  # noqa: F401
    from imgcls.evaluation.metrics import read_metrics  # noqa: F401
    from imgcls.evaluation.run import evaluate  # noqa: F401
    from imgcls.modelfile import read_meta  # noqa: F401
    from imgcls.models import create_model, list_models, load_model, register_model  # noqa: F401
    from imgcls.predict import Predictor  # noqa: F401
    from imgcls.training.run import TrainResult, train  # noqa: F401


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'imgcls' has no attribute {name!r}")
    value = getattr(importlib.import_module(_LAZY[name]), name)
    globals()[name] = value  # once loaded, a plain attribute: later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})
