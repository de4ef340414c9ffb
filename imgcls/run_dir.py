"""Run folders: a new one per run (an existing one is never reused unless resuming)."""

from __future__ import annotations

import re
from pathlib import Path

from imgcls.errors import ImgclsError


def refuse_overwrite(path: Path, overwrite: bool) -> None:
    """Nothing a user has is replaced without asking: an existing output file needs overwrite=true."""
    if path.exists() and not overwrite:
        raise ImgclsError(f"{path} exists; pass overwrite=true to replace it, or out=OTHER_PATH")


def new_run_dir(project: str | Path, name: str) -> Path:
    """Create project/name, or name-2, name-3, ... if taken (created atomically, so parallel runs don't collide)."""
    project = Path(project)
    project.mkdir(parents=True, exist_ok=True)
    for k in range(1, 10_000):
        d = project / (name if k == 1 else f"{name}-{k}")
        try:
            d.mkdir()
            return d
        except FileExistsError:
            continue
    raise ImgclsError(f"too many runs named {name!r} in {project}")


def resume_dir(project: str | Path, name: str, resume: bool | str) -> Path:
    """The run to continue: a given folder, or the newest project/name[-k] with a training state."""
    if isinstance(resume, str) and resume.lower() not in ("true", "1", "yes"):
        d = Path(resume)
        if not (d / "state.safetensors").is_file():
            raise ImgclsError(f"cannot resume {d}: no state.safetensors there (is it a run folder?)")
        return d
    pat = re.compile(rf"^{re.escape(name)}(-\d+)?$")
    runs = [d for d in Path(project).glob(f"{name}*") if pat.match(d.name) and (d / "state.safetensors").is_file()]
    if not runs:
        raise ImgclsError(f"nothing to resume: no run folder {Path(project) / name}[-N] with a state.safetensors; "
                          f"pass trainer.resume=PATH or trainer.name=NAME")
    return max(runs, key=lambda d: (d / "state.safetensors").stat().st_mtime)
