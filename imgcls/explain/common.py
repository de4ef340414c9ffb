"""What the study tools share with `train`: the set-up of `imgcls.setup`, from the same option groups.

Kept as the explain tools' entry so that `lr-find` and `sanity` study exactly the model, data and
optimizer that training would make (`imgcls.setup.setup`).
"""

from __future__ import annotations

from typing import Any

from imgcls.setup import Setup, configs, train_loader
from imgcls.setup import setup as _setup

__all__ = ["Setup", "setup", "train_loader"]


def setup(data: Any = None, model: Any = None, optim: Any = None, aug: Any = None, loss: Any = None,
          trainer: Any = None) -> Setup:
    """Data, model (pretrained weights and data-dependent init included) and optimizer, as `train` makes them."""
    return _setup(configs(data=data, model=model, optim=optim, aug=aug, loss=loss, trainer=trainer))
