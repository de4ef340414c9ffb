"""A Hydra sweeper on Optuna's own ask-and-tell API: `imgcls train -m hydra/sweeper=optuna 'optim.lr=tag(log, interval(0.01, 1))'`.

Why not Hydra's `hydra-optuna-sweeper`: its last release (1.3.0) requires optuna < 3 and, with the
SQLAlchemy 2 that installs beside it, fails on any `storage=sqlite:///...` (optuna 2.10's schema check
asserts). This plugin takes the same search-space syntax and the same keys under `hydra.sweeper`
(sampler, direction, study_name, storage, n_trials, n_jobs, params), on optuna >= 3.

Search space, from the command line's sweep overrides and/or `hydra.sweeper.params` (key: override value):
- `interval(a, b)`: uniform float; `tag(log, interval(a, b))`: log-uniform; `tag(int, ...)` or `tag(int, log, ...)`: integers.
- `range(a, b[, step])`: integers a, a + step, ... below b; `choice(x, y, ...)` or `x,y`: categorical.
Plain overrides (`trainer.epochs=2`) go to every trial. With `enqueue_defaults` (default true) trial 0
is the configuration as composed, without the search (each searched key at its configured value),
so that a search starts from and is compared with the default recipe.

The task function returns the objective (imgcls train: the monitored validation number); a job
that fails or returns a non-number is told to Optuna as failed and the search goes on. Trials run
`n_jobs` at a time through the configured launcher (hydra/launcher=joblib runs them in parallel).
Optuna is imported when a sweep starts, not when Hydra scans its plugins.
"""

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.core.override_parser.types import ChoiceSweep, IntervalSweep, Override, RangeSweep
from hydra.core.plugins import Plugins
from hydra.plugins.sweeper import Sweeper
from hydra.types import HydraContext, TaskFunction
from omegaconf import DictConfig, OmegaConf

SAMPLERS = ("tpe", "random", "cmaes", "qmc")


@dataclass
class OptunaSweeperConf:
    _target_: str = "hydra_plugins.imgcls_optuna_sweeper.optuna_sweeper.OptunaSweeper"
    sampler: Any = "tpe"  # tpe | random | cmaes | qmc, or a dict with _target_ (an optuna sampler class and its args)
    seed: int | None = None  # the sampler's seed: the same seed and results give the same trials
    direction: str = "maximize"  # maximize | minimize (imgcls train returns trainer.monitor: minimize for val_loss)
    study_name: str | None = None
    storage: str | None = None  # e.g. sqlite:///search.db: a study that can be continued (same study_name) or watched
    n_trials: int = 20  # trials this call runs (a continued study adds this many)
    n_jobs: int = 1  # trials given to the launcher at a time
    enqueue_defaults: bool = True  # trial 0 = the searched keys at their configured values
    params: dict[str, Any] | None = field(default=None)  # key -> sweep expression, e.g. optim.lr: tag(log, interval(0.01, 1))


ConfigStore.instance().store(group="hydra/sweeper", name="optuna", node=OptunaSweeperConf, provider="imgcls")


def distribution(override: Override) -> Any:
    """An Optuna distribution from a sweep override (interval, range, choice)."""
    import optuna.distributions as D

    value = override.value()
    tags = getattr(value, "tags", set()) or set()
    if isinstance(value, IntervalSweep):
        lo, hi = value.start, value.end
        if "int" in tags:  # Hydra parses interval() ends as floats: tag(int, interval(16, 64)) asks for integers
            return D.IntDistribution(int(lo), int(hi), log="log" in tags)
        return D.FloatDistribution(float(lo), float(hi), log="log" in tags)
    if isinstance(value, RangeSweep):
        items = list(override.sweep_iterator())
        if all(isinstance(v, int) for v in items) and value.step and value.step > 0 and len(items) > 1:
            return D.IntDistribution(int(items[0]), int(items[-1]), step=int(value.step), log=False)
        return D.CategoricalDistribution(items)
    if isinstance(value, ChoiceSweep):
        return D.CategoricalDistribution(list(override.sweep_iterator()))
    raise ValueError(f"{override.input_line}: the optuna sweeper takes interval(), range() and choice() sweeps, not {value!r}")


def search_space(arguments: list[str], params: dict[str, Any] | None) -> tuple[dict[str, Any], list[str]]:
    """(key -> distribution, fixed overrides) from the sweep's arguments and hydra.sweeper.params (arguments win)."""
    parser = OverridesParser.create()
    lines = [f"{k}={v}" for k, v in (params or {}).items()]
    space: dict[str, Any] = {}
    fixed: list[str] = []
    for o in parser.parse_overrides(lines) + parser.parse_overrides(list(arguments)):
        key = o.get_key_element()
        if o.is_sweep_override():
            space[key] = distribution(o)
            fixed = [f for f in fixed if f.partition("=")[0] != key]
        else:
            space.pop(key, None)
            fixed = [f for f in fixed if f.partition("=")[0] != key] + [o.input_line]
    return space, fixed


def make_sampler(sampler: Any, seed: int | None) -> Any:
    import optuna
    from hydra.utils import instantiate

    if isinstance(sampler, DictConfig | dict):
        return instantiate(sampler)
    kind = str(sampler).lower()
    if kind not in SAMPLERS:
        raise ValueError(f"hydra.sweeper.sampler={sampler!r}: expected one of {', '.join(SAMPLERS)} or a dict with _target_")
    return {"tpe": lambda: optuna.samplers.TPESampler(seed=seed), "random": lambda: optuna.samplers.RandomSampler(seed=seed),
            "cmaes": lambda: optuna.samplers.CmaEsSampler(seed=seed),
            "qmc": lambda: optuna.samplers.QMCSampler(seed=seed)}[kind]()


class OptunaSweeper(Sweeper):
    def __init__(self, sampler: Any = "tpe", seed: int | None = None, direction: str = "maximize",
                 study_name: str | None = None, storage: str | None = None, n_trials: int = 20, n_jobs: int = 1,
                 enqueue_defaults: bool = True, params: dict[str, str] | None = None) -> None:
        if direction not in ("maximize", "minimize"):
            raise ValueError(f"hydra.sweeper.direction={direction!r}: expected maximize or minimize")
        if n_trials < 1 or n_jobs < 1:
            raise ValueError(f"hydra.sweeper.n_trials={n_trials} and n_jobs={n_jobs} must be >= 1")
        self.sampler, self.seed, self.direction = sampler, seed, direction
        self.study_name, self.storage, self.n_trials, self.n_jobs = study_name, storage, n_trials, n_jobs
        self.enqueue_defaults = enqueue_defaults
        self.params = OmegaConf.to_container(params, resolve=True) if isinstance(params, DictConfig) else params
        self.config: DictConfig | None = None
        self.hydra_context: HydraContext | None = None
        self.launcher = None

    def setup(self, *, hydra_context: HydraContext, task_function: TaskFunction, config: DictConfig) -> None:
        self.config, self.hydra_context = config, hydra_context
        self.launcher = Plugins.instance().instantiate_launcher(hydra_context=hydra_context, task_function=task_function,
                                                                config=config)

    def _defaults(self, space: dict[str, Any]) -> dict[str, Any]:
        """The searched keys at their configured values, where each is inside its distribution."""
        out = {}
        choices = OmegaConf.select(self.config, "hydra.runtime.choices", default=None) or {}
        for key, dist in space.items():
            # a config group (model=choice(mlp, simple_cnn)): the option chosen; else the key's value
            v = choices[key] if key in choices else OmegaConf.select(self.config, key, default=None)
            if v is None:
                continue
            try:
                internal = dist.to_internal_repr(v)
                if dist._contains(internal):
                    out[key] = v
                    continue
            except (ValueError, TypeError):
                pass
            print(f"trial 0: {key}={v!r} (the configured value) is outside the search space; it is sampled instead")
        return out

    def sweep(self, arguments: list[str]) -> list:
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)  # a line per trial is printed below

        assert self.config is not None and self.launcher is not None
        space, fixed = search_space(arguments, self.params)
        monitor = OmegaConf.select(self.config, "trainer.monitor", default=None)
        if monitor is not None and (monitor == "val_loss") == (self.direction == "maximize"):
            print(f"warning: trainer.monitor={monitor} with hydra.sweeper.direction={self.direction}: "
                  f"the search {'maximizes a loss' if monitor == 'val_loss' else 'minimizes ' + str(monitor)}", flush=True)
        if not space:
            raise ValueError("hydra/sweeper=optuna: nothing to search; give sweeps such as 'optim.lr=tag(log, interval(0.01, 1))' "
                             "on the command line or in hydra.sweeper.params")
        study = optuna.create_study(study_name=self.study_name, storage=self.storage,
                                    sampler=make_sampler(self.sampler, self.seed), direction=self.direction,
                                    load_if_exists=True)
        first_job = len(study.trials)  # a continued study numbers its new jobs after the old ones
        if self.enqueue_defaults and not study.trials:
            defaults = self._defaults(space)
            if defaults:
                study.enqueue_trial(defaults)
        print(f"optuna search ({type(study.sampler).__name__}): {self.n_trials} trials, {self.n_jobs} at a time, "
              f"{self.direction} the value each run returns; "
              + ", ".join(f"{k} in {_describe(d)}" for k, d in space.items()), flush=True)
        returns: list = []
        done = 0
        while done < self.n_trials:
            batch = min(self.n_jobs, self.n_trials - done)
            trials = [study.ask(fixed_distributions=space) for _ in range(batch)]
            overrides = [tuple(fixed + [f"{k}={Override._get_value_element_as_str(t.params[k])}" for k in space])
                         for t in trials]
            self.validate_batch_is_legal(overrides)
            results = self.launcher.launch(overrides, initial_job_idx=first_job + done)
            errors = []
            for trial, ret in zip(trials, results):
                try:
                    value = float(ret.return_value)  # raises the job's own exception when it failed
                    if math.isnan(value):
                        raise ValueError("the run returned nan (no validation split to score?)")
                    study.tell(trial, value)
                    print(f"trial {trial.number}: {value:.4f}  "
                          + " ".join(f"{k}={_short(v)}" for k, v in trial.params.items()), flush=True)
                except Exception as e:  # noqa: BLE001 - a failed trial is recorded; the search goes on
                    errors.append(f"{type(e).__name__}: {e}")
                    print(f"trial {trial.number} failed: {errors[-1].splitlines()[0]}", flush=True)
                    study.tell(trial, state=TrialState.FAIL)
            if done == 0 and len(errors) == batch:  # the same bad input would fail every trial
                raise RuntimeError(f"the first {batch} trial(s) all failed; stopping the search. First error: {errors[0]}")
            returns.append(results)
            done += batch
        finished = [t for t in study.trials if t.state == TrialState.COMPLETE]
        sweep_dir = Path(str(self.config.hydra.sweep.dir))
        sweep_dir.mkdir(parents=True, exist_ok=True)
        if finished:
            best = study.best_trial
            OmegaConf.save({"name": "optuna", "direction": self.direction, "best_params": best.params,
                            "best_value": best.value, "best_trial": best.number, "trials": len(study.trials),
                            "complete": len(finished)}, sweep_dir / "optimization_results.yaml")
            print(f"optuna best: trial {best.number}, value {best.value:.4f} with "
                  + " ".join(f"{k}={v}" for k, v in best.params.items()), flush=True)
        else:
            print("optuna: no trial finished", flush=True)
        return returns


def _short(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _describe(d: Any) -> str:
    low, high = getattr(d, "low", None), getattr(d, "high", None)
    if low is not None:
        return f"[{low}, {high}]" + (" (log)" if getattr(d, "log", False) else "")
    return "{" + ", ".join(map(str, d.choices)) + "}"
