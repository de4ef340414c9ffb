"""model=auto on photos: the cache lookup of pretrained files, the choice, batch sizes that fit, the CLI's recipe."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from imgcls.config import DataConfig
from imgcls.models.hub import cached_weights
from imgcls.setup import activation_bytes, choose_model, configs, fit_batch, setup

MOBILENET_V2 = "mobilenet_v2-b0353104.pth"  # torchvision's file name for its first ImageNet weights


def write_photos(root: Path, n: int = 8, size=(400, 300), classes=("cat", "dog")) -> Path:
    """ROOT/<class>/k.jpg: photo-sized JPEGs, a class = a colour cast over noise."""
    rng = np.random.default_rng(0)
    for c, cls in enumerate(classes):
        d = root / cls
        d.mkdir(parents=True, exist_ok=True)
        for k in range(n):
            arr = rng.integers(0, 255, (size[1], size[0], 3))
            arr[..., c % 3] = 230
            Image.fromarray(arr.astype(np.uint8)).save(d / f"{k}.jpg", quality=85)
    return root


@pytest.fixture
def empty_caches(tmp_path, monkeypatch):
    """Torch hub's and the HF cache point at empty folders: nothing pretrained is on disk."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.setattr("imgcls.setup.PRETRAINED_CANDIDATES", (("torchvision", "mobilenet_v3_large"),
                                                               ("torchvision", "mobilenet_v2")))
    return tmp_path / "torch_home" / "hub" / "checkpoints"


def test_torchvision_weights_are_found_in_torch_hub_cache(empty_caches):
    assert cached_weights("torchvision", "mobilenet_v2") is None
    empty_caches.mkdir(parents=True)
    (empty_caches / MOBILENET_V2).write_bytes(b"x")
    assert cached_weights("torchvision", "mobilenet_v2") == str(empty_caches / MOBILENET_V2)
    assert cached_weights("torchvision", "resnet18") is None  # another model's file is not taken
    assert cached_weights("torchvision", "no_such_net") is None


def test_auto_on_small_images_keeps_a_cifar_net(image_folder):
    c = choose_model(DataConfig(name="folder", root=str(image_folder(size=16))))
    assert (c.model.name, c.photos, c.recipe) == ("resnet_cifar20", False, None)
    assert "small images" in c.lines[0]


def test_auto_on_photos_without_weights_trains_photonet_and_says_where_weights_go(tmp_path, empty_caches):
    root = write_photos(tmp_path / "photos", n=3)
    c = choose_model(DataConfig(name="folder", root=str(root)), "cpu")
    assert (c.model.name, c.image_size, c.photos, c.pretrained, c.recipe) == ("photonet", 112, True, False,
                                                                             "photo_scratch")
    assert "no pretrained weights" in c.lines[0] and str(empty_caches) in c.lines[1]


def test_auto_on_photos_with_weights_in_the_cache_fine_tunes_them(tmp_path, empty_caches):
    weights = os.environ.get("IMGCLS_WEIGHTS")
    if not weights or not (Path(weights) / "imagenet" / "mobilenet_v2-imagenet-fp32.pth").is_file():
        pytest.skip("IMGCLS_WEIGHTS with imagenet/mobilenet_v2-imagenet-fp32.pth not set: fine-tune choice not checked")
    empty_caches.mkdir(parents=True)
    shutil.copy(Path(weights) / "imagenet" / "mobilenet_v2-imagenet-fp32.pth", empty_caches / MOBILENET_V2)
    root = write_photos(tmp_path / "photos", n=3)
    c = choose_model(DataConfig(name="folder", root=str(root)), "cpu")
    assert (c.model.name, c.model.args, c.image_size, c.recipe) == ("torchvision", {"arch": "mobilenet_v2"}, 160,
                                                                   "photo_finetune")
    assert c.model.pretrained == str(empty_caches / MOBILENET_V2)
    s = setup(configs(data={"name": "folder", "root": str(root), "val_fraction": 0}, model="auto",
                      trainer={"device": "cpu", "threads": 1}))
    assert s.bundle.image_size == (160, 160) and s.bundle.mean == [0.485, 0.456, 0.406]
    assert any("loaded" in m for m in s.messages)  # the weights went in (the head kept its fresh init)


def test_activation_estimate_counts_every_module_output():
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 8 * 8, 2))
    assert activation_bytes(net, (3, 8, 8), torch.device("cpu")) == 4 * (256 + 256 + 256 + 2)
    assert fit_batch(512, per_image=1000, budget=30_000, train=True) == 10  # x3 in training
    assert fit_batch(512, per_image=1000, budget=30_000, train=False) == 30
    assert fit_batch(8, per_image=1000, budget=10**9, train=True) == 8  # never above what was asked
    assert fit_batch(8, per_image=10**12, budget=1, train=True) == 1


def test_defaults_on_200_photos_choose_photonet_and_batches_the_memory_estimate_bounds(tmp_path, empty_caches,
                                                                                          monkeypatch):
    root = write_photos(tmp_path / "photos", n=100)  # 200 JPEGs of 400x300
    budget = 2 * 2**30
    monkeypatch.setattr("imgcls.setup.available_memory", lambda device: budget)
    s = setup(configs(data={"name": "folder", "root": str(root)}, model="auto",
                      trainer={"device": "cpu", "threads": 1, "batch_size": 4096, "eval_batch_size": 4096}))
    assert s.cfg.model.name == "photonet" and s.bundle.image_size == (112, 112) and not s.bundle.in_memory
    per_image = activation_bytes(s.model, (3, 112, 112), s.device)
    t = s.cfg.trainer
    assert 1 <= t.batch_size < 4096 and t.batch_size * per_image * 3 <= budget * 0.5
    assert t.batch_size < t.eval_batch_size < 4096 and t.eval_batch_size * per_image <= budget * 0.5
    assert any("batch sizes lowered to fit in memory" in m for m in s.messages)
    monkeypatch.setattr("imgcls.setup.available_memory", lambda device: 10**15)
    roomy = setup(configs(data={"name": "folder", "root": str(root)}, model="auto",
                          trainer={"device": "cpu", "threads": 1, "batch_size": 16}))
    assert roomy.cfg.trainer.batch_size == 16  # what fits is kept as asked


def test_cli_on_photos_picks_the_recipe_and_says_why(tmp_path, empty_caches):
    root = write_photos(tmp_path / "photos", n=6, size=(160, 120))
    env = {**os.environ, "TORCH_HOME": str(tmp_path / "torch_home"), "IMGCLS_CACHE": str(tmp_path / "cache")}
    p = subprocess.run([sys.executable, "-m", "imgcls", "train", "data=folder", f"data.root={root}", "trainer.epochs=1",
                        "trainer.threads=1", "trainer.progress=false", "data.workers=0", "data.image_size=72",
                        f"trainer.project={tmp_path / 'runs'}"], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stdout[-3000:] + p.stderr[-3000:]
    lines = p.stdout.splitlines()
    # the recipe (no weights in this TORCH_HOME, and none in a real HF cache for the first candidate only
    # if the machine has none: so only the recipe line's form is checked) and the choice come first
    assert lines[0].startswith("recipe: experiment=photo_") and lines[1].startswith("model=auto: photos")
    assert "peak memory" in p.stdout


def test_auto_reads_the_data_once_when_its_choice_keeps_the_data_config(image_folder, monkeypatch):
    """model=auto probes the data to choose; setup reuses that bundle instead of loading it again."""
    import imgcls.setup as setup_module

    calls = []
    real = setup_module.load_data
    monkeypatch.setattr(setup_module, "load_data", lambda cfg: calls.append(cfg) or real(cfg))
    s = setup(configs(data={"name": "folder", "root": str(image_folder(size=16))}, model="auto",
                      trainer={"device": "cpu", "threads": 1}))
    assert s.cfg.model.name == "resnet_cifar20" and len(calls) == 1


def test_the_clis_choice_is_reused_by_the_run_it_starts(tmp_path, image_folder, monkeypatch, empty_caches):
    """The CLI chooses the recipe before composing (a folder scan); the run's setup takes that choice, not a second scan."""
    import imgcls.cli as cli
    import imgcls.setup as setup_module

    root = image_folder(size=96, n_train=4, n_test=2)
    calls = []
    real = setup_module.load_data
    monkeypatch.setattr(setup_module, "load_data", lambda cfg: calls.append(cfg.root) or real(cfg))
    argv = ["data=folder", f"data.root={root}", "trainer.device=cpu"]
    assert cli._auto_recipe(argv)[0].startswith("experiment=photo_")
    assert len(calls) == 1
    from imgcls.config import DataConfig, coerce

    dcfg = coerce(DataConfig, cli.compose_train(argv)["data"], "data")
    choice = setup_module.choose_model(dcfg, "cpu")
    assert len(calls) == 1 and choice.photos  # taken from the pre-pass
    setup_module.choose_model(dcfg, "cpu")
    assert len(calls) == 2  # used once: a later call looks again (the files may have changed)
