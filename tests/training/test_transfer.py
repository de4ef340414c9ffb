"""Transfer learning: frozen backbones stay put, fine-tuning unfreezes on time with discriminative lrs,
an imgcls model file seeds another data set, class weights and the balanced sampler."""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from sklearn.utils.class_weight import compute_class_weight

from imgcls.config import AugConfig, LossConfig, ModelConfig, OptimConfig, SchedConfig
from imgcls.data.bundle import DataBundle, Split
from imgcls.data.loaders import make_loader
from imgcls.errors import ImgclsError
from imgcls.models import create_model
from imgcls.models.build import build_model, layer_groups
from imgcls.training.loop import freeze_norm_statistics
from imgcls.training.optim import apply_schedule, build_optimizer, set_epoch
from imgcls.training.run import class_weights_of, train

CNN = {"name": "simple_cnn", "width": 4}
loop_mod = importlib.import_module("imgcls.training.loop")


def trainer(project, **kw):
    return {"epochs": 2, "batch_size": 8, "progress": False, "threads": 1, "project": str(project), **kw}


def step(net, opt, x, y):
    opt.zero_grad()
    F.cross_entropy(net(x), y).backward()
    opt.step()


def test_frozen_backbone_is_unchanged_after_a_step_and_the_head_learns():
    torch.manual_seed(0)
    net, _, _ = build_model(ModelConfig(name="resnet_cifar20", args={"width": 4}, freeze="backbone"), num_classes=3, in_chans=3)
    before = {k: v.clone() for k, v in net.state_dict().items()}
    opt = build_optimizer(net, OptimConfig(lr=0.5))
    assert sum(len(g["params"]) for g in opt.param_groups) == 2  # the head's weight and bias only
    net.train()
    freeze_norm_statistics(net)
    step(net, opt, torch.randn(8, 3, 16, 16), torch.randint(0, 3, (8,)))
    after = net.state_dict()
    changed = sorted(k for k in before if not torch.equal(before[k], after[k]))
    assert changed == ["linear.bias", "linear.weight"]  # batch-norm running statistics included: all unchanged


def test_fine_tuning_trains_the_head_first_then_everything_with_lower_lrs():
    torch.manual_seed(0)
    net = create_model("simple_cnn", num_classes=3, width=4)
    opt = build_optimizer(net, OptimConfig(lr=0.1, lr_mult=100), freeze_epochs=1)
    groups = layer_groups(net)
    assert groups[-1] == ["head.bias", "head.weight"] and groups[0][0].startswith("features")
    lrs = {id(p): g["base_lr"] for g in opt.param_groups for p in g["params"]}
    first = dict(net.named_parameters())[groups[0][0]]
    assert lrs[id(net.head.weight)] == pytest.approx(0.1) and lrs[id(first)] == pytest.approx(0.001)  # lr / lr_mult
    middle = sorted({lrs[id(dict(net.named_parameters())[g[0]])] for g in groups})
    assert len(middle) == len(groups) and all(b / a == pytest.approx((100) ** (1 / (len(groups) - 1))) for a, b in zip(middle, middle[1:]))
    x, y = torch.randn(8, 3, 12, 12), torch.randint(0, 3, (8,))
    sched = SchedConfig(name="constant")

    assert set_epoch(opt, 0)  # epoch 0: head only
    net.train()
    freeze_norm_statistics(net)
    apply_schedule(opt, 0.9, sched)  # however far the clock has gone: frozen until the epoch changes
    conv = net.features[0][0].weight.clone()
    bn_mean = net.features[0][1].running_mean.clone()
    head = net.head.weight.clone()
    step(net, opt, x, y)
    assert torch.equal(net.features[0][0].weight, conv) and torch.equal(net.features[0][1].running_mean, bn_mean)
    assert not torch.equal(net.head.weight, head)

    assert not set_epoch(opt, 1)  # epoch 1: everything
    net.train()
    freeze_norm_statistics(net)
    apply_schedule(opt, 0.95, sched)
    assert all(p.requires_grad for p in net.parameters())
    step(net, opt, x, y)
    assert not torch.equal(net.features[0][0].weight, conv)
    assert not torch.equal(net.features[0][1].running_mean, bn_mean)


def test_imgcls_model_file_is_a_pretrained_source_for_another_data_set(image_folder, tmp_path):
    """Pretrain on 3 classes, fine-tune on 2 others with a frozen backbone: the backbone is the source's."""
    src_root = image_folder("src")
    dst_root = image_folder("dst", classes=("red", "blue"), seed=3)
    src = train(data={"name": "folder", "root": str(src_root)}, model=CNN, trainer=trainer(tmp_path, name="src"))
    dst = train(data={"name": "folder", "root": str(dst_root)},
                model={**CNN, "pretrained": str(src.best), "freeze": "backbone"},
                trainer=trainer(tmp_path, name="dst"))
    a, b = load_file(str(src.best)), load_file(str(dst.best))
    assert b["head.weight"].shape == (2, 16) and a["head.weight"].shape == (3, 16)
    for k in a:
        if not k.startswith("head."):
            assert torch.equal(a[k], b[k]), k
    assert dst.metrics["top1"] > 0.5


def test_fine_tune_run_with_freeze_epochs_and_lr_mult(image_folder, tmp_path):
    root = image_folder()
    r = train(data={"name": "folder", "root": str(root)}, model=CNN, optim={"lr": 0.05, "lr_mult": 10},
              trainer=trainer(tmp_path, epochs=3, freeze_epochs=1))
    assert len(r.history) == 3
    with pytest.raises(ImgclsError, match="freeze_epochs"):
        train(data={"name": "folder", "root": str(root)}, model=CNN, trainer=trainer(tmp_path, freeze_epochs=2))
    with pytest.raises(ImgclsError, match="model.freeze"):
        build_model(ModelConfig(name="simple_cnn", freeze="everything"), num_classes=2, in_chans=3)


def imbalanced_bundle(counts=(30, 6, 3)) -> DataBundle:
    labels = torch.cat([torch.full((n,), i) for i, n in enumerate(counts)])
    images = torch.randint(0, 255, (len(labels), 3, 4, 4), dtype=torch.uint8)
    split = Split(labels=labels, ids=[str(i) for i in range(len(labels))], images=images)
    return DataBundle(name="t", classes=["a", "b", "c"], channels=3, image_size=(4, 4), mean=[0.5] * 3, std=[0.25] * 3,
                      train=split)


def test_balanced_class_weights_are_scikit_learns_and_change_the_loss_as_expected():
    b = imbalanced_bundle()
    w = class_weights_of(LossConfig(class_weights="balanced"), b)
    y = b.train.labels.numpy()
    assert torch.allclose(w, torch.tensor(compute_class_weight("balanced", classes=np.arange(3), y=y), dtype=torch.float32))
    assert w[2] > w[1] > w[0]  # rarer classes weigh more

    logits, target = torch.randn(5, 3), torch.tensor([0, 0, 1, 2, 2])
    nll = -F.log_softmax(logits, 1)[torch.arange(5), target]
    expected = (w[target] * nll).sum() / w[target].sum()  # PyTorch's weighted mean
    assert torch.allclose(F.cross_entropy(logits, target, weight=w), expected)
    assert not torch.allclose(F.cross_entropy(logits, target, weight=w), F.cross_entropy(logits, target))

    assert class_weights_of(LossConfig(), b) is None
    assert class_weights_of(LossConfig(class_weights=[1, 2, 3]), b).tolist() == [1, 2, 3]
    with pytest.raises(ImgclsError, match="3 classes"):
        class_weights_of(LossConfig(class_weights=[1, 2]), b)


def test_balanced_sampler_draws_every_class_about_equally():
    b = imbalanced_bundle((300, 30, 15))
    loader = make_loader(b, b.train, train=True, batch_size=15, balanced=True, seed=1, aug=AugConfig(crop_pad=0))
    seen = Counter(torch.cat([y for _, y in loader]).tolist())
    assert sum(seen.values()) == 345
    assert all(80 < seen[c] < 150 for c in range(3)), seen  # ~115 each instead of 300/30/15
    loader = make_loader(b, b.train, train=True, batch_size=15, seed=1, aug=AugConfig(crop_pad=0))
    plain = Counter(torch.cat([y for _, y in loader]).tolist())
    assert plain[0] == 300


def test_class_weights_through_train(image_folder, tmp_path, monkeypatch):
    """train() hands the balanced weights to the loss and a balanced sampler to the training loop."""
    seen = []
    real = loop_mod.train_one_epoch

    def spy(model, loader, *args, class_weights=None, **kw):
        seen.append((class_weights, getattr(loader, "sample_weights", None)))
        return real(model, loader, *args, class_weights=class_weights, **kw)

    monkeypatch.setattr(loop_mod, "train_one_epoch", spy)
    root = image_folder(classes=("red", "green", "blue"))
    (root / "train" / "red" / "000.png").unlink()  # red: 11 images, green and blue: 12
    r = train(data={"name": "folder", "root": str(root), "sampler": "balanced", "val_fraction": 0}, model=CNN,
              loss={"class_weights": "balanced"}, trainer=trainer(tmp_path))
    weights, sample_weights = seen[0]
    y = np.array([0] * 12 + [1] * 12 + [2] * 11)  # sorted classes: blue, green, red
    expected = compute_class_weight("balanced", classes=np.arange(3), y=y)
    assert weights is not None and torch.allclose(weights.cpu(), torch.tensor(expected, dtype=torch.float32))
    assert sample_weights is not None and sample_weights.max() > sample_weights.min()  # red drawn more often per image
    assert (r.run_dir / "config.yaml").read_text().count("class_weights: balanced") == 1
    with pytest.raises(ImgclsError, match="loss.class_weights"):
        train(data={"name": "folder", "root": str(root)}, model=CNN, loss={"class_weights": "rare"},
              trainer=trainer(tmp_path))


def test_discriminative_lrs_reach_inside_library_models():
    net = create_model("torchvision", arch="mobilenet_v3_small", num_classes=3)
    groups = layer_groups(net)
    assert len(groups) > 10 and groups[0][0].startswith("body.features.0.") and groups[-1] == ["head.bias", "head.weight"]


def test_head_only_epochs_last_whole_epochs_under_a_time_budget(image_folder, tmp_path, monkeypatch):
    """With a time budget, progress runs on the clock; the head-only phase still ends at an epoch boundary."""
    frozen_per_epoch = []
    real = loop_mod.set_epoch

    def spy(optimizer, epoch):
        frozen = real(optimizer, epoch)
        frozen_per_epoch.append(frozen)
        return frozen

    monkeypatch.setattr(loop_mod, "set_epoch", spy)
    train(data={"name": "folder", "root": str(image_folder())}, model=CNN,
          trainer=trainer(tmp_path, epochs=50, freeze_epochs=2, time_budget=600))
    assert frozen_per_epoch == [True, True] + [False] * 48
