"""Ablation runs through a Hydra launcher: `imgcls ablate ablation=NAME hydra/launcher=joblib hydra.launcher.n_jobs=2`.

`LauncherRunner` is the runner the CLI hands `imgcls.ablation.run_ablation` when the ablate command
names a launcher other than Hydra's basic one: each batch of runs becomes one `launcher.launch` call of
`imgcls train` jobs, so whatever the launcher plugin does (joblib: n processes on this machine;
submitit_local / submitit_slurm: jobs on a SLURM cluster; ray) the study does. The ablation package
itself imports no Hydra: it only calls `runner.run_batch`.

Each job composes `imgcls train` with its overrides on the worker, trains with its time budget counted
from the job's start, and writes trial.json into its job folder (`<study>/launched/<time>/<n>/`), from
which the run folder is read back. Job outputs go where the launcher puts them (joblib: this console;
submitit: `<job folder>/.submitit/`).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imgcls.errors import ImgclsError

BASIC = "hydra._internal.core_plugins.basic_launcher.BasicLauncher"


def launcher_overrides() -> list[str]:
    """What makes the running command's launcher in another composition: `hydra/launcher=CHOICE` (chosen on the
    command line or in a config), the `hydra.launcher.*` overrides and `hydra.searchpath` (a launcher config of
    the user's own). Empty outside Hydra."""
    from hydra.core.hydra_config import HydraConfig

    if not HydraConfig.initialized():
        return []
    hc = HydraConfig.get()
    given = [o for o in hc.overrides.hydra if o.lstrip("+~").startswith(("hydra.launcher", "hydra.searchpath"))]
    choice = hc.runtime.choices.get("hydra/launcher")
    return ([f"hydra/launcher={choice}"] if choice else []) + given


def uses_launcher() -> bool:
    """True when the running command chose a launcher other than Hydra's basic (in-process, sequential) one."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.initialized() and HydraConfig.get().launcher.get("_target_") != BASIC


class LauncherRunner:
    """Runs batches of `imgcls train` override lists through the Hydra launcher `overrides` configure.

    `batch` runs are handed to the launcher at a time (null: the launcher's own parallelism: joblib's
    n_jobs, submitit_slurm's array_parallelism; else the number of CPU cores); a batch's rows reach
    results.csv when the batch returns (a study stopped mid-batch trains that batch's runs again).
    """

    def __init__(self, task: Callable[[Any], Any], overrides: list[str], jobs_dir: str | Path, batch: int | None = None):
        self.task = task  # the CLI's `imgcls train` task function (it writes trial.json in a multirun)
        self.overrides = list(overrides)
        self.jobs_dir = Path(jobs_dir) / time.strftime("%Y-%m-%d_%H-%M-%S")
        self.next_job = 0
        self.parallel = batch or self._launcher_parallelism()

    def _compose(self):
        from hydra._internal.hydra import Hydra
        from hydra._internal.utils import create_config_search_path
        from hydra.core.global_hydra import GlobalHydra
        from hydra.types import RunMode

        GlobalHydra.instance().clear()
        hydra = Hydra.create_main_hydra2(task_name="imgcls train", config_search_path=create_config_search_path("pkg://imgcls.conf"))
        cfg = hydra.compose_config("train", overrides=[*self.overrides, f"hydra.sweep.dir={self.jobs_dir}", "hydra.mode=MULTIRUN"],
                                   run_mode=RunMode.MULTIRUN, with_log_configuration=False)
        return hydra, cfg

    def _launcher_parallelism(self) -> int:
        from hydra.core.global_hydra import GlobalHydra

        try:
            _, cfg = self._compose()
        finally:
            GlobalHydra.instance().clear()
        launcher = cfg.hydra.launcher
        n = launcher.get("n_jobs") or launcher.get("array_parallelism") or -1  # submitit_local: runs what it is given
        return int(os.cpu_count() or 1) if n < 0 else int(n)

    def describe(self) -> str:
        return f"Hydra launcher {' '.join(self.overrides)}, {self.parallel} run(s) per launch"

    def run_batch(self, jobs: list[tuple[list[str], Path]]) -> list[Path | BaseException]:
        """Launch every (overrides, log file) at once; a run folder per job, or the exception that failed it."""
        from hydra._internal.callbacks import Callbacks
        from hydra.core.global_hydra import GlobalHydra
        from hydra.core.plugins import Plugins
        from hydra.core.singleton import Singleton
        from hydra.types import HydraContext

        from imgcls.cli.compose import register_configs
        from imgcls.cli.sweep import TRIAL_FILE

        register_configs()
        first = self.next_job
        self.next_job += len(jobs)
        for overrides, log in jobs:
            log.write_text(f"$ imgcls train {' '.join(overrides)}\n(through {self.describe()}; job folders in {self.jobs_dir})\n")
        # A launcher that runs jobs in this process (joblib with n_jobs=1, the basic one) sets Hydra's singletons
        # (HydraConfig, the config store) to each job's: the running `imgcls ablate` gets its own back afterwards.
        state = Singleton.get_state()
        try:
            hydra, cfg = self._compose()
            launcher = Plugins.instance().instantiate_launcher(
                hydra_context=HydraContext(config_loader=hydra.config_loader, callbacks=Callbacks(cfg)),
                task_function=self.task, config=cfg)
            returns = launcher.launch([tuple(o) for o, _ in jobs], initial_job_idx=first)
        finally:
            GlobalHydra.instance().clear()
            Singleton.set_state(state)
        out: list[Path | BaseException] = []
        for i, ret in enumerate(returns):
            record = self.jobs_dir / str(first + i) / TRIAL_FILE
            try:
                ret.return_value  # noqa: B018 - raises the job's own exception when it failed
                trial = json.loads(record.read_text())
                out.append(Path(trial["run_dir"]))
            except BaseException as e:  # noqa: BLE001 - one failed run; the study goes on
                if isinstance(e, KeyboardInterrupt):
                    raise
                out.append(e if not isinstance(e, FileNotFoundError) else ImgclsError(f"job {first + i} left no {record}"))
        return out
