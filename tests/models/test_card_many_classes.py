"""The card's many-class fields: defect_classes, per-channel mean/std, color rgb; the shipped
binary card loads and behaves exactly as before."""

from __future__ import annotations

import json
import shutil

import cv2
import edgefpga.runtime as rt
import numpy as np
import pytest
from edgefpga.models.card import InputSpec, ModelCardError, load_card
from edgefpga.models.metrics import classification_metrics
from edgefpga.models.preprocess import normalize, to_model_color


@pytest.mark.timeout(60)
def test_shipped_binary_card_loads_unchanged(zoo_model):
    card = load_card(zoo_model)
    raw = json.loads((zoo_model / "card.json").read_text())
    assert "defect_classes" not in raw and card.defect_classes == ["defective"]  # default: all but the first
    assert card.input.mean == 0.5 and card.input.std == 0.25 and card.input.to_dict() == raw["input"]
    with rt.open("elpv_defect", backend="onnx") as engine:
        r = engine.infer(np.full((300, 300), 128, np.uint8))[0]
    assert r.defect_classes == ["defective"] and r.score == 1 - r.probabilities[0]
    assert [t["label"] for t in r.top_k] == sorted(r.classes, key=lambda c: -r.probabilities[r.classes.index(c)])


def edited(zoo_model, tmp_path, **changes):
    folder = tmp_path / "m"
    shutil.copytree(zoo_model, folder)
    raw = json.loads((folder / "card.json").read_text())
    for key, value in changes.items():
        target, name = (raw["input"], key[6:]) if key.startswith("input_") else (raw, key)
        target[name] = value
    (folder / "card.json").write_text(json.dumps(raw))
    return folder


@pytest.mark.timeout(60)
@pytest.mark.parametrize("changes, message", [
    ({"defect_classes": ["crack"]}, r"defect_classes \['crack'\] are not among the classes"),
    ({"input_mean": [0.5, 0.5]}, "input.mean must be a number or a list of 1 numbers"),
    ({"input_std": [0.0]}, "input.std must not be zero"),
    ({"input_color": "rgb"}, "input.color 'rgb' needs 3 channel"),
])
def test_bad_many_class_fields_name_the_card(zoo_model, tmp_path, changes, message):
    with pytest.raises(ModelCardError, match=message):
        load_card(edited(zoo_model, tmp_path, **changes))


@pytest.mark.timeout(60)
def test_per_channel_normalization_and_rgb_order():
    spec = InputSpec(3, 2, 2, "rgb", "area", 1 / 255, (0.1, 0.2, 0.3), (0.5, 1.0, 2.0))
    bgr = np.zeros((2, 2, 3), np.uint8)
    bgr[..., 0] = 255  # pure blue in OpenCV's order
    rgb = to_model_color(bgr, spec)
    assert rgb[0, 0].tolist() == [0, 0, 255]
    x = normalize(rgb.transpose(2, 0, 1), spec)
    assert x[:, 0, 0].tolist() == pytest.approx([-0.2, -0.2, (1 - 0.3) / 2])
    assert InputSpec.from_dict(spec.to_dict(), "test") == spec
    assert to_model_color(cv2.cvtColor(bgr, cv2.COLOR_BGR2GRAY), spec).shape == (2, 2, 3)


@pytest.mark.timeout(60)
def test_metrics_per_class_and_defect_collapse():
    labels = np.array([0, 0, 1, 1, 2, 2, 3, 3])
    preds = np.array([0, 1, 1, 3, 2, 0, 3, 1])  # defect types 1 and 3 swapped once: still caught
    m = classification_metrics(labels, preds, 4, defect_classes=[1, 3])
    assert m["per_class"][1] == {"precision": pytest.approx(1 / 3, abs=1e-4), "recall": 0.5, "f1": 0.4, "support": 2}
    assert m["confusion_matrix"][3] == [0, 1, 0, 1]
    # as defective vs not: true defects 2,3,6,7 -> predicted defect at 2,3,6,7 and the false alarm at 1
    assert m["f1_defective"] == pytest.approx(2 * 0.8 * 1.0 / 1.8, abs=1e-4)
    binary = classification_metrics(labels % 2, preds % 2)
    assert binary == classification_metrics(labels % 2, preds % 2, 2, defect_classes=[1])
