"""Object detection on generated images with boxes: the four label formats, boxes through augmentation, the
doctor's box checks, COCO mAP against pycocotools, and a small detector through every verb (train, evaluate,
predict, Predictor, ONNX export, serve, video)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from imgcls.config import AugConfig
from imgcls.errors import ImgclsError
from imgcls.tasks.detect.data import BoxDataset, box_transform, detfolder
from imgcls.tasks.detect.formats import Boxes

CLASSES = ["square", "bar"]


def scene(rng, h: int = 60, w: int = 80) -> tuple[np.ndarray, list[tuple[list[float], int]]]:
    """A dark noisy image with a white square (class 0) and a wide red bar (class 1), and their boxes (x1, y1, x2, y2)."""
    img = np.clip(rng.normal(30, 8, (h, w, 3)), 0, 255).astype(np.uint8)
    s = int(rng.integers(12, 20))
    x0, y0 = int(rng.integers(0, w // 2 - s)), int(rng.integers(0, h - s))
    img[y0:y0 + s, x0:x0 + s] = 255
    bw, bh = int(rng.integers(18, 26)), int(rng.integers(6, 9))
    x1, y1 = int(rng.integers(w // 2, w - bw)), int(rng.integers(0, h - bh))
    img[y1:y1 + bh, x1:x1 + bw] = (230, 20, 20)
    return img, [([x0, y0, x0 + s, y0 + s], 0), ([x1, y1, x1 + bw, y1 + bh], 1)]


def write_scenes(root: Path, splits=(("train", 8), ("val", 4)), seed: int = 0) -> dict[str, list]:
    """Images in root/images/<split>/ and their boxes (returned; no labels written)."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in splits:
        d = root / "images" / split
        d.mkdir(parents=True, exist_ok=True)
        out[split] = []
        for i in range(n):
            img, boxes = scene(rng)
            p = d / f"{split}{i:03d}.png"
            Image.fromarray(img).save(p)
            out[split].append((p, boxes))
    return out


def write_yolo(root: Path, scenes: dict) -> Path:
    for split, items in scenes.items():
        lab = root / "labels" / split
        lab.mkdir(parents=True, exist_ok=True)
        for p, boxes in items:
            w, h = Image.open(p).size
            lab.joinpath(p.stem + ".txt").write_text("".join(
                f"{c} {(b[0] + b[2]) / 2 / w:.6f} {(b[1] + b[3]) / 2 / h:.6f} {(b[2] - b[0]) / w:.6f} {(b[3] - b[1]) / h:.6f}\n"
                for b, c in boxes))
    (root / "data.yaml").write_text("path: .\n" + "".join(f"{s}: images/{s}\n" for s in scenes) +
                                    "names:\n" + "".join(f"  {i}: {n}\n" for i, n in enumerate(CLASSES)))
    return root


def write_coco(root: Path, scenes: dict) -> Path:
    (root / "annotations").mkdir(parents=True, exist_ok=True)
    for split, items in scenes.items():
        images, anns = [], []
        for i, (p, boxes) in enumerate(items):
            w, h = Image.open(p).size
            images.append({"id": i + 1, "file_name": p.name, "width": w, "height": h})
            for b, c in boxes:
                anns.append({"id": len(anns) + 1, "image_id": i + 1, "category_id": [3, 7][c], "iscrowd": 0,
                             "bbox": [b[0], b[1], b[2] - b[0], b[3] - b[1]], "area": (b[2] - b[0]) * (b[3] - b[1])})
        cats = [{"id": 3, "name": "square"}, {"id": 7, "name": "bar"}]
        (root / "annotations" / f"instances_{split}.json").write_text(json.dumps(
            {"images": images, "annotations": anns, "categories": cats}))
    return root


def write_voc(root: Path, scenes: dict) -> Path:
    (root / "Annotations").mkdir(parents=True, exist_ok=True)
    (root / "JPEGImages").mkdir(parents=True, exist_ok=True)
    (root / "ImageSets" / "Main").mkdir(parents=True, exist_ok=True)
    for split, items in scenes.items():
        for p, boxes in items:
            (root / "JPEGImages" / p.name).write_bytes(p.read_bytes())
            w, h = Image.open(p).size
            objs = "".join(f"<object><name>{CLASSES[c]}</name><difficult>0</difficult><bndbox><xmin>{b[0] + 1}</xmin>"
                           f"<ymin>{b[1] + 1}</ymin><xmax>{b[2]}</xmax><ymax>{b[3]}</ymax></bndbox></object>\n"
                           for b, c in boxes)
            (root / "Annotations" / f"{p.stem}.xml").write_text(
                f"<annotation>\n<filename>{p.name}</filename><size><width>{w}</width><height>{h}</height>"
                f"<depth>3</depth></size>\n{objs}</annotation>\n")
        (root / "ImageSets" / "Main" / f"{split}.txt").write_text("".join(p.stem + "\n" for p, _ in items))
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root


def write_csv(root: Path, scenes: dict) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rows = ["image,xmin,ymin,xmax,ymax,label,split"]
    for split, items in scenes.items():
        for p, boxes in items:
            rows += [f"{p},{b[0]},{b[1]},{b[2]},{b[3]},{CLASSES[c]},{split}" for b, c in boxes]
    (root / "boxes.csv").write_text("\n".join(rows) + "\n")
    (root / "classes.txt").write_text("\n".join(CLASSES) + "\n")
    return root / "boxes.csv"


def load(root) -> object:
    return detfolder(Path(root), channels=None, image_size=64, small_max=64, cache_dir=None, workers=0, download=False)


def as_sets(split) -> dict[str, set]:
    return {Path(p).name: {(c, *np.round(b).astype(int).tolist()) for b, c in zip(t.boxes, t.labels.tolist())}
            for p, t in zip(split.ids, split.targets)}


def test_each_format_loads_the_same_boxes_from_the_same_labels(tmp_path):
    scenes = write_scenes(tmp_path / "imgs")
    truth = {s: {p.name: {(c, *b) for b, c in boxes} for p, boxes in items} for s, items in scenes.items()}
    yolo = write_yolo(tmp_path / "imgs", scenes)
    coco = write_coco(tmp_path / "coco", scenes)
    for split in scenes:  # COCO's images sit in <root>/<split>
        (coco / split).mkdir()
        for p, _ in scenes[split]:
            (coco / split / p.name).write_bytes(p.read_bytes())
    voc = write_voc(tmp_path / "voc", scenes)
    csv_file = write_csv(tmp_path / "csv", scenes)
    for name, root in (("yolo", yolo), ("coco", coco), ("voc", voc), ("csv", csv_file)):
        b = load(root)
        assert b.task == "detect" and b.classes == CLASSES, (name, b.classes)
        assert f"box labels read as {name}" in b.notes
        for split in ("train", "val"):
            assert as_sets(getattr(b, split)) == truth[split], name  # YOLO's rounding to 6 digits: within a pixel


def test_images_without_boxes_are_kept_and_bad_boxes_left_out_with_a_note(tmp_path):
    scenes = write_scenes(tmp_path, splits=(("train", 4),))
    root = write_yolo(tmp_path, scenes)
    empty = root / "images" / "train" / "empty.png"
    Image.fromarray(np.zeros((60, 80, 3), np.uint8)).save(empty)  # no label file: background
    lab = root / "labels" / "train" / "train000.txt"
    lab.write_text(lab.read_text() + "5 0.5 0.5 0.1 0.1\n0 0.5 0.5 0 0.2\n")  # class 5 unknown; a box with no width
    b = load(root)
    assert len(b.train) == 5 and any("1 image(s) without a label file" in n for n in b.notes)
    got = as_sets(b.train)
    assert got["empty.png"] == set() and len(got["train000.png"]) == 2
    assert any("2 box(es) left out" in n for n in b.notes)


def test_doctor_names_degenerate_out_of_image_duplicate_and_unknown_boxes_with_file_and_line(tmp_path):
    from imgcls.data.doctor import doctor

    scenes = write_scenes(tmp_path, splits=(("train", 4), ("val", 2)))
    root = write_yolo(tmp_path, scenes)
    lab = root / "labels" / "train" / "train001.txt"
    first = lab.read_text().splitlines()[0]
    lab.write_text(lab.read_text() + first + "\n"  # line 3: a duplicate of line 1
                   "0 0.5 0.5 0.0 0.3\n"  # line 4: degenerate
                   "1 0.95 0.5 0.4 0.2\n"  # line 5: reaches past the right edge
                   "9 0.5 0.5 0.2 0.2\n")  # line 6: class 9 of 2
    r = doctor({"name": "detfolder", "root": str(root)}, out_dir=tmp_path / "doc", use_cache=False)
    found = {t["path"]: t["error"] for t in r.target_problems}
    assert set(found) == {f"{lab}:{n}" for n in (3, 4, 5, 6)}, found
    assert found[f"{lab}:3"].startswith(f"duplicate of the box at {lab}:1")
    assert found[f"{lab}:4"].startswith("degenerate") and found[f"{lab}:5"].startswith("out of the image")
    assert "class '9' is not one of the 2 classes" in found[f"{lab}:6"]
    assert "targets (boxes) with problems: 4" in r.summary()


def _bright_box(x: torch.Tensor) -> list[float] | None:
    """The box around the white square's pixels (near 1 in every channel) of an image in [0, 1]."""
    ys, xs = torch.nonzero((x > 0.9).all(0), as_tuple=True)
    return None if not len(ys) else [float(xs.min()), float(ys.min()), float(xs.max()) + 1, float(ys.max()) + 1]


def test_boxes_move_with_the_image_through_flips_crops_and_zoom():
    rng = np.random.default_rng(3)
    img, boxes = scene(rng)
    t = Boxes(np.asarray([b for b, _ in boxes], np.float32), np.asarray([c for _, c in boxes]), size=(80, 60))
    p = Path(__file__).parent / "_scene.png"
    Image.fromarray(img).save(p)
    try:
        ds = BoxDataset([str(p)], [t], box_transform(train=True, aug=AugConfig(crop_scale=[0.3, 1.0]), photometric=False),
                        cap=None)
        torch.manual_seed(0)
        flipped = checked = 0
        for _ in range(40):
            x, y = ds[0]
            square = y["boxes"][y["labels"] == 0]
            seen = _bright_box(x)
            if not len(square) or seen is None:
                continue
            assert np.allclose(square[0].tolist(), seen, atol=1.5), (square, seen)
            checked += 1
            flipped += seen[0] > x.shape[-1] / 2  # the square starts in the left half
        assert checked >= 20 and flipped >= 5  # flips happened, and the boxes followed them
        x, y = ds[0]
        mirrored = torch.flip(x, dims=[-1])  # the image flipped alone: the check sees it
        square = y["boxes"][y["labels"] == 0]
        if len(square) and _bright_box(mirrored) is not None:
            assert not np.allclose(square[0].tolist(), _bright_box(mirrored), atol=1.5)
    finally:
        p.unlink()


def test_map_is_one_for_perfect_predictions_and_drops_as_pycocotools_says_for_shifted_boxes():
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    from imgcls.tasks.detect.metrics import map_meter, summarize

    rng = np.random.default_rng(0)
    truth, preds = [], []
    for _ in range(6):
        _, boxes = scene(rng, 120, 160)
        truth.append({"boxes": torch.tensor([b for b, _ in boxes], dtype=torch.float32),
                      "labels": torch.tensor([c for _, c in boxes])})
    m = map_meter(extended=True)
    m.update([{**t, "scores": torch.ones(len(t["labels"]))} for t in truth], truth)
    s = summarize(m.compute(), CLASSES)
    assert s["map"] == pytest.approx(1.0) and s["map_50"] == pytest.approx(1.0)
    assert all(r["ap50"] == pytest.approx(1.0) and r["recall"] == pytest.approx(1.0) for r in s["per_class"])

    shifts = [0, 2, 4, 6, 3, 5]  # pixels right: IoUs from 1 down to about 0.5 for the small boxes
    for t, d in zip(truth, shifts):
        b = t["boxes"].clone()
        b[:, 0::2] += d
        preds.append({"boxes": b, "labels": t["labels"], "scores": torch.linspace(0.9, 0.5, len(b))})
    m = map_meter(extended=True)
    m.update(preds, truth)
    ours = summarize(m.compute(), CLASSES)
    # pycocotools itself on the same boxes
    images = [{"id": i + 1, "width": 160, "height": 120} for i in range(len(truth))]
    gt = COCO()
    gt.dataset = {"images": images, "categories": [{"id": k} for k in range(2)], "annotations": [
        {"id": 1000 * i + j + 1, "image_id": i + 1, "category_id": int(c), "iscrowd": 0,
         "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])], "area": float((b[2] - b[0]) * (b[3] - b[1]))}
        for i, t in enumerate(truth) for j, (b, c) in enumerate(zip(t["boxes"], t["labels"]))]}
    gt.createIndex()
    dt = gt.loadRes([{"image_id": i + 1, "category_id": int(c), "score": float(s),
                      "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]}
                     for i, p in enumerate(preds) for b, c, s in zip(p["boxes"], p["labels"], p["scores"])])
    ev = COCOeval(gt, dt, "bbox")
    ev.evaluate()
    ev.accumulate()
    ev.summarize()
    assert ours["map"] == pytest.approx(ev.stats[0], abs=1e-6) and ours["map_50"] == pytest.approx(ev.stats[1], abs=1e-6)
    assert 0.2 < ours["map"] < 0.95  # the shifts cost AP at the strict IoUs


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    """A small Faster R-CNN (MobileNetV3-small FPN) trained a few steps on generated scenes: (TrainResult, data root)."""
    from imgcls.training.run import train

    base = tmp_path_factory.mktemp("det")
    scenes = write_scenes(base / "data", splits=(("train", 8), ("val", 4)))
    root = write_yolo(base / "data", scenes)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("IMGCLS_CACHE", str(base / "cache"))
        r = train(data={"name": "detfolder", "root": str(root), "image_size": 96, "workers": 0},
                  model={"name": "fasterrcnn", "backbone": "mobilenet_v3_small", "trainable_layers": -1,
                         "fpn_channels": 32, "score_thresh": 0.0, "detections_per_img": 10,
                         "anchor_sizes": [16, 32, 64, 128]},
                  optim={"name": "sgd", "lr": 0.01, "momentum": 0.9},
                  trainer={"epochs": 2, "batch_size": 4, "eval_batch_size": 4, "progress": False, "threads": 1,
                           "project": str(base / "runs")})
    torch.set_num_threads(1)
    return r, root


def test_a_detector_trains_evaluates_and_its_model_file_says_detect(detector, tmp_path, capsys):
    import imgcls.cli as cli
    from imgcls.modelfile import read_meta

    r, _ = detector
    meta = read_meta(r.best)
    assert meta.task == "detect" and meta.classes == CLASSES and meta.arch == "fasterrcnn"
    header = (r.run_dir / "results.csv").read_text().splitlines()[0]
    assert header == "epoch,seconds,train_loss,train_acc,val_map,val_map50,val_recall,lr"
    assert r.metrics["task"] == "detect" and 0 <= r.metrics["map"] <= 1 and r.metrics["num_boxes"] == 8
    assert {row["class"] for row in r.metrics["per_class"]} <= set(CLASSES)
    for f in ("per_class.csv", "pr_curves.png", "learning_curves.png"):
        assert (r.run_dir / f).is_file(), f
    assert len(list((r.run_dir / "worst").glob("*.jpg"))) == 4
    cli.main(["evaluate", f"ckpt={r.best}", "split=val", f"out={tmp_path / 'ev'}"])
    assert "val: mAP@[.5:.95]" in capsys.readouterr().out
    again = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert again["map"] == pytest.approx(r.metrics["map"], abs=1e-6)


def test_predictor_and_predict_give_boxes_in_each_images_pixels(detector, tmp_path, capsys):
    import imgcls.cli as cli
    from imgcls.predict import Predictor

    r, root = detector
    photo = root / "images" / "val" / "val000.png"
    big = tmp_path / "big.png"
    Image.open(photo).resize((160, 120)).save(big)  # twice the size: the boxes scale with it
    p = Predictor.load(r.best, device="cpu")
    p.min_score = 0.0
    one, two = p.predict([str(photo), str(big)])
    assert one["detections"] and all(len(d["box"]) == 4 and d["label"] in CLASSES for d in one["detections"])
    assert [d["score"] for d in one["detections"]] == sorted((d["score"] for d in one["detections"]), reverse=True)
    # both reach the network at its 96 px: the larger image's boxes are the smaller one's, doubled (its own pixels)
    doubled = [[2 * v for v in d["box"]] for d in one["detections"][:3]]
    assert all(any(np.allclose(b, d["box"], atol=4) for d in two["detections"]) for b in doubled), (doubled, two)
    cli.main(["predict", f"ckpt={r.best}", f"source={root / 'images' / 'val'}", f"out={tmp_path / 'pred'}", "min_score=0.0"])
    assert "object(s)" in capsys.readouterr().out
    rows = list(csv.DictReader(open(tmp_path / "pred" / "predictions.csv")))
    assert {Path(row["path"]).name for row in rows} == {f"val{i:03d}.png" for i in range(4)} and all(row["x2"] for row in rows)
    js = json.loads((tmp_path / "pred" / "predictions.json").read_text())
    assert len(js) == 4 and len(list((tmp_path / "pred" / "drawn").glob("*.jpg"))) == 4


def test_onnx_export_of_a_detector_gives_the_same_boxes(detector, tmp_path):
    from imgcls.deploy.export import export
    from imgcls.predict import Predictor

    r, root = detector
    res = export(r.best, "onnx", tmp_path / "det.onnx", images=root / "images" / "val")
    assert res.parity.passed and res.parity.images == 4 and res.parity.top1_agreement >= 0.75
    photo = str(root / "images" / "val" / "val001.png")
    a, b = Predictor.load(res.path), Predictor.load(r.best, device="cpu")
    a.min_score = b.min_score = 0.0
    da, db = a.predict(photo)["detections"], b.predict(photo)["detections"]
    assert len(da) == len(db) > 0
    assert np.allclose([d["box"] for d in da], [d["box"] for d in db], atol=0.05)
    assert [d["label"] for d in da] == [d["label"] for d in db]


def test_the_server_detects_and_declares_the_route(detector):
    from fastapi.testclient import TestClient

    from imgcls.deploy.serve import create_app
    from imgcls.predict import Predictor

    r, root = detector
    photo = root / "images" / "val" / "val002.png"
    with TestClient(create_app(r.best)) as c:
        doc = c.get("/openapi.json").json()
        assert "/detect" in doc["paths"] and "/predict" not in doc["paths"]
        op = doc["paths"]["/detect"]["post"]
        assert "image/png" in op["requestBody"]["content"]["multipart/form-data"]["encoding"]["files"]["contentType"]
        assert {"200", "400", "413", "415", "422"} <= set(op["responses"])
        assert op["responses"]["200"]["content"]["application/json"]["schema"]["$ref"].endswith("/DetectAnswer")
        assert c.get("/model").json()["task"] == "detect"
        res = c.post("/detect", params={"min_score": 0.0},
                     files=[("files", ("v.png", photo.read_bytes(), "image/png")),
                            ("files", ("w.png", photo.read_bytes(), "image/png"))])
        assert res.status_code == 200, res.text
        body = res.json()
        assert [x["filename"] for x in body["results"]] == ["v.png", "w.png"]
        assert body["results"][0]["width"] == 80 and body["results"][0]["height"] == 60
        high = c.post("/detect", params={"min_score": 0.99}, files=[("files", ("v.png", photo.read_bytes(), "image/png"))])
        assert all(d["score"] >= 0.99 for d in high.json()["results"][0]["detections"])
        bad = c.post("/detect", files=[("files", ("x.jpg", b"not an image", "image/jpeg"))])
        assert bad.status_code == 415 and bad.json()["error"]["code"] == "not_an_image"
        assert c.post("/detect", params={"min_score": 2}, files=[("files", ("v.png", photo.read_bytes(), "image/png"))]
                      ).status_code == 422
    p = Predictor.load(r.best, device="cpu")
    p.min_score = 0.0
    ref = p.predict(str(photo))["detections"]
    got = body["results"][0]["detections"]
    assert len(got) == len(ref) and np.allclose([d["box"] for d in got], [d["box"] for d in ref], atol=1e-3)
    assert "drawBoxes" in c.get("/").text


def test_a_video_is_predicted_frame_by_frame_with_an_annotated_copy(detector, tmp_path, capsys):
    import imgcls.cli as cli
    from imgcls.video import video_info, write_clip

    r, root = detector
    clip = write_clip(sorted((root / "images" / "val").glob("*.png")), tmp_path / "clip.mp4", seconds=2, fps=10,
                      size=(96, 64))
    assert video_info(clip)["frames"] == 20
    cli.main(["predict", f"ckpt={r.best}", f"source={clip}", f"out={tmp_path / 'v'}", "min_score=0.0"])
    out = capsys.readouterr().out
    assert "20 frames of clip.mp4 (96x64)" in out and "frames/s" in out
    rows = list(csv.DictReader(open(tmp_path / "v" / "frames.csv")))
    assert [int(row["frame"]) for row in rows] == list(range(20))
    assert float(rows[10]["time"]) == pytest.approx(1.0, abs=0.06)
    lines = (tmp_path / "v" / "frames.jsonl").read_text().splitlines()
    assert len(lines) == 20 and "detections" in json.loads(lines[0])
    annotated = video_info(tmp_path / "v" / "clip_annotated.mp4")
    assert annotated["frames"] == 20 and (annotated["width"], annotated["height"]) == (96, 64)


def test_a_classifier_predicts_a_video_too(tmp_path, capsys):
    """Video is for every task: a classifier's label per frame."""
    from imgcls.predict import Predictor
    from imgcls.video import predict_video, write_clip
    from tests.tasks.test_segment import box_image

    rng = np.random.default_rng(0)
    frames = [Image.fromarray(box_image(rng)[0]) for _ in range(3)]
    clip = write_clip(frames, tmp_path / "c.mp4", seconds=1, fps=6, size=(48, 40))

    class Stub(torch.nn.Module):
        def forward(self, x):
            return torch.stack([x.mean((1, 2, 3)), -x.mean((1, 2, 3))], 1)

    from imgcls.modelfile import ModelMeta, Preprocess

    m = Stub()
    m.meta = ModelMeta(arch="stub", arch_args={}, classes=["bright", "dark"],
                       preprocess=Preprocess(input_size=[32, 32], channels=3, mean=[0.5] * 3, std=[0.25] * 3))
    s = predict_video(Predictor(m), clip, tmp_path / "out", say=lambda *a: None)
    assert s["frames"] == 6
    rows = [json.loads(x) for x in (tmp_path / "out" / "frames.jsonl").read_text().splitlines()]
    assert [r["frame"] for r in rows] == list(range(6)) and all(r["label"] in ("bright", "dark") for r in rows)


def test_every_detector_learns_a_step_on_boxes():
    """Faster R-CNN, FCOS and RetinaNet on two backbones: losses finite, and in eval mode boxes in the input's pixels."""
    from imgcls.models import create_model

    rng = np.random.default_rng(0)
    img, boxes = scene(rng)
    x = [torch.from_numpy(img).permute(2, 0, 1).float() / 255]
    y = [{"boxes": torch.tensor([b for b, _ in boxes], dtype=torch.float32), "labels": torch.tensor([c for _, c in boxes])}]
    for name, args in (("fasterrcnn", {}), ("fcos", {"backbone": "resnet18"}), ("retinanet", {"backbone": "mobilenet_v3_small"})):
        torch.manual_seed(0)
        net = create_model(name, num_classes=2, img_size=160, fpn_channels=64, **args).train()
        losses = net(x, y)
        total = sum(losses.values())
        assert torch.isfinite(total) and total > 0, (name, losses)
        total.backward()
        net.eval()
        with torch.no_grad():
            out = net(x)[0]
        assert set(out) == {"boxes", "scores", "labels"}
        if len(out["boxes"]):
            assert out["boxes"][:, 2].max() <= 80.01 and out["labels"].max() < 2
    with pytest.raises(ImgclsError, match="multiple of 32"):
        create_model("fcos", num_classes=2, fpn_channels=48)


def test_schemathesis_finds_nothing_on_the_detect_route(detector, tmp_path):
    """The route detection added holds to the contract as the others do (tests/deploy/test_contract.py): real images of
    every declared type answered 200 in the declared schema, min_score outside 0-1 refused with a documented 422."""
    from imgcls.deploy.serve import ServeLimits, create_app
    from tests.deploy.conftest import live_server
    from tests.deploy.test_contract import cases, schemathesis

    app = create_app(detector[0].best, limits=ServeLimits(max_files=4))
    with live_server(app) as url:
        p = schemathesis(url, tmp_path, "real")
    out = p.stdout + p.stderr
    assert p.returncode == 0, out[-6000:]
    assert cases(out) >= 100 and app.state.batcher.calls >= 20, out[-3000:]


def test_the_page_draws_the_boxes_in_a_browser(detector):
    from imgcls.deploy.serve import create_app
    from imgcls.predict import Predictor
    from tests.deploy.conftest import live_server
    from tests.deploy.test_browser import CHROMIUM_ARGS, need_browser

    exe = need_browser()
    from playwright.sync_api import expect, sync_playwright

    r, root = detector
    photo = root / "images" / "val" / "val003.png"
    found = Predictor.load(r.best, device="cpu").predict(str(photo))["detections"]  # the server's default min_score
    with live_server(create_app(r.best)) as url, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=exe, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.goto(url)
            expect(page.locator("#info")).to_contain_text("detection", timeout=20_000)
            page.set_input_files("#file", str(photo))
            expect(page.locator("#box-pane")).to_be_visible(timeout=30_000)
            expect(page.locator("#results .row")).to_have_count(len(found))
            expect(page.locator("#top-label")).to_have_text(f"{len(found)} object(s)" if found else "no object found")
            # the canvas holds the photo at its own size, boxes drawn on it
            assert page.evaluate("[document.getElementById('boxes').width, document.getElementById('boxes').height]") == [80, 60]
            assert page.locator("#error").inner_text() == ""
        finally:
            browser.close()


@pytest.mark.parametrize("backbone", ["mobilenet_v3_small", "resnet18", "tu-resnet18"])
def test_a_classifiers_imagenet_weights_fit_the_detectors_backbone(backbone, tmp_path):
    """model.pretrained=FILE with a torchvision or timm classifier's weights file: every backbone tensor loads."""
    import timm
    import torchvision

    from imgcls.models import create_model
    from imgcls.models.pretrained import load_pretrained

    torch.manual_seed(0)
    clf = timm.create_model(backbone[3:], pretrained=False) if backbone.startswith("tu-") else \
        getattr(torchvision.models, backbone)(weights=None)
    torch.save(clf.state_dict(), tmp_path / "w.pth")
    det = create_model("fasterrcnn", num_classes=3, backbone=backbone, fpn_channels=32)
    report = load_pretrained(det, tmp_path / "w.pth")
    body = {k for k in det.state_dict() if k.startswith("net.backbone.body.") and not k.endswith("num_batches_tracked")}
    assert body <= set(report.loaded), sorted(body - set(report.loaded))[:5]
    name = next(k for k in sorted(body) if k.endswith("weight"))
    file_key = name[len(det.weights_prefix):]
    assert torch.equal(det.state_dict()[name], clf.state_dict()[file_key])
