import numpy as np

from edgefpga.models.metrics import classification_metrics, save_confusion_png


def test_metrics_on_a_known_confusion():
    labels = np.array([0] * 8 + [1] * 4)
    preds = np.array([0] * 6 + [1] * 2 + [1] * 3 + [0])
    m = classification_metrics(labels, preds)
    assert m["confusion_matrix"] == [[6, 2], [1, 3]]
    assert m["accuracy"] == round(9 / 12, 4)
    assert m["balanced_accuracy"] == round((6 / 8 + 3 / 4) / 2, 4)
    assert m["f1_defective"] == round(2 * 0.6 * 0.75 / 1.35, 4)


def test_confusion_png_is_written(tmp_path):
    path = save_confusion_png([[5, 1], [2, 3]], ["functional", "defective"], tmp_path / "cm.png", "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
