"""The public Python API end to end: train -> evaluate -> load_model -> Predictor on every input type."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import imgcls
from tests.conftest import COLORS, SORTED_CLASSES


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    from tests.conftest import write_image_folder

    root = write_image_folder(tmp_path_factory.mktemp("api") / "colors", n_train=12, n_test=4)
    r = imgcls.train(data={"name": "folder", "root": str(root), "val_fraction": 0.25},
                     model={"name": "simple_cnn", "width": 8}, optim={"lr": 0.05},
                     trainer={"epochs": 4, "batch_size": 6, "project": str(root.parent / "runs"),
                              "progress": False, "threads": 1})
    return r, root


def test_train_result_and_evaluate(trained):
    r, root = trained
    assert r.best.is_file() and r.last.is_file() and r.run_dir.is_dir()
    assert len(r.history) == 4 and r.images_seen > 0
    m = imgcls.evaluate(r.best, out_dir=root.parent / "ev", threads=1)
    assert m["classes"] == SORTED_CLASSES and m["num_samples"] == 12
    assert m["top1"] == pytest.approx(imgcls.read_metrics(root.parent / "ev" / "metrics.json")["top1"])
    assert m["top1"] >= 0.9  # three flat colours


def test_load_model_carries_metadata(trained):
    r, _ = trained
    model = imgcls.load_model(r.best)
    assert not model.training
    assert model.meta.classes == SORTED_CLASSES and model.meta.arch == "simple_cnn"
    assert model.meta.preprocess.input_size == [16, 16] and model.meta.preprocess.channels == 3
    assert "test_top1" in model.meta.metrics and "torch" in model.meta.versions


def solid(cls: str, size: int = 20) -> np.ndarray:
    return np.broadcast_to(np.array(COLORS[cls], dtype=np.uint8), (size, size, 3)).copy()


def check(result: dict, label: str, k: int) -> None:
    assert set(result) >= {"label", "score", "index", "top_k"}
    assert result["label"] == label and SORTED_CLASSES[result["index"]] == label
    assert len(result["top_k"]) == k and result["top_k"][0] == {"label": label, "score": result["score"]}
    scores = [t["score"] for t in result["top_k"]]
    assert scores == sorted(scores, reverse=True) and 0 < result["score"] <= 1


def test_predictor_input_types(trained, tmp_path):
    r, _ = trained
    p = imgcls.Predictor.load(r.best, device="cpu")
    red, blue = solid("red"), solid("blue")
    Image.fromarray(red).save(tmp_path / "red.png")
    Image.fromarray(blue).convert("RGBA").save(tmp_path / "blue.png")  # RGBA is converted
    check(p.predict(tmp_path / "red.png", top_k=2), "red", 2)
    check(p.predict(str(tmp_path / "blue.png"), top_k=3), "blue", 3)
    check(p.predict(Image.fromarray(red)), "red", 3)  # top_k larger than the class count is capped
    check(p.predict(red), "red", 3)
    check(p.predict(red.astype(np.float32) / 255), "red", 3)
    check(p.predict(torch.from_numpy(blue).permute(2, 0, 1)), "blue", 3)
    many = p.predict(torch.from_numpy(np.stack([red, blue])).permute(0, 3, 1, 2), top_k=1)
    assert [m["label"] for m in many] == ["red", "blue"]
    folder = p.predict(tmp_path, top_k=1)
    assert [(res["label"], res["path"].endswith(f"{res['label']}.png")) for res in folder] == [("blue", True), ("red", True)]
    listed = p.predict([tmp_path / "red.png", blue], top_k=1)
    assert [m["label"] for m in listed] == ["red", "blue"]


def test_predictor_errors_name_the_input(trained, tmp_path):
    r, _ = trained
    p = imgcls.Predictor.load(r.best, device="cpu")
    bad = tmp_path / "notes.png"
    bad.write_text("not an image")
    with pytest.raises(imgcls.ImgclsError, match="notes.png"):
        p.predict(bad)
    out = p.predict([bad, solid("green")], skip_errors=True)
    assert "notes.png" in out[0]["error"] and out[1]["label"] == "green"
    with pytest.raises(imgcls.ImgclsError, match="top_k"):
        p.predict(solid("green"), top_k=0)
    with pytest.raises(imgcls.ImgclsError, match="shape"):
        p.predict(np.zeros((4, 4, 7), dtype=np.uint8))


def test_predict_to_csv_reports_non_images(trained, tmp_path):
    from imgcls.predict import predict_to_csv

    r, _ = trained
    src = tmp_path / "src"
    src.mkdir()
    Image.fromarray(solid("green")).save(src / "g.png")
    (src / "readme.txt").write_text("hello")
    path, results = predict_to_csv(r.best, src, tmp_path / "out", device="cpu")
    assert path == tmp_path / "out" / "predictions.csv"
    by_name = {res["path"].rsplit("/", 1)[1]: res for res in results}
    assert by_name["g.png"]["label"] == "green" and "readme.txt" in by_name["readme.txt"]["error"]


def test_predict_to_csv_streams_rows_batch_by_batch_with_bounded_decoding(trained, tmp_path, monkeypatch):
    """Rows of a batch are on disk before the next batch is decoded; no batch holds more than batch_size images."""
    from imgcls.predict import Predictor, predict_to_csv

    r, _ = trained
    src = tmp_path / "src"
    src.mkdir()
    for k in range(10):
        Image.fromarray(solid(SORTED_CLASSES[k % 3])).save(src / f"{k:02d}.png")
    out = tmp_path / "out" / "predictions.csv"
    seen_rows, sizes = [], []
    real = Predictor.logits

    def spy(self, images):
        sizes.append(len(images))
        seen_rows.append(len(out.read_text().splitlines()[1:]) if out.exists() else 0)  # rows already on disk
        return real(self, images)

    monkeypatch.setattr(Predictor, "logits", spy)
    path, results = predict_to_csv(r.best, src, tmp_path / "out", device="cpu", batch_size=4, progress=False)
    assert sizes == [4, 4, 2] and seen_rows == [0, 4, 8]
    assert len(path.read_text().splitlines()) == 11 and [x["label"] for x in results[:3]] == SORTED_CLASSES


def test_list_and_create_models():
    names = imgcls.list_models()
    assert {"mlp", "simple_cnn", "resnet_cifar20", "fastnet"} <= set(names)
    assert imgcls.create_model("simple_cnn", num_classes=4)(torch.zeros(1, 3, 16, 16)).shape == (1, 4)


def test_import_is_light_and_the_verbs_are_never_shadowed():
    """`import imgcls` loads no torch; `imgcls.train`/`evaluate` stay the functions after any subpackage import."""
    import subprocess
    import sys

    code = ("import sys, imgcls; assert 'torch' not in sys.modules, 'torch imported eagerly'; "
            "import imgcls.training.run, imgcls.training.loop, imgcls.evaluation.run, imgcls.evaluation; "
            "assert callable(imgcls.train) and imgcls.train.__module__ == 'imgcls.training.run'; "
            "assert callable(imgcls.evaluate) and imgcls.evaluate.__module__ == 'imgcls.evaluation.run'; "
            "assert set(imgcls.__all__) <= set(dir(imgcls))")
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
