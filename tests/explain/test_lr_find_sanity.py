"""lr-find suggests a sensible rate and leaves the model as it was; sanity overfits one batch, and fails when it must."""

from __future__ import annotations

import torch
from PIL import Image
from torch import nn

from imgcls.explain import lr_find, sanity_check
from imgcls.explain.lr_find import run_range_test, valley
from imgcls.explain.sanity import overfit_batch


def blobs(n: int = 512, d: int = 20, k: int = 4, seed: int = 0):
    g = torch.Generator().manual_seed(seed)
    centers = torch.randn(k, d, generator=g) * 1.5
    y = torch.randint(0, k, (n,), generator=g)
    return centers[y] + torch.randn(n, d, generator=g), y


def test_valley_rule_picks_inside_the_longest_descent():
    losses = [2.0, 1.9, 1.7, 1.4, 1.0, 0.7, 0.5, 0.45, 0.6, 1.5, 5.0]
    i = valley(list(range(len(losses))), losses)
    assert 2 <= i <= 6


def test_range_test_suggests_a_good_sgd_rate_and_restores_the_model():
    x, y = blobs()
    torch.manual_seed(0)
    model = nn.Linear(20, 4)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    r = run_range_test(model, opt, batches, device=torch.device("cpu"), start_lr=1e-5, end_lr=100, steps=100)
    assert 1e-3 <= r.suggestion <= 1.0, r.suggestion  # plain SGD on standardized blobs trains well in this range
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in before.items())
    assert opt.param_groups[0]["lr"] == 0.1 and not opt.state


def test_range_test_stops_when_the_loss_diverges():
    x, y = blobs()
    y = y[torch.randperm(len(y), generator=torch.Generator().manual_seed(1))]  # noise labels: no way to drive loss to 0
    model = nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))
    batches = [(x[i:i + 32], y[i:i + 32]) for i in range(0, len(x), 32)]
    r = run_range_test(model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9), batches,
                       device=torch.device("cpu"), start_lr=1e-4, end_lr=1e4, steps=200)
    assert r.diverged and len(r.lrs) < 200 and r.lrs[-1] > 1.0


def test_lr_find_writes_plot_and_csv(image_folder, tmp_path):
    r = lr_find(data={"name": "folder", "root": str(image_folder(n_train=16))}, model={"name": "simple_cnn", "width": 4},
                trainer={"batch_size": 8, "threads": 1, "project": str(tmp_path)}, steps=30, start_lr=1e-4, end_lr=1.0)
    assert (r.out_dir / "lr_find.csv").read_text().startswith("lr,loss,smoothed_loss")
    img = Image.open(r.out_dir / "lr_find.png")
    assert img.format == "PNG" and img.width > 300
    assert 1e-4 <= r.suggestion <= 1.0


def test_overfit_one_batch_passes_with_a_correct_model_and_fails_with_shuffled_labels():
    x, y = blobs(32, d=10)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 4))
    good = overfit_batch(model, torch.optim.Adam(model.parameters(), lr=1e-2), x, y, max_steps=300)
    assert good.passed and good.accuracy == 1.0 and good.steps < 300 and "passed" in good.message()
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(10, 64), nn.ReLU(), nn.Linear(64, 4))
    bad = overfit_batch(model, torch.optim.Adam(model.parameters(), lr=1e-2), x, y, max_steps=300, shuffle_labels=True)
    assert not bad.passed and bad.accuracy < 1.0 and "FAILED" in bad.message() and "lr-find" in bad.message()


def test_sanity_check_end_to_end(image_folder, tmp_path):
    r = sanity_check(data={"name": "folder", "root": str(image_folder(n_train=12))}, model={"name": "simple_cnn", "width": 4},
                     trainer={"threads": 1, "project": str(tmp_path)}, batch_size=12, max_steps=200)
    assert r.passed, r.message()
    grid = Image.open(r.out_dir / "sanity_batch.png")
    assert grid.format == "PNG" and grid.width > 200
    assert (r.out_dir / "sanity.txt").read_text().startswith("sanity check passed")
