"""Quantization-aware training (``edgefpga train --qat``, models/quant.py): the widths parsed and
refused by name, the teacher's normalization mapped onto a QAT student's, and a short real QAT
run (the ``qat_model`` fixture, tests/conftest.py) through the one training loop into a model folder whose model.onnx is a QONNX file that
qonnx executes as Brevitas computes it."""

from __future__ import annotations

import json

import numpy as np
import onnx
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("brevitas")

from edgefpga.cli import main  # noqa: E402
from edgefpga.models.card import InputSpec, load_card  # noqa: E402
from edgefpga.models.quant import QatError, parse_qat  # noqa: E402

pytestmark = pytest.mark.timeout(600)


@pytest.mark.parametrize("text, widths", [("W4A4", (4, 4)), ("w8a8", (8, 8)), ("W4A8", (4, 8)), ("W2A3", (2, 3))])
def test_widths_are_parsed(text, widths):
    parsed = parse_qat(text)
    assert (parsed.weight_bits, parsed.act_bits) == widths
    assert parsed.name == f"W{widths[0]}A{widths[1]}"


@pytest.mark.parametrize("text, needle", [("W1A4", "weight width 1 is outside 2..8"),
                                          ("W4A9", "activation width 9 is outside 2..8"),
                                          ("4x4", "expected W<weight bits>A<activation bits>")])
def test_bad_widths_are_refused_by_name(text, needle):
    with pytest.raises(QatError) as refused:
        parse_qat(text)
    assert needle in str(refused.value)


def test_cli_refuses_bad_widths_before_loading_data(tmp_path, capsys):
    assert main(["train", "elpv", "--qat", "W9A4", "--out", str(tmp_path / "m")]) == 2
    err = capsys.readouterr().err
    assert "weight width 9 is outside 2..8" in err and err.count("\n") == 1, err
    assert not (tmp_path / "m").exists()


def test_teacher_normalization_is_mapped_exactly():
    """A float teacher (pixel/255) teaching a QAT student (pixel/256) sees the numbers it was trained on."""
    from edgefpga.models.teacher import renormalization

    student = InputSpec(1, 8, 8, "gray", "area", 1 / 256, 0.5, 0.25)
    teacher = InputSpec(1, 8, 8, "gray", "area", 1 / 255, 0.4, 0.3)
    pixels = torch.arange(256, dtype=torch.float64).view(1, 1, 16, 16)
    a, b = renormalization(student, teacher)
    mapped = ((pixels / 256 - 0.5) / 0.25).float() * a + b
    torch.testing.assert_close(mapped, ((pixels / 255 - 0.4) / 0.3).float(), atol=1e-5, rtol=0)
    assert renormalization(student, student) is None


@pytest.mark.slow
@pytest.mark.timeout(1200)  # the fixture's training and its card's 654 qonnx executions: minutes on a loaded machine
def test_qat_training_writes_a_qonnx_model_folder(qat_model):
    card = load_card(qat_model)
    raw = card.raw
    assert raw["architecture"]["qat"] == "W4A4"
    assert raw["onnx"]["format"] == "qonnx"
    q = raw["onnx"]["quantization"]
    assert (q["weight_bits"], q["activation_bits"], q["input_bits"], q["output_bits"]) == (4, 4, 8, 16)
    assert card.input.scale == 1 / 256 and (card.input.mean, card.input.std) == (0.5, 0.25)
    assert raw["metrics"]["test"]["backend"] == "qonnx" and raw["metrics"]["test"]["n"] == 654
    assert "fixed_point_check" in raw["metrics"] and raw["metrics"]["fixed_point_check"] == []
    assert raw["onnx"]["max_abs_diff_vs_pytorch"] == 0.0  # Brevitas and qonnx: the same scores
    # the exported file: Quant nodes with power-of-two scales at the trained widths, no BatchNorm
    model = onnx.load(str(qat_model / "model.onnx"))
    ops = {n.op_type for n in model.graph.node}
    assert "Quant" in ops and "BatchNormalization" not in ops, ops
    inits = {i.name: onnx.numpy_helper.to_array(i) for i in model.graph.initializer}
    widths = sorted({int(inits[n.input[3]]) for n in model.graph.node if n.op_type == "Quant"})
    assert widths == [4, 8, 16], widths  # weights and activations 4, the input 8, the scores 16
    for n in model.graph.node:
        if n.op_type == "Quant":
            scale = float(np.asarray(inits[n.input[1]]).reshape(-1)[0])
            assert scale == 2.0 ** round(np.log2(scale)), (n.name, scale)
    # the card's test metrics came from qonnx's execution of the file (evaluate's QONNX path): a
    # confusion matrix over the 654 contract test cells
    assert np.asarray(raw["metrics"]["test"]["confusion_matrix"]).sum() == 654
    assert len(json.loads((qat_model / "history.json").read_text())) == 2
