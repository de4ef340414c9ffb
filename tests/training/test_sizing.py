"""A recipe sized to the machine (imgcls.sizing, trainer.size_choices) and the CPU detection it reports."""

from __future__ import annotations

import dataclasses

import pytest
import torch

import imgcls
from imgcls.config import TrainerConfig, coerce
from imgcls.device import CpuInfo, cpu_info
from imgcls.errors import ImgclsError
from imgcls.setup import configs, setup
from imgcls.sizing import Cost, choose_size, epochs_that_fit, measure_cost

WIDE, MID, NARROW = {"widths": [64, 256, 256]}, {"widths": [64, 128, 128]}, {"widths": [32, 64, 64]}


def costs(*train_ms: float, eval_ms: float = 0.5) -> list[Cost]:
    return [Cost({"i": i}, t / 1e3, eval_ms / 1e3) for i, t in enumerate(train_ms)]


def test_epochs_that_fit_leave_the_test_evaluation_its_time():
    c = Cost({}, train_image=0.002, eval_image=0.001)
    # 600 s, 10,000 test images at 1 ms = 10 s; 590 s / (50,000 x 2 ms) = 5.9 epochs
    assert epochs_that_fit(c, seconds=600, n_train=50_000, n_eval=10_000) == pytest.approx(5.9)
    assert epochs_that_fit(c, seconds=5, n_train=50_000, n_eval=10_000) == 0.0


@pytest.mark.parametrize(("ms_per_image", "expected"), [
    ((2.0, 1.0, 0.5), 0),  # a fast machine: the widest net trains 5.9 epochs >= 4
    ((4.0, 2.0, 1.0), 1),  # 2x slower: the widest gets 2.95, the next 5.9
    ((20.0, 10.0, 5.0), 2),  # 10x slower: none fits 4 epochs, the smallest (1.18 epochs) is taken
])
def test_the_widest_candidate_that_fits_is_chosen(ms_per_image, expected):
    choice = choose_size(costs(*ms_per_image), seconds=600, n_train=50_000, n_eval=10_000, min_epochs=4)
    assert choice.cost.args == {"i": expected}
    assert choice.epochs == pytest.approx(epochs_that_fit(choice.cost, seconds=600, n_train=50_000, n_eval=10_000))
    lines = choice.lines(4)
    assert f"'i': {expected}" not in lines[-1] and f"model.i={expected}" in lines[-1]
    assert ("none reaches" in lines[-1]) == (expected == 2)


def test_candidates_after_the_chosen_one_are_not_measured_and_measuring_spends_the_budget():
    asked: list[int] = []
    left = [600.0]

    def lazily():
        for c in costs(4.0, 2.0, 1.0):
            asked.append(c.args["i"])
            left[0] -= 50  # each measurement costs time
            yield c

    choice = choose_size(lazily(), seconds=lambda: left[0], n_train=50_000, n_eval=10_000, min_epochs=4)
    assert asked == [0, 1] and choice.cost.args == {"i": 1}
    assert choice.seconds == 500  # the time left when the second candidate was judged
    with pytest.raises(ValueError):
        choose_size([], seconds=1, n_train=1, n_eval=1, min_epochs=1)


def test_measure_cost_times_training_and_tta_and_leaves_no_gradients():
    net = imgcls.create_model("fastnet", num_classes=3, widths=[8, 8, 8])
    x, y = torch.randn(16, 3, 32, 32), torch.arange(16) % 3
    train_image, eval_image = measure_cost(net, x, y, tta=1)
    assert train_image > 0 and eval_image > 0
    assert all(p.grad is None for p in net.parameters())
    assert net.training
    wide = imgcls.create_model("fastnet", num_classes=3, widths=[64, 256, 256])
    assert measure_cost(wide, x, y, tta=1)[0] > train_image  # 250x the convolution work costs more per image


def tiny(**trainer):
    return configs(data={"name": "synthetic", "limit": 400, "val_fraction": 0}, model={"name": "fastnet", **MID},
                   optim={"lr": 0.05}, trainer={"batch_size": 100, "eval_batch_size": 100, "init_images": 100,
                                                "progress": False, "time_budget": 600, "tta": 1, **trainer})


def test_setup_trains_the_candidate_that_fits_the_time_left():
    cfg = tiny(size_choices=[WIDE, NARROW], size_min_epochs=2)
    plenty = setup(cfg, seconds_left=lambda: 1e6)
    assert plenty.cfg.model.args["widths"] == WIDE["widths"]
    assert plenty.model.blocks[-1].conv2.out_channels == 256
    assert any("sized to this machine: training model.widths=[64, 256, 256]" in m for m in plenty.messages)
    none = setup(cfg, seconds_left=lambda: 1e-3)
    assert none.cfg.model.args["widths"] == NARROW["widths"]
    assert none.model.blocks[-1].conv2.out_channels == 64
    assert any("none reaches >= 2 epochs" in m for m in none.messages)
    # the seed alone decides the initial weights: sizing's trial nets draw nothing the real one sees
    plain = setup(dataclasses.replace(cfg, model=dataclasses.replace(cfg.model, args=dict(NARROW)),
                                      trainer=dataclasses.replace(cfg.trainer, size_choices=None)))
    for a, b in zip(none.model.state_dict().values(), plain.model.state_dict().values()):
        assert torch.equal(a, b)


def test_size_choices_need_a_time_budget_and_a_list_of_overrides():
    s = setup(tiny(time_budget=None, size_choices=[WIDE]))
    assert s.cfg.model.args["widths"] == MID["widths"]
    assert any("size_choices is ignored without trainer.time_budget" in m for m in s.messages)
    for bad in ([], [[64, 128, 128]], "wide"):
        with pytest.raises(ImgclsError, match="size_choices"):
            coerce(TrainerConfig, {"size_choices": bad}, "trainer")


def test_the_ten_minute_recipe_is_sized_to_the_machine():
    from imgcls.cli import compose_train

    t = compose_train(["experiment=cifar10_cpu10"])["trainer"]
    widths = [c["widths"] for c in t["size_choices"]]
    assert t["time_budget"] == 600 and widths[0] == [64, 256, 256]
    # widest first: each candidate costs less than the one before
    assert all(sum(a * a for a in w) > sum(b * b for b in v) for w, v in zip(widths, widths[1:]))


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16

processor\t: 1
model name\t: AMD EPYC 9R14
flags\t\t: fpu sse sse2 avx avx2 fma avx512f avx512_vnni avx512_bf16
"""


def test_cpu_detection_reads_the_flags_at_run_time():
    info = cpu_info(CPUINFO)
    assert info.name == "AMD EPYC 9R14"
    assert {"avx2", "avx512f", "avx512_bf16"} <= info.flags and "amx_bf16" not in info.flags
    assert info.describe().startswith("AMD EPYC 9R14 (avx2, fma, avx512f, avx512_vnni, avx512_bf16; torch kernels ")
    avx2_only = cpu_info(CPUINFO.replace(" avx512f avx512_vnni avx512_bf16", ""))
    assert avx2_only.flags & {"avx512f", "avx512_bf16"} == set()
    assert not CpuInfo("x", avx2_only.flags, "AVX2").native_bf16
    assert CpuInfo("x", info.flags, "AVX512").native_bf16
    assert not CpuInfo("x", info.flags, "AVX2").native_bf16  # kernels lowered to AVX2 (ATEN_CPU_CAPABILITY=avx2)
    assert cpu_info("").flags == frozenset() and cpu_info("").name
    assert cpu_info().capability == torch.backends.cpu.get_cpu_capability()


def test_experiment_cifar10_is_the_recipe_for_the_device(monkeypatch, capsys):
    from imgcls.cli import _device_recipe

    argv = ["trainer.time_budget=300", "experiment=cifar10", "data.root=/d"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _device_recipe(argv) == ["trainer.time_budget=300", "experiment=cifar10_cpu10", "data.root=/d"]
    line = capsys.readouterr().out
    assert line.startswith("recipe: experiment=cifar10_cpu10, because no CUDA GPU") and cpu_info().name in line
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a: "NVIDIA H200")
    assert _device_recipe(argv)[1] == "experiment=cifar10_fast"
    assert "a CUDA GPU (NVIDIA H200)" in capsys.readouterr().out
    assert _device_recipe([*argv, "trainer.device=cpu"])[1] == "experiment=cifar10_cpu10"  # the device asked for wins
    assert _device_recipe(["experiment=cifar10_fast"]) == ["experiment=cifar10_fast"]  # a named recipe is kept


def test_cpu_bf16_only_with_native_bf16_and_a_measured_gain(monkeypatch):
    import imgcls.device
    import imgcls.sizing
    from imgcls.device import amp_dtype
    from imgcls.setup import cpu_bf16_choice

    cfg = tiny(size_choices=[NARROW])
    s = setup(cfg, seconds_left=lambda: 1e6)
    no_bf16 = CpuInfo("AVX2 box", frozenset({"avx2"}), "AVX2")
    monkeypatch.setattr(imgcls.device, "cpu_info", lambda: no_bf16)
    use, line = cpu_bf16_choice(s.cfg, s.bundle, torch.device("cpu"), False)
    assert not use and "no native bf16" in line and "AVX2 box" in line
    monkeypatch.setattr(imgcls.device, "cpu_info", lambda: CpuInfo("bf16 box", frozenset({"avx512_bf16"}), "AVX512"))
    for speedup, expected in ((1.8, True), (1.0, False)):
        monkeypatch.setattr(imgcls.sizing, "bf16_speedup", lambda *a, v=speedup: v)
        use, line = cpu_bf16_choice(s.cfg, s.bundle, torch.device("cpu"), False)
        assert use is expected and f"{speedup:.2f}x" in line
    # the decision reaches the run: bf16 autocast on the CPU only when setup kept it
    assert amp_dtype(torch.device("cpu"), True, True) == torch.bfloat16
    assert amp_dtype(torch.device("cpu"), True, False) is None
    monkeypatch.setattr(imgcls.sizing, "bf16_speedup", lambda *a: 1.8)
    on = setup(tiny(size_choices=[NARROW], cpu_bf16=True), seconds_left=lambda: 1e6)
    assert on.cfg.trainer.cpu_bf16 is True and any(m.startswith("trainer.cpu_bf16: bf16 autocast") for m in on.messages)
