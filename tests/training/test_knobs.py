"""Training knobs: gradient accumulation, gradient clipping, the monitored metric, timm's stochastic depth."""

from __future__ import annotations

import csv

import pytest
import torch
from safetensors.torch import load_file
from sklearn.metrics import f1_score
from torch import nn

import imgcls
from imgcls.config import SchedConfig, TrainerConfig, coerce
from imgcls.device import grad_scaler
from imgcls.errors import ImgclsError
from imgcls.training.loop import Budget, macro_f1, train_one_epoch

TINY = {"name": "synthetic", "limit": 64, "val_fraction": 0}
PLAIN = {"flip": False, "crop_pad": 0}  # no augmentation: two runs see the same pixels


def run(tmp_path, name: str, **trainer):
    return imgcls.train(data=TINY, model={"name": "mlp", "hidden": [32]}, optim={"lr": 0.05, "weight_decay": 0.0},
                        aug=PLAIN, sched={"name": "linear"},
                        trainer={"epochs": 2, "threads": 1, "device": "cpu", "progress": False, "deterministic": True,
                                 "project": str(tmp_path), "name": name, **trainer})


def test_two_accumulated_batches_of_8_step_like_one_batch_of_16(tmp_path):
    whole = load_file(str(run(tmp_path, "b16", batch_size=16).last))
    accumulated = load_file(str(run(tmp_path, "b8x2", batch_size=8, accum_steps=2).last))
    single = load_file(str(run(tmp_path, "b8", batch_size=8).last))
    for k in whole:
        assert torch.allclose(whole[k], accumulated[k], atol=1e-5), k
    assert any(not torch.allclose(whole[k], single[k], atol=1e-5) for k in whole)  # batch 8 alone steps twice as often


def one_step(clip: float | None) -> float:
    torch.manual_seed(0)
    net = nn.Linear(10, 3)
    before = torch.cat([p.detach().flatten().clone() for p in net.parameters()])
    opt = torch.optim.SGD(net.parameters(), lr=1.0)
    x, y = torch.randn(16, 10) * 100, torch.randint(0, 3, (16,))
    r = train_one_epoch(net, [(x, y)], opt, sched=SchedConfig(name="constant"), step=0, total_steps=1, budget=Budget(),
                        device=torch.device("cpu"), amp_dtype=None, scaler=grad_scaler(torch.device("cpu"), None),
                        show_progress=False, clip_grad=clip)
    assert r["step"] == 1
    return float((torch.cat([p.detach().flatten() for p in net.parameters()]) - before).norm())


def test_clip_grad_caps_the_step():
    assert one_step(None) > 1.0  # large inputs, large gradients: lr 1 moves the weights far
    assert one_step(0.01) == pytest.approx(0.01, rel=1e-3)  # the whole gradient's norm capped at 0.01, lr 1


def test_macro_f1_is_sklearns():
    g = torch.Generator().manual_seed(0)
    y, p = torch.randint(0, 5, (200,), generator=g), torch.randint(0, 5, (200,), generator=g)
    p[p == 4] = 3  # a class never predicted
    assert macro_f1(p, y, 5) == pytest.approx(f1_score(y.numpy(), p.numpy(), average="macro"))


@pytest.mark.parametrize(("monitor", "pick"), [("val_loss", min), ("val_f1", max), ("val_acc", max)])
def test_the_monitored_metric_picks_the_best_epoch(tmp_path, monitor, pick):
    r = imgcls.train(data={**TINY, "limit": 80, "val_fraction": 0.25}, model={"name": "mlp", "hidden": [16]},
                     optim={"lr": 0.5}, trainer={"epochs": 4, "batch_size": 8, "threads": 1, "device": "cpu", "progress": False,
                                                 "project": str(tmp_path), "monitor": monitor})
    with open(r.run_dir / "results.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    values = [float(row[monitor]) for row in rows]
    assert r.metrics["summary"]["epoch"] == values.index(pick(values)) + 1  # the first epoch reaching the best value


def test_drop_path_rate_reaches_timm_and_a_model_without_it_is_named():
    timm = pytest.importorskip("timm")
    net = imgcls.create_model("timm", arch="resnet18", num_classes=3, drop_path_rate=0.2)
    rates = [m.drop_prob for m in net.modules() if isinstance(m, timm.layers.DropPath)]
    assert rates and max(rates) == pytest.approx(0.2)
    with pytest.raises(ImgclsError, match="vgg11 has no stochastic depth"):
        imgcls.create_model("timm", arch="vgg11", num_classes=3, drop_path_rate=0.2)


@pytest.mark.parametrize(("key", "value", "message"), [("accum_steps", 0, "accum_steps=0 must be >= 1"),
                                                        ("clip_grad", 0.0, "clip_grad=0.0 must be > 0"),
                                                        ("monitor", "val_top5", "trainer.monitor='val_top5'")])
def test_bad_knob_values_are_named(key, value, message):
    with pytest.raises(ImgclsError, match=message):
        coerce(TrainerConfig, {key: value}, "trainer")
