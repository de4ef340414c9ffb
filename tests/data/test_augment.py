"""Cutout, torchvision policies in the tensor loader, MixUp/CutMix batches, and training with them."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from imgcls.config import AugConfig
from imgcls.data.augment import BatchMix, batch_mix, cutout, photo_ops, policy_transform
from imgcls.data.file_loader import train_transform
from imgcls.data.tensor_loader import TensorLoader
from imgcls.errors import ImgclsError
from imgcls.training.run import train


def test_cutout_erases_one_square_per_image():
    g = torch.Generator().manual_seed(0)
    x = torch.ones(64, 3, 16, 16)
    out = cutout(x, 4, g)
    zeros = (out == 0).all(1)  # (B, H, W): erased pixels, the same in every channel
    counts = zeros.flatten(1).sum(1)
    assert counts.max() == 16 and counts.min() >= 4  # a whole 4x4 square, clipped at the borders at worst
    for m in zeros:  # one axis-aligned rectangle: its bounding box is all erased
        ys, xs = m.nonzero(as_tuple=True)
        assert m[ys.min():ys.max() + 1, xs.min():xs.max() + 1].all()
    assert len({tuple(m.nonzero()[0].tolist()) for m in zeros}) > 10  # at different places
    assert torch.equal(x, torch.ones_like(x))  # the input is untouched


def uint8_images(n: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 12, 12), dtype=torch.uint8, generator=g), torch.arange(n) % 4


@pytest.mark.parametrize("name", ["trivialaugment", "randaugment", "autoaugment"])
def test_policy_in_the_tensor_loader_is_reproducible(name):
    images, labels = uint8_images()

    def epoch(e: int, seed: int = 0) -> torch.Tensor:
        loader = TensorLoader(images, labels, batch_size=8, mean=[0.5] * 3, std=[0.25] * 3, policy=policy_transform(name),
                              seed=seed)
        loader.set_epoch(e)
        return torch.cat([x for x, _ in loader])

    plain = torch.cat([x for x, _ in TensorLoader(images, labels, batch_size=8, mean=[0.5] * 3, std=[0.25] * 3)])
    a = epoch(0)
    assert torch.equal(a, epoch(0))  # same seed and epoch: the same images (a resumed run sees the same)
    assert not torch.equal(a, epoch(1)) and not torch.equal(a, plain)
    assert a.shape == plain.shape and a.dtype == torch.float32


def test_policy_names():
    assert policy_transform("none") is None
    assert isinstance(policy_transform("trivialaugment"), v2.TrivialAugmentWide)
    with pytest.raises(ImgclsError, match="aug.policy"):
        policy_transform("bogus")


def test_file_transform_with_policy_and_cutout():
    from PIL import Image

    tf = train_transform((16, 16), [0.5] * 3, [0.25] * 3, flip=True, scale=[1.0, 1.0],
                         policy=policy_transform("trivialaugment"), after=photo_ops(AugConfig(cutout=8), (16, 16)))
    img = Image.new("RGB", (16, 16), (200, 100, 50))
    x = tf(img)
    assert x.shape == (3, 16, 16)
    assert ((x == 0).all(0)).sum() == 64  # the 8x8 square erased (to the mean)


@pytest.mark.parametrize("mixup, cutmix", [(1.0, 0.0), (0.0, 1.0), (0.5, 1.0)])
def test_batch_mix_soft_targets(mixup, cutmix):
    torch.manual_seed(0)
    x = torch.randn(8, 3, 12, 12)
    y = torch.arange(8) % 4
    mix = BatchMix(4, mixup=mixup, cutmix=cutmix)
    xm, ym = mix(x, y)
    assert xm.shape == x.shape and ym.shape == (8, 4)
    torch.testing.assert_close(ym.sum(1), torch.ones(8))
    assert (ym.max(1).values < 1).any()  # some labels really are mixed
    assert batch_mix(AugConfig(), 4) is None
    with pytest.raises(ImgclsError):
        BatchMix(4)


def test_bad_aug_values():
    from imgcls.config import coerce

    with pytest.raises(ImgclsError, match="aug.policy"):
        coerce(AugConfig, {"policy": "random"}, "aug")
    with pytest.raises(ImgclsError, match="aug.cutout"):
        coerce(AugConfig, {"cutout": -1}, "aug")


def test_training_with_every_augmentation(image_folder, tmp_path, monkeypatch):
    """MixUp + CutMix (soft targets through the loss and the accuracy), a policy and cutout, end to end.

    Spies check that each option reaches training (not only that training survives it).
    """
    import imgcls.data.augment as augment
    import imgcls.data.tensor_loader as tl

    calls = {"policy": 0, "cutout": 0, "mix": 0}

    def spy(name, fn):
        def wrapped(*a, **k):
            calls[name] += 1
            return fn(*a, **k)
        return wrapped

    monkeypatch.setattr(tl, "apply_policy", spy("policy", tl.apply_policy))
    monkeypatch.setattr(augment, "cutout", spy("cutout", augment.cutout))
    real_mix = BatchMix.__call__

    def mix(self, x, y):
        x2, y2 = real_mix(self, x, y)
        assert y2.ndim == 2  # soft targets go on to the loss
        calls["mix"] += 1
        return x2, y2

    monkeypatch.setattr(BatchMix, "__call__", mix)
    root = image_folder(n_train=8, n_test=4, size=12)
    r = train(data={"name": "folder", "root": str(root), "val_fraction": 0},
              model={"name": "simple_cnn", "width": 4},
              aug={"policy": "trivialaugment", "cutout": 4, "mixup": 0.4, "cutmix": 1.0},
              optim={"name": "adam", "lr": 1e-3}, trainer={"epochs": 2, "batch_size": 8, "project": str(tmp_path),
                                                           "progress": False, "device": "cpu"})
    assert len(r.history) == 2
    assert calls["policy"] >= 2 and calls["cutout"] >= 2 and calls["mix"] >= 2, calls  # every step of both epochs
    assert all(0 <= h["train_acc"] <= 1 and h["train_loss"] > 0 for h in r.history)
    assert 0 <= r.metrics["top1"] <= 1


def test_policy_groups_share_one_draw():
    from imgcls.data.augment import apply_policy

    images = torch.full((16, 3, 8, 8), 100, dtype=torch.uint8)  # identical images: equal outputs = equal draws
    g = torch.Generator().manual_seed(3)
    out = apply_policy(images, policy_transform("randaugment"), g, group=4)
    for chunk in out.split(4):
        assert all(torch.equal(chunk[0], c) for c in chunk)
    per_image = apply_policy(images, policy_transform("randaugment"), torch.Generator().manual_seed(3), group=1)
    assert len({tuple(x.flatten()[:64].tolist()) for x in per_image}) > 2
