"""Semantic segmentation on generated images and masks: data layouts, the class map, joint augmentation,
the ignore index, mIoU, training and evaluation through the shared verbs, and the model file's task."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torchvision import tv_tensors
from torchvision.transforms import v2

from imgcls.config import AugConfig
from imgcls.errors import ImgclsError
from imgcls.tasks.segment import SEGMENT, dice_loss
from imgcls.tasks.segment.data import class_map, joint_transform, segfolder
from imgcls.tasks.segment.metrics import confusion_meter, scores

MEAN, STD = [0.5, 0.5, 0.5], [0.25, 0.25, 0.25]


def box_image(rng, h: int = 40, w: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A noisy gray image with a red box in its left half (class 1), 255 (ignored) on the box's border."""
    img = np.clip(rng.normal(110, 20, (h, w, 3)), 0, 255).astype(np.uint8)
    mask = np.zeros((h, w), np.uint8)
    y0, x0 = rng.integers(4, h // 2), rng.integers(2, w // 4)
    y1, x1 = y0 + rng.integers(8, h // 2), x0 + rng.integers(8, w // 3)
    img[y0:y1, x0:x1] = (220, 30, 30)
    mask[y0:y1, x0:x1] = 1
    mask[y0, x0:x1] = mask[y1 - 1, x0:x1] = 255
    return img, mask


def write_seg_folder(root, n_train: int = 10, n_val: int = 4, seed: int = 0, split_dirs: bool = True):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("val", n_val)):
        im_dir = root / "images" / (split if split_dirs else "")
        mk_dir = root / "masks" / (split if split_dirs else "")
        im_dir.mkdir(parents=True, exist_ok=True)
        mk_dir.mkdir(parents=True, exist_ok=True)
        for i in range(n):
            img, mask = box_image(rng)
            Image.fromarray(img).save(im_dir / f"{split}{i:03d}.jpg", quality=95)
            Image.fromarray(mask).save(mk_dir / f"{split}{i:03d}.png")
    (root / "classes.txt").write_text("background\nbox\n")
    return root


def aligned_share(x: torch.Tensor, m: torch.Tensor) -> float:
    """Share of box pixels (mask 1, after the transform) that are red in the image: 1 when image and mask moved together."""
    img = x * torch.tensor(STD).view(3, 1, 1) + torch.tensor(MEAN).view(3, 1, 1)
    red = img[0] - (img[1] + img[2]) / 2 > 0.25  # the box stays red under the colour jitter; the gray noise is not
    box = m == 1
    return float((red & box).sum() / box.sum().clamp(min=1))


def test_joint_augmentation_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(1)
    img, mask = box_image(rng)
    tf = joint_transform((32, 32), MEAN, STD, train=True, aug=AugConfig(crop_scale=[0.3, 1.0]))
    only_image = v2.Compose([v2.RandomHorizontalFlip(p=1.0)])  # what a transform moving the image alone would do
    torch.manual_seed(0)
    shares, broken = [], []
    for _ in range(30):
        x, m = tf(tv_tensors.Image(torch.from_numpy(img).permute(2, 0, 1)), tv_tensors.Mask(torch.from_numpy(mask)))
        assert x.shape == (3, 32, 32) and m.shape == (32, 32) and m.dtype == torch.uint8
        assert set(m.unique().tolist()) <= {0, 1, 255}  # nearest neighbours: no blended class values
        if (m == 1).sum() > 20:
            shares.append(aligned_share(x, m))
            broken.append(aligned_share(only_image(x), m))
    assert len(shares) > 10
    # aligned: the box's pixels are red but for a few resampled edge pixels of crops that cut the box small
    assert float(np.mean(shares)) > 0.93 and min(shares) > 0.7, shares
    # the check sees a flip of the image alone (the box sits in the left half): most box pixels are then gray
    assert float(np.mean(broken)) < 0.5, broken


def test_the_ignore_index_is_ignored_by_the_loss_and_the_metrics():
    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 3, (2, 8, 8), generator=g)
    y[:, :2] = 255
    logits = torch.randn(2, 3, 8, 8, generator=g)
    other = logits.clone()
    other[:, :, :2] = torch.randn(2, 3, 2, 8, generator=g) * 10  # change only the ignored pixels' logits
    assert float(SEGMENT.loss(logits, y)) == pytest.approx(float(SEGMENT.loss(other, y)), abs=1e-5)
    assert float(dice_loss(logits, y, 255)) == pytest.approx(float(dice_loss(other, y, 255)), abs=1e-5)
    meter = confusion_meter(3, 255)
    meter.update(logits.argmax(1), y)
    assert int(meter.compute().sum()) == int((y != 255).sum())  # ignored pixels are in no cell
    correct, counted = SEGMENT.hits(logits, y)
    assert int(counted) == int((y != 255).sum()) and int(correct) == int(((logits.argmax(1) == y) & (y != 255)).sum())


def test_miou_equals_the_hand_computed_value():
    cm = np.array([[50, 10, 0],   # truth a: 50 right, 10 predicted as b
                   [5, 35, 0],    # truth b: 35 right, 5 predicted as a
                   [0, 0, 0]])    # class c: absent from truth and predictions -> left out of the means
    s = scores(cm, ["a", "b", "c"])
    iou_a, iou_b = 50 / (60 + 55 - 50), 35 / (40 + 45 - 35)  # true (row) + predicted (column) - both
    assert s["per_class"]["a"]["iou"] == pytest.approx(iou_a) and s["per_class"]["b"]["iou"] == pytest.approx(iou_b)
    assert s["per_class"]["c"]["iou"] is None
    assert s["miou"] == pytest.approx((iou_a + iou_b) / 2)
    assert s["pixel_acc"] == pytest.approx(85 / 100)
    assert s["per_class"]["a"]["dice"] == pytest.approx(2 * 50 / (60 + 55))


def test_the_class_map_merges_keeps_and_ignores():
    raw = {0: "unlabeled", 1: "person", 3: "car", 8: "truck", 17: "cat"}
    plain = class_map(raw, merge=None, rest="background", ignore_index=255)
    assert plain.names == ["person", "car", "truck", "cat"] and plain.lut[0] == 255 and plain.lut[17] == 3
    m = class_map(raw, merge=["person", "vehicle=car|truck"], rest="background", ignore_index=255)
    assert m.names == ["background", "person", "vehicle"]
    assert [int(m.lut[v]) for v in (0, 1, 3, 8, 17, 99)] == [255, 1, 2, 2, 0, 255]  # 99: no class -> ignored
    no_rest = class_map(raw, merge=["person"], rest=None, ignore_index=255)
    assert no_rest.names == ["person"] and no_rest.lut[17] == 255
    with pytest.raises(ImgclsError, match="horse"):
        class_map(raw, merge=["horse"], rest="background", ignore_index=255)


def test_both_folder_layouts_load_and_problems_are_named(tmp_path):
    a = segfolder(write_seg_folder(tmp_path / "a"), channels=None, image_size=32, small_max=64, cache_dir=None,
                  workers=0, download=False)
    assert a.task == "segment" and a.classes == ["background", "box"] and len(a.train) == 10 and len(a.val) == 4
    assert all(t.endswith(".png") and i.endswith(".jpg") for i, t in zip(a.train.ids, a.train.targets))
    root = write_seg_folder(tmp_path / "b", split_dirs=False)
    (root / "config.yaml").write_text("train: {images: images, masks: masks}\nclasses: {0: background, 1: box}\n")
    (root / "images" / "extra.jpg").write_bytes((root / "images" / "train000.jpg").read_bytes())  # no mask
    b = segfolder(root, channels=None, image_size=None, small_max=64, cache_dir=None, workers=0, download=False,
                  merge=["box"])
    assert b.classes == ["background", "box"] and len(b.train) == 14 and any("without a mask" in n for n in b.notes)
    Image.fromarray(np.zeros((5, 5), np.uint8)).save(root / "masks" / "train000.png")  # the wrong size
    loader = b.loader(b, b.train, train=False, batch_size=2, aug=AugConfig(), workers=0)
    with pytest.raises(ImgclsError, match="train000.png: mask of 5x5 px"):
        next(iter(loader))


@pytest.fixture(scope="module")
def segmenter(tmp_path_factory):
    """A small LR-ASPP trained for 3 epochs on generated boxes (2 classes, 64 px): (TrainResult, data root)."""
    from imgcls.training.run import train

    base = tmp_path_factory.mktemp("seg")
    root = write_seg_folder(base / "data", n_train=12, n_val=4)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_CACHE", str(base / "cache"))
        r = train(data={"name": "segfolder", "root": str(root), "image_size": 64, "workers": 0},
                  model={"name": "lraspp", "inter_channels": 16}, optim={"name": "adamw", "lr": 0.003},
                  trainer={"epochs": 3, "batch_size": 4, "eval_batch_size": 4, "monitor": "val_miou", "progress": False,
                           "threads": 1, "project": str(base / "runs")})
    torch.set_num_threads(1)
    return r, root


def test_a_segmenter_trains_evaluates_and_its_model_file_says_segment(segmenter, tmp_path, capsys):
    import imgcls.cli as cli
    from imgcls.modelfile import read_meta

    r, _ = segmenter
    meta = read_meta(r.best)
    assert meta.task == "segment" and meta.classes == ["background", "box"] and meta.arch == "lraspp"
    header = (r.run_dir / "results.csv").read_text().splitlines()[0]
    assert header == "epoch,seconds,train_loss,train_acc,val_loss,val_acc,val_miou,lr"
    assert r.metrics["task"] == "segment" and 0 < r.metrics["miou"] <= 1 and set(r.metrics["per_class"]) == {"background", "box"}
    assert (r.run_dir / "per_class.csv").is_file() and (r.run_dir / "confusion_matrix.png").is_file()
    cli.main(["evaluate", f"ckpt={r.best}", "split=val", f"out={tmp_path / 'ev'}"])
    out = capsys.readouterr().out
    assert "val: mIoU" in out
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert again["miou"] == pytest.approx(r.metrics["miou"], abs=1e-6)  # the same model, the same split


def test_predictor_and_predict_give_masks_at_each_images_size(segmenter, tmp_path, capsys):
    import csv

    import imgcls.cli as cli
    from imgcls.predict import Predictor

    r, root = segmenter
    photo = root / "images" / "val" / "val000.jpg"
    big = tmp_path / "big.png"
    Image.open(photo).resize((96, 80)).save(big)
    p = Predictor.load(r.best, device="cpu")
    one, two = p.predict([str(photo), str(big)])
    assert one["mask"].shape == (40, 48) and two["mask"].shape == (80, 96) and one["mask"].dtype == np.uint8
    assert set(np.unique(one["mask"])) <= {0, 1} and sum(one["pixel_share"].values()) == pytest.approx(1, abs=1e-4)
    cli.main(["predict", f"ckpt={r.best}", f"source={root / 'images' / 'val'}", f"out={tmp_path / 'pred'}"])
    capsys.readouterr()
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    assert len(rows) == 4 and all(not row["error"] for row in rows)
    mask = np.asarray(Image.open(rows[0]["mask"]))
    assert Image.open(rows[0]["mask"]).mode == "P" and mask.shape == (40, 48)  # class indices, at the photo's size
    assert np.array_equal(mask, p.predict(rows[0]["path"])["mask"])
    assert Image.open(rows[0]["overlay"]).size == (48, 40)


def test_the_server_segments_and_declares_the_route(segmenter):
    import base64
    import io

    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app
    from imgcls.predict import Predictor

    r, root = segmenter
    photo = root / "images" / "val" / "val001.jpg"
    with TestClient(create_app(r.best)) as c:
        doc = c.get("/openapi.json").json()
        assert "/segment" in doc["paths"] and "/predict" not in doc["paths"]
        op = doc["paths"]["/segment"]["post"]  # the route's contract, as the classifier's (imgcls/deploy/contract.py)
        assert "image/png" in op["requestBody"]["content"]["multipart/form-data"]["encoding"]["file"]["contentType"]
        assert {"200", "400", "413", "415", "422"} <= set(op["responses"])
        assert op["responses"]["415"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        assert c.get("/model").json()["task"] == "segment"
        res = c.post("/segment", files=[("file", ("v.jpg", photo.read_bytes(), "image/jpeg"))])
        assert res.status_code == 200, res.text
        body = res.json()
        bad = c.post("/segment", files=[("file", ("x.jpg", b"not an image", "image/jpeg"))])
        assert bad.status_code == 415 and bad.json()["error"]["code"] == "not_an_image"
    mask = np.asarray(Image.open(io.BytesIO(base64.b64decode(body["mask"].split(",", 1)[1]))))
    assert np.array_equal(mask, Predictor.load(r.best, device="cpu").predict(str(photo))["mask"])
    assert body["overlay"].startswith("data:image/jpeg;base64,") and body["filename"] == "v.jpg"


def test_onnx_export_of_a_segmenter_matches_pytorch(segmenter, tmp_path):
    from imgcls.deploy.export import export
    from imgcls.predict import Predictor

    r, root = segmenter
    res = export(r.best, "onnx", tmp_path / "seg.onnx", images=root / "images" / "val")
    assert res.parity.passed and res.parity.images == 4 and res.parity.top1_agreement > 0.999
    photo = str(root / "images" / "val" / "val002.jpg")
    agree = (Predictor.load(res.path).predict(photo)["mask"] == Predictor.load(r.best, device="cpu").predict(photo)["mask"])
    assert agree.mean() > 0.999


def test_every_segmentation_model_keeps_the_input_size_and_learns():
    from imgcls.models import create_model, list_models

    assert set(list_models(task="segment")) == {"deeplabv3plus", "lraspp", "unet"}
    assert not set(list_models()) & {"deeplabv3plus", "lraspp", "unet"}  # the classifier list stays as it was
    y = torch.zeros(2, 45, 70, dtype=torch.long)
    y[:, 10:30, 5:40] = 1
    for name in list_models(task="segment"):
        torch.manual_seed(0)
        net = create_model(name, num_classes=2)
        out = net(torch.randn(2, 3, 45, 70))  # not multiples of 32: padded, then cropped back
        assert out.shape == (2, 2, 45, 70), name
        SEGMENT.loss(out, y).backward()
        assert all(p.grad is not None for p in net.parameters() if p.requires_grad), name


def test_a_classifier_model_file_of_format_2_reads_as_classify(tmp_path):
    from safetensors.torch import save_file

    from imgcls.modelfile import read_meta

    meta = {"arch": "mlp", "arch_args": {"num_classes": 2}, "classes": ["a", "b"], "format_version": 2,
            "preprocess": {"input_size": [4, 4], "channels": 1, "mean": [0.5], "std": [0.5]}, "calibration": {}}
    save_file({"w": torch.zeros(1)}, str(tmp_path / "old.safetensors"), metadata={"imgcls": json.dumps(meta)})
    assert read_meta(tmp_path / "old.safetensors").task == "classify"


def test_doctor_names_mismatched_out_of_range_and_empty_masks(tmp_path):
    from imgcls.data.doctor import doctor

    root = write_seg_folder(tmp_path / "data", n_train=6, n_val=2)
    masks = root / "masks" / "train"
    Image.fromarray(np.zeros((7, 9), np.uint8)).save(masks / "train000.png")  # another size than its image
    bad = np.asarray(Image.open(masks / "train001.png")).copy()
    bad[0, 0] = 7  # no class has value 7 (classes.txt names 0 and 1)
    Image.fromarray(bad).save(masks / "train001.png")
    Image.fromarray(np.full((40, 48), 255, np.uint8)).save(masks / "train002.png")  # every pixel ignored
    r = doctor({"name": "segfolder", "root": str(root)}, out_dir=tmp_path / "doc", use_cache=False)
    found = {Path(t["path"]).name: t["error"] for t in r.target_problems}
    assert set(found) == {"train000.png", "train001.png", "train002.png"}, found
    assert "mask of 9x7 px" in found["train000.png"] and "out of range" in found["train001.png"]
    assert found["train002.png"].startswith("empty")
    assert r.problems == 3 and "targets (masks) with problems: 3" in r.summary()
    assert sum(r.counts["train"].values()) == 6 and not r.unreadable  # the images themselves are fine


def test_coco_json_polygons_and_rle_become_the_same_masks(tmp_path, monkeypatch):
    from pycocotools import mask as rle

    monkeypatch.setenv("IMGCLS_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "coco"
    (root / "train2017").mkdir(parents=True)
    (root / "annotations").mkdir()
    h, w = 30, 40
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / "train2017" / "a.jpg")
    Image.fromarray(np.full((h, w, 3), 100, np.uint8)).save(root / "train2017" / "b.jpg")
    square = np.zeros((h, w), np.uint8)
    square[5:15, 10:30] = 1  # a 20 x 10 box
    enc = rle.encode(np.asfortranarray(square))
    enc["counts"] = enc["counts"].decode()
    crowd = np.zeros((h, w), np.uint8)
    crowd[20:25, 0:5] = 1
    cenc = rle.encode(np.asfortranarray(crowd))
    cenc["counts"] = cenc["counts"].decode()
    doc = {"images": [{"id": 1, "file_name": "a.jpg", "height": h, "width": w},
                      {"id": 2, "file_name": "b.jpg", "height": h, "width": w},
                      {"id": 3, "file_name": "missing.jpg", "height": h, "width": w}],
           "categories": [{"id": 3, "name": "car"}, {"id": 7, "name": "dog"}],
           "annotations": [  # the same box as a polygon (image a) and as RLE (image b); a crowd region in b
               {"id": 1, "image_id": 1, "category_id": 3, "area": 200, "iscrowd": 0,
                "segmentation": [[10, 5, 29.99, 5, 29.99, 14.99, 10, 14.99]]},
               {"id": 2, "image_id": 2, "category_id": 7, "area": 200, "iscrowd": 0, "segmentation": enc},
               {"id": 3, "image_id": 2, "category_id": 7, "area": 25, "iscrowd": 1, "segmentation": cenc}]}
    (root / "annotations" / "instances_train2017.json").write_text(json.dumps(doc))
    b = segfolder(root, channels=None, image_size=32, small_max=64, cache_dir=None, workers=0, download=False)
    assert b.classes == ["background", "car", "dog"] and len(b.train) == 2
    assert any("missing" not in n and "1 image(s) listed but not" in n for n in b.notes)
    from imgcls.tasks.segment.data import read_mask

    ma, mb = (read_mask(m) for m in b.train.targets)
    assert set(np.unique(ma)) == {0, 3} and set(np.unique(mb)) == {0, 7, 255}
    assert ((ma == 3) == (square == 1)).mean() > 0.97  # the polygon, rasterized, is the box (edges within a pixel)
    assert np.array_equal(mb == 7, square == 1) and np.array_equal(mb == 255, crowd == 1)  # RLE exactly; crowd ignored


def test_schemathesis_finds_nothing_on_the_segment_route(segmenter, tmp_path):
    """The route a new task added holds to the contract as the classifier's do (tests/deploy/test_contract.py)."""
    from imgcls.deploy.serve import create_app
    from tests.deploy.conftest import live_server
    from tests.deploy.test_contract import cases, schemathesis

    app = create_app(segmenter[0].best)
    with live_server(app) as url:
        p = schemathesis(url, tmp_path, "real")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert cases(out) >= 100 and app.state.batcher.calls >= 20, out[-3000:]


def test_a_huge_photo_is_segmented_within_a_memory_bound(segmenter, monkeypatch):
    """Above the bound the classes are decided at a smaller size and the mask enlarged: same shape, same answer
    where the logits are far from a tie."""
    import imgcls.predict as predict

    r, root = segmenter
    photo = Image.open(root / "images" / "val" / "val003.jpg").resize((480, 400))
    p = predict.Predictor.load(r.best, device="cpu")
    full = p.predict(photo)["mask"]
    monkeypatch.setattr(predict, "SEGMENT_LOGIT_BYTES", 4 * 2 * 120 * 100)  # 2 classes at 120 x 100 at most
    small = p.predict(photo)["mask"]
    assert small.shape == full.shape == (400, 480)
    assert (small == full).mean() > 0.95
