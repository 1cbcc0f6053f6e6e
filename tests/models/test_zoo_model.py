"""The shipped ELPV model: its card is complete and honest, its numbers reproduce."""

import json

import onnx
import pytest

from edgefpga.models.card import REQUIRED_KEYS, load_card
from edgefpga.models.evaluate import evaluate


def test_card_is_complete(zoo_model):
    card = load_card(zoo_model)
    assert set(REQUIRED_KEYS) <= set(card.raw)
    assert card.classes == ["functional", "defective"]
    assert card.input.to_dict()["shape"] == [1, 1, card.input.height, card.input.width]
    assert card.raw["dataset"]["license"] == "CC BY-NC-SA 4.0"
    assert card.raw["params"] <= 100_000 and card.raw["macs"] <= 10_000_000


def test_onnx_matches_card(zoo_model):
    card = load_card(zoo_model)
    graph = onnx.load(str(card.model_path))
    assert graph.opset_import[0].version == 13
    dims = [d.dim_value for d in graph.graph.input[0].type.tensor_type.shape.dim]
    assert dims == card.raw["input"]["shape"]


@pytest.fixture(scope="module")
def test_metrics(zoo_model):
    return evaluate(zoo_model, "test")


def test_eval_reproduces_card_metrics(zoo_model, test_metrics):
    recorded = json.loads((zoo_model / "card.json").read_text())["metrics"]["test"]
    for key in ("accuracy", "balanced_accuracy", "f1_defective", "n"):
        assert test_metrics[key] == recorded[key], key
    assert test_metrics["confusion_matrix"] == recorded["confusion_matrix"]


def test_shipped_model_accuracy(test_metrics):
    """Issue 2's bars: accuracy >= 0.85 and balanced accuracy >= 0.82 on the 654 test cells."""
    assert test_metrics["n"] == 654
    assert test_metrics["accuracy"] >= 0.85
    assert test_metrics["balanced_accuracy"] >= 0.82


def test_fixed_point_check_recorded(zoo_model):
    rows = load_card(zoo_model).raw["metrics"]["fixed_point_check"]
    eight_bit_weights = [r for r in rows if r["weight_bits"] == 8 and r["activation_bits"] == 16]
    assert eight_bit_weights and eight_bit_weights[0]["top1_agreement"] >= 0.98


def test_teachers_are_shipped_with_matching_weights(zoo_model):
    """`--like elpv_defect` must be able to retrain the shipped model: its teachers are zoo models
    whose ONNX files are the ones it was distilled from."""
    import hashlib

    from edgefpga.models.card import resolve_model_dir

    training = load_card(zoo_model).raw["training"]
    assert training["config"]["teachers"] == [t["name"] for t in training["teachers"]]
    for teacher in training["teachers"]:
        card = load_card(resolve_model_dir(teacher["name"]))
        assert card.name == teacher["name"]
        assert hashlib.sha256(card.model_path.read_bytes()).hexdigest() == teacher["model_sha256"]


def test_four_bin_model_meets_its_bar_on_the_contract_test_split():
    """Issue 14's second shipped model, elpv_types ({mono, poly} x {functional, defective}):
    run on the 654 contract test cells with the labels its card's verification source names, it
    reproduces the card's per-class metrics and reaches a macro recall of at least 0.80."""
    import edgefpga.runtime as rt
    from edgefpga.models.card import ZOO
    from edgefpga.models.metrics import classification_metrics
    from edgefpga.runtime.inputs import elpv_inputs

    card = load_card(ZOO / "elpv_types")
    assert card.classes == ["mono_functional", "mono_defective", "poly_functional", "poly_defective"]
    assert card.defect_classes == ["mono_defective", "poly_defective"]
    assert card.raw["verification"] == "elpv:test/type-defect"
    cells = elpv_inputs(card.raw["verification"], card.classes)
    with rt.open(ZOO / "elpv_types", backend="onnx") as engine:
        predicted = [r.label_index for r in engine.infer(cells.images)]
    import numpy as np

    metrics = classification_metrics(cells.labels, np.array(predicted), len(card.classes))
    recorded = card.raw["metrics"]["test"]
    assert metrics["n"] == recorded["n"] == 654
    assert metrics["accuracy"] == recorded["accuracy"]
    assert metrics["balanced_accuracy"] == recorded["balanced_accuracy"] >= 0.80  # the macro recall
    assert [m["recall"] for m in metrics["per_class"]] == [recorded["per_class"][c]["recall"] for c in card.classes]
