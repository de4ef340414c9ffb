"""Progress bars for every long step, switched one way: on a terminal by default, never in logs.

`progress=None` (the default of every verb's `progress` option and of `trainer.progress`) shows a
bar when standard error is a terminal, so CI logs and redirected output stay clean; true or false
forces it. `IMGCLS_PROGRESS=0` (or 1) decides for every verb at once and wins over the default.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterable

from tqdm.auto import tqdm


def show_progress(progress: bool | None = None) -> bool:
    """Whether to draw bars: an explicit true/false, else $IMGCLS_PROGRESS, else "standard error is a terminal"."""
    if progress is not None:
        return bool(progress)
    env = os.environ.get("IMGCLS_PROGRESS", "").strip().lower()
    if env in ("0", "false", "no", "off"):
        return False
    if env in ("1", "true", "yes", "on"):
        return True
    return sys.stderr.isatty()


def progress_bar(iterable: Iterable | None = None, *, desc: str, total: int | None = None, unit: str = "it",
                 progress: bool | None = None, leave: bool = False) -> tqdm:
    """A tqdm bar (a silent one when `show_progress(progress)` is false)."""
    return tqdm(iterable, desc=desc, total=total, unit=unit, disable=not show_progress(progress), leave=leave,
                dynamic_ncols=True, mininterval=0.5)
