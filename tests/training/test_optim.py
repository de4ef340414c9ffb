"""Learning-rate schedules, parameter groups, optimizers, and the time budget of `fit`."""

from __future__ import annotations

import math
import subprocess
import sys
import time

import pytest
import torch
from torch import nn

from imgcls.config import OptimConfig, SchedConfig
from imgcls.data.tensor_loader import TensorLoader
from imgcls.errors import ImgclsError
from imgcls.training.loop import Budget, fit
from imgcls.training.optim import build_optimizer, lr_factor, param_groups

# ---------------------------------------------------------------- schedules


def approx(x):
    return pytest.approx(x, abs=1e-9)


def test_cosine():
    s = SchedConfig(name="cosine", final_factor=0.1)
    assert lr_factor(0.0, s) == approx(1.0)
    assert lr_factor(0.5, s) == approx(0.55)
    assert lr_factor(1.0, s) == approx(0.1)
    values = [lr_factor(p / 20, s) for p in range(21)]
    assert all(a >= b for a, b in zip(values, values[1:]))  # never increases
    assert lr_factor(0.0, SchedConfig(name="cosine")) == approx(1.0)
    assert lr_factor(1.0, SchedConfig(name="cosine")) == approx(0.0)


def test_cosine_with_warmup():
    s = SchedConfig(name="cosine", warmup=0.2, final_factor=0.0)
    assert lr_factor(0.0, s) == approx(0.0)
    assert lr_factor(0.05, s) == approx(0.25)
    assert lr_factor(0.1, s) == approx(0.5)  # linear ramp
    assert lr_factor(0.2, s) == approx(1.0)  # peak at the end of warmup
    assert lr_factor(0.6, s) == approx(0.5)  # halfway through the decay
    assert lr_factor(1.0, s) == approx(0.0)


def test_linear():
    s = SchedConfig(name="linear", final_factor=0.2)
    assert lr_factor(0.0, s) == approx(1.0)
    assert lr_factor(0.5, s) == approx(0.6)
    assert lr_factor(1.0, s) == approx(0.2)


def test_step():
    s = SchedConfig(name="step", step_size=0.25, gamma=0.5)
    assert lr_factor(0.0, s) == approx(1.0)
    assert lr_factor(0.2, s) == approx(1.0)
    assert lr_factor(0.25, s) == approx(0.5)  # exactly at a boundary: decayed
    assert lr_factor(0.6, s) == approx(0.25)
    assert lr_factor(1.0, s) == approx(0.5 ** 4)
    d = SchedConfig(name="step")  # defaults: x0.1 every third
    assert lr_factor(0.5, d) == approx(0.1)
    assert lr_factor(0.7, d) == approx(0.01)


def test_onecycle():
    s = SchedConfig(name="onecycle", warmup=0.3, div_factor=20.0, final_factor=0.0)
    assert lr_factor(0.0, s) == approx(1 / 20)
    assert lr_factor(0.15, s) == approx(1 / 20 + (1 - 1 / 20) * 0.5)  # cosine ramp: halfway at half warmup
    assert lr_factor(0.3, s) == approx(1.0)
    assert lr_factor(0.29, s) < 1.0 and lr_factor(0.31, s) < 1.0  # the peak is at warmup
    assert lr_factor(1.0, s) == approx(0.0)
    assert lr_factor(0.25, SchedConfig(name="onecycle")) == approx(1.0)  # warmup 0 means the 1cycle default 0.25


def test_constant_and_clamping():
    s = SchedConfig(name="constant")
    assert [lr_factor(p, s) for p in (0.0, 0.5, 1.0)] == [1.0, 1.0, 1.0]
    c = SchedConfig(name="cosine", final_factor=0.1)
    assert lr_factor(-0.5, c) == lr_factor(0.0, c)
    assert lr_factor(1.5, c) == lr_factor(1.0, c)


def test_unknown_schedule():
    with pytest.raises(ImgclsError, match="unknown schedule 'exp'.*cosine"):
        lr_factor(0.5, SchedConfig(name="exp"))


# ---------------------------------------------------------------- parameter groups and optimizers


def small_net() -> nn.Module:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Flatten(), nn.Linear(4 * 4 * 4, 2))
    net[0].bias.requires_grad_(False)  # frozen: in no group
    return net


def group_of(groups: list[dict], p: torch.Tensor) -> dict:
    [g] = [g for g in groups if any(q is p for q in g["params"])]
    return g


def test_param_groups_keep_decay_off_1d_params():
    net = small_net()
    groups = param_groups(net, OptimConfig(weight_decay=0.01))
    grouped = [p for g in groups for p in g["params"]]
    assert len(grouped) == len({id(p) for p in grouped}) == 5  # each trainable parameter once, frozen bias left out
    assert not any(p is net[0].bias for p in grouped)
    for p in (net[0].weight, net[3].weight):
        assert group_of(groups, p)["weight_decay"] == 0.01
    for p in (net[1].weight, net[1].bias, net[3].bias):
        assert group_of(groups, p)["weight_decay"] == 0.0


@pytest.mark.parametrize("name, cls", [("sgd", torch.optim.SGD), ("adam", torch.optim.Adam), ("adamw", torch.optim.AdamW)])
def test_build_optimizer(name, cls):
    net = small_net()
    opt = build_optimizer(net, OptimConfig(name=name, lr=0.05, weight_decay=0.01))
    assert isinstance(opt, cls)
    assert all(g["lr"] == pytest.approx(0.05) for g in opt.param_groups)
    assert group_of(opt.param_groups, net[1].bias)["weight_decay"] == 0.0
    assert group_of(opt.param_groups, net[3].weight)["weight_decay"] == 0.01


def test_sgd_nesterov_needs_momentum():
    assert build_optimizer(small_net(), OptimConfig(momentum=0.9)).defaults["nesterov"] is True
    assert build_optimizer(small_net(), OptimConfig(momentum=0.0)).defaults["nesterov"] is False


def test_unknown_optimizer():
    with pytest.raises(ImgclsError, match="unknown optimizer 'rmsprop'.*sgd"):
        build_optimizer(small_net(), OptimConfig(name="rmsprop"))


# ---------------------------------------------------------------- time budget


class FakeClock:
    def __init__(self, t: float = 100.0):
        self.t = t

    def __call__(self) -> float:
        return self.t


def test_budget_follows_time_share():
    clock = FakeClock()
    b = Budget(seconds=10, clock=clock)
    b.start()
    assert b.elapsed() == 0 and not b.exhausted()
    assert b.progress(0, 100) == 0.0
    clock.t += 5
    assert b.progress(10, 100) == pytest.approx(0.5)  # time share (0.5) ahead of step share (0.1)
    assert b.progress(80, 100) == pytest.approx(0.8)  # step share ahead: the larger wins
    clock.t += 4.999
    assert not b.exhausted()
    clock.t += 0.001
    assert b.exhausted() and b.elapsed() == pytest.approx(10)


def test_budget_counts_earlier_sessions():
    clock = FakeClock()
    b = Budget(seconds=10, clock=clock, spent_before=6)
    b.start()
    clock.t += 2
    assert b.elapsed() == pytest.approx(8) and b.progress(0, 100) == pytest.approx(0.8)
    clock.t += 2
    assert b.exhausted()


def test_no_budget():
    clock = FakeClock()
    b = Budget(clock=clock)
    b.start()
    clock.t += 1e9
    assert not b.exhausted() and b.progress(3, 4) == 0.75


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="process_age reads /proc (Linux only)")
def test_process_age_counts_time_before_train():
    from imgcls.training.run import process_age

    age = process_age()
    assert 0 < age < 86400  # pytest has been running for a while, not for days
    time.sleep(0.05)
    assert process_age() >= age
    # A fresh process that idles 0.5 s before asking has an age of at least 0.5 s.
    out = subprocess.run([sys.executable, "-c", "import time; time.sleep(0.5); "
                          "from imgcls.training.run import process_age; print(process_age())"],
                         capture_output=True, text=True, check=True).stdout
    assert float(out) >= 0.45


class OneSecondPerStep(nn.Module):
    """A linear classifier whose every training forward pass advances a fake clock by one second."""

    def __init__(self, clock: FakeClock):
        super().__init__()
        self.clock = clock
        self.lin = nn.Linear(3 * 4 * 4, 2)
        self.train_steps = 0

    def forward(self, x):
        if self.training:
            self.clock.t += 1.0
            self.train_steps += 1
        return self.lin(x.flatten(1))


def test_fit_stops_within_the_time_budget(tmp_path):
    torch.manual_seed(0)
    images = torch.randint(0, 256, (32, 3, 4, 4), dtype=torch.uint8)
    loader = TensorLoader(images, torch.arange(32) % 2, batch_size=8, mean=[0.5] * 3, std=[0.25] * 3, shuffle=True)
    clock = FakeClock()
    model = OneSecondPerStep(clock)
    sched = SchedConfig(name="cosine")
    opt = build_optimizer(model, OptimConfig(lr=0.1))
    saved = []
    result = fit(model, loader, None, opt, run_dir=tmp_path, epochs=10, sched=sched, device=torch.device("cpu"),
                 amp_dtype=None, scaler=torch.amp.GradScaler("cpu", enabled=False),
                 save_model=lambda m, which, metrics: saved.append((which, metrics["epoch"])),
                 budget=Budget(seconds=5.0, clock=clock), show_progress=False)
    # 4 steps per epoch, 40 planned; the budget allows 5 one-second steps, so epoch 2 stops after one step.
    assert model.train_steps == 5
    assert [r["epoch"] for r in result.history] == [1, 2]
    assert result.train_seconds == pytest.approx(5.0)
    assert ("last", 2) in saved and ("best", 2) in saved  # without validation, best is the last epoch
    # The schedule followed the clock, not the step count: the last step of epoch 1 ran at 3 s of 5.
    assert result.history[0]["lr"] == pytest.approx(0.1 * lr_factor(3 / 5, sched), rel=1e-5)
    assert result.history[1]["lr"] == pytest.approx(0.1 * lr_factor(4 / 5, sched), rel=1e-5)
    assert (tmp_path / "state.safetensors").is_file()
    assert len((tmp_path / "results.csv").read_text().splitlines()) == 3  # header + 2 epochs


def test_fit_without_budget_runs_every_epoch(tmp_path):
    images = torch.randint(0, 256, (16, 3, 4, 4), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    loader = TensorLoader(images, torch.arange(16) % 2, batch_size=8, mean=[0.5] * 3, std=[0.25] * 3)
    clock = FakeClock()
    model = OneSecondPerStep(clock)
    opt = build_optimizer(model, OptimConfig(lr=0.1))
    result = fit(model, loader, None, opt, run_dir=tmp_path, epochs=3, sched=SchedConfig(name="linear"),
                 device=torch.device("cpu"), amp_dtype=None, scaler=torch.amp.GradScaler("cpu", enabled=False),
                 save_model=lambda *a: None, budget=Budget(clock=clock), show_progress=False)
    assert model.train_steps == 6 and len(result.history) == 3
    # Step-share schedule: the last step (step 5 of 6) runs at lr factor 1 - 5/6.
    assert result.history[-1]["lr"] == pytest.approx(0.1 * (1 - 5 / 6), rel=1e-5)
    assert math.isfinite(result.history[-1]["train_loss"])
