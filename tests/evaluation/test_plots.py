import pytest
from PIL import Image

from imgcls.errors import ImgclsError
from imgcls.evaluation import plot_confusion_matrix, plot_learning_curves

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def _assert_png(path):
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    with Image.open(path) as img:
        assert img.format == "PNG"
        assert img.width > 200 and img.height > 200


@pytest.mark.parametrize("normalize", [True, False])
def test_confusion_matrix_png(tmp_path, normalize):
    # Last class absent: its all-zero row must not break normalisation.
    cm = [[5, 1, 0], [2, 3, 0], [0, 0, 0]]
    path = plot_confusion_matrix(cm, ["cat", "dog", "bird"], tmp_path / "sub" / "cm.png",
                                 normalize=normalize)
    assert path == tmp_path / "sub" / "cm.png"
    _assert_png(path)


def test_confusion_matrix_many_classes_skips_annotations(tmp_path):
    k = 22
    cm = [[(i + j) % 4 for j in range(k)] for i in range(k)]
    _assert_png(plot_confusion_matrix(cm, [f"class_{i}" for i in range(k)], tmp_path / "cm.png"))


def test_confusion_matrix_shape_mismatch_raises(tmp_path):
    with pytest.raises(ImgclsError):
        plot_confusion_matrix([[1, 0], [0, 1]], ["a", "b", "c"], tmp_path / "cm.png")


def _write_results(path, rows):
    header = "epoch,seconds,train_loss,train_acc,val_loss,val_acc,lr\n"
    path.write_text(header + "".join(",".join(map(str, r)) + "\n" for r in rows))
    return path


def test_learning_curves_with_validation(tmp_path):
    csv_path = _write_results(tmp_path / "results.csv", [
        (1, 3.2, 1.9, 0.31, 1.7, 0.38, 0.1),
        (2, 3.1, 1.4, 0.52, 1.3, 0.55, 0.05),
        (3, 3.0, 1.1, 0.63, 1.2, 0.60, 0.01),
    ])
    _assert_png(plot_learning_curves(csv_path, tmp_path / "curves.png"))


def test_learning_curves_without_validation(tmp_path):
    csv_path = _write_results(tmp_path / "results.csv", [
        (1, 3.2, 1.9, 0.31, "", "", 0.1),
        (2, 3.1, 1.4, 0.52, "", "", 0.05),
    ])
    _assert_png(plot_learning_curves(csv_path, tmp_path / "curves.png"))


def test_learning_curves_missing_file_raises(tmp_path):
    missing = tmp_path / "nope.csv"
    with pytest.raises(ImgclsError, match="nope.csv"):
        plot_learning_curves(missing, tmp_path / "curves.png")


def test_learning_curves_missing_column_raises(tmp_path):
    bad = tmp_path / "results.csv"
    bad.write_text("epoch,train_loss\n1,0.5\n")
    with pytest.raises(ImgclsError, match="missing columns"):
        plot_learning_curves(bad, tmp_path / "curves.png")
